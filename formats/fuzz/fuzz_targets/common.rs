//! What every reader target does with an image that opened: its facts, its
//! map, a bounded read of everything allocated, and a read at the very end.

use imgbuild_formats::DiskImage;

/// Bytes of guest data read per input at most (the map may describe far
/// more than a small file holds, e.g. many entries naming one cluster).
const READ_BUDGET: u64 = 16 << 20;

/// Exercises an opened image; any error is fine, a panic is a bug.
pub fn exercise(image: &dyn DiskImage) {
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
}
