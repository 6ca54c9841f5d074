//! GRUB's i386-pc core image, as `grub-mkimage -O i386-pc -p PREFIX
//! MODULES…` makes it, assembled from the tree's own GRUB files
//! (`/usr/lib/grub/i386-pc`, package grub-pc-bin) so that the core and the
//! modules it carries come from one GRUB build. And the MBR boot code that
//! loads it.
//!
//! ```text
//! core.img = diskboot.img (512 B; its blocklist: start S+1, sectors, segment 0x820)
//!          + lzma_decompress.img (0x08: compressed size, 0x0C: uncompressed size)
//!          + LZMA1 raw (lc=3 lp=0 pb=2) of the payload:
//!              kernel.img's loadable sections, flattened from the ELF at 0x9000
//!              + module info { "mimg", 12, total size }
//!              + per module (moddep.lst order, dependencies first): { 0, 8 + len } + the .mod, padded to 4
//!              + the prefix: { 3, 8 + len } + string, NUL, padded to 4
//! MBR = boot.img bytes 0..440, with 0x5C = S (u64), 0x64 = 0xFF, 0x66 = 90 90
//! ```
//! Sources: GRUB 2.06/2.12 util/mkimage.c (`grub_install_generate_image`,
//! `compress_kernel_lzma`), util/resolve.c, include/grub/kernel.h,
//! include/grub/offsets.h, util/setup.c; checked byte for byte against
//! grub-mkimage's payload (tests/grub_oracle.rs) and booted under SeaBIOS
//! (tests/boot_matrix.rs). Facts: shared/notes/boot-facts.md §1.
//!
//! Deterministic: the payload is a pure function of the tree's files, and
//! the LZMA encoder is the liblzma built from the source pinned in
//! Cargo.lock (feature `static`), single-threaded.

use std::collections::BTreeMap;

use super::BootError;

/// The modules built into the core image: enough to read the ESP's menu
/// and boot Linux from the ext4 root with nothing loaded from disk at run
/// time (the same choice as the signed UEFI GRUB, which is monolithic):
/// disk and partition access, FAT and ext2/3/4, the normal-mode menu,
/// `search`, `linux`/`initrd`, the serial console, and `if`'s `test`.
pub const MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "fat",
    "ext2",
    "normal",
    "search",
    "search_fs_uuid",
    "linux",
    "boot",
    "serial",
    "terminal",
    "test",
    "echo",
];

/// Where kernel.img is linked (GRUB_KERNEL_I386_PC_LINK_ADDR).
const LINK_ADDR: u32 = 0x9000;
/// The core image (decompressor + compressed payload) must end below
/// 0x78000 (mkimage: "core image is too big").
const MAX_END: usize = 0x78000;
/// `grub_module_info32.magic`: "mimg".
const MODULE_MAGIC: u32 = 0x676d_696d;
/// Object types (include/grub/kernel.h).
const OBJ_TYPE_ELF: u32 = 0;
const OBJ_TYPE_PREFIX: u32 = 3;
/// Sector size.
const SECTOR: usize = 512;
/// Where diskboot.img keeps its first blocklist entry (start u64, sectors
/// u16, segment u16): GRUB_BOOT_MACHINE_LIST_SIZE before the sector's end.
const BLOCKLIST: usize = 0x1F4;
/// diskboot loads the rest of the core at segment 0x820 (address 0x8200).
const SEGMENT: u16 = 0x0820;

/// A core image and what went into it.
#[derive(Clone, Debug)]
pub struct Core {
    /// The image, whole sectors.
    pub image: Vec<u8>,
    /// Modules, in the order they are embedded.
    pub modules: Vec<String>,
}

fn err(msg: impl Into<String>) -> BootError {
    BootError::CoreImage(msg.into())
}

