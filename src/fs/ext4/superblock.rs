//! Geometry and the superblock (kernel `Documentation/filesystems/ext4/super.rst`).
//!
//! ```text
//! block 0: [1024 pad][superblock 1024][rest of block 0]   group 0
//! block 1..: group descriptors (64 bytes each, 64bit)
//! backups at the start of groups 1 and 3^n, 5^n, 7^n (sparse_super)
//! ```
//!
//! Plain sparse_super, as mke2fs's default. Not sparse_super2: its fewer
//! backups would save a VHDX a 1 MiB block per copy, but the kernel refuses
//! to grow a sparse_super2 filesystem online ("Online resizing not supported
//! with sparse_super2", fs/ext4/resize.c), and growing the root on first
//! boot is what every cloud does. No resize_inode and no reserved GDT
//! blocks (`s_reserved_gdt_blocks` = 0, as the kernel requires without
//! resize_inode): when the GDT is full, the kernel's online resize converts
//! the filesystem to meta_bg (resize.c, "Converting file system to
//! meta_bg"), which GRUB reads.

use super::csum::crc32c;
use super::{Ext4Error, Ext4Options};

/// Block size: 4 KiB only.
pub const BLOCK_SIZE: u64 = 4096;
/// `s_log_block_size`: 1024 << 2 = 4096.
const LOG_BLOCK_SIZE: u32 = 2;
/// Blocks (and clusters) per group: one bitmap block of bits.
pub const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;
/// On-disk inode size.
pub const INODE_SIZE: u64 = 256;
/// Inodes in one inode-table block.
pub const INODES_PER_BLOCK: u32 = (BLOCK_SIZE / INODE_SIZE) as u32;
/// Group descriptor size with the 64bit feature.
pub const DESC_SIZE: u64 = 64;
/// Smallest `s_log_groups_per_flex`: 16 groups per flex group (mke2fs's
/// default). Larger filesystems get one flex group for all their groups.
pub const MIN_LOG_GROUPS_PER_FLEX: u32 = 4;
/// First non-reserved inode.
pub const FIRST_INO: u32 = 11;
/// Largest filesystem we lay out (64 TiB): bounds the group table in memory.
pub const MAX_BLOCKS: u64 = 1 << 34;

/// `s_magic`.
const EXT4_SUPER_MAGIC: u16 = 0xEF53;
// Feature flags (super.rst, "s_feature_*").
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// `s_flags`: directory hashes treat names as signed chars (x86 mke2fs).
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
/// `s_def_hash_version`: half MD4.
pub const DX_HASH_HALF_MD4: u8 = 1;
/// `s_default_mount_opts`: user_xattr | acl, as mke2fs sets.
const DEFM_XATTR_USER_ACL: u32 = 0x4 | 0x8;
/// `i_extra_isize` and `s_{min,want}_extra_isize`.
pub const EXTRA_ISIZE: u16 = 32;

/// The shape of the filesystem, fixed before anything is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `s_blocks_count`.
    pub blocks: u64,
    /// Number of block groups.
    pub groups: u32,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// Inode-table blocks per group.
    pub itable_blocks: u64,
    /// Group descriptor table blocks.
    pub gdt_blocks: u64,
    /// Journal blocks (0: no journal).
    pub journal_blocks: u64,
    /// `s_r_blocks_count`.
    pub reserved_blocks: u64,
    /// `s_log_groups_per_flex`: large enough that one flex group holds
    /// every group, so all bitmaps and inode tables sit together after the
    /// primary GDT instead of in a lone 1 MiB VHDX block per 16 groups.
    pub log_groups_per_flex: u32,
}

