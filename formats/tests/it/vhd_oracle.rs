//! Fixed VHD against independent readers: qemu-img (compare, info with
//! `-f vpc`), vhdiinfo and libvhdi; and our reader against qemu-img's files.

use std::process::Command;
use std::sync::Arc;

use imgbuild_formats::vhd::{chs, VhdReader};
use imgbuild_formats::{DiskImage, Error, Format, VirtualDisk, WriteOptions};
use proptest::prelude::*;

use crate::common_vhdx::*;

const MIB: u64 = 1 << 20;

/// Our own reading of the footer fields that matter, independent of vhd.rs.
fn footer_fields(file: &[u8]) -> (u64, u32, u32, bool) {
    let f = &file[file.len() - 512..];
    let be32 = |at: usize| u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
    let current = u64::from_be_bytes(f[48..56].try_into().unwrap());
    let sum: u32 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &b)| u32::from(b))
        .sum();
    (current, be32(60), be32(16), be32(64) == !sum)
}

fn check_with_oracles(disk: &VirtualDisk, o: &WriteOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, img) = write_pair(disk, Format::Vhd, o, dir.path(), "v");
    let padded = disk.size().div_ceil(MIB) * MIB;
    let bytes = std::fs::read(&img).unwrap();
    let raw_bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len() as u64, padded + 512);
    assert!(
        bytes[..raw_bytes.len()] == raw_bytes[..],
        "data part equals the raw image"
    );
    assert!(
        bytes[raw_bytes.len()..padded as usize]
            .iter()
            .all(|&b| b == 0),
        "padding is zeros"
    );
    let (current, disk_type, data_offset_hi, sum_ok) = footer_fields(&bytes);
    assert_eq!(
        (current, disk_type, data_offset_hi, sum_ok),
        (padded, 2, u32::MAX, true)
    );
    let ours = open(&img, Format::Vhd);
    assert_eq!(ours.virtual_size(), padded);
    let mut padded_disk = imgbuild_formats::VirtualDiskBuilder::new(padded);
    padded_disk.disk(0, disk);
    assert_same_bytes(&padded_disk.build().unwrap(), ours.as_ref());
    if require_tool("qemu-img") {
        qemu_compare(&raw, &img, "vpc");
        assert_eq!(qemu_virtual_size(&img, "vpc"), padded);
    }
    if require_tool("vhdiinfo") {
        assert_eq!(vhdiinfo_media_size(&img), padded);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_sparse_disks_pass_qemu_and_vhdiinfo(
        sectors in 1u64..=60_000,
        raw in proptest::collection::vec((0.0f64..1.0, 1usize..200_000), 0..5),
        seeded in any::<bool>(),
    ) {
        let size = sectors * 512;
        let mut extents = Vec::new();
        let mut end = 0u64;
        let mut points: Vec<(u64, usize)> = raw.iter().map(|&(f, l)| ((f * size as f64) as u64, l)).collect();
        points.sort_unstable();
        for (s, l) in points {
            let s = s.max(end);
            let l = (l as u64).min(size.saturating_sub(s));
            if l > 0 {
                extents.push((s, l as usize));
                end = s + l;
            }
        }
        let o = WriteOptions { seed: seeded.then_some([4; 32]), ..Default::default() };
        check_with_oracles(&disk(size, &extents), &o);
    }
}

