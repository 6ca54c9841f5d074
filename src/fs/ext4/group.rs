//! Group descriptors and allocation bitmaps (kernel
//! `Documentation/filesystems/ext4/group_descr.rst`, `bitmaps.rst`).
//!
//! Groups with nothing allocated keep `BLOCK_UNINIT` / `INODE_UNINIT` and
//! their bitmaps are never written; every group is `ITABLE_ZEROED` because
//! unwritten blocks of the image read as zeros.

use std::ops::Range;

use super::alloc::GroupMeta;
use super::csum::crc32c;
use super::superblock::{Geometry, BLOCK_SIZE, DESC_SIZE};

/// `bg_flags`: inode table and bitmap not initialised.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: block bitmap not initialised.
pub const BG_BLOCK_UNINIT: u16 = 0x2;
/// `bg_flags`: inode table zeroed.
pub const BG_INODE_ZEROED: u16 = 0x4;

/// The counters and flags of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupState {
    /// `bg_free_blocks_count`.
    pub free_blocks: u32,
    /// `bg_free_inodes_count`.
    pub free_inodes: u32,
    /// `bg_used_dirs_count`.
    pub used_dirs: u32,
    /// `bg_flags`.
    pub flags: u16,
    /// `bg_itable_unused`.
    pub itable_unused: u32,
    /// `bg_block_bitmap_csum` (0 for an uninitialised bitmap).
    pub block_bitmap_csum: u32,
    /// `bg_inode_bitmap_csum` (0 for an uninitialised bitmap).
    pub inode_bitmap_csum: u32,
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn lo32(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}
fn hi32(v: u64) -> u32 {
    (v >> 32) as u32
}
fn lo16(v: u32) -> u16 {
    (v & 0xffff) as u16
}
fn hi16(v: u32) -> u16 {
    (v >> 16) as u16
}

/// Encodes group `g`'s 64-byte descriptor with its checksum
/// (`crc32c(fs_seed, le32 g ++ desc with bg_checksum = 0) & 0xFFFF`).
pub fn encode_desc(
    m: &GroupMeta,
    s: &GroupState,
    g: u32,
    fs_seed: u32,
) -> [u8; DESC_SIZE as usize] {
    let mut b = [0u8; DESC_SIZE as usize];
    put32(&mut b, 0x00, lo32(m.block_bitmap));
    put32(&mut b, 0x04, lo32(m.inode_bitmap));
    put32(&mut b, 0x08, lo32(m.inode_table));
    put16(&mut b, 0x0C, lo16(s.free_blocks));
    put16(&mut b, 0x0E, lo16(s.free_inodes));
    put16(&mut b, 0x10, lo16(s.used_dirs));
    put16(&mut b, 0x12, s.flags);
    put16(&mut b, 0x18, lo16(s.block_bitmap_csum));
    put16(&mut b, 0x1A, lo16(s.inode_bitmap_csum));
    put16(&mut b, 0x1C, lo16(s.itable_unused));
    put32(&mut b, 0x20, hi32(m.block_bitmap));
    put32(&mut b, 0x24, hi32(m.inode_bitmap));
    put32(&mut b, 0x28, hi32(m.inode_table));
    put16(&mut b, 0x2C, hi16(s.free_blocks));
    put16(&mut b, 0x2E, hi16(s.free_inodes));
    put16(&mut b, 0x30, hi16(s.used_dirs));
    put16(&mut b, 0x32, hi16(s.itable_unused));
    put16(&mut b, 0x38, hi16(s.block_bitmap_csum));
    put16(&mut b, 0x3A, hi16(s.inode_bitmap_csum));
    let c = crc32c(crc32c(fs_seed, &g.to_le_bytes()), &b);
    put16(&mut b, 0x1E, lo16(c));
    b
}

/// Blocks of group `g` that `used` (sorted, merged) covers.
pub fn used_in_group(geo: &Geometry, g: u32, used: &[Range<u64>]) -> u64 {
    let (start, end) = (geo.group_start(g), geo.group_start(g) + geo.group_len(g));
    let first = used.partition_point(|r| r.end <= start);
    used[first..]
        .iter()
        .take_while(|r| r.start < end)
        .map(|r| r.end.min(end) - r.start.max(start))
        .sum()
}

/// Group `g`'s block bitmap; bits past the end of the filesystem are set,
/// as mke2fs does.
pub fn block_bitmap(geo: &Geometry, g: u32, used: &[Range<u64>]) -> Vec<u8> {
    let mut bm = vec![0u8; BLOCK_SIZE as usize];
    let (start, len) = (geo.group_start(g), geo.group_len(g));
    let first = used.partition_point(|r| r.end <= start);
    for r in used[first..].iter().take_while(|r| r.start < start + len) {
        let a = r.start.max(start) - start;
        let b = r.end.min(start + len) - start;
        set_bits(&mut bm, a, b);
    }
    set_bits(&mut bm, len, BLOCK_SIZE * 8);
    bm
}

/// An inode bitmap with the first `used` inodes of the group in use and the
/// bits past `inodes_per_group` set (the kernel's `ext4_mark_bitmap_end`).
pub fn inode_bitmap(inodes_per_group: u32, used: u32) -> Vec<u8> {
    let mut bm = vec![0u8; BLOCK_SIZE as usize];
    set_bits(&mut bm, 0, u64::from(used));
    set_bits(&mut bm, u64::from(inodes_per_group), BLOCK_SIZE * 8);
    bm
}

/// Sets bits `a..b` (little-endian bit order within bytes).
fn set_bits(bm: &mut [u8], mut a: u64, b: u64) {
    while a < b && !a.is_multiple_of(8) {
        bm[(a / 8) as usize] |= 1 << (a % 8);
        a += 1;
    }
    while a + 8 <= b {
        bm[(a / 8) as usize] = 0xff;
        a += 8;
    }
    while a < b {
        bm[(a / 8) as usize] |= 1 << (a % 8);
        a += 1;
    }
}

/// Bitmap checksum: `crc32c(fs_seed, bitmap[..len])`.
pub fn bitmap_csum(fs_seed: u32, bitmap: &[u8], len: usize) -> u32 {
    crc32c(fs_seed, &bitmap[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_handles_unaligned_edges() {
        let mut bm = vec![0u8; 4];
        set_bits(&mut bm, 3, 19);
        assert_eq!(bm, vec![0b1111_1000, 0xff, 0b0000_0111, 0]);
    }

    #[test]
    fn inode_bitmap_pads_past_the_group() {
        let bm = inode_bitmap(16, 11);
        assert_eq!(&bm[..3], &[0xff, 0b0000_0111, 0xff]);
    }
}
