//! VMDK against qemu-img: our streamOptimized and monolithicSparse files
//! pass `qemu-img check` and read as the raw disk (`qemu-img compare`); our
//! reader reads qemu-img's streamOptimized and monolithicSparse files as the
//! same disk; the same disk and seed give the same bytes, whatever the
//! number of threads.

use std::process::Command;

use imgbuild_formats::{Format, VirtualDisk, VmdkSubformat, WriteOptions};
use proptest::prelude::*;

use crate::common_vhdx::*;

const MIB: u64 = 1 << 20;

const SUBFORMATS: [VmdkSubformat; 2] = [
    VmdkSubformat::StreamOptimized,
    VmdkSubformat::MonolithicSparse,
];

/// Writes `disk` as our VMDK in both subformats and checks each with
/// qemu-img and our reader.
fn check_ours(disk: &VirtualDisk) {
    for subformat in SUBFORMATS {
        check_subformat(disk, subformat);
    }
}

fn check_subformat(disk: &VirtualDisk, subformat: VmdkSubformat) {
    let dir = tempfile::tempdir().unwrap();
    let opts = WriteOptions {
        vmdk_subformat: subformat,
        ..WriteOptions::default()
    };
    let (raw, img) = write_pair(disk, Format::Vmdk, &opts, dir.path(), "d");
    assert_same_bytes(disk, open(&img, Format::Vmdk).as_ref());
    if require_tool("qemu-img") {
        qemu_check(&img, "vmdk");
        qemu_compare(&raw, &img, "vmdk");
        let info = stdout_of(
            Command::new("qemu-img")
                .args(["info", "-f", "vmdk"])
                .arg(&img),
        );
        let create_type = format!("create type: {}", subformat.name());
        assert!(info.contains(&create_type), "{subformat:?}: {info}");
        // qemu-img names compression only when the extent has it.
        let compressed = subformat == VmdkSubformat::StreamOptimized;
        assert_eq!(
            info.contains("compressed: true"),
            compressed,
            "{subformat:?}: {info}"
        );
        assert_eq!(qemu_virtual_size(&img, "vmdk"), disk.size());
    }
}

#[test]
fn a_sparse_disk_with_data_across_grain_tables_passes_qemu() {
    // Data at the start, across a grain boundary, in a later 32 MiB grain
    // table, and in the last, partial grain.
    let size = 100 * MIB + 4096;
    check_ours(&disk(
        size,
        &[
            (0, 4096),
            (65_536 - 100, 300),
            (40 * MIB, 3 * MIB as usize),
            (size - 512, 512),
        ],
    ));
}

#[test]
fn an_empty_disk_passes_qemu() {
    check_ours(&disk(64 * MIB, &[]));
}

#[test]
fn the_same_disk_and_seed_give_the_same_bytes_with_1_or_3_threads() {
    let dir = tempfile::tempdir().unwrap();
    let d = disk(80 * MIB, &[(MIB, 200_000), (3 * MIB, 9 * MIB as usize)]);
    for subformat in SUBFORMATS {
        let opts = |threads| WriteOptions {
            seed: Some([7; 32]),
            threads: Some(threads),
            vmdk_subformat: subformat,
            ..WriteOptions::default()
        };
        write(&d, Format::Vmdk, &opts(1), &dir.path().join("a.vmdk"));
        write(&d, Format::Vmdk, &opts(3), &dir.path().join("b.vmdk"));
        assert!(
            std::fs::read(dir.path().join("a.vmdk")).unwrap()
                == std::fs::read(dir.path().join("b.vmdk")).unwrap(),
            "{subformat:?}"
        );
    }
}

#[test]
fn monolithic_sparse_stores_only_grains_with_data() {
    // Two grains with data (one of them only partly) in 64 MiB: the file is
    // the metadata (overHead, 128-sector aligned) plus exactly two grains.
    let dir = tempfile::tempdir().unwrap();
    let d = disk(64 * MIB, &[(10 * MIB, 65_536), (40 * MIB + 100, 10)]);
    let opts = WriteOptions {
        vmdk_subformat: VmdkSubformat::MonolithicSparse,
        ..WriteOptions::default()
    };
    let summary = write(&d, Format::Vmdk, &opts, &dir.path().join("s.vmdk"));
    assert_eq!(summary.file_size, 128 * 512 + 2 * 65_536);
    let facts = open(&dir.path().join("s.vmdk"), Format::Vmdk).facts();
    assert!(
        facts
            .iter()
            .any(|(k, v)| k == "create type" && v == "monolithicSparse"),
        "{facts:?}"
    );
}

