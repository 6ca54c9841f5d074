//! Extent trees (kernel `Documentation/filesystems/ext4/ifork.rst`).
//!
//! ```text
//! i_block: [header: magic F30A, entries, max 4, depth][4 x 12-byte entries]
//! depth 0: entries are extents (logical, len <= 32768, physical)
//! depth d: entries are indexes pointing at blocks of depth d-1:
//!          [header, max 340][340 x 12-byte entries][tail: crc32c]
//! ```
//! Leaves are packed full (340 extents each) so e2fsck finds no level it
//! could make narrower or shorter. Files with holes map logical blocks with
//! gaps: an extent starts at any logical block, unmapped ones read as zeros.

use std::ops::Range;

use super::csum::crc32c;
use super::superblock::BLOCK_SIZE;

/// `eh_magic`.
const EXTENT_MAGIC: u16 = 0xF30A;
/// Entries that fit in `i_block` after the header.
const INODE_ENTRIES: usize = 4;
/// Entries per tree block: (4096 - 12-byte header - 4-byte tail) / 12.
pub const BLOCK_ENTRIES: usize = 340;
/// Longest initialised extent (`EXT_INIT_MAX_LEN`).
pub const MAX_LEN: u32 = 32_768;

/// One extent: `len` blocks at logical block `logical`, physical `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First logical block.
    pub logical: u32,
    /// Length in blocks, 1..=32768.
    pub len: u16,
    /// First physical block.
    pub start: u64,
}

/// A piece of a file: logical block `.0` onward lives at physical `.1`.
pub type Mapped = (u64, Range<u64>);

/// Physical runs that hold logical blocks 0.. in order, without holes.
pub fn consecutive(runs: &[Range<u64>]) -> Vec<Mapped> {
    let mut logical = 0;
    runs.iter()
        .map(|r| {
            let m = (logical, r.clone());
            logical += r.end - r.start;
            m
        })
        .collect()
}

/// Pairs the logical `segments` of a file that have blocks (increasing, the
/// gaps between them are holes) with the physical `runs` allocated for them
/// (as many blocks in all), cutting where either ends.
pub fn pair(segments: &[Range<u64>], runs: &[Range<u64>]) -> Vec<Mapped> {
    let mut out = Vec::new();
    let mut phys = runs.iter().cloned();
    let mut cur = phys.next().unwrap_or(0..0);
    for seg in segments {
        let mut logical = seg.start;
        while logical < seg.end {
            while cur.is_empty() {
                match phys.next() {
                    Some(r) => cur = r,
                    None => return out,
                }
            }
            let take = (seg.end - logical).min(cur.end - cur.start);
            out.push((logical, cur.start..cur.start + take));
            logical += take;
            cur.start += take;
        }
    }
    out
}

/// Cuts mapped pieces (increasing logical order; gaps between them are
/// holes) into extents of at most `max_len` blocks.
pub fn from_mapped(mapped: &[Mapped], max_len: u32) -> Vec<Extent> {
    let max_len = u64::from(max_len.clamp(1, MAX_LEN));
    let mut out = Vec::new();
    for (first, r) in mapped {
        let (mut logical, mut start) = (*first, r.start);
        while start < r.end {
            let len = (r.end - start).min(max_len);
            out.push(Extent {
                logical: u32::try_from(logical).unwrap_or(u32::MAX),
                len: u16::try_from(len).unwrap_or(0),
                start,
            });
            logical += len;
            start += len;
        }
    }
    out
}

/// Tree blocks needed to map `n` extents.
pub fn tree_blocks(n: usize) -> usize {
    let mut total = 0;
    let mut count = n;
    while count > INODE_ENTRIES {
        count = count.div_ceil(BLOCK_ENTRIES);
        total += count;
    }
    total
}

/// A built tree: the 60 bytes of `i_block` and the tree blocks to write.
#[derive(Debug)]
pub struct Tree {
    /// The inode's `i_block`.
    pub i_block: [u8; 60],
    /// `(physical block, 4096 bytes)` for every index or leaf block.
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// One entry of a level: `(first logical block, 12 encoded bytes)`.
type Entry = (u32, [u8; 12]);

fn leaf_entry(e: &Extent) -> Entry {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&e.logical.to_le_bytes());
    b[4..6].copy_from_slice(&e.len.to_le_bytes());
    b[6..8].copy_from_slice(&((e.start >> 32) as u16).to_le_bytes());
    b[8..12].copy_from_slice(&((e.start & 0xffff_ffff) as u32).to_le_bytes());
    (e.logical, b)
}

