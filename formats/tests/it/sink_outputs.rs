//! `write_images` with several sinks (one thread each) against one sink at a
//! time, and the SHA-256 writers compute while writing against `sha256sum`.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use imgbuild_formats::package::{self, Package, PackageOptions};
use imgbuild_formats::{
    shared_data_len, write_disks, write_images, Compression, Error, Format, ImageSink,
    ImageSummary, ReadAt, Subformat, VirtualDisk, VirtualDiskBuilder, WriteOptions,
};

use crate::common_vhdx::*;

const MIB: u64 = 1 << 20;

/// Every writer configuration, and whether it can hash while writing (it
/// writes front to back): compressed qcow2 writes its header last, VHDX
/// without a seed names the disk from a hash of the data, so both write
/// their headers in `finish`.
fn configs() -> Vec<(&'static str, Format, WriteOptions, bool)> {
    let seed = Some([7u8; 32]);
    vec![
        ("raw", Format::Raw, WriteOptions::default(), true),
        ("qcow2", Format::Qcow2, WriteOptions::default(), true),
        (
            "qcow2-4k",
            Format::Qcow2,
            WriteOptions {
                cluster_size: Some(4096),
                ..Default::default()
            },
            true,
        ),
        (
            "qcow2-zstd",
            Format::Qcow2,
            WriteOptions {
                compression: Some(Compression::Zstd),
                threads: Some(2),
                ..Default::default()
            },
            false,
        ),
        (
            "vhdx-seeded",
            Format::Vhdx,
            WriteOptions {
                seed,
                ..Default::default()
            },
            true,
        ),
        (
            "vhdx-fixed-seeded",
            Format::Vhdx,
            WriteOptions {
                seed,
                subformat: Subformat::Fixed,
                ..Default::default()
            },
            true,
        ),
        (
            "vhdx-unseeded",
            Format::Vhdx,
            WriteOptions::default(),
            false,
        ),
        (
            "vhd",
            Format::Vhd,
            WriteOptions {
                seed,
                ..Default::default()
            },
            true,
        ),
    ]
}

/// Data at the start, inside and across 1 MiB chunks and blocks, an extent
/// longer than a chunk, a zero run inside data, and a last sector.
fn mixed_disk() -> VirtualDisk {
    let size = 64 * MIB;
    let mut b = VirtualDiskBuilder::new(size);
    b.bytes(0, pattern(1, 4096));
    b.bytes(MIB - 100, pattern(2, 300));
    b.bytes(3 * MIB + 17, pattern(3, 5 * MIB as usize + 3));
    let mut with_zeros = pattern(4, 2 * MIB as usize);
    with_zeros[300_000..900_000].fill(0);
    b.bytes(20 * MIB, with_zeros);
    b.bytes(40 * MIB, vec![0u8; 65536]);
    b.bytes(size - 512, pattern(5, 512));
    b.build().expect("valid disk")
}

