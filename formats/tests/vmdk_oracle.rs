//! VMDK against qemu-img: our streamOptimized files pass `qemu-img check`
//! and read as the raw disk (`qemu-img compare`); our reader reads
//! qemu-img's streamOptimized and monolithicSparse files as the same disk;
//! the same disk and seed give the same bytes.

mod common_vhdx;

use std::process::Command;

use common_vhdx::*;
use imgbuild_formats::{Format, VirtualDisk, WriteOptions};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn qemu_check(img: &std::path::Path) {
    stdout_of(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(img),
    );
}

/// Writes `disk` as our VMDK and checks it with qemu-img and our reader.
fn check_ours(disk: &VirtualDisk) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, img) = write_pair(
        disk,
        Format::Vmdk,
        &WriteOptions::default(),
        dir.path(),
        "d",
    );
    assert_same_bytes(disk, open(&img, Format::Vmdk).as_ref());
    if require_tool("qemu-img") {
        qemu_check(&img);
        qemu_compare(&raw, &img, "vmdk");
        let info = stdout_of(
            Command::new("qemu-img")
                .args(["info", "-f", "vmdk"])
                .arg(&img),
        );
        assert!(info.contains("create type: streamOptimized"), "{info}");
        assert!(info.contains("compressed: true"), "{info}");
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
fn the_same_disk_and_seed_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = disk(10 * MIB, &[(MIB, 200_000)]);
    let opts = WriteOptions {
        seed: Some([7; 32]),
        ..WriteOptions::default()
    };
    write(&d, Format::Vmdk, &opts, &dir.path().join("a.vmdk"));
    write(&d, Format::Vmdk, &opts, &dir.path().join("b.vmdk"));
    assert!(
        std::fs::read(dir.path().join("a.vmdk")).unwrap()
            == std::fs::read(dir.path().join("b.vmdk")).unwrap()
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
