//! Block placement: where each group's bitmaps and inode table go (flex_bg,
//! as mke2fs lays out one flex group), and a bump allocator for everything else.
//!
//! ```text
//! one flex group for all n groups, its metadata right after the primary GDT
//! (group 1's sb+GDT copy is skipped where it falls):
//! [sb+GDT][bb,ib n-1][itable 0][itable 1]..[itable n-1](gap)[bb,ib n-2]..[bb,ib 0][data..][journal]
//! ```
//! Only what is used is written: inode tables as far as inodes are used,
//! bitmaps of groups holding blocks or inodes (others are BLOCK_UNINIT /
//! INODE_UNINIT). Data fills the low groups from the start, so the written
//! bitmaps are those of groups 0..k (and the last group, which e2fsck wants
//! initialised): with this order the image is two dense runs, superblock to
//! the last used inode-table block, and group k's bitmaps to the journal
//! superblock; every run boundary inside a 1 MiB block costs a VHDX up to
//! 1 MiB. The gap (under 1 MiB, left free) puts the start of the second run,
//! group k's bitmaps, on a 1 MiB boundary; `plan` guesses k from the data's
//! size and lays out again in the rare case the guess was wrong.
//! Data is handed out in increasing block order, skipping the reserved
//! ranges (superblock copies and flex metadata), so the whole allocation is
//! a sorted list of runs: cheap to keep even for a 64 TiB filesystem.

use std::ops::Range;

use super::superblock::{Geometry, BLOCK_SIZE};

/// Filesystem blocks per 1 MiB (a VHDX payload block).
const BLOCKS_PER_MIB: u64 = (1 << 20) / BLOCK_SIZE;

/// Where one group's metadata lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupMeta {
    /// `bg_block_bitmap`.
    pub block_bitmap: u64,
    /// `bg_inode_bitmap`.
    pub inode_bitmap: u64,
    /// `bg_inode_table`.
    pub inode_table: u64,
}

/// Static placement: every group's metadata plus the sorted, merged list of
/// blocks that data must avoid.
#[derive(Clone, Debug)]
pub struct Layout {
    /// One entry per group.
    pub groups: Vec<GroupMeta>,
    /// Superblock/GDT copies and flex metadata, sorted and merged.
    pub reserved: Vec<Range<u64>>,
    /// First block after the flex metadata: data starts here, so that it
    /// never lands in a gap the metadata left before group 1's backup.
    pub data_start: u64,
}

/// The filesystem ran out of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Layout {
    /// Places the superblock copies and the metadata of the one flex group
    /// (module docs): the last group's bitmaps, every inode table, then the
    /// other groups' bitmaps in descending group order, so that the bitmaps
    /// of the low groups (the ones data fills) end right where data begins.
    /// `low` says how many low groups (0..low) will have written bitmaps:
    /// the written part of that bitmap run then starts on a 1 MiB boundary
    /// (the filesystem itself starting on one), so the second dense run
    /// (those bitmaps, the data, the journal superblock) wastes no partly
    /// used 1 MiB block at its start. Up to 255 blocks before it stay free.
    pub fn new(geo: &Geometry, low: u32) -> Result<Self, Full> {
        let mut reserved: Vec<Range<u64>> = Vec::new();
        for g in 0..geo.groups {
            let n = geo.super_blocks(g);
            if n > 0 {
                reserved.push(geo.group_start(g)..geo.group_start(g) + n);
            }
        }
        let supers = reserved.clone();
        let n = u64::from(geo.groups);
        let mut cur = geo.super_blocks(0);
        let last = place(&supers, &mut cur, 2, geo.blocks)?;
        let mut tables = Vec::with_capacity(geo.groups as usize);
        for _ in 0..n {
            let t = place(&supers, &mut cur, geo.itable_blocks, geo.blocks)?;
            reserved.push(t..t + geo.itable_blocks);
            tables.push(t);
        }
        // Group g < n-1 has its pair at pairs + 2(n-2-g): the written ones,
        // groups low-1 down to 0, are the last 2·low blocks of the run.
        let low = u64::from(low).clamp(1, n.max(2) - 1);
        let skip = 2 * (n - 1).saturating_sub(low);
        let pairs = loop {
            if n == 1 {
                // No low-group bitmaps: nothing to align, no space to give up.
                break cur;
            }
            let aligned = (cur + skip).next_multiple_of(BLOCKS_PER_MIB) - skip;
            let mut at = aligned;
            let p = place(&supers, &mut at, 2 * (n - 1), geo.blocks)?;
            if p == aligned {
                cur = at;
                break p;
            }
            // A superblock copy was in the way: align after it.
            cur = p;
        };
        reserved.push(last..last + 2);
        reserved.push(pairs..pairs + 2 * (n - 1));
        let groups = tables
            .iter()
            .enumerate()
            .map(|(g, &inode_table)| {
                let g = g as u64;
                let bb = if g + 1 == n {
                    last
                } else {
                    pairs + 2 * (n - 2 - g)
                };
                GroupMeta {
                    block_bitmap: bb,
                    inode_bitmap: bb + 1,
                    inode_table,
                }
            })
            .collect();
        Ok(Self {
            groups,
            reserved: merge(reserved),
            data_start: cur,
        })
    }
}

