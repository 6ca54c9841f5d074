//! Fuzzes the initramfs reader (src/tree/cpio.rs): any input must give a
//! listing or a typed error, never a panic, a hang or an unbounded allocation.
//! Run: `cargo +nightly fuzz run cpio_reader` from the repository root.
#![no_main]

use imgbuild::tree::cpio::{list_with_limits, Limits};
use imgbuild::tree::FileData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Tighter than the defaults so decompression bombs stay fast.
    let limits = Limits { max_entries: 1 << 16, max_name_bytes: 1 << 22, max_unpacked: 64 << 20 };
    let _ = list_with_limits(&FileData::Bytes(data.into()), &limits);
});