/// Builds the core image for a BIOS boot partition starting at `lba`.
/// `read(name)` returns a file of GRUB's i386-pc directory.
pub fn build(
    read: &dyn Fn(&str) -> Result<Vec<u8>, BootError>,
    modules: &[&str],
    prefix: &str,
    lba: u64,
) -> Result<Core, BootError> {
    let moddep = String::from_utf8_lossy(&read("moddep.lst")?).into_owned();
    let order = resolve(&parse_moddep(&moddep), modules)?;
    let mut payload = flatten_kernel(&read("kernel.img")?)?;
    let mut objects = Vec::new();
    for m in &order {
        let data = read(&format!("{m}.mod"))?;
        push_object(&mut objects, OBJ_TYPE_ELF, &data, false)?;
    }
    if prefix.contains('\0') {
        return Err(err("the prefix has a NUL byte"));
    }
    push_object(&mut objects, OBJ_TYPE_PREFIX, prefix.as_bytes(), true)?;
    let total = u32::try_from(12 + objects.len()).map_err(|_| err("modules too large"))?;
    payload.extend_from_slice(&MODULE_MAGIC.to_le_bytes());
    payload.extend_from_slice(&12u32.to_le_bytes());
    payload.extend_from_slice(&total.to_le_bytes());
    payload.extend_from_slice(&objects);

    let compressed = compress(&payload)?;
    let mut decompressor = read("lzma_decompress.img")?;
    if decompressor.len() < 0x18 {
        return Err(err("lzma_decompress.img is too short"));
    }
    let size32 = |n: usize| u32::try_from(n).map_err(|_| err("core image too large"));
    decompressor[0x08..0x0C].copy_from_slice(&size32(compressed.len())?.to_le_bytes());
    decompressor[0x0C..0x10].copy_from_slice(&size32(payload.len())?.to_le_bytes());
    let body_len = decompressor.len() + compressed.len();
    if LINK_ADDR as usize + body_len > MAX_END {
        return Err(err(format!(
            "core image of {body_len} bytes is too big (at most {} with these modules)",
            MAX_END - LINK_ADDR as usize
        )));
    }
    let mut diskboot = read("diskboot.img")?;
    if diskboot.len() != SECTOR {
        return Err(err("diskboot.img is not one sector"));
    }
    let sectors = u16::try_from(body_len.div_ceil(SECTOR)).map_err(|_| err("too many sectors"))?;
    let start = lba.checked_add(1).ok_or_else(|| err("LBA out of range"))?;
    diskboot[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&start.to_le_bytes());
    diskboot[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&sectors.to_le_bytes());
    diskboot[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&SEGMENT.to_le_bytes());
    let mut image = diskboot;
    image.extend_from_slice(&decompressor);
    image.extend_from_slice(&compressed);
    image.resize(image.len().next_multiple_of(SECTOR), 0);
    Ok(Core {
        image,
        modules: order,
    })
}

/// The MBR's boot code: boot.img bytes 0..440 (the rest of its sector
/// holds floppy-probe code where the partition table goes), with the core
/// image's LBA at 0x5C, "use the drive the BIOS booted" (0xFF) at 0x64, and
/// the floppy check at 0x66 turned into two NOPs, as grub-bios-setup does
/// for a hard disk (util/setup.c).
pub fn boot_code(boot_img: &[u8], lba: u64) -> Result<[u8; 440], BootError> {
    if boot_img.len() != SECTOR || boot_img[510..512] != [0x55, 0xAA] {
        return Err(err("boot.img is not a 512-byte boot sector"));
    }
    let mut code = [0u8; 440];
    code.copy_from_slice(&boot_img[..440]);
    code[0x5C..0x64].copy_from_slice(&lba.to_le_bytes());
    code[0x64] = 0xFF;
    code[0x66..0x68].copy_from_slice(&[0x90, 0x90]);
    Ok(code)
}

