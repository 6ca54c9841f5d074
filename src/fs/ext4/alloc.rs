//! Block placement: where each group's bitmaps and inode table go (flex_bg,
//! as mke2fs lays them out), and a bump allocator for everything else.
//!
//! ```text
//! flex group f = groups 16f..16f+15, its metadata at the start of group 16f:
//! [sb+GDT copy?][block bitmaps x16][inode bitmaps x16][inode tables x16][data...]
//! ```
//! Data is handed out in increasing block order, skipping the reserved
//! ranges (superblock copies and flex metadata), so the whole allocation is
//! a sorted list of runs: cheap to keep even for a 64 TiB filesystem.

use std::ops::Range;

use super::superblock::{Geometry, LOG_GROUPS_PER_FLEX};

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
}

/// The filesystem ran out of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Layout {
    /// Places the superblock copies and every flex group's metadata.
    pub fn new(geo: &Geometry) -> Result<Self, Full> {
        let mut reserved: Vec<Range<u64>> = Vec::new();
        for g in 0..geo.groups {
            let n = geo.super_blocks(g);
            if n > 0 {
                reserved.push(geo.group_start(g)..geo.group_start(g) + n);
            }
        }
        let supers = reserved.clone();
        let flex = 1u32 << LOG_GROUPS_PER_FLEX;
        let mut groups = Vec::with_capacity(geo.groups as usize);
        for first in (0..geo.groups).step_by(flex as usize) {
            let n = flex.min(geo.groups - first);
            let mut cur = geo.group_start(first) + geo.super_blocks(first);
            let bb = place(&supers, &mut cur, u64::from(n), geo.blocks)?;
            let ib = place(&supers, &mut cur, u64::from(n), geo.blocks)?;
            let mut tables = Vec::with_capacity(n as usize);
            for _ in 0..n {
                tables.push(place(&supers, &mut cur, geo.itable_blocks, geo.blocks)?);
            }
            for (i, &inode_table) in tables.iter().enumerate() {
                let i = i as u64;
                groups.push(GroupMeta {
                    block_bitmap: bb + i,
                    inode_bitmap: ib + i,
                    inode_table,
                });
                reserved.push(inode_table..inode_table + geo.itable_blocks);
            }
            reserved.push(bb..bb + u64::from(n));
            reserved.push(ib..ib + u64::from(n));
        }
        Ok(Self {
            groups,
            reserved: merge(reserved),
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
    /// An allocator for blocks `0..end` avoiding `reserved` (sorted, merged).
    pub fn new(reserved: &'a [Range<u64>], end: u64) -> Self {
        Self {
            reserved,
            idx: 0,
            cursor: 0,
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
        let mut a = Allocator::new(&reserved, 30);
        assert_eq!(a.alloc(3).unwrap(), vec![10..13]);
        assert_eq!(a.alloc(5).unwrap(), vec![13..15, 20..23]);
        assert_eq!(a.alloc(8), Err(Full));
        assert_eq!(a.used(), vec![0..30]);
    }

    #[test]
    fn merge_joins_touching_ranges() {
        assert_eq!(merge(vec![5..6, 0..2, 2..3, 4..5]), vec![0..3, 4..6]);
    }
}