#[test]
fn our_reader_reads_qemu_img_s_stream_optimized_and_monolithic_sparse() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = disk(
        70 * MIB,
        &[
            (0, 70_000),
            (33 * MIB, 2 * MIB as usize),
            (70 * MIB - 4096, 4096),
        ],
    );
    let raw = dir.path().join("d.raw");
    write(&d, Format::Raw, &WriteOptions::default(), &raw);
    for subformat in ["streamOptimized", "monolithicSparse"] {
        let img = dir.path().join(format!("{subformat}.vmdk"));
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
                .arg(format!("subformat={subformat}"))
                .arg(&raw)
                .arg(&img),
        );
        let ours = open(&img, Format::Vmdk);
        assert_same_bytes(&d, ours.as_ref());
        let facts = ours.facts();
        assert!(
            facts
                .iter()
                .any(|(k, v)| k == "create type" && v == subformat),
            "{facts:?}"
        );
        // Detected from the magic, not the name.
        assert_eq!(
            imgbuild_formats::detect(&std::fs::File::open(&img).unwrap()).unwrap(),
            Format::Vmdk
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_sparse_disks_pass_qemu(
        sectors in 1u64..=150_000,
        raw in proptest::collection::vec((0.0f64..1.0, 1usize..300_000), 0..5),
    ) {
        let size = sectors * 512;
        let mut points: Vec<(u64, usize)> =
            raw.iter().map(|&(f, l)| ((f * size as f64) as u64, l)).collect();
        points.sort_unstable();
        let mut extents = Vec::new();
        let mut end = 0u64;
        for (s, l) in points {
            if s < end || s >= size {
                continue;
            }
            let l = l.min((size - s) as usize);
            extents.push((s, l));
            end = s + l as u64;
        }
        check_ours(&disk(size, &extents));
    }
}

/// A cheap deterministic fuzz pass in the unit suite (the cargo-fuzz target
/// `vmdk_reader` goes further): flipped bytes in the header, the descriptor,
/// the grain tables and directory (both subformats) and the compressed
/// grains must give an error or a readable disk, never a panic.
#[test]
fn mutated_vmdks_never_panic() {
    use std::sync::Arc;

    use imgbuild_formats::vmdk::VmdkReader;
    use imgbuild_formats::{DiskImage, ReadAt};

    let disk = disk(
        8 * MIB,
        &[(0, 70_000), (3 * MIB + 17, 200_000), (8 * MIB - 4096, 4096)],
    );
    let dir = tempfile::tempdir().unwrap();
    for subformat in SUBFORMATS {
        let opts = WriteOptions {
            vmdk_subformat: subformat,
            ..WriteOptions::default()
        };
        let path = dir.path().join(format!("{}.vmdk", subformat.name()));
        write(&disk, Format::Vmdk, &opts, &path);
        let base = std::fs::read(&path).unwrap();
        // Unmutated, it reads back.
        VmdkReader::from_reader(Arc::new(base.clone())).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..1500 {
            let mut b = base.clone();
            for _ in 0..1 + i % 4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half the flips in the first 64 KiB (header, descriptor,
                // tables), half anywhere (grains, footer, markers).
                let span = if x & 1 == 0 {
                    b.len().min(64 << 10)
                } else {
                    b.len()
                };
                let at = ((x >> 8) % span as u64) as usize;
                b[at] ^= (x >> 40) as u8 | 1;
            }
            if i % 7 == 0 {
                b.truncate(((x >> 20) % b.len() as u64) as usize);
            }
            let Ok(r) = VmdkReader::from_reader(Arc::new(b)) else {
                continue;
            };
            let _ = r.facts();
            if let Ok(ranges) = r.allocated() {
                let mut buf = vec![0u8; 64 << 10];
                for range in ranges.iter().take(64) {
                    let n = (range.end - range.start).min(buf.len() as u64) as usize;
                    let _ = r.read_exact_at(&mut buf[..n], range.start);
                }
            }
        }
    }
}
