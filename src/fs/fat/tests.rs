use std::sync::Arc;

use imgbuild_formats::ExtentData;

use super::*;
use crate::tree::{Inode, Meta};

const MIB: u64 = 1 << 20;

fn opts(size: u64) -> FatOptions {
    FatOptions {
        size,
        volume_id: 0xCAFE_F00D,
        label: DEFAULT_LABEL.into(),
        epoch: 1_700_000_000,
        hidden_sectors: 0,
    }
}

fn tree() -> Tree {
    Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    })
}

fn file(bytes: &[u8]) -> Inode {
    Inode {
        meta: Meta::default(),
        kind: Kind::File(FileData::Bytes(bytes.into())),
    }
}

fn read(disk: &VirtualDisk, at: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    disk.read_at(at, &mut buf).unwrap();
    buf
}

#[test]
fn subdirectory_starts_with_dot_entries_and_first_level_dotdot_is_zero() {
    let mut t = tree();
    t.insert(b"EFI/BOOT/BOOTX64.EFI", file(b"MZ")).unwrap();
    let disk = write(&t, &opts(64 * MIB)).unwrap();
    let geo = Geometry::for_size(64 * MIB).unwrap();
    // Root at cluster 2 (label, EFI), EFI at 3, BOOT at 4, the file at 5.
    let root = read(&disk, geo.cluster_offset(2), 64);
    assert_eq!(&root[0..11], b"ESP        ");
    assert_eq!(root[11], 0x08, "volume label attribute");
    assert_eq!(&root[32..43], b"EFI        ");
    let efi = read(&disk, geo.cluster_offset(3), 96);
    assert_eq!(&efi[0..11], b".          ");
    assert_eq!(
        u16::from_le_bytes([efi[26], efi[27]]),
        3,
        ". points at itself"
    );
    assert_eq!(&efi[32..43], b"..         ");
    assert_eq!(
        u16::from_le_bytes([efi[58], efi[59]]),
        0,
        ".. of a first-level directory is 0"
    );
    let boot = read(&disk, geo.cluster_offset(4), 64);
    assert_eq!(
        u16::from_le_bytes([boot[58], boot[59]]),
        3,
        ".. of BOOT is EFI"
    );
    assert_eq!(read(&disk, geo.cluster_offset(5), 2), b"MZ");
}

#[test]
fn source_files_stay_references() {
    let backing: Arc<dyn imgbuild_formats::ReadAt> = Arc::new(vec![7u8; 10_000]);
    let mut t = tree();
    let data = FileData::Source {
        source: backing,
        offset: 100,
        len: 5000,
    };
    t.insert(
        b"big",
        Inode {
            meta: Meta::default(),
            kind: Kind::File(data),
        },
    )
    .unwrap();
    let disk = write(&t, &opts(64 * MIB)).unwrap();
    let sources: Vec<_> = disk
        .extents()
        .iter()
        .filter(|e| matches!(e.data, ExtentData::Source { offset: 100, .. }))
        .collect();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].len, 5000);
}

