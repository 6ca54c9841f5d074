//! Converting an image reads each of its bytes once: `disk_from_image`
//! takes the image's allocation map as it is (no scan for zeros), and the
//! writers, told `detect_zeros`, drop all-zero data as it streams by. The
//! outputs still read as the source (`qemu-img compare`) and store no
//! cluster, block or grain for the zeros.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use imgbuild_formats::{
    disk_from_image, write_images, Compression, DiskImage, Format, ReadAt, Subformat,
    VmdkSubformat, WriteOptions,
};

use crate::common_vhdx::*;

const MIB: u64 = 1 << 20;

/// An image that counts the bytes read from it.
struct Counting {
    inner: Arc<dyn DiskImage>,
    read: AtomicU64,
}

impl ReadAt for Counting {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_exact_at(buf, offset)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl DiskImage for Counting {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn allocated(&self) -> imgbuild_formats::Result<Vec<Range<u64>>> {
        self.inner.allocated()
    }
    fn facts(&self) -> Vec<(String, String)> {
        self.inner.facts()
    }
}

/// A 48 MiB sparse raw file: pattern data in three places and 4 MiB of
/// written zeros (allocated, so SEEK_DATA reports them as data).
fn source(dir: &Path) -> (std::path::PathBuf, u64) {
    let path = dir.join("src.raw");
    let f = File::create(&path).unwrap();
    f.set_len(48 * MIB).unwrap();
    let pieces: [(u64, Vec<u8>); 4] = [
        (0, pattern(1, 300_000)),
        (8 * MIB, vec![0u8; 4 * MIB as usize]),
        (20 * MIB + 512, pattern(2, 2 * MIB as usize)),
        (48 * MIB - 4096, pattern(3, 4096)),
    ];
    for (at, data) in &pieces {
        f.write_all_at(data, *at).unwrap();
    }
    f.sync_all().unwrap();
    let allocated: u64 = imgbuild_formats::open(&path, Some(Format::Raw))
        .unwrap()
        .allocated()
        .unwrap()
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    (path, allocated)
}

fn cases() -> Vec<(&'static str, Format, WriteOptions)> {
    let o = |f: &dyn Fn(&mut WriteOptions)| {
        let mut w = WriteOptions {
            detect_zeros: true,
            ..WriteOptions::default()
        };
        f(&mut w);
        w
    };
    vec![
        ("raw", Format::Raw, o(&|_| {})),
        ("qcow2", Format::Qcow2, o(&|_| {})),
        (
            "qcow2-zlib",
            Format::Qcow2,
            o(&|w| w.compression = Some(Compression::Zlib)),
        ),
        ("vhdx", Format::Vhdx, o(&|_| {})),
        (
            "vhdx-fixed",
            Format::Vhdx,
            o(&|w| w.subformat = Subformat::Fixed),
        ),
        ("vhd", Format::Vhd, o(&|_| {})),
        ("vmdk", Format::Vmdk, o(&|_| {})),
        (
            "vmdk-sparse",
            Format::Vmdk,
            o(&|w| w.vmdk_subformat = VmdkSubformat::MonolithicSparse),
        ),
    ]
}

#[test]
fn converting_reads_each_allocated_byte_once_for_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let (src, allocated) = source(dir.path());
    assert!(
        allocated >= 6 * MIB,
        "the written zeros are allocated: {allocated}"
    );
    for (name, format, opts) in cases() {
        let counting = Arc::new(Counting {
            inner: imgbuild_formats::open(&src, Some(Format::Raw)).unwrap(),
            read: AtomicU64::new(0),
        });
        let disk = disk_from_image(counting.clone()).unwrap();
        let out = dir.path().join(format!("out.{name}"));
        let sink = format.sink(File::create(&out).unwrap(), &opts).unwrap();
        write_images(&disk, vec![sink]).unwrap();
        let read = counting.read.load(Ordering::Relaxed);
        assert_eq!(read, allocated, "{name}: bytes read");
    }
}

#[test]
fn writers_told_to_detect_zeros_store_none_and_match_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = source(dir.path());
    let qemu = require_tool("qemu-img");
    for (name, format, opts) in cases() {
        let disk =
            disk_from_image(imgbuild_formats::open(&src, Some(Format::Raw)).unwrap()).unwrap();
        let out = dir.path().join(format!("out.{name}"));
        let sink = format.sink(File::create(&out).unwrap(), &opts).unwrap();
        let summary = write_images(&disk, vec![sink]).unwrap().remove(0);
        // Our reader: the same bytes.
        let back = imgbuild_formats::open(&out, Some(format)).unwrap();
        assert_same_bytes(&disk, back.as_ref());
        // The 4 MiB of zeros take no space: the file holds about the 2.3 MiB
        // of data plus metadata (VHDX: 4 MiB of it, and 5 blocks of 1 MiB
        // with data; 4 more if the zeros were stored), except where the
        // format stores every block (fixed VHDX, VHD and raw, whose zeros
        // are holes).
        let limit = match name {
            "vhdx-fixed" | "vhd" | "raw" => u64::MAX,
            "vhdx" => 10 * MIB,
            _ => 4 * MIB,
        };
        assert!(
            summary.file_size < limit,
            "{name}: {} bytes",
            summary.file_size
        );
        let on_disk =
            std::fs::metadata(&out).map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512);
        assert!(on_disk.unwrap() < 10 * MIB, "{name}: zeros written to disk");
        if qemu {
            let qemu_fmt = match format {
                Format::Vhd => "vpc",
                f => f.name(),
            };
            if format != Format::Vhd {
                qemu_compare(&src, &out, qemu_fmt);
            }
        }
    }
}