/// Finds `len` contiguous blocks at or after `cur` that avoid `supers`.
fn place(supers: &[Range<u64>], cur: &mut u64, len: u64, end: u64) -> Result<u64, Full> {
    loop {
        let want = *cur..*cur + len;
        match supers
            .iter()
            .find(|s| s.start < want.end && want.start < s.end)
        {
            Some(s) => *cur = s.end,
            None => break,
        }
    }
    let start = *cur;
    *cur += len;
    if *cur > end {
        return Err(Full);
    }
    Ok(start)
}

/// Sorts ranges and merges overlapping or touching ones.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.into_iter().filter(|r| !r.is_empty()) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Bump allocator over the blocks the [`Layout`] leaves free.
#[derive(Debug)]
pub struct Allocator<'a> {
    reserved: &'a [Range<u64>],
    idx: usize,
    cursor: u64,
    end: u64,
    runs: Vec<Range<u64>>,
}

impl<'a> Allocator<'a> {
    /// An allocator for blocks `start..end` avoiding `reserved` (sorted, merged).
    pub fn new(reserved: &'a [Range<u64>], start: u64, end: u64) -> Self {
        Self {
            reserved,
            idx: 0,
            cursor: start,
            end,
            runs: Vec::new(),
        }
    }

    /// Allocates `n` blocks as few, increasing runs.
    pub fn alloc(&mut self, mut n: u64) -> Result<Vec<Range<u64>>, Full> {
        let mut out = Vec::new();
        while n > 0 {
            while self.idx < self.reserved.len() && self.reserved[self.idx].end <= self.cursor {
                self.idx += 1;
            }
            if let Some(r) = self.reserved.get(self.idx) {
                if r.start <= self.cursor {
                    self.cursor = r.end;
                    continue;
                }
            }
            let limit = self
                .reserved
                .get(self.idx)
                .map_or(self.end, |r| r.start.min(self.end));
            if self.cursor >= limit {
                return Err(Full);
            }
            let take = n.min(limit - self.cursor);
            let run = self.cursor..self.cursor + take;
            match self.runs.last_mut() {
                Some(last) if last.end == run.start => last.end = run.end,
                _ => self.runs.push(run.clone()),
            }
            out.push(run);
            self.cursor += take;
            n -= take;
        }
        Ok(out)
    }

    /// Allocates `n` contiguous blocks at the first place after everything
    /// allocated so far where they fit; blocks skipped stay free.
    pub fn contiguous(&mut self, n: u64) -> Result<Range<u64>, Full> {
        loop {
            while self.idx < self.reserved.len() && self.reserved[self.idx].end <= self.cursor {
                self.idx += 1;
            }
            let next = self.reserved.get(self.idx);
            if let Some(r) = next.filter(|r| r.start <= self.cursor) {
                self.cursor = r.end;
                continue;
            }
            let limit = next.map_or(self.end, |r| r.start.min(self.end));
            if self.cursor.checked_add(n).is_some_and(|e| e <= limit) {
                return Ok(self.alloc(n)?.remove(0));
            }
            match next {
                Some(r) if r.start < self.end => self.cursor = r.end,
                _ => return Err(Full),
            }
        }
    }

    /// Allocates one block.
    pub fn one(&mut self) -> Result<u64, Full> {
        Ok(self.alloc(1)?[0].start)
    }

    /// Every block in use: reserved ranges plus allocated runs, merged.
    pub fn used(&self) -> Vec<Range<u64>> {
        let mut all = self.reserved.to_vec();
        all.extend(self.runs.iter().cloned());
        merge(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_skips_reserved_ranges() {
        let reserved = vec![0..10, 15..20];
        let mut a = Allocator::new(&reserved, 0, 30);
        assert_eq!(a.alloc(3).unwrap(), vec![10..13]);
        assert_eq!(a.alloc(5).unwrap(), vec![13..15, 20..23]);
        assert_eq!(a.alloc(8), Err(Full));
        assert_eq!(a.used(), vec![0..30]);
    }

    #[test]
    fn contiguous_skips_gaps_too_small() {
        let reserved = vec![0..10, 15..20, 40..50];
        let mut a = Allocator::new(&reserved, 0, 60);
        assert_eq!(a.alloc(2).unwrap(), vec![10..12]);
        assert_eq!(a.contiguous(5).unwrap(), 20..25);
        assert_eq!(a.alloc(1).unwrap(), vec![25..26]);
        assert_eq!(a.contiguous(14).unwrap(), 26..40);
        assert_eq!(a.contiguous(11), Err(Full));
        assert_eq!(a.contiguous(10).unwrap(), 50..60);
        assert_eq!(a.used(), vec![0..12, 15..60]);
    }

    #[test]
    fn merge_joins_touching_ranges() {
        assert_eq!(merge(vec![5..6, 0..2, 2..3, 4..5]), vec![0..3, 4..6]);
    }
}
