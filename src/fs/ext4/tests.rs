//! Unit tests of the whole writer (the e2fsck/debugfs oracles are in
//! tests/ext4_oracle.rs).

use std::sync::Arc;

use super::*;
use crate::tree::{FileData, Inode, Kind, Meta, Timestamp};

fn meta(mode: u16) -> Meta {
    Meta {
        mode,
        mtime: Timestamp::from_secs(1_700_000_000),
        ..Meta::default()
    }
}

fn small_tree() -> Tree {
    let mut t = Tree::new(meta(0o755));
    let data: Arc<[u8]> = b"hello\n".to_vec().into();
    t.insert(
        b"etc/hostname",
        Inode {
            meta: meta(0o644),
            kind: Kind::File(FileData::Bytes(data)),
        },
    )
    .unwrap();
    t
}

fn opts(size: u64) -> Ext4Options {
    Ext4Options::new(size, [1; 16], [2; 16], 1_700_000_000)
}

#[test]
fn two_writes_are_identical() {
    let t = small_tree();
    let a = write(&t, &opts(64 << 20)).unwrap();
    let b = write(&t, &opts(64 << 20)).unwrap();
    let mut ba = vec![0u8; (64 << 20) as usize];
    let mut bb = ba.clone();
    a.read_at(0, &mut ba).unwrap();
    b.read_at(0, &mut bb).unwrap();
    assert!(ba == bb);
}

#[test]
fn too_small_reports_the_size_needed() {
    let t = small_tree();
    let err = write(&t, &opts(128 << 10)).unwrap_err();
    let Ext4Error::TooSmall { needed, size } = err else {
        panic!("expected TooSmall, got {err:?}")
    };
    assert_eq!(size, 128 << 10);
    assert!(needed > size);
    assert!(
        write(&t, &opts(needed)).is_ok(),
        "the reported size {needed} must fit"
    );
}

#[test]
fn primary_superblock_has_magic_and_checksum() {
    let d = write(&small_tree(), &opts(64 << 20)).unwrap();
    let mut sb = vec![0u8; 1024];
    d.read_at(1024, &mut sb).unwrap();
    assert_eq!(&sb[0x38..0x3A], &[0x53, 0xEF]);
    let c = csum::crc32c(!0, &sb[..0x3FC]);
    assert_eq!(&sb[0x3FC..], &c.to_le_bytes());
}

/// Zeros that say so, as a scanned tar does.
struct Zeros(u64);

impl imgbuild_formats::ReadAt for Zeros {
    fn read_exact_at(&self, buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.0
    }

    fn known_zero(&self, _offset: u64, _len: u64) -> Option<bool> {
        Some(true)
    }
}

/// A 256 MiB file of known zeros is all hole: it fits a filesystem far
/// smaller than itself, and `min_size` says so (its estimate skips holes).
#[test]
fn known_zero_files_take_no_blocks() {
    let mut t = small_tree();
    let len = 256 << 20;
    t.insert(
        b"zeros",
        Inode {
            meta: meta(0o644),
            kind: Kind::File(FileData::Source {
                source: Arc::new(Zeros(len)),
                offset: 0,
                len,
            }),
        },
    )
    .unwrap();
    let min = min_size(&t, &opts(0)).unwrap();
    assert!(min <= 8 << 20, "min_size {min}");
    assert!(write(&t, &opts(min)).is_ok());
}