impl Geometry {
    /// Lays out `opts.size` bytes for a tree of `needed_inodes` inodes
    /// (reserved ones included).
    pub fn new(opts: &Ext4Options, needed_inodes: u64) -> Result<Self, Ext4Error> {
        let mut blocks = opts.size / BLOCK_SIZE;
        if blocks > MAX_BLOCKS {
            return Err(Ext4Error::TooLarge {
                size: opts.size,
                max: MAX_BLOCKS * BLOCK_SIZE,
            });
        }
        if blocks < 64 {
            return Err(Ext4Error::TooSmall {
                needed: 64 * BLOCK_SIZE,
                size: opts.size,
            });
        }
        loop {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            // `s_inodes_count` is 32 bits: the default ratio asks for more
            // from 64 TiB on, so it gives way there (mke2fs's "huge" type
            // raises the ratio for the same reason).
            let most = u64::from(u32::MAX) / groups / u64::from(INODES_PER_BLOCK)
                * u64::from(INODES_PER_BLOCK)
                * groups;
            let wanted = match opts.inode_count {
                Some(n) => u64::from(n),
                None => (opts.size / opts.bytes_per_inode.max(1024)).min(most),
            }
            .max(needed_inodes);
            let ipg = wanted.div_ceil(groups).max(u64::from(INODES_PER_BLOCK));
            let ipg = ipg.next_multiple_of(u64::from(INODES_PER_BLOCK));
            if ipg > BLOCKS_PER_GROUP || ipg * groups > u64::from(u32::MAX) {
                return Err(Ext4Error::TooManyInodes {
                    needed: needed_inodes,
                    max: BLOCKS_PER_GROUP * groups,
                });
            }
            let itable_blocks = ipg * INODE_SIZE / BLOCK_SIZE;
            let gdt_blocks = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
            // mke2fs drops a last partial group too small for its own
            // structures plus 50 blocks (lib/ext2fs/initialize.c). With one
            // flex group, a last group after group 0 holds at most a
            // superblock copy (group 1).
            let last = groups - 1;
            let rem = blocks % BLOCKS_PER_GROUP;
            let overhead = if has_super(last) { 1 + gdt_blocks } else { 0 };
            if groups > 1 && rem != 0 && rem < overhead + 50 {
                blocks -= rem;
                continue;
            }
            let journal_blocks = match opts.journal_blocks {
                Some(n) => u64::from(n),
                None => super::journal::default_size(blocks),
            };
            let reserved_blocks = blocks * u64::from(opts.reserved_percent.min(50)) / 100;
            return Ok(Self {
                blocks,
                groups: u32::try_from(groups).expect("blocks <= 2^34 gives < 2^19 groups"),
                inodes_per_group: u32::try_from(ipg).expect("ipg <= 32768"),
                itable_blocks,
                gdt_blocks,
                journal_blocks,
                reserved_blocks,
                log_groups_per_flex: log_groups_per_flex(groups),
            });
        }
    }

    /// `s_inodes_count`.
    pub fn inodes(&self) -> u32 {
        self.inodes_per_group * self.groups
    }