fn sha256sum(path: &Path) -> String {
    let out = stdout_of(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().expect("a digest").to_string()
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sinks(dir: &Path, names: &[(&str, Format, WriteOptions)]) -> Vec<Box<dyn ImageSink>> {
    names
        .iter()
        .map(|(name, format, o)| {
            let f = File::create(dir.join(name)).expect("create");
            // Hash while writing, as a build does for SHA256SUMS.
            let o = WriteOptions {
                hash: true,
                ..o.clone()
            };
            if name.ends_with(".tar.gz") {
                let p = PackageOptions {
                    package: Package::GceTarGz,
                    name: "disk".into(),
                    mtime: 0,
                };
                return package::sink(&p, f, &o).expect("GCE sink");
            }
            format.sink(f, &o).expect("sink")
        })
        .collect()
}

#[test]
fn threaded_outputs_match_single_outputs_and_their_hashes() {
    if !require_tool("sha256sum") {
        return;
    }
    let disk = mixed_disk();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (one, all) = (tmp.path().join("one"), tmp.path().join("all"));
    std::fs::create_dir_all(&one).expect("mkdir");
    std::fs::create_dir_all(&all).expect("mkdir");
    let configs = configs();
    let specs: Vec<_> = configs
        .iter()
        .map(|(n, f, o, _)| (*n, *f, o.clone()))
        .collect();

    // One sink at a time: the serial path.
    let single: Vec<ImageSummary> = specs
        .iter()
        .map(|s| {
            write_images(&disk, sinks(&one, std::slice::from_ref(s)))
                .expect("write one")
                .remove(0)
        })
        .collect();
    // All at once: one thread per sink.
    let threaded = write_images(&disk, sinks(&all, &specs)).expect("write all");

    assert_eq!(single, threaded);
    for ((name, _, _, hashes), sum) in configs.iter().zip(&threaded) {
        let (a, b) = (one.join(name), all.join(name));
        let bytes = std::fs::read(&b).expect("read");
        assert!(
            std::fs::read(&a).expect("read") == bytes,
            "{name}: threaded output differs"
        );
        assert_eq!(bytes.len() as u64, sum.file_size, "{name}: file size");
        let want = sha256sum(&b);
        match sum.sha256 {
            Some(h) => assert_eq!(hex(&h), want, "{name}: hash while writing"),
            None => assert!(!hashes, "{name}: expected a hash while writing"),
        }
        assert_eq!(sum.sha256.is_some(), *hashes, "{name}");
    }
}

/// A source that counts the bytes read from it.
struct Counting(Vec<u8>, std::sync::atomic::AtomicU64);

impl ReadAt for Counting {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.1
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.0.read_exact_at(buf, offset)
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// Three disks as one recipe makes them: the same big "root" extent (one
/// source), the same GPT bytes (equal, built separately), and each its own
/// "boot" bytes; one disk lacks a piece the others have. `write_disks`
/// writes every sink exactly as `write_images` of its own disk does, and
/// reads the shared root once per reader (the grain stage has its own). The VMDKs and GCE tar.gz files, whose grains
/// the tee deflates once for all of them, are the same as each written
/// alone (with another thread count).
#[test]
fn write_disks_matches_write_images_per_disk_and_reads_shared_extents_once() {
    let root = Arc::new(Counting(pattern(7, 6 * MIB as usize), Default::default()));
    let disk = |boot: u64, extra: bool| {
        let mut b = VirtualDiskBuilder::new(64 * MIB);
        b.bytes(0, pattern(1, 4096)); // equal bytes, separate allocations
        b.bytes(MIB, pattern(boot, 3 * 4096)); // differs per disk
        if extra {
            b.bytes(2 * MIB, pattern(8, 512));
        }
        let src: Arc<dyn ReadAt> = root.clone();
        b.source(8 * MIB, 6 * MIB, src, 0);
        b.build().expect("disk")
    };
    let disks = [disk(4, true), disk(6, false), disk(4, true)];
    let refs: Vec<&VirtualDisk> = disks.iter().collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (one, all) = (tmp.path().join("one"), tmp.path().join("all"));
    std::fs::create_dir_all(&one).expect("mkdir");
    std::fs::create_dir_all(&all).expect("mkdir");
    let seeded = WriteOptions {
        seed: Some([7u8; 32]),
        ..Default::default()
    };
    let specs: Vec<(String, Format, WriteOptions, usize)> = (0..3)
        .flat_map(|d| {
            [
                (
                    format!("d{d}.qcow2"),
                    Format::Qcow2,
                    WriteOptions::default(),
                    d,
                ),
                (format!("d{d}.vhdx"), Format::Vhdx, seeded.clone(), d),
                (format!("d{d}.vmdk"), Format::Vmdk, threads(1 + d), d),
                (format!("d{d}.tar.gz"), Format::Raw, threads(3 - d), d),
            ]
        })
        .collect();
    fn threads(n: usize) -> WriteOptions {
        WriteOptions {
            threads: Some(n),
            ..Default::default()
        }
    }
    fn spec(s: &(String, Format, WriteOptions, usize)) -> (&str, Format, WriteOptions) {
        (s.0.as_str(), s.1, s.2.clone())
    }
    let single: Vec<ImageSummary> = specs
        .iter()
        .map(|s| {
            write_images(&disks[s.3], sinks(&one, &[spec(s)]))
                .expect("one")
                .remove(0)
        })
        .collect();
    root.1.store(0, std::sync::atomic::Ordering::Relaxed);
    let tagged: Vec<(usize, Box<dyn ImageSink>)> = specs
        .iter()
        .map(|s| (s.3, sinks(&all, &[spec(s)]).remove(0)))
        .collect();
    let together = write_disks(&refs, tagged).expect("write_disks");
    assert_eq!(single, together);
    for s in &specs {
        assert!(
            std::fs::read(one.join(&s.0)).expect("read")
                == std::fs::read(all.join(&s.0)).expect("read"),
            "{}: differs from its single write",
            s.0
        );
    }
    assert_eq!(
        root.1.load(std::sync::atomic::Ordering::Relaxed),
        2 * 6 * MIB,
        "the shared root is read once for the plain sinks, once for the grain stage"
    );
    // The root and the GPT bytes once, disk 1's boot bytes, disks 0 and 2's shared ones, the extra once.
    assert_eq!(shared_data_len(&refs), 4096 + 2 * 3 * 4096 + 512 + 6 * MIB);
    // Without grain sinks there is one reader: the root is read once.
    root.1.store(0, std::sync::atomic::Ordering::Relaxed);
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let tagged: Vec<(usize, Box<dyn ImageSink>)> = specs
        .iter()
        .filter(|s| matches!(s.1, Format::Qcow2 | Format::Vhdx))
        .map(|s| (s.3, sinks(&plain, &[spec(s)]).remove(0)))
        .collect();
    write_disks(&refs, tagged).expect("write_disks");
    assert_eq!(root.1.load(std::sync::atomic::Ordering::Relaxed), 6 * MIB);
}

#[test]
fn hashes_cover_holes_of_sparse_outputs() {
    if !require_tool("sha256sum") {
        return;
    }
    // Almost all hole: the hash must still cover every zero byte.
    let mut b = VirtualDiskBuilder::new(256 * MIB);
    b.bytes(100 * MIB + 5, pattern(9, 1000));
    let disk = b.build().expect("disk");
    let tmp = tempfile::tempdir().expect("tempdir");
    let specs = [
        ("d.raw", Format::Raw, WriteOptions::default()),
        ("d.qcow2", Format::Qcow2, WriteOptions::default()),
    ];
    let sums = write_images(&disk, sinks(tmp.path(), &specs)).expect("write");
    for ((name, _, _), s) in specs.iter().zip(sums) {
        let h = s.sha256.expect("front-to-back writer");
        assert_eq!(hex(&h), sha256sum(&tmp.path().join(name)), "{name}");
    }
}

/// A sink that fails on its `n`th `write_data`.
struct Failing(usize);

impl ImageSink for Failing {
    fn begin(&mut self, _: u64, _: &[Range<u64>]) -> imgbuild_formats::Result<()> {
        Ok(())
    }
    fn write_data(&mut self, offset: u64, _: &[u8]) -> imgbuild_formats::Result<()> {
        if self.0 == 0 {
            return Err(Error::io(
                format!("test sink fails at {offset}"),
                io::ErrorKind::Other.into(),
            ));
        }
        self.0 -= 1;
        Ok(())
    }
    fn finish(self: Box<Self>) -> imgbuild_formats::Result<ImageSummary> {
        Ok(ImageSummary {
            member: None,
            format: Format::Raw,
            virtual_size: 0,
            file_size: 0,
            sha256: None,
        })
    }
}

#[test]
fn a_failing_sink_stops_the_pass_with_its_error() {
    let disk = disk(64 * MIB, &[(0, 40 * MIB as usize)]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut all = sinks(
        tmp.path(),
        &[("x.qcow2", Format::Qcow2, WriteOptions::default())],
    );
    all.push(Box::new(Failing(3)));
    let err = write_images(&disk, all).expect_err("the failing sink's error");
    assert!(
        err.to_string().contains("test sink fails at 3145728"),
        "{err}"
    );
}

/// A source whose reads fail past `ok` bytes.
struct BadSource {
    ok: u64,
}

impl ReadAt for BadSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.ok {
            return Err(io::Error::other("bad sector"));
        }
        buf.fill(0xa5);
        Ok(())
    }
    fn len(&self) -> u64 {
        u64::MAX
    }
}

#[test]
fn a_read_error_reaches_the_caller_with_several_sinks() {
    let mut b = VirtualDiskBuilder::new(64 * MIB);
    b.source(MIB, 16 * MIB, Arc::new(BadSource { ok: 5 * MIB }), 0);
    let disk = b.build().expect("disk");
    let tmp = tempfile::tempdir().expect("tempdir");
    let specs = [
        ("r.raw", Format::Raw, WriteOptions::default()),
        ("r.vhdx", Format::Vhdx, WriteOptions::default()),
    ];
    let err = write_images(&disk, sinks(tmp.path(), &specs)).expect_err("read error");
    assert!(
        err.to_string().contains(&format!("offset {}", 6 * MIB)),
        "{err}"
    );
}

#[test]
fn no_hash_is_computed_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let disk = disk(16 << 20, &[(4096, 70_000)]);
    for format in [Format::Raw, Format::Qcow2, Format::Vhdx, Format::Vhd] {
        let f = File::create(dir.path().join(format.name())).unwrap();
        let sink = format
            .sink(
                f,
                &WriteOptions {
                    seed: Some([1; 32]),
                    ..WriteOptions::default()
                },
            )
            .unwrap();
        let summary = write_images(&disk, vec![sink]).unwrap();
        assert_eq!(summary[0].sha256, None, "{format}");
    }
}
