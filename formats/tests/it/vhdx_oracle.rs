//! VHDX against independent readers: qemu-img (check, compare), vhdiinfo and
//! libvhdi's Python bindings; and our reader against qemu-img's VHDX files.

use std::process::Command;
use std::sync::Arc;

use imgbuild_formats::vhdx::VhdxReader;
use imgbuild_formats::{DiskImage, Error, Format, ReadAt, Subformat, VirtualDisk, WriteOptions};
use proptest::prelude::*;

use crate::common_vhdx::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn opts(block_size: u32, subformat: Subformat, seed: Option<[u8; 32]>) -> WriteOptions {
    WriteOptions {
        block_size: Some(block_size),
        subformat,
        seed,
        ..Default::default()
    }
}

/// Writes `disk` as VHDX and checks it with every oracle that can read it.
fn check_with_oracles(disk: &VirtualDisk, o: &WriteOptions, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (raw, img) = write_pair(disk, Format::Vhdx, o, dir.path(), name);
    let ours = open(&img, Format::Vhdx);
    assert_same_bytes(disk, ours.as_ref());
    if require_tool("qemu-img") {
        let out = stdout_of(
            Command::new("qemu-img")
                .args(["check", "-f", "vhdx"])
                .arg(&img),
        );
        assert!(
            out.contains("No errors were found"),
            "{name}: qemu-img check: {out}"
        );
        qemu_compare(&raw, &img, "vhdx");
        assert_eq!(
            qemu_virtual_size(&img, "vhdx"),
            disk.size(),
            "{name}: qemu virtual size"
        );
    }
    if require_tool("vhdiinfo") {
        assert_eq!(
            vhdiinfo_media_size(&img),
            disk.size(),
            "{name}: vhdiinfo media size"
        );
    }
}

