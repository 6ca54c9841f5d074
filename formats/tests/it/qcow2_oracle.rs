//! qcow2 against independent oracles: `qemu-img check` / `compare` /
//! `convert` and libqcow's `qcowinfo`; our reader reading qemu's images.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild_formats::raw::RawWriter;
use imgbuild_formats::{
    write_images, Compression, DiskImage, Format, ImageSink, VirtualDisk, WriteOptions,
};
use proptest::prelude::*;

use crate::common::{
    piece_bytes, qemu_check, qemu_compare, require_tool, run_ok, sparse_disk, Piece,
};

const MIB: u64 = 1 << 20;

fn opts(cluster_size: u32, compression: Option<Compression>, threads: usize) -> WriteOptions {
    WriteOptions {
        cluster_size: Some(cluster_size),
        compression,
        threads: Some(threads),
        ..Default::default()
    }
}

/// Writes `disk` as raw and qcow2 in one pass (the tee); returns both paths.
fn write_raw_and_qcow2(disk: &VirtualDisk, o: &WriteOptions, dir: &Path) -> (PathBuf, PathBuf) {
    let (raw, qcow2) = (dir.join("disk.raw"), dir.join("disk.qcow2"));
    let sinks: Vec<Box<dyn ImageSink>> = vec![
        Box::new(RawWriter::new(File::create(&raw).unwrap())),
        Format::Qcow2
            .sink(File::create(&qcow2).unwrap(), o)
            .unwrap(),
    ];
    let summaries = write_images(disk, sinks).unwrap();
    assert_eq!(
        summaries[1].file_size,
        std::fs::metadata(&qcow2).unwrap().len(),
        "summary file size"
    );
    (raw, qcow2)
}

fn write_qcow2(disk: &VirtualDisk, o: &WriteOptions, path: &Path) {
    write_images(
        disk,
        vec![Format::Qcow2.sink(File::create(path).unwrap(), o).unwrap()],
    )
    .unwrap();
}

/// Our reader returns `disk`'s bytes (the virtual size rounded up to whole
/// sectors, as qemu does). Windows of the disk that neither side allocates
/// are spot-checked at both ends; all others are compared whole.
fn assert_reads_back(image: &dyn DiskImage, disk: &VirtualDisk) {
    assert_eq!(
        image.virtual_size(),
        disk.size().next_multiple_of(512),
        "virtual size"
    );
    let ours = image.allocated().unwrap();
    for e in disk.extents() {
        let mut bytes = vec![0u8; e.len as usize];
        e.read(0, &mut bytes).unwrap();
        let covered = ours
            .iter()
            .any(|r| r.start <= e.offset && e.offset + e.len <= r.end);
        assert!(
            covered || bytes.iter().all(|&b| b == 0),
            "extent {:?} not inside allocated {ours:?}",
            e.range()
        );
    }
    let busy = |start: u64, end: u64| {
        disk.extents()
            .iter()
            .map(|e| e.range())
            .chain(ours.iter().cloned())
            .any(|r| r.start < end && start < r.end)
    };
    let (mut got, mut want) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut at = 0;
    let size = image.virtual_size();
    while at < size {
        let n = (size - at).min(MIB);
        let spans: Vec<(u64, u64)> = if busy(at, at + n) {
            vec![(at, n)]
        } else {
            vec![(at, n.min(512)), (at + n - n.min(512), n.min(512))]
        };
        for (s, len) in spans {
            let len = len as usize;
            image.read_exact_at(&mut got[..len], s).unwrap();
            want[..len].fill(0);
            let inside = (disk.size().saturating_sub(s)).min(len as u64) as usize;
            if inside > 0 {
                disk.read_at(s, &mut want[..inside]).unwrap();
            }
            assert!(
                got[..len] == want[..len],
                "bytes differ in {len} bytes at {s}"
            );
        }
        at += n;
    }
}

/// The whole oracle round: qemu-img check + compare, then our reader.
fn round_trip(disk: &VirtualDisk, o: &WriteOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, qcow2) = write_raw_and_qcow2(disk, o, dir.path());
    qemu_check(&qcow2, "qcow2");
    qemu_compare(&raw, &qcow2, "qcow2");
    let image = imgbuild_formats::open(&qcow2, None).unwrap();
    assert_eq!(image.format(), Format::Qcow2);
    assert_reads_back(&*image, disk);
}

