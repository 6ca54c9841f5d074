//! Our ext4 writer: a [`Tree`] in, a [`VirtualDisk`] of one ext4 filesystem
//! out. Metadata is built in memory; file contents are `Source` extents that
//! point at the tree's data, never copied.
//!
//! ```text
//! Tree ─number inodes (walk order)─► Geometry ─► Layout (flex_bg metadata)
//!      ─► per inode: allocate data, dirs (htree), extent trees, xattrs ─► inode table
//!      ─► group descriptors, bitmaps, superblocks ─► VirtualDisk extents
//! ```
//! Features: 4 KiB blocks, extents, 64bit, huge_file, dir_nlink,
//! extra_isize, metadata_csum, filetype, ext_attr, large_file, dir_index,
//! has_journal, flex_bg, sparse_super. No sparse_super2 (the kernel will
//! not grow it online), no resize_inode and no reserved GDT blocks: growing
//! past the GDT's last block, the kernel converts the filesystem to meta_bg
//! online (superblock.rs). No orphan_file.
//!
//! The layout keeps the written blocks dense, since a VHDX stores every
//! 1 MiB block holding any of them in full:
//! - one flex group for all groups (`s_log_groups_per_flex` =
//!   max(4, ceil(log2 groups))): every bitmap and inode table packed after
//!   the primary GDT (alloc.rs), untouched groups' bitmaps never written;
//! - the journal in one contiguous extent after all file data, so its
//!   superblock (its only written block) sits where the data ends;
//! - 4 KiB blocks a source knows are zero (`ReadAt::known_zero`) are holes,
//!   as `mke2fs -d` makes them.

mod alloc;
mod csum;
mod dir;
mod extent_tree;
mod group;
mod inode;
mod journal;
mod plan;
mod superblock;
mod xattr;

use imgbuild_formats::VirtualDisk;

use crate::tree::Tree;

/// Root directory inode.
pub const ROOT_INO: u32 = 2;
/// Journal inode.
pub const JOURNAL_INO: u32 = 8;
/// lost+found inode (the first non-reserved one, as mke2fs makes it).
pub const LOST_FOUND_INO: u32 = 11;
/// Block size of every filesystem we write.
pub const BLOCK_SIZE: u64 = superblock::BLOCK_SIZE;