#[test]
fn fat_chains_and_fsinfo_count_what_is_used() {
    let mut t = tree();
    t.insert(b"a", file(&[1u8; 1500])).unwrap(); // 3 clusters of 512 bytes
    t.insert(b"empty", file(b"")).unwrap();
    let disk = write(&t, &opts(64 * MIB)).unwrap();
    let geo = Geometry::for_size(64 * MIB).unwrap();
    let fat = read(&disk, geo.fat_offset(0), 32);
    let entry = |i: usize| u32::from_le_bytes(fat[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((entry(0), entry(1), entry(2)), (0x0FFF_FFF8, EOC, EOC));
    assert_eq!((entry(3), entry(4), entry(5), entry(6)), (4, 5, EOC, 0));
    assert_eq!(
        read(&disk, geo.fat_offset(1), 32),
        fat,
        "second FAT mirrors the first"
    );
    let info = read(&disk, 512, 512);
    let free = u32::from_le_bytes(info[488..492].try_into().unwrap());
    assert_eq!(u64::from(free), geo.clusters - 4);
    assert_eq!(u32::from_le_bytes(info[492..496].try_into().unwrap()), 6);
}

#[test]
fn unsupported_kinds_name_the_path() {
    let mut t = tree();
    t.insert(
        b"EFI/link",
        Inode {
            meta: Meta::default(),
            kind: Kind::Symlink(b"x".to_vec()),
        },
    )
    .unwrap();
    let err = write(&t, &opts(64 * MIB)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/EFI/link: a FAT volume holds only directories and regular files, not a symbolic link"
    );
}

#[test]
fn names_equal_ignoring_case_are_refused() {
    let mut t = tree();
    t.insert(b"loader/Entries/a", file(b"")).unwrap();
    t.insert(b"loader/entries/b", file(b"")).unwrap();
    let err = write(&t, &opts(64 * MIB)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/loader: \"Entries\" and \"entries\" differ only in case, and FAT names ignore case"
    );
}

#[test]
fn labels_are_checked() {
    for bad in ["esp", "TWELVE CHARS", " LEAD"] {
        let o = FatOptions {
            label: bad.into(),
            ..opts(64 * MIB)
        };
        assert!(
            matches!(write(&tree(), &o), Err(FatError::InvalidLabel { .. })),
            "{bad:?}"
        );
    }
    let o = FatOptions {
        label: String::new(),
        ..opts(64 * MIB)
    };
    let disk = write(&tree(), &o).unwrap();
    assert_eq!(read(&disk, 71, 11), b"NO NAME    ");
}

#[test]
fn too_much_data_is_refused_with_the_numbers() {
    let mut t = tree();
    let big: Arc<dyn imgbuild_formats::ReadAt> = Arc::new(vec![0u8; 1]);
    let data = FileData::Source {
        source: big,
        offset: 0,
        len: 70 * MIB,
    };
    t.insert(
        b"huge",
        Inode {
            meta: Meta::default(),
            kind: Kind::File(data),
        },
    )
    .unwrap();
    assert!(matches!(
        write(&t, &opts(64 * MIB)),
        Err(FatError::NoSpace {
            cluster_size: 512,
            ..
        })
    ));
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let build = || {
        let mut t = tree();
        for i in 0..50 {
            t.insert(
                format!("dir{}/Long File Name {i}.txt", i % 3).as_bytes(),
                file(&[i; 700]),
            )
            .unwrap();
        }
        write(&t, &opts(64 * MIB)).unwrap()
    };
    let (a, b) = (build(), build());
    let ranges = |d: &VirtualDisk| d.allocated();
    assert_eq!(ranges(&a), ranges(&b));
    for r in a.allocated() {
        let len = usize::try_from(r.end - r.start).unwrap();
        assert_eq!(
            read(&a, r.start, len),
            read(&b, r.start, len),
            "range {r:?}"
        );
    }
}

#[test]
fn directory_past_65536_entries_is_refused() {
    // 22000 names of 2 long-name entries + 1 short entry each: 66000 slots
    // plus `.` and `..`.
    let mut t = tree();
    for i in 0..22_000 {
        t.insert(format!("big/a long file name {i:05}").as_bytes(), file(b""))
            .unwrap();
    }
    match write(&t, &opts(64 * MIB)) {
        Err(FatError::DirectoryTooLarge { path, entries }) => {
            assert_eq!((path.as_str(), entries), ("/big", 66_002))
        }
        other => panic!("expected DirectoryTooLarge, got {other:?}"),
    }
}

#[test]
fn hard_links_get_their_own_clusters() {
    // FAT has no hard links; two entries sharing clusters would be
    // cross-linked, so each name gets a copy (by reference, not in memory).
    let mut t = tree();
    t.insert(b"a", file(b"same")).unwrap();
    t.link(b"b", b"a").unwrap();
    let disk = write(&t, &opts(64 * MIB)).unwrap();
    let geo = Geometry::for_size(64 * MIB).unwrap();
    assert_eq!(read(&disk, geo.cluster_offset(3), 4), b"same");
    assert_eq!(read(&disk, geo.cluster_offset(4), 4), b"same");
}