fn compressions() -> [Option<Compression>; 3] {
    [None, Some(Compression::Zlib), Some(Compression::Zstd)]
}

fn disk_strategy() -> impl Strategy<Value = VirtualDisk> {
    prop_oneof![Just(0u64), 1..64 * MIB]
        .prop_flat_map(|size| {
            let piece = (0..=size, 1..300_000u64, any::<u32>())
                .prop_map(|(offset, len, seed)| Piece { offset, len, seed });
            (Just(size), proptest::collection::vec(piece, 0..8))
        })
        .prop_map(|(size, pieces)| sparse_disk(size, &pieces))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn random_sparse_disks_pass_qemu_img(
        disk in disk_strategy(),
        cluster_size in prop_oneof![Just(512u32), Just(4096), Just(65536), Just(2 << 20)],
        compression in 0..3usize,
    ) {
        if !require_tool("qemu-img") {
            return Ok(());
        }
        round_trip(&disk, &opts(cluster_size, compressions()[compression], 2));
    }
}

#[test]
fn data_near_the_end_of_a_disk_over_4_gib() {
    if !require_tool("qemu-img") {
        return;
    }
    // Not a multiple of any cluster size, and past 2^32 so 32-bit offsets would wrap.
    let size = 5 * 1024 * MIB + 12345;
    let pieces = [
        Piece {
            offset: 0,
            len: 4096,
            seed: 2,
        },
        Piece {
            offset: (4 << 30) + 100,
            len: 70_000,
            seed: 3,
        },
        Piece {
            offset: size - 100_000,
            len: 100_000,
            seed: 4,
        },
    ];
    let disk = sparse_disk(size, &pieces);
    for c in compressions() {
        round_trip(&disk, &opts(65536, c, 2));
    }
}

#[test]
fn empty_disks_and_a_last_byte_only_disk() {
    if !require_tool("qemu-img") {
        return;
    }
    let last = sparse_disk(
        3 * MIB + 7,
        &[Piece {
            offset: 3 * MIB + 6,
            len: 1,
            seed: 4,
        }],
    );
    for disk in [sparse_disk(0, &[]), sparse_disk(10 * MIB, &[]), last] {
        for c in compressions() {
            for cs in [512, 65536] {
                round_trip(&disk, &opts(cs, c, 1));
            }
        }
    }
}

/// A mixed disk used by the convert and determinism tests.
fn mixed_disk() -> VirtualDisk {
    let pieces: Vec<Piece> = (0..12u32)
        .map(|i| Piece {
            offset: u64::from(i) * 3 * MIB + u64::from(i) * 4097,
            len: 700_000,
            seed: i,
        })
        .collect();
    // qemu-img rounds a raw source up to whole sectors, so keep this one a
    // multiple of 512 (but not of any larger cluster size).
    sparse_disk(40 * MIB + 3 * 512, &pieces)
}

#[test]
fn reader_reads_what_qemu_img_convert_writes() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = mixed_disk();
    let raw = dir.path().join("src.raw");
    write_images(
        &disk,
        vec![Box::new(RawWriter::new(File::create(&raw).unwrap()))],
    )
    .unwrap();
    let variants: [(&str, &[&str]); 6] = [
        ("plain", &[]),
        ("zlib", &["-c"]),
        ("zstd", &["-c", "-o", "compression_type=zstd"]),
        ("v2", &["-o", "compat=0.10"]),
        ("v2-zlib-4k", &["-c", "-o", "compat=0.10,cluster_size=4096"]),
        (
            "512b-zstd",
            &["-c", "-o", "cluster_size=512,compression_type=zstd"],
        ),
    ];
    for (name, args) in variants {
        let out = dir.path().join(format!("{name}.qcow2"));
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .args(args)
                .arg(&raw)
                .arg(&out),
        );
        let image = imgbuild_formats::open(&out, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_reads_back(&*image, &disk);
        let facts = image.facts();
        let compressed = facts
            .iter()
            .find(|(k, _)| k == "compressed clusters")
            .map(|(_, v)| v.as_str());
        if args.contains(&"-c") {
            assert_ne!(
                compressed,
                Some("0"),
                "{name}: qemu-img -c compressed nothing? {facts:?}"
            );
        } else {
            assert_eq!(compressed, Some("0"), "{name}: {facts:?}");
        }
    }
}