/// How to lay out the filesystem. Every id and time is a parameter: no clock,
/// no randomness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext4Options {
    /// Filesystem size in bytes (rounded down to 4 KiB blocks).
    pub size: u64,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_hash_seed` for directory hashes.
    pub hash_seed: [u8; 16],
    /// Creation, write and check time of the filesystem, and the times of
    /// lost+found and the journal (seconds since 1970).
    pub epoch: i64,
    /// Blocks reserved for root, in percent (mke2fs: 5).
    pub reserved_percent: u8,
    /// One inode per this many bytes (mke2fs: 16384); more when the tree
    /// needs them.
    pub bytes_per_inode: u64,
    /// Exact inode count instead of `bytes_per_inode` (rounded up to fill
    /// inode-table blocks; raised if the tree needs more).
    pub inode_count: Option<u32>,
    /// Journal size in blocks: `None` = mke2fs's default for the size,
    /// `Some(0)` = no journal, else at least 1024.
    pub journal_blocks: Option<u32>,
    /// Longest extent in blocks (1..=32768). Only tests lower it, to get
    /// deep extent trees from small files.
    #[doc(hidden)]
    pub max_extent_blocks: u32,
}

impl Ext4Options {
    /// mke2fs-like defaults for a filesystem of `size` bytes.
    pub fn new(size: u64, uuid: [u8; 16], hash_seed: [u8; 16], epoch: i64) -> Self {
        Self {
            size,
            label: String::new(),
            uuid,
            hash_seed,
            epoch,
            reserved_percent: 5,
            bytes_per_inode: 16_384,
            inode_count: None,
            journal_blocks: None,
            max_extent_blocks: extent_tree::MAX_LEN,
        }
    }
}

/// Why a tree cannot become an ext4 filesystem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Ext4Error {
    /// The tree does not fit.
    #[error("ext4 filesystem of {size} bytes is too small: {needed} bytes needed")]
    TooSmall {
        /// Smallest size that fits (4 KiB multiple).
        needed: u64,
        /// Size requested.
        size: u64,
    },
    /// Larger than the largest filesystem this writer lays out.
    #[error(
        "ext4 filesystem of {size} bytes ({}) is larger than the {max}-byte ({}) maximum this \
         writer lays out",
        crate::size::human(*size),
        crate::size::human(*max)
    )]
    TooLarge {
        /// Size requested.
        size: u64,
        /// The largest size (`superblock::MAX_BLOCKS` 4 KiB blocks).
        max: u64,
    },
    /// More inodes than the geometry can hold.
    #[error("ext4: {needed} inodes needed, at most {max} possible at this size")]
    TooManyInodes {
        /// Inodes the tree needs.
        needed: u64,
        /// Inodes the geometry allows.
        max: u64,
    },
    /// The label is longer than `s_volume_name`.
    #[error("ext4 label {label:?} is {len} bytes; at most 16 fit")]
    LabelTooLong {
        /// The label.
        label: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An option is out of range.
    #[error("ext4 option {option}: {reason}")]
    BadOption {
        /// Which option.
        option: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// lost+found exists in the tree and is not a directory.
    #[error("/lost+found in the tree is not a directory; e2fsck needs one")]
    LostFoundNotDirectory,
    /// A name is longer than 255 bytes.
    #[error("{path:?}: name is {len} bytes; ext4 allows 255")]
    NameTooLong {
        /// Path of the entry.
        path: String,
        /// Name length.
        len: usize,
    },
    /// A file has more hard links than ext4 counts (65000).
    #[error("{path:?}: {links} hard links; ext4 allows 65000")]
    TooManyLinks {
        /// One path of the file.
        path: String,
        /// Number of names.
        links: u32,
    },
    /// A symlink target is empty or longer than 4095 bytes.
    #[error("{path:?}: symlink target of {len} bytes; ext4 takes 1..=4095")]
    BadSymlink {
        /// Path of the link.
        path: String,
        /// Target length.
        len: usize,
    },
    /// A file is larger than ext4 allows with 4 KiB blocks (16 TiB).
    #[error("{path:?}: {len} bytes is larger than ext4's 16 TiB file limit")]
    FileTooLarge {
        /// Path of the file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// A device number does not fit ext4's (and Linux's) encoding.
    #[error(
        "{path:?}: device number {major}:{minor} does not fit ext4's encoding \
         (major at most {}, minor at most {})",
        crate::tree::MAX_DEV_MAJOR,
        crate::tree::MAX_DEV_MINOR
    )]
    DeviceNumber {
        /// Path of the device node.
        path: String,
        /// Its major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// A directory has more entries than a two-level htree holds.
    #[error("{path:?}: {entries} entries do not fit a two-level htree")]
    DirectoryTooLarge {
        /// Path of the directory.
        path: String,
        /// Number of entries.
        entries: usize,
    },
    /// An extended attribute cannot be stored.
    #[error("{path:?}: extended attribute {name:?}: {problem}")]
    Xattr {
        /// Path of the inode.
        path: String,
        /// Attribute name (empty when the whole set is too large).
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Assembling the disk failed (a bug: overlapping extents).
    #[error("assembling the ext4 image")]
    Disk(#[source] imgbuild_formats::Error),
}

/// Writes `tree` as an ext4 filesystem of `opts.size` bytes.
pub fn write(tree: &Tree, opts: &Ext4Options) -> Result<VirtualDisk, Ext4Error> {
    match plan::plan(tree, opts) {
        Ok(p) => p.into_disk(opts.size),
        Err(Ext4Error::TooSmall { size, .. }) => {
            let needed = min_size(tree, opts)?;
            Err(Ext4Error::TooSmall { needed, size })
        }
        Err(e) => Err(e),
    }
}

/// The smallest size (a multiple of 1 MiB, within 1/128 of the exact
/// minimum for large trees) at which `tree` fits with `opts` (whose `size` is ignored).
pub fn min_size(tree: &Tree, opts: &Ext4Options) -> Result<u64, Ext4Error> {
    const MIB: u64 = 1 << 20;
    let fits = |size: u64| -> Result<bool, Ext4Error> {
        let o = Ext4Options {
            size,
            ..opts.clone()
        };
        match plan::plan(tree, &o) {
            Ok(_) => Ok(true),
            Err(Ext4Error::TooSmall { .. } | Ext4Error::TooManyInodes { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    };
    // Data blocks are a lower bound; inode tables (~1.6% at 16 KiB per
    // inode), bitmaps and the journal come on top.
    let data = plan::data_estimate(tree);
    let mut lo = data;
    let journal = journal::default_size(data / BLOCK_SIZE) * BLOCK_SIZE;
    let mut hi = (data + data / 16 + journal + 2 * MIB)
        .next_multiple_of(MIB)
        .min(superblock::MAX_BLOCKS * BLOCK_SIZE);
    while !fits(hi)? {
        lo = hi;
        hi = hi
            .checked_add((hi / 8).next_multiple_of(MIB))
            .ok_or(Ext4Error::BadOption {
                option: "size",
                reason: "the tree does not fit any size",
            })?;
        if hi > superblock::MAX_BLOCKS * BLOCK_SIZE {
            return Err(Ext4Error::BadOption {
                option: "size",
                reason: "the tree needs more than 64 TiB",
            });
        }
    }
    while hi - lo > MIB.max(hi / 128) {
        let mid = (lo + (hi - lo) / 2).next_multiple_of(MIB);
        if mid >= hi {
            break;
        }
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests;