#[test]
fn libvhdi_reads_our_data() {
    if !require_pyvhdi() {
        return;
    }
    let d = disk(6 * MIB, &[(0, 512), (3 * MIB - 5, 10), (6 * MIB - 1, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let (_, img) = write_pair(&d, Format::Vhd, &WriteOptions::default(), dir.path(), "l");
    assert_eq!(libvhdi_read(&img), (d.size(), 512, disk_sha256(&d)));
}

/// qemu-img's own fixed VHDs: with force_size (Azure style) and without
/// (size rounded to CHS). Our reader gives the same bytes, and our CHS is
/// qemu's for a size that is exactly C·H·S.
#[test]
fn reads_qemu_img_fixed_vhds_and_matches_their_chs() {
    if !require_tool("qemu-img") {
        return;
    }
    let d = disk(
        20 * MIB,
        &[(0, 512), (7 * MIB, 3000), (20 * MIB - 100, 100)],
    );
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("s.raw");
    write(&d, Format::Raw, &WriteOptions::default(), &raw);
    for (i, o) in ["subformat=fixed,force_size", "subformat=fixed"]
        .iter()
        .enumerate()
    {
        let img = dir.path().join(format!("q{i}.vhd"));
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vpc", "-o", o])
                .arg(&raw)
                .arg(&img),
        );
        let r = open(&img, Format::Vhd);
        assert!(r.virtual_size() >= d.size(), "{o}");
        let mut grown = imgbuild_formats::VirtualDiskBuilder::new(r.virtual_size());
        grown.disk(0, &d);
        assert_same_bytes(&grown.build().unwrap(), r.as_ref());
        let f = std::fs::read(&img).unwrap();
        let f = &f[f.len() - 512..];
        let (c, h, s) = (u16::from_be_bytes([f[56], f[57]]), f[58], f[59]);
        if *o == "subformat=fixed" {
            // qemu grew the size to C·H·S sectors: our CHS of that size must agree.
            assert_eq!(chs(r.virtual_size() / 512), (c, h, s));
        }
    }
}

#[test]
fn writing_twice_gives_identical_bytes() {
    let d = disk(3 * MIB + 512, &[(10, 100), (3 * MIB, 512)]);
    let d2 = disk(3 * MIB + 512, &[(10, 101)]);
    let dir = tempfile::tempdir().unwrap();
    let bytes = |d: &VirtualDisk, seed, n: &str| {
        let p = dir.path().join(n);
        write(
            d,
            Format::Vhd,
            &WriteOptions {
                seed,
                ..Default::default()
            },
            &p,
        );
        std::fs::read(p).unwrap()
    };
    for seed in [Some([5u8; 32]), None] {
        assert!(
            bytes(&d, seed, "a") == bytes(&d, seed, "b"),
            "seed {seed:?}"
        );
    }
    let id = |b: Vec<u8>| b[b.len() - 512 + 68..b.len() - 512 + 84].to_vec();
    assert_ne!(id(bytes(&d, None, "c")), id(bytes(&d2, None, "d")));
    assert_ne!(
        id(bytes(&d, Some([1; 32]), "e")),
        id(bytes(&d, Some([2; 32]), "f"))
    );
}

#[test]
fn dynamic_vhds_are_refused() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dyn.vhd");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-f", "vpc", "-o", "subformat=dynamic"])
            .arg(&img)
            .arg("8M"),
    );
    let e = imgbuild_formats::open(&img, Some(Format::Vhd))
        .err()
        .expect("dynamic refused");
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

/// Flipped footer bytes (checksum kept right half the time) never panic.
#[test]
fn mutated_footers_never_panic() {
    let d = disk(MIB, &[(0, 10)]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.vhd");
    write(&d, Format::Vhd, &WriteOptions::default(), &p);
    let base = std::fs::read(p).unwrap();
    let foot = base.len() - 512;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..2000 {
        let mut b = base.clone();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[foot + (x % 512) as usize] ^= (x >> 32) as u8 | 1;
        if i % 2 == 0 {
            let sum: u32 = b[foot..]
                .iter()
                .enumerate()
                .filter(|(i, _)| !(64..68).contains(i))
                .map(|(_, &v)| u32::from(v))
                .sum();
            b[foot + 64..foot + 68].copy_from_slice(&(!sum).to_be_bytes());
        }
        if let Ok(r) = VhdReader::new(Arc::new(b)) {
            let mut buf = [0u8; 512];
            let _ = imgbuild_formats::ReadAt::read_exact_at(&r, &mut buf, 0);
            let _ = r.allocated();
        }
    }
}