#[test]
fn output_is_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let disk = mixed_disk();
    for c in compressions() {
        let files: Vec<Vec<u8>> = [1usize, 3, 3]
            .iter()
            .enumerate()
            .map(|(i, &threads)| {
                let path = dir.path().join(format!("{i}.qcow2"));
                write_qcow2(&disk, &opts(65536, c, threads), &path);
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(
            files[0] == files[1] && files[1] == files[2],
            "{c:?}: outputs differ"
        );
    }
}

#[test]
fn compressed_output_is_smaller_and_holds_incompressible_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let disk = mixed_disk();
    let plain = dir.path().join("plain.qcow2");
    write_qcow2(&disk, &opts(65536, None, 1), &plain);
    for c in [Compression::Zlib, Compression::Zstd] {
        let path = dir.path().join("c.qcow2");
        write_qcow2(&disk, &opts(65536, Some(c), 2), &path);
        assert!(
            std::fs::metadata(&path).unwrap().len() < std::fs::metadata(&plain).unwrap().len(),
            "{c:?}"
        );
        let image = imgbuild_formats::open(&path, None).unwrap();
        let facts = image.facts();
        let get = |k: &str| {
            facts
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.parse::<u64>().unwrap())
                .unwrap()
        };
        // Odd pieces are noise: their clusters are stored uncompressed.
        assert!(
            get("compressed clusters") > 0
                && get("compressed clusters") < get("allocated clusters"),
            "{facts:?}"
        );
    }
}

#[test]
fn qcowinfo_reads_our_images() {
    if !require_tool("qcowinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = mixed_disk();
    // libqcow 20201213 predates zstd (it refuses incompatible bit 3), so plain and zlib only.
    for c in [None, Some(Compression::Zlib)] {
        let path = dir.path().join("q.qcow2");
        write_qcow2(&disk, &opts(65536, c, 2), &path);
        let out = run_ok(Command::new("qcowinfo").arg(&path));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Format version\t\t: 3"), "{c:?}: {text}");
        assert!(
            text.contains(&format!("({} bytes)", disk.size())),
            "{c:?}: {text}"
        );
    }
}

/// The `ImageSink` contract: bytes of an allocated range that no
/// `write_data` call covers are zero. Feeds raw and qcow2 the same calls.
#[test]
fn partial_writes_inside_allocated_ranges_read_as_zero() {
    if !require_tool("qemu-img") {
        return;
    }
    let size = 9 * MIB;
    let allocated = [0..3 * MIB, 5 * MIB..9 * MIB];
    let writes: [(u64, Vec<u8>); 3] = [
        (2 * MIB + 5, piece_bytes(10, 4)),
        (5 * MIB + 70_000, piece_bytes(3 * MIB as usize, 3)),
        (9 * MIB - 1, vec![0x5a]),
    ];
    for c in compressions() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, qcow2) = (dir.path().join("d.raw"), dir.path().join("d.qcow2"));
        let mut sinks: Vec<Box<dyn ImageSink>> = vec![
            Box::new(RawWriter::new(File::create(&raw).unwrap())),
            Format::Qcow2
                .sink(File::create(&qcow2).unwrap(), &opts(65536, c, 2))
                .unwrap(),
        ];
        for s in &mut sinks {
            s.begin(size, &allocated).unwrap();
            for (at, data) in &writes {
                s.write_data(*at, data).unwrap();
            }
        }
        for s in sinks {
            s.finish().unwrap();
        }
        qemu_check(&qcow2, "qcow2");
        qemu_compare(&raw, &qcow2, "qcow2");
        let image = imgbuild_formats::open(&qcow2, None).unwrap();
        let mut got = vec![0xffu8; 16];
        image.read_exact_at(&mut got, 2 * MIB + 4096).unwrap();
        assert_eq!(
            got, [0u8; 16],
            "{c:?}: unwritten bytes of an allocated cluster"
        );
    }
}

#[test]
fn piece_generator_makes_both_kinds_of_data() {
    // Guards the generator the other tests rely on: even seeds compress, odd ones do not.
    let text = piece_bytes(65536, 2);
    let noise = piece_bytes(65536, 3);
    let distinct = |b: &[u8]| b.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct(&text) < 40);
    assert!(distinct(&noise) > 250);
}
