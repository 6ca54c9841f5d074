//! Fuzzes the fixed-VHD reader: the input is the whole file. With the first
//! byte odd, the footer checksum is recomputed so mutations reach the field
//! checks behind it.
#![no_main]

use std::sync::Arc;

use imgbuild_formats::vhd::{checksum, VhdReader, FOOTER_SIZE};
use imgbuild_formats::{DiskImage, ReadAt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut b = rest.to_vec();
    if mode & 1 == 1 && b.len() >= FOOTER_SIZE {
        let at = b.len() - FOOTER_SIZE;
        let mut f = [0u8; FOOTER_SIZE];
        f.copy_from_slice(&b[at..]);
        b[at + 64..at + 68].copy_from_slice(&checksum(&f).to_be_bytes());
    }
    if let Ok(r) = VhdReader::new(Arc::new(b)) {
        let _ = r.facts();
        let _ = r.allocated();
        let size = r.virtual_size();
        let mut buf = [0u8; 512];
        if size >= 512 {
            let _ = r.read_exact_at(&mut buf, size - 512);
        }
    }
});