/// Random sparse disks: size a multiple of 512 but not of the block size,
/// up to 6 extents anywhere (including the last byte).
fn sparse_disk() -> impl Strategy<Value = VirtualDisk> {
    (
        1u64..=100_000,
        proptest::collection::vec((0.0f64..1.0, 1usize..300_000), 0..6),
    )
        .prop_map(|(sectors, raw)| {
            let size = sectors * 512;
            let mut extents: Vec<(u64, usize)> = Vec::new();
            let mut points: Vec<(u64, usize)> = raw
                .iter()
                .map(|&(f, len)| ((f * size as f64) as u64, len))
                .collect();
            points.sort_unstable();
            let mut end = 0;
            for (start, len) in points {
                let start = start.max(end);
                let len = (len as u64).min(size.saturating_sub(start));
                if len > 0 {
                    extents.push((start, len as usize));
                    end = start + len;
                }
            }
            disk(size, &extents)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_sparse_disks_pass_qemu_and_libvhdi(
        disk in sparse_disk(),
        big_blocks in any::<bool>(),
        fixed in any::<bool>(),
        seeded in any::<bool>(),
    ) {
        let bs = if big_blocks { 32 << 20 } else { 1 << 20 };
        let sub = if fixed { Subformat::Fixed } else { Subformat::Dynamic };
        let o = opts(bs, sub, seeded.then_some([7; 32]));
        check_with_oracles(&disk, &o, "random");
    }
}

/// Data just below and above 4 GiB and in the last bytes: with 1 MiB blocks
/// the chunk ratio is 4096, so block 4096 is BAT entry 4097 (a sector bitmap
/// entry sits at 4096). FreeBSD mkimg shipped the off-by-one this catches.
#[test]
fn disk_above_4gib_with_1mib_blocks_interleaves_bat() {
    let size = 4 * GIB + 5 * MIB + 3 * 512;
    let d = disk(
        size,
        &[
            (0, 4096),
            (4 * GIB - 700, 1400),
            (4 * GIB + 2 * MIB + 5, 70_000),
            (size - 1000, 1000),
        ],
    );
    check_with_oracles(&d, &opts(1 << 20, Subformat::Dynamic, None), "big1m");
}

/// Same with 32 MiB blocks (chunk ratio 128, also 4 GiB per chunk).
#[test]
fn disk_above_4gib_with_32mib_blocks_interleaves_bat() {
    let size = 4 * GIB + 70 * MIB + 1024;
    let d = disk(
        size,
        &[
            (4 * GIB - 10, 20),
            (4 * GIB + 40 * MIB, 4096),
            (size - 512, 512),
        ],
    );
    check_with_oracles(
        &d,
        &opts(32 << 20, Subformat::Dynamic, Some([1; 32])),
        "big32m",
    );
}

#[test]
fn fixed_vhdx_stores_every_block_contiguously() {
    let d = disk(10 * MIB + 512, &[(3 * MIB, 10)]);
    check_with_oracles(&d, &opts(1 << 20, Subformat::Fixed, None), "fixed");
    let dir = tempfile::tempdir().unwrap();
    let (_, img) = write_pair(
        &d,
        Format::Vhdx,
        &opts(1 << 20, Subformat::Fixed, None),
        dir.path(),
        "f",
    );
    let r = open(&img, Format::Vhdx);
    assert_eq!(r.allocated().unwrap(), vec![0..d.size()]);
    let facts = r.facts();
    assert!(
        facts.contains(&("subformat".into(), "fixed".into())),
        "{facts:?}"
    );
    assert!(
        facts.contains(&("present blocks".into(), "11".into())),
        "{facts:?}"
    );
}

#[test]
fn dynamic_vhdx_stores_only_touched_blocks() {
    let d = disk(64 * MIB, &[(MIB - 1, 2), (40 * MIB, 100)]);
    let dir = tempfile::tempdir().unwrap();
    let (_, img) = write_pair(
        &d,
        Format::Vhdx,
        &opts(1 << 20, Subformat::Dynamic, None),
        dir.path(),
        "d",
    );
    let r = open(&img, Format::Vhdx);
    assert_eq!(r.allocated().unwrap(), vec![0..2 * MIB, 40 * MIB..41 * MIB]);
    // Header section, log, 1 MiB BAT, 1 MiB metadata, then 3 blocks.
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 4 * MIB + 3 * MIB);
}

#[test]
fn logical_4096_sectors_read_by_libvhdi() {
    let d = disk(
        20 * MIB + 4096,
        &[(5, 5000), (17 * MIB, 9000), (20 * MIB, 4096)],
    );
    let o = WriteOptions {
        logical_sector_size: Some(4096),
        ..opts(1 << 20, Subformat::Dynamic, None)
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, img) = write_pair(&d, Format::Vhdx, &o, dir.path(), "4k");
    assert_same_bytes(&d, open(&img, Format::Vhdx).as_ref());
    if require_tool("vhdiinfo") {
        assert_eq!(vhdiinfo_media_size(&img), d.size());
    }
    if require_pyvhdi() {
        assert_eq!(libvhdi_read(&img), (d.size(), 4096, disk_sha256(&d)));
    }
    // 4096-byte sectors need a size that is a multiple of 4096.
    let bad = disk(20 * MIB + 512, &[]);
    let f = std::fs::File::create(dir.path().join("bad.vhdx")).unwrap();
    let sink = Format::Vhdx.sink(f, &o).unwrap();
    assert!(matches!(
        imgbuild_formats::write_images(&bad, vec![sink]),
        Err(Error::InvalidOption { .. })
    ));
}

#[test]
fn libvhdi_reads_our_512_sector_data() {
    if !require_pyvhdi() {
        return;
    }
    let d = disk(
        33 * MIB + 512,
        &[(0, 100), (MIB + 7, 3 << 20), (33 * MIB, 512)],
    );
    for (bs, sub) in [(1 << 20, Subformat::Dynamic), (32 << 20, Subformat::Fixed)] {
        let dir = tempfile::tempdir().unwrap();
        let (_, img) = write_pair(&d, Format::Vhdx, &opts(bs, sub, None), dir.path(), "l");
        assert_eq!(
            libvhdi_read(&img),
            (d.size(), 512, disk_sha256(&d)),
            "{bs} {sub:?}"
        );
    }
}

#[test]
fn reads_qemu_img_vhdx_outputs() {
    if !require_tool("qemu-img") {
        return;
    }
    let d = disk(
        50 * MIB + 512,
        &[(0, 512), (9 * MIB - 3, 2 << 20), (50 * MIB, 512)],
    );
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    write(&d, Format::Raw, &WriteOptions::default(), &raw);
    for (i, o) in [
        "subformat=dynamic",
        "subformat=fixed",
        "subformat=fixed,block_state_zero=off",
        "block_size=1M",
    ]
    .iter()
    .enumerate()
    {
        let img = dir.path().join(format!("q{i}.vhdx"));
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vhdx", "-o", o])
                .arg(&raw)
                .arg(&img),
        );
        let r = open(&img, Format::Vhdx);
        assert_same_bytes(&d, r.as_ref());
        assert!(
            r.facts()
                .iter()
                .any(|(k, v)| k == "creator" && v.starts_with("QEMU")),
            "{o}"
        );
    }
}

