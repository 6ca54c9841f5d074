//! Our GRUB i386-pc core image against GRUB's own `grub-mkimage` (package
//! grub-common), both from the Debian rootfs's `/usr/lib/grub/i386-pc`: the
//! same diskboot sector (but the blocklist's start, which grub-bios-setup
//! would patch and we set to the BIOS boot partition), the same decompressor
//! (but the two size fields), and byte for byte the same payload once both
//! LZMA streams are decoded (kernel, module info, modules in the same order,
//! prefix). Only the LZMA encoder differs (liblzma, not GRUB's copy of the
//! LZMA SDK). Booting it is tests/it/boot_matrix.rs's job.

use std::path::Path;
use std::process::Command;

use imgbuild::tree::boot::core_image;

use crate::support::{debian_tar, require_tool, run_ok, tempdir};

const PREFIX: &str = "(,gpt2)/EFI/debian";
const LBA: u64 = 40;

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The payload of a core image: its LZMA stream decoded, capped at the
/// uncompressed size the decompressor header gives (GRUB's stream has no
/// end marker).
fn payload(core: &[u8], decompressor_len: usize) -> Vec<u8> {
    let header = &core[512..];
    let (compressed, size) = (u32_at(header, 0x08), u32_at(header, 0x0C));
    let stream = &core[512 + decompressor_len..512 + decompressor_len + compressed];
    let mut opts = liblzma::stream::LzmaOptions::new_preset(6).unwrap();
    opts.dict_size(1 << 16)
        .literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(2);
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma1(&opts);
    let mut dec = liblzma::stream::Stream::new_raw_decoder(&filters).unwrap();
    let mut out = Vec::with_capacity(size + 4096);
    // Without an end marker the decoder stops at the input's end, asking for more.
    let _ = dec.process_vec(stream, &mut out, liblzma::stream::Action::Run);
    assert!(out.len() >= size, "decoded {} of {size} bytes", out.len());
    out.truncate(size);
    out
}

#[test]
fn core_image_matches_grub_mkimage_but_for_the_lzma_encoder() {
    if !require_tool("grub-mkimage") || !require_tool("tar") {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(d.path())
            .arg("./usr/lib/grub/i386-pc"),
    );
    let dir = d.path().join("usr/lib/grub/i386-pc");
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|_| imgbuild::tree::boot::BootError::GrubModule {
            name: name.to_string(),
        })
    };
    let ours = core_image::build(&read, core_image::MODULES, PREFIX, LBA).unwrap();
    let reference = d.path().join("core.img");
    run_ok(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-p", PREFIX, "-d"])
            .arg(&dir)
            .arg("-o")
            .arg(&reference)
            .args(core_image::MODULES),
    );
    let theirs = std::fs::read(&reference).unwrap();
    let ours = &ours.image;
    check(ours, &theirs, &dir);
}

fn check(ours: &[u8], theirs: &[u8], dir: &Path) {
    // diskboot.img: identical but the blocklist (start, sector count).
    assert_eq!(ours[..0x1F4], theirs[..0x1F4], "diskboot code");
    let start = u64::from_le_bytes(ours[0x1F4..0x1FC].try_into().unwrap());
    assert_eq!(
        start,
        LBA + 1,
        "core continues right after its first sector"
    );
    assert_eq!(
        &theirs[0x1F4..0x1FC],
        &2u64.to_le_bytes(),
        "mkimage's default"
    );
    assert_eq!(ours[0x1FE..0x200], theirs[0x1FE..0x200], "segment 0x820");
    let sectors = usize::from(u16::from_le_bytes(ours[0x1FC..0x1FE].try_into().unwrap()));
    assert!(sectors * 512 >= ours.len() - 512 - 511 && (sectors - 1) * 512 < ours.len() - 512);
    // lzma_decompress.img: identical but the two sizes.
    let dlen = std::fs::metadata(dir.join("lzma_decompress.img"))
        .unwrap()
        .len() as usize;
    let (od, td) = (&ours[512..512 + dlen], &theirs[512..512 + dlen]);
    assert_eq!(od[..0x08], td[..0x08]);
    assert_eq!(od[0x10..], td[0x10..], "decompressor after the size fields");
    assert_eq!(u32_at(od, 0x0C), u32_at(td, 0x0C), "uncompressed size");
    // The payload, byte for byte.
    let (op, tp) = (payload(ours, dlen), payload(theirs, dlen));
    assert_eq!(op.len(), tp.len());
    if let Some(at) = op.iter().zip(&tp).position(|(a, b)| a != b) {
        panic!("payloads differ first at byte {at} of {}", op.len());
    }
    assert_eq!(
        &op[op.len() - 28..op.len() - 20],
        &[3, 0, 0, 0, 28, 0, 0, 0],
        "prefix object last"
    );
}
