//! Opens arbitrary bytes as qcow2, maps them and reads what is allocated.
//! Any error is fine; a panic, a hang or a huge allocation is a bug.
#![no_main]

use std::sync::Arc;

use imgbuild_formats::qcow2::Qcow2Reader;
use imgbuild_formats::{DiskImage, ReadAt};
use libfuzzer_sys::fuzz_target;

/// Bytes of guest data read per input at most (the map may describe far
/// more than a small file holds, e.g. many entries naming one cluster).
const READ_BUDGET: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Qcow2Reader::from_reader(Arc::new(data.to_vec())) else {
        return;
    };
    let _ = image.facts();
    let Ok(ranges) = image.allocated() else {
        return;
    };
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; 1 << 16];
    for r in ranges {
        let mut at = r.start;
        while at < r.end && budget > 0 {
            let n = (r.end - at).min(buf.len() as u64).min(budget);
            let _ = image.read_exact_at(&mut buf[..n as usize], at);
            at += n;
            budget -= n;
        }
    }
    // A read at the very end of the disk, allocated or not.
    let size = image.virtual_size();
    if size > 0 {
        let _ = image.read_exact_at(&mut buf[..1], size - 1);
    }
});
