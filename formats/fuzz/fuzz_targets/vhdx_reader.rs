//! Fuzzes the VHDX reader. A valid small file (written by our writer) is
//! patched by the input: each 5-byte record is (area selector, offset u16 LE,
//! value, xor-or-set), so mutations reach the field checks behind the
//! checksums; with the first input byte odd, the CRC-32C of both headers and
//! both region tables are recomputed after patching.
#![no_main]

use std::sync::{Arc, OnceLock};

use imgbuild_formats::vhdx::VhdxReader;
use imgbuild_formats::{DiskImage, ReadAt, VirtualDiskBuilder, WriteOptions};
use libfuzzer_sys::fuzz_target;

const KIB: usize = 1024;
const MIB: usize = 1 << 20;

/// Area starts patched by the selector: identifier, header 1, header 2,
/// region tables, BAT, metadata table and items, first block, log.
const AREAS: [usize; 8] = [0, 64 * KIB, 128 * KIB, 192 * KIB, 2 * MIB, 3 * MIB, 3 * MIB + 64 * KIB, MIB];

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut b = VirtualDiskBuilder::new(4 << 20);
        b.bytes(0, vec![0xAAu8; 4096]).bytes(3 << 20, vec![0x55u8; 100]);
        let disk = b.build().expect("template disk");
        let path = std::env::temp_dir().join(format!("vhdx-fuzz-template-{}.vhdx", std::process::id()));
        let file = std::fs::File::create(&path).expect("template file");
        let opts = WriteOptions { seed: Some([1; 32]), ..Default::default() };
        let sink = imgbuild_formats::Format::Vhdx.sink(file, &opts).expect("sink");
        imgbuild_formats::write_images(&disk, vec![sink]).expect("write template");
        let bytes = std::fs::read(&path).expect("read template");
        let _ = std::fs::remove_file(&path);
        bytes
    })
}

fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    b[at + 4..at + 8].fill(0);
    let crc = crc32c::crc32c(&b[at..at + len]);
    b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, edits)) = data.split_first() else { return };
    let mut b = template().to_vec();
    for e in edits.chunks_exact(5) {
        let at = AREAS[usize::from(e[0]) % AREAS.len()] + usize::from(u16::from_le_bytes([e[1], e[2]]));
        if e[4] & 1 == 1 {
            b[at] ^= e[3];
        } else {
            b[at] = e[3];
        }
    }
    if mode & 1 == 1 {
        for (at, len) in [(64 * KIB, 4 * KIB), (128 * KIB, 4 * KIB), (192 * KIB, 64 * KIB), (256 * KIB, 64 * KIB)] {
            fix_crc(&mut b, at, len);
        }
    }
    if mode & 2 == 2 {
        let cut = usize::from(mode) * 23 * KIB;
        b.truncate(b.len().saturating_sub(cut));
    }
    if let Ok(r) = VhdxReader::new(Arc::new(b)) {
        let _ = r.facts();
        let _ = r.allocated();
        let size = r.virtual_size();
        let mut buf = vec![0u8; 8192];
        for at in [0, size / 3, size.saturating_sub(8192)] {
            if at + 8192 <= size {
                let _ = r.read_exact_at(&mut buf, at);
            }
        }
    }
});
