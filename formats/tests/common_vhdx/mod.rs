//! Helpers shared by the VHDX and VHD oracle tests.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbuild_formats::{
    write_images, DiskImage, Format, ImageSummary, VirtualDisk, VirtualDiskBuilder, WriteOptions,
};

// The tool helpers are the ones every formats oracle test uses.
pub use crate::common::{qemu_check, qemu_compare, require_tool, run_ok};

/// Stdout of a successful command, as text.
pub fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// Writes `disk` as `format` into `path`.
pub fn write(disk: &VirtualDisk, format: Format, opts: &WriteOptions, path: &Path) -> ImageSummary {
    let file = File::create(path).expect("create image");
    let sink = format.sink(file, opts).expect("sink");
    write_images(disk, vec![sink]).expect("write").remove(0)
}

/// Writes `disk` as raw and as `format` into `dir`, returning both paths.
pub fn write_pair(
    disk: &VirtualDisk,
    format: Format,
    opts: &WriteOptions,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{name}.raw"));
    let img = dir.join(format!("{name}.{}", format.extension()));
    write(disk, Format::Raw, &WriteOptions::default(), &raw);
    write(disk, format, opts, &img);
    (raw, img)
}

/// A small deterministic byte pattern (xorshift), never all zero.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8 | 1
        })
        .collect()
}

/// A disk of `size` bytes with pattern data at each `(offset, len)`.
pub fn disk(size: u64, extents: &[(u64, usize)]) -> VirtualDisk {
    let mut b = VirtualDiskBuilder::new(size);
    for (i, &(off, len)) in extents.iter().enumerate() {
        b.bytes(off, pattern(off ^ (i as u64) << 32, len));
    }
    b.build().expect("valid disk")
}

/// Asserts that `image` reads exactly as `disk`, everywhere, in 1 MiB steps,
/// skipping ranges neither has data in beyond a probe of their first bytes.
pub fn assert_same_bytes(disk: &VirtualDisk, image: &dyn DiskImage) {
    assert_eq!(image.virtual_size(), disk.size(), "virtual size");
    let step = 1u64 << 20;
    let (mut a, mut b) = (vec![0u8; step as usize], vec![0u8; step as usize]);
    let mut interesting: Vec<u64> = Vec::new();
    for r in disk
        .allocated()
        .iter()
        .chain(image.allocated().expect("allocated").iter())
    {
        let mut at = r.start / step * step;
        while at < r.end {
            interesting.push(at);
            at += step;
        }
    }
    // Probe the unallocated areas too: the first and the last MiB.
    interesting.push(0);
    interesting.push((disk.size() - 1) / step * step);
    interesting.sort_unstable();
    interesting.dedup();
    for at in interesting {
        let n = step.min(disk.size() - at) as usize;
        disk.read_at(at, &mut a[..n]).expect("disk read");
        image.read_exact_at(&mut b[..n], at).expect("image read");
        assert!(a[..n] == b[..n], "bytes differ in the MiB at {at}");
    }
}

/// Opens an image with our reader.
pub fn open(path: &Path, format: Format) -> Arc<dyn DiskImage> {
    imgbuild_formats::open(path, Some(format))
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// `qemu-img info`'s virtual size (the top-level "virtual size: … (N bytes)").
pub fn qemu_virtual_size(img: &Path, qemu_fmt: &str) -> u64 {
    let out = stdout_of(
        Command::new("qemu-img")
            .args(["info", "-f", qemu_fmt])
            .arg(img),
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("virtual size:"))
        .unwrap_or_else(|| panic!("no virtual size in {out}"));
    bytes_in_parens(line)
}

/// Python with libvhdi's bindings (Debian `python3-libvhdi`), the data
/// oracle for what qemu cannot read (4096-byte logical sectors).
const PYVHDI: &str = "/usr/bin/python3";

/// True when `pyvhdi` imports; with `CI=true` its absence fails the test.
pub fn require_pyvhdi() -> bool {
    let ok = Command::new(PYVHDI)
        .args(["-c", "import pyvhdi"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3-libvhdi is required in CI (scripts/install-deps.sh installs it)");
        }
        eprintln!("SKIPPED: python3-libvhdi is not installed");
    }
    ok
}

/// libvhdi's view of an image: (media size, bytes per sector, sha256 of all
/// media bytes).
pub fn libvhdi_read(path: &Path) -> (u64, u64, String) {
    let script = r#"
import hashlib, sys, pyvhdi
f = pyvhdi.file(); f.open(sys.argv[1])
h = hashlib.sha256(); size = f.get_media_size(); at = 0
while at < size:
    n = min(1 << 20, size - at); b = f.read_buffer_at_offset(n, at); assert len(b) == n; h.update(b); at += n
print(size, f.get_bytes_per_sector(), h.hexdigest())
"#;
    let out = stdout_of(Command::new(PYVHDI).args(["-c", script]).arg(path));
    let mut it = out.split_whitespace();
    let size = it.next().unwrap().parse().unwrap();
    let bps = it.next().unwrap().parse().unwrap();
    (size, bps, it.next().unwrap().to_string())
}

/// SHA-256 of all of a disk's bytes, hex.
pub fn disk_sha256(disk: &VirtualDisk) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < disk.size() {
        let n = (disk.size() - at).min(1 << 20) as usize;
        disk.read_at(at, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// vhdiinfo's "Media size" in bytes (exit status 0 required).
pub fn vhdiinfo_media_size(path: &Path) -> u64 {
    let out = stdout_of(Command::new("vhdiinfo").arg(path));
    let line = out
        .lines()
        .find(|l| l.contains("Media size"))
        .unwrap_or_else(|| panic!("no media size: {out}"));
    bytes_in_parens(line)
}

/// The byte count in a line like `virtual size: 3 GiB (3221225472 bytes)`.
fn bytes_in_parens(line: &str) -> u64 {
    let inner = line.rsplit('(').next().unwrap();
    inner
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("bad line {line}"))
}