/// `name: dep dep …` per line; a later line for the same name wins (resolve.c).
fn parse_moddep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let (name, deps) = l.split_once(':')?;
            Some((
                name.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect()
}

/// Each module once, its dependencies before it; dependency lists walked
/// from the last entry to the first, as util/resolve.c does.
fn resolve(
    deps: &BTreeMap<String, Vec<String>>,
    wanted: &[&str],
) -> Result<Vec<String>, BootError> {
    fn add(
        deps: &BTreeMap<String, Vec<String>>,
        name: &str,
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), BootError> {
        if out.iter().any(|m| m == name) {
            return Ok(());
        }
        if depth > 64 {
            return Err(err(format!("moddep.lst has a dependency cycle at {name}")));
        }
        if let Some(list) = deps.get(name) {
            for d in list.iter().rev() {
                add(deps, d, out, depth + 1)?;
            }
        }
        if !out.iter().any(|m| m == name) {
            out.push(name.to_string());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for w in wanted {
        add(deps, w, &mut out, 0)?;
    }
    Ok(out)
}

/// One object: header `{type, size}` then the bytes, padded with zeros to
/// a multiple of 4 (with at least one NUL for strings).
fn push_object(out: &mut Vec<u8>, kind: u32, data: &[u8], nul: bool) -> Result<(), BootError> {
    let body = (data.len() + usize::from(nul)).next_multiple_of(4);
    let size = u32::try_from(8 + body).map_err(|_| err("object too large"))?;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + body - data.len(), 0);
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// kernel.img is a 32-bit ELF linked at 0x9000: its allocated PROGBITS
/// sections, executable ones first, then data, each in section-header
/// order, at `addr - 0x9000`; the image ends where the last one placed
/// ends (mkimage.c `grub_mkimage_load_image32`).
fn flatten_kernel(elf: &[u8]) -> Result<Vec<u8>, BootError> {
    const SHT_PROGBITS: u32 = 1;
    const SHF_ALLOC: u32 = 2;
    const SHF_EXECINSTR: u32 = 4;
    if elf.get(..5) != Some(b"\x7fELF\x01") {
        return Err(err("kernel.img is not a 32-bit ELF file"));
    }
    let bad = || err("kernel.img has a malformed section table");
    let shoff = u32_at(elf, 0x20).ok_or_else(bad)? as usize;
    let shentsize = usize::from(u16_at(elf, 0x2E).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(elf, 0x30).ok_or_else(bad)?);
    if shentsize < 40 {
        return Err(bad());
    }
    let mut sections = Vec::new();
    for i in 0..shnum {
        let at = shoff + i * shentsize;
        let field = |n: usize| u32_at(elf, at + 4 * n).ok_or_else(bad);
        let (kind, flags, addr, offset, size) =
            (field(1)?, field(2)?, field(3)?, field(4)?, field(5)?);
        if kind == SHT_PROGBITS && flags & SHF_ALLOC != 0 {
            sections.push((
                flags & SHF_EXECINSTR != 0,
                addr,
                offset as usize,
                size as usize,
            ));
        }
    }
    let mut placed: Vec<(usize, &[u8])> = Vec::new();
    let mut end = 0usize;
    for exec in [true, false] {
        for &(_, addr, offset, size) in sections.iter().filter(|s| s.0 == exec) {
            let at = addr.checked_sub(LINK_ADDR).ok_or_else(bad)? as usize;
            let bytes = elf.get(offset..offset + size).ok_or_else(bad)?;
            placed.push((at, bytes));
            end = at + size;
        }
    }
    if end > MAX_END {
        return Err(bad());
    }
    let mut image = vec![0u8; end];
    for (at, bytes) in placed {
        let slot = image.get_mut(at..at + bytes.len()).ok_or_else(bad)?;
        slot.copy_from_slice(bytes);
    }
    Ok(image)
}

/// Raw LZMA1 (lc=3, lp=0, pb=2, 64 KiB dictionary) as GRUB's decompressor
/// reads it; liblzma ends the stream with an end marker, which the
/// decompressor never reaches (it stops after the uncompressed size).
fn compress(payload: &[u8]) -> Result<Vec<u8>, BootError> {
    use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};
    let lz = |e: liblzma::stream::Error| err(format!("LZMA: {e}"));
    let mut opts = LzmaOptions::new_preset(9).map_err(lz)?;
    opts.dict_size(1 << 16)
        .literal_context_bits(3)
        .literal_position_bits(0)
        .position_bits(2);
    let mut filters = Filters::new();
    filters.lzma1(&opts);
    let mut stream = Stream::new_raw_encoder(&filters).map_err(lz)?;
    let mut out = Vec::with_capacity(payload.len() + 1024);
    loop {
        let consumed = usize::try_from(stream.total_in()).map_err(|_| err("LZMA: size"))?;
        if out.len() == out.capacity() {
            out.reserve(64 << 10);
        }
        match stream
            .process_vec(&payload[consumed..], &mut out, Action::Finish)
            .map_err(lz)?
        {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::GetCheck | Status::MemNeeded => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = parse_moddep(
            "normal: boot extcmd\nboot:\nextcmd:\nlinux: boot relocator\nrelocator: mmap\nmmap:\n",
        );
        assert_eq!(
            resolve(&deps, &["normal", "linux"]).unwrap(),
            ["extcmd", "boot", "normal", "mmap", "relocator", "linux"]
        );
    }

    #[test]
    fn objects_are_padded_to_four_with_a_nul_for_strings() {
        let mut out = Vec::new();
        push_object(&mut out, OBJ_TYPE_PREFIX, b"(,gpt2)/EFI/debian", true).unwrap();
        // 18 bytes + NUL -> 20; header 8.
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..8], &[3, 0, 0, 0, 28, 0, 0, 0]);
        assert_eq!(&out[26..], &[0, 0]);
        let mut out = Vec::new();
        push_object(&mut out, OBJ_TYPE_ELF, b"1234", false).unwrap();
        assert_eq!(out.len(), 12);
    }

    #[test]
    fn boot_code_patches_lba_drive_and_floppy_check() {
        let mut img = vec![0xEEu8; 512];
        img[510] = 0x55;
        img[511] = 0xAA;
        let code = boot_code(&img, 40).unwrap();
        assert_eq!(&code[0x5C..0x64], &40u64.to_le_bytes());
        assert_eq!((code[0x64], code[0x66], code[0x67]), (0xFF, 0x90, 0x90));
        assert_eq!((code[0], code[439]), (0xEE, 0xEE));
        assert!(boot_code(&img[..511], 40).is_err());
    }

    #[test]
    fn lzma_stream_decodes_back() {
        let payload: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        let c = compress(&payload).unwrap();
        let mut dec = liblzma::stream::Stream::new_raw_decoder(&{
            let mut f = liblzma::stream::Filters::new();
            let mut o = liblzma::stream::LzmaOptions::new_preset(9).unwrap();
            o.dict_size(1 << 16)
                .literal_context_bits(3)
                .literal_position_bits(0)
                .position_bits(2);
            f.lzma1(&o);
            f
        })
        .unwrap();
        let mut out = Vec::with_capacity(payload.len() + 16);
        dec.process_vec(&c, &mut out, liblzma::stream::Action::Finish)
            .unwrap();
        assert_eq!(out, payload);
        assert!(c.len() < payload.len() / 2);
    }
}