    /// First block of group `g`.
    pub fn group_start(&self, g: u32) -> u64 {
        u64::from(g) * BLOCKS_PER_GROUP
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u32) -> u64 {
        (self.blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }

    /// Blocks at the start of group `g` taken by a superblock and GDT copy.
    pub fn super_blocks(&self, g: u32) -> u64 {
        if has_super(u64::from(g)) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }
}

/// `max(4, ceil(log2(groups)))`: one flex group for the whole filesystem
/// (at most 2^19 groups, so at most 19: the kernel takes up to 31).
fn log_groups_per_flex(groups: u64) -> u32 {
    let ceil_log2 = u64::BITS - groups.saturating_sub(1).leading_zeros();
    ceil_log2.max(MIN_LOG_GROUPS_PER_FLEX)
}

/// sparse_super: group 0 holds the superblock and GDT, groups 1 and the
/// powers of 3, 5 and 7 a copy (super.rst, "sparse_super").
pub fn has_super(g: u64) -> bool {
    g <= 1 || [3, 5, 7].into_iter().any(|base| is_power_of(g, base))
}

fn is_power_of(mut g: u64, base: u64) -> bool {
    while g > 1 && g.is_multiple_of(base) {
        g /= base;
    }
    g == 1
}

/// Everything the superblock records besides the geometry.
#[derive(Clone, Debug)]
pub struct SuperInfo {
    /// `s_free_blocks_count`.
    pub free_blocks: u64,
    /// `s_free_inodes_count`.
    pub free_inodes: u32,
    /// `s_jnl_blocks`: the journal inode's `i_block`, `i_size_high`, `i_size`.
    pub jnl_blocks: [u32; 17],
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Low 32 bits and high 8 bits of a superblock time (`s_*_time_hi`).
fn split_time(t: i64) -> (u32, u8) {
    let t = t.clamp(0, (1 << 40) - 1);
    ((t & 0xffff_ffff) as u32, (t >> 32) as u8)
}

/// Encodes the 1024-byte superblock for the copy in group `group`.
pub fn encode(geo: &Geometry, opts: &Ext4Options, info: &SuperInfo, group: u32) -> [u8; 1024] {
    let mut b = [0u8; 1024];
    let lo = |v: u64| (v & 0xffff_ffff) as u32;
    let hi = |v: u64| (v >> 32) as u32;
    put32(&mut b, 0x00, geo.inodes());
    put32(&mut b, 0x04, lo(geo.blocks));
    put32(&mut b, 0x08, lo(geo.reserved_blocks));
    put32(&mut b, 0x0C, lo(info.free_blocks));
    put32(&mut b, 0x10, info.free_inodes);
    put32(&mut b, 0x14, 0); // s_first_data_block
    put32(&mut b, 0x18, LOG_BLOCK_SIZE);
    put32(&mut b, 0x1C, LOG_BLOCK_SIZE); // s_log_cluster_size
    put32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
    put32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
    put32(&mut b, 0x28, geo.inodes_per_group);
    let (t, t_hi) = split_time(opts.epoch);
    put32(&mut b, 0x30, t); // s_wtime (s_mtime stays 0: never mounted)
    put16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count = -1
    put16(&mut b, 0x38, EXT4_SUPER_MAGIC);
    put16(&mut b, 0x3A, 1); // s_state: cleanly unmounted
    put16(&mut b, 0x3C, 1); // s_errors: continue
    put32(&mut b, 0x40, t); // s_lastcheck
    put32(&mut b, 0x4C, 1); // s_rev_level: dynamic
    put32(&mut b, 0x54, FIRST_INO);
    put16(&mut b, 0x58, INODE_SIZE as u16);
    put16(&mut b, 0x5A, u16::try_from(group).unwrap_or(u16::MAX));
    let journal = if geo.journal_blocks > 0 {
        COMPAT_HAS_JOURNAL
    } else {
        0
    };
    put32(&mut b, 0x5C, journal | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX);
    put32(
        &mut b,
        0x60,
        INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG,
    );
    let ro = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE
        | RO_COMPAT_METADATA_CSUM;
    put32(&mut b, 0x64, ro);
    b[0x68..0x78].copy_from_slice(&opts.uuid);
    let label = opts.label.as_bytes();
    b[0x78..0x78 + label.len().min(16)].copy_from_slice(&label[..label.len().min(16)]);
    if geo.journal_blocks > 0 {
        put32(&mut b, 0xE0, super::JOURNAL_INO);
    }
    b[0xEC..0xFC].copy_from_slice(&opts.hash_seed);
    b[0xFC] = DX_HASH_HALF_MD4;
    b[0xFD] = if geo.journal_blocks > 0 { 1 } else { 0 }; // EXT3_JNL_BACKUP_BLOCKS
    put16(&mut b, 0xFE, DESC_SIZE as u16);
    put32(&mut b, 0x100, DEFM_XATTR_USER_ACL);
    put32(&mut b, 0x108, t); // s_mkfs_time
    if geo.journal_blocks > 0 {
        for (i, w) in info.jnl_blocks.iter().enumerate() {
            put32(&mut b, 0x10C + 4 * i, *w);
        }
    }
    put32(&mut b, 0x150, hi(geo.blocks));
    put32(&mut b, 0x154, hi(geo.reserved_blocks));
    put32(&mut b, 0x158, hi(info.free_blocks));
    put16(&mut b, 0x15C, EXTRA_ISIZE);
    put16(&mut b, 0x15E, EXTRA_ISIZE);
    put32(&mut b, 0x160, FLAGS_SIGNED_HASH);
    b[0x174] = geo.log_groups_per_flex as u8;
    b[0x175] = 1; // s_checksum_type: crc32c
    b[0x274] = t_hi; // s_wtime_hi
    b[0x276] = t_hi; // s_mkfs_time_hi
    b[0x277] = t_hi; // s_lastcheck_hi
    let c = crc32c(!0, &b[..0x3FC]);
    put32(&mut b, 0x3FC, c);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_backups_in_groups_1_and_powers_of_3_5_7() {
        let with: Vec<u64> = (0..130).filter(|&g| has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }

    fn opts(size: u64) -> Ext4Options {
        Ext4Options::new(size, [1; 16], [2; 16], 0)
    }

    /// Issue 14, finding 7: 64 TiB and up failed with "inodes needed"; the
    /// maximum itself lays out, one block more names the size limit.
    #[test]
    fn sizes_past_the_maximum_name_the_size_limit_not_inodes() {
        let max = MAX_BLOCKS * BLOCK_SIZE;
        let geo = Geometry::new(&opts(max), 12).expect("the maximum lays out");
        assert_eq!(geo.blocks, MAX_BLOCKS);
        assert!(u64::from(geo.inodes_per_group) * u64::from(geo.groups) <= u64::from(u32::MAX));
        for size in [max + BLOCK_SIZE, 65 << 40, u64::MAX] {
            match Geometry::new(&opts(size), 12) {
                Err(Ext4Error::TooLarge { size: s, max: m }) => assert_eq!((s, m), (size, max)),
                other => panic!("size {size}: {other:?}"),
            }
        }
    }

    #[test]
    fn one_flex_group_covers_every_group() {
        let got: Vec<u32> = [1, 16, 17, 24, 32, 33, 512, 1 << 19]
            .map(log_groups_per_flex)
            .to_vec();
        assert_eq!(got, vec![4, 4, 5, 5, 5, 6, 9, 19]);
    }
}