#[test]
fn writing_twice_gives_identical_bytes() {
    let d = disk(9 * MIB + 512, &[(100, 5000), (8 * MIB, MIB as usize)]);
    let d2 = disk(9 * MIB + 512, &[(100, 5000), (8 * MIB, MIB as usize - 1)]);
    let dir = tempfile::tempdir().unwrap();
    let bytes = |d: &VirtualDisk, o: &WriteOptions, n: &str| {
        let p = dir.path().join(n);
        write(d, Format::Vhdx, o, &p);
        std::fs::read(p).unwrap()
    };
    for seed in [Some([3u8; 32]), None] {
        let o = opts(1 << 20, Subformat::Dynamic, seed);
        assert!(bytes(&d, &o, "a") == bytes(&d, &o, "b"), "seed {seed:?}");
    }
    // Content-derived GUIDs change with the content; seeded ones with the seed.
    let none = opts(1 << 20, Subformat::Dynamic, None);
    let id = |b: Vec<u8>| VhdxReader::new(Arc::new(b)).unwrap().disk_id();
    assert_ne!(id(bytes(&d, &none, "c")), id(bytes(&d2, &none, "d")));
    let seeded = |s| opts(1 << 20, Subformat::Dynamic, Some([s; 32]));
    assert_ne!(
        id(bytes(&d, &seeded(1), "e")),
        id(bytes(&d, &seeded(2), "f"))
    );
}

// --- hostile input: every validated field gives an error, never a panic ---

