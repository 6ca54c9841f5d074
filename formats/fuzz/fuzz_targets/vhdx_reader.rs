//! Fuzzes the VHDX reader. A valid small file (written by our writer) is
//! patched by the input: each 5-byte record is (area selector, offset u16 LE,
//! value, xor-or-set), so mutations reach the field checks behind the
//! checksums. With the first input byte odd, the CRC-32C of both headers
//! and both region tables are recomputed after patching; with bit 1 set, the
//! file is truncated. Edits are an overlay, not a 6 MiB copy per run.
#![no_main]

use std::sync::{Arc, OnceLock};

use imgbuild_formats::vhdx::VhdxReader;
use imgbuild_formats::{DiskImage, ReadAt, VirtualDiskBuilder, WriteOptions};
use libfuzzer_sys::fuzz_target;

const KIB: usize = 1024;
const MIB: usize = 1 << 20;

/// Area starts patched by the selector: identifier, header 1, header 2,
/// region tables, BAT, metadata table and items, first block, log.
const AREAS: [usize; 8] = [
    0,
    64 * KIB,
    128 * KIB,
    192 * KIB,
    2 * MIB,
    3 * MIB,
    3 * MIB + 64 * KIB,
    MIB,
];

fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut b = VirtualDiskBuilder::new(4 << 20);
        b.bytes(0, vec![0xAAu8; 4096])
            .bytes(3 << 20, vec![0x55u8; 100]);
        let disk = b.build().expect("template disk");
        let path =
            std::env::temp_dir().join(format!("vhdx-fuzz-template-{}.vhdx", std::process::id()));
        let file = std::fs::File::create(&path).expect("template file");
        let opts = WriteOptions {
            seed: Some([1; 32]),
            ..Default::default()
        };
        let sink = imgbuild_formats::Format::Vhdx
            .sink(file, &opts)
            .expect("sink");
        imgbuild_formats::write_images(&disk, vec![sink]).expect("write template");
        let bytes = std::fs::read(&path).expect("read template");
        let _ = std::fs::remove_file(&path);
        bytes
    })
}

/// The template with sparse byte edits, read without copying 6 MiB per run.
struct Overlay {
    base: &'static [u8],
    len: usize,
    /// (offset, value), later entries win.
    edits: Vec<(usize, u8)>,
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        imgbuild_formats::io::check_range(offset, buf.len(), self.len as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&self.base[start..start + buf.len()]);
        for &(at, v) in &self.edits {
            if (start..start + buf.len()).contains(&at) {
                buf[at - start] = v;
            }
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.len as u64
    }
}

/// Adds edits that make the CRC-32C of the `len` bytes at `at` right.
fn fix_crc(o: &mut Overlay, at: usize, len: usize) {
    let mut b = vec![0u8; len];
    if o.read_exact_at(&mut b, at as u64).is_err() {
        return;
    }
    b[4..8].fill(0);
    let crc = crc32c::crc32c(&b).to_le_bytes();
    for (i, v) in crc.into_iter().enumerate() {
        o.edits.push((at + 4 + i, v));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, edits)) = data.split_first() else {
        return;
    };
    let base = template();
    let mut o = Overlay {
        base,
        len: base.len(),
        edits: Vec::new(),
    };
    for e in edits.chunks_exact(5) {
        let at =
            AREAS[usize::from(e[0]) % AREAS.len()] + usize::from(u16::from_le_bytes([e[1], e[2]]));
        let mut byte = [0u8];
        let _ = o.read_exact_at(&mut byte, at as u64);
        let v = if e[4] & 1 == 1 { byte[0] ^ e[3] } else { e[3] };
        o.edits.push((at, v));
    }
    if mode & 1 == 1 {
        for (at, len) in [
            (64 * KIB, 4 * KIB),
            (128 * KIB, 4 * KIB),
            (192 * KIB, 64 * KIB),
            (256 * KIB, 64 * KIB),
        ] {
            fix_crc(&mut o, at, len);
        }
    }
    if mode & 2 == 2 {
        o.len = o.len.saturating_sub(usize::from(mode) * 23 * KIB);
    }
    if let Ok(r) = VhdxReader::new(Arc::new(o)) {
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