fn index_entry(logical: u32, block: u64) -> Entry {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&logical.to_le_bytes());
    b[4..8].copy_from_slice(&((block & 0xffff_ffff) as u32).to_le_bytes());
    b[8..10].copy_from_slice(&((block >> 32) as u16).to_le_bytes());
    (logical, b)
}

fn header(entries: usize, max: usize, depth: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes());
    h[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    h[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    h[6..8].copy_from_slice(&depth.to_le_bytes());
    h
}

/// Builds the tree for `extents` into `tree_blocks(extents.len())` blocks
/// `blocks` (leaves first), checksummed with the inode's seed.
pub fn build(extents: &[Extent], blocks: &[u64], inode_seed: u32) -> Tree {
    let mut level: Vec<Entry> = extents.iter().map(leaf_entry).collect();
    let mut depth = 0u16;
    let mut out = Vec::new();
    let mut next = blocks.iter();
    while level.len() > INODE_ENTRIES {
        let mut upper = Vec::new();
        for chunk in level.chunks(BLOCK_ENTRIES) {
            let mut b = vec![0u8; BLOCK_SIZE as usize];
            b[..12].copy_from_slice(&header(chunk.len(), BLOCK_ENTRIES, depth));
            for (i, (_, e)) in chunk.iter().enumerate() {
                b[12 + 12 * i..24 + 12 * i].copy_from_slice(e);
            }
            let tail = 12 + 12 * BLOCK_ENTRIES;
            let c = crc32c(inode_seed, &b[..tail]);
            b[tail..tail + 4].copy_from_slice(&c.to_le_bytes());
            let at = *next.next().expect("caller allocated tree_blocks(n) blocks");
            upper.push(index_entry(chunk[0].0, at));
            out.push((at, b));
        }
        level = upper;
        depth += 1;
    }
    let mut i_block = [0u8; 60];
    i_block[..12].copy_from_slice(&header(level.len(), INODE_ENTRIES, depth));
    for (i, (_, e)) in level.iter().enumerate() {
        i_block[12 + 12 * i..24 + 12 * i].copy_from_slice(e);
    }
    Tree {
        i_block,
        blocks: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_max_len() {
        let e = from_mapped(&consecutive(&[10..15, 20..21]), 2);
        let got: Vec<_> = e.iter().map(|e| (e.logical, e.len, e.start)).collect();
        assert_eq!(got, vec![(0, 2, 10), (2, 2, 12), (4, 1, 14), (5, 1, 20)]);
    }

    #[test]
    fn holes_leave_logical_gaps() {
        // Blocks 1..3 and 5..9 have data; 0, 3, 4 and 9.. are holes. The
        // allocator gave 2 blocks at 100 and 4 at 200.
        let m = pair(&[1..3, 5..9], &[100..102, 200..204]);
        assert_eq!(m, vec![(1, 100..102), (5, 200..204)]);
        let m = pair(&[1..3, 5..9], &[100..103, 200..203]);
        assert_eq!(m, vec![(1, 100..102), (5, 102..103), (6, 200..203)]);
        let e = from_mapped(&m, 2);
        let got: Vec<_> = e.iter().map(|e| (e.logical, e.len, e.start)).collect();
        assert_eq!(
            got,
            vec![(1, 2, 100), (5, 1, 102), (6, 2, 200), (8, 1, 202)]
        );
    }

    #[test]
    fn tree_depth_grows_past_four_extents() {
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1);
        let ext: Vec<_> = (0..5)
            .map(|i| Extent {
                logical: i,
                len: 1,
                start: 100 + u64::from(i) * 2,
            })
            .collect();
        let t = build(&ext, &[7], 0);
        assert_eq!(&t.i_block[..8], &[0x0A, 0xF3, 1, 0, 4, 0, 1, 0]);
        assert_eq!(t.blocks[0].0, 7);
        assert_eq!(&t.blocks[0].1[2..4], &[5, 0]);
    }
}