fn valid_file() -> Vec<u8> {
    let d = disk(4 * MIB, &[(0, 10), (3 * MIB, 10)]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.vhdx");
    write(
        &d,
        Format::Vhdx,
        &opts(1 << 20, Subformat::Dynamic, Some([9; 32])),
        &p,
    );
    std::fs::read(p).unwrap()
}

fn le64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recomputes the CRC-32C of the structure of `len` bytes at `at`.
fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    b[at + 4..at + 8].fill(0);
    let crc = crc32c::crc32c(&b[at..at + len]);
    b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fn read(b: Vec<u8>) -> Result<VhdxReader, Error> {
    VhdxReader::new(Arc::new(b))
}

const H1: usize = 64 << 10;
const H2: usize = 128 << 10;
const BAT: usize = 2 << 20;
const META: usize = 3 << 20;

#[test]
fn valid_file_layout_is_as_documented() {
    let b = valid_file();
    // BAT entry 0: FULLY_PRESENT at 4 MiB; entry 3 at 5 MiB; 1 and 2 ZERO with offset 0.
    assert_eq!(le64_at(&b, BAT), (4 << 20) | 6);
    assert_eq!(le64_at(&b, BAT + 8), 2);
    assert_eq!(le64_at(&b, BAT + 24), (5 << 20) | 6);
    assert!(read(b).is_ok());
}

#[test]
fn rejects_bad_header_checksums() {
    let mut b = valid_file();
    b[H1 + 100] ^= 1;
    assert!(
        read(b.clone()).is_ok(),
        "header 2 is still valid and current"
    );
    b[H2 + 100] ^= 1;
    assert!(matches!(read(b), Err(Error::BadChecksum { .. })));
}

#[test]
fn rejects_bad_region_table_checksums() {
    let mut b = valid_file();
    b[(192 << 10) + 50] ^= 1;
    assert!(read(b.clone()).is_ok(), "region table 2 is used");
    b[(256 << 10) + 50] ^= 1;
    assert!(matches!(read(b), Err(Error::BadChecksum { .. })));
}

#[test]
fn refuses_a_log_to_replay() {
    let mut b = valid_file();
    b[H2 + 48] = 1; // LogGuid of the current header
    fix_crc(&mut b, H2, 4096);
    let e = read(b).err().expect("must fail");
    assert!(
        matches!(e, Error::Unsupported { .. }) && e.to_string().contains("log replay"),
        "{e}"
    );
}

#[test]
fn rejects_bat_offset_past_eof_and_overlaps() {
    let mut b = valid_file();
    b[BAT..BAT + 8].copy_from_slice(&((1000u64 << 20) | 6).to_le_bytes());
    assert!(matches!(read(b), Err(Error::Corrupt { .. })));
    let mut b = valid_file();
    let e3 = le64_at(&b, BAT + 24);
    b[BAT..BAT + 8].copy_from_slice(&e3.to_le_bytes());
    assert!(
        matches!(read(b), Err(Error::Corrupt { .. })),
        "two blocks at one offset"
    );
    let mut b = valid_file();
    b[BAT..BAT + 8].copy_from_slice(&((3u64 << 20) | 6).to_le_bytes());
    assert!(
        matches!(read(b), Err(Error::Corrupt { .. })),
        "block over the metadata region"
    );
    let mut b = valid_file();
    b.truncate(5 << 20);
    assert!(
        matches!(read(b), Err(Error::Corrupt { .. })),
        "truncated: last block crosses EOF"
    );
}

#[test]
fn rejects_huge_virtual_size_and_bad_block_size() {
    // Items: File Parameters at META+64K, Virtual Disk Size at META+64K+8.
    let mut b = valid_file();
    b[META + 0x10008..META + 0x10010].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(read(b), Err(Error::Corrupt { .. })));
    let mut b = valid_file();
    b[META + 0x10008..META + 0x10010].copy_from_slice(&(64u64 << 40).to_le_bytes());
    assert!(
        read(b).is_err(),
        "64 TB disk needs a bigger BAT than the file has"
    );
    for bs in [0u32, 3 << 20, 1 << 31] {
        let mut b = valid_file();
        b[META + 0x10000..META + 0x10004].copy_from_slice(&bs.to_le_bytes());
        assert!(
            matches!(read(b), Err(Error::Corrupt { .. })),
            "block size {bs}"
        );
    }
}

#[test]
fn rejects_truncated_and_foreign_files() {
    assert!(matches!(read(vec![0; 100]), Err(Error::Truncated { .. })));
    assert!(matches!(read(vec![0; 1 << 20]), Err(Error::Corrupt { .. })));
    let mut b = valid_file();
    b.truncate(3 << 20);
    assert!(read(b).is_err());
}

/// A cheap deterministic fuzz pass in the unit suite (the cargo-fuzz target
/// `vhdx_reader` goes further): flipped bytes in every structure must give
/// an error or a readable disk, never a panic.
#[test]
fn mutated_files_never_panic() {
    let base = valid_file();
    let spots = [
        0usize,
        H1,
        H2,
        192 << 10,
        256 << 10,
        BAT,
        META,
        META + 0x10000,
    ];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..1000 {
        let mut b = base.clone();
        for _ in 0..1 + i % 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = spots[(x % spots.len() as u64) as usize] + ((x >> 8) % 128) as usize;
            b[at] ^= (x >> 40) as u8 | 1;
        }
        if i % 3 == 0 {
            // Keep checksums right so the mutation reaches the field checks.
            for (at, len) in [
                (H1, 4096),
                (H2, 4096),
                (192 << 10, 64 << 10),
                (256 << 10, 64 << 10),
            ] {
                fix_crc(&mut b, at, len);
            }
        }
        if let Ok(r) = read(b) {
            let mut buf = vec![0u8; 4096];
            let len = r.virtual_size().min(8 << 20);
            let mut at = 0;
            while at + 4096 <= len {
                let _ = r.read_exact_at(&mut buf, at);
                at += 1 << 20;
            }
            let _ = r.allocated();
        }
    }
}
