//! The block allocation table (MS-VHDX 2.5): one u64 per payload block, with
//! a sector bitmap entry after every `chunk_ratio` payload entries.
//!
//! ```text
//! entry: bits 0-2 State | bits 3-19 reserved (0) | bits 20-63 FileOffsetMB
//! table: PB0 PB1 … PB(cr-1) SB0 PB(cr) … PB(2cr-1) SB1 …
//! ```

use std::ops::Range;

use super::{chunk_ratio, FORMAT, MIB};
use crate::io::{le64, ReadAt};
use crate::{Error, Result};

/// PAYLOAD_BLOCK_NOT_PRESENT (MS-VHDX 2.5.1.1).
pub const PAYLOAD_BLOCK_NOT_PRESENT: u64 = 0;
/// PAYLOAD_BLOCK_UNDEFINED.
pub const PAYLOAD_BLOCK_UNDEFINED: u64 = 1;
/// PAYLOAD_BLOCK_ZERO: the block reads as zeros.
pub const PAYLOAD_BLOCK_ZERO: u64 = 2;
/// PAYLOAD_BLOCK_UNMAPPED.
pub const PAYLOAD_BLOCK_UNMAPPED: u64 = 3;
/// UNMAPPED in the v0.95 draft; qemu still reads it as zeros.
const PAYLOAD_BLOCK_UNMAPPED_V095: u64 = 5;
/// PAYLOAD_BLOCK_FULLY_PRESENT: data at FileOffsetMB.
pub const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;
/// PAYLOAD_BLOCK_PARTIALLY_PRESENT: differencing disks only.
pub const PAYLOAD_BLOCK_PARTIALLY_PRESENT: u64 = 7;
/// SB_BLOCK_NOT_PRESENT: the only sector bitmap state of a non-differencing disk.
pub const SB_BLOCK_NOT_PRESENT: u64 = 0;

const STATE_MASK: u64 = 0b111;
const RESERVED_MASK: u64 = ((1 << 20) - 1) & !STATE_MASK;

/// The geometry of a BAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatGeometry {
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    /// ceil(virtual size / block size).
    pub payload_blocks: u64,
}

impl BatGeometry {
    /// Geometry for a disk; the arguments are validated (block size 1..256 MiB,
    /// sector 512/4096, size ≤ 64 TB), so nothing overflows.
    pub fn new(virtual_size: u64, block_size: u32, logical_sector: u32) -> Self {
        Self {
            chunk_ratio: chunk_ratio(logical_sector, block_size),
            payload_blocks: virtual_size.div_ceil(u64::from(block_size)),
        }
    }

    /// Entries we write: every payload entry and a bitmap entry for every
    /// started chunk, `payload + ceil(payload / chunk_ratio)` (MS-VHDX 2.5).
    pub fn written_entries(&self) -> u64 {
        self.payload_blocks + self.payload_blocks.div_ceil(self.chunk_ratio)
    }

    /// Entries a reader needs: up to the last payload entry,
    /// `payload + (payload - 1) / chunk_ratio` (qemu `vhdx_calc_bat_entries`).
    pub fn needed_entries(&self) -> u64 {
        match self.payload_blocks {
            0 => 0,
            n => n + (n - 1) / self.chunk_ratio,
        }
    }

    /// BAT region length for `written_entries`, rounded up to 1 MiB.
    pub fn region_length(&self) -> u64 {
        (self.written_entries() * 8).div_ceil(MIB).max(1) * MIB
    }
}

/// A BAT entry.
pub fn entry(state: u64, file_offset: u64) -> u64 {
    debug_assert!(file_offset.is_multiple_of(MIB));
    (file_offset / MIB) << 20 | state
}

/// What a reader needs from the BAT: each payload block's file offset, 0
/// where the block reads as zeros (a present block is never at 0: it lies
/// past the 1 MiB header section). 8 bytes per block, not 16.
#[derive(Clone, Debug, Default)]
pub struct BlockMap {
    /// File offset of each payload block (0: zeros).
    pub offsets: Vec<u64>,
}

impl BlockMap {
    /// File offset of payload block `i`, or None when it reads as zeros.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.offsets.get(i).copied().filter(|&o| o != 0)
    }
}

/// Reads the BAT at `bat` (bytes `bat.start..bat.end` of `src`, already
/// checked to lie inside the file) and validates every payload entry: only
/// known states, reserved bits 0, present blocks 1 MiB-aligned, inside the
/// file, not overlapping `reserved` (header section, log, regions) or each
/// other. Like qemu (`vhdx_check_bat_entries`), the last block may end past
/// the end of the file as long as its part inside the virtual size does not:
/// qemu-img's own fixed files are laid out that way.
pub fn read(
    src: &dyn ReadAt,
    bat: Range<u64>,
    geo: BatGeometry,
    block_size: u32,
    virtual_size: u64,
    reserved: &[Range<u64>],
) -> Result<BlockMap> {
    let corrupt = |offset: u64, detail: String| Error::Corrupt {
        format: FORMAT,
        structure: "BAT",
        offset,
        detail,
    };
    let need = geo
        .needed_entries()
        .checked_mul(8)
        .filter(|&n| n <= bat.end - bat.start)
        .ok_or_else(|| {
            corrupt(
                bat.start,
                format!(
                    "BAT region of {} bytes holds fewer than {} entries",
                    bat.end - bat.start,
                    geo.needed_entries()
                ),
            )
        })?;
    // `need` ≤ the region length ≤ the file length: bounded allocation.
    let need =
        usize::try_from(need).map_err(|_| corrupt(bat.start, "BAT larger than memory".into()))?;
    let mut raw = vec![0u8; need];
    src.read_exact_at(&mut raw, bat.start)
        .map_err(|e| Error::io(format!("vhdx: reading the BAT at {}", bat.start), e))?;
    let file_len = src.len();
    let mut offsets = Vec::with_capacity(usize::try_from(geo.payload_blocks).unwrap_or(0));
    let mut used: Vec<Range<u64>> = reserved.to_vec();
    for i in 0..geo.needed_entries() {
        let at = usize::try_from(i * 8).expect("inside raw, which fits usize");
        let e = le64(&raw, at);
        let entry_at = bat.start + i * 8;
        let is_bitmap = (i + 1) % (geo.chunk_ratio + 1) == 0;
        if e & RESERVED_MASK != 0 {
            return Err(corrupt(
                entry_at,
                format!("entry {i} ({e:#x}) has reserved bits set"),
            ));
        }
        let state = e & STATE_MASK;
        if is_bitmap {
            if state != SB_BLOCK_NOT_PRESENT {
                return Err(Error::Unsupported {
                    format: FORMAT,
                    feature: format!(
                        "sector bitmap block present (BAT entry {i}; differencing disk)"
                    ),
                });
            }
            continue;
        }
        let block = match state {
            PAYLOAD_BLOCK_NOT_PRESENT
            | PAYLOAD_BLOCK_UNDEFINED
            | PAYLOAD_BLOCK_ZERO
            | PAYLOAD_BLOCK_UNMAPPED
            | PAYLOAD_BLOCK_UNMAPPED_V095 => 0,
            PAYLOAD_BLOCK_FULLY_PRESENT => {
                let off = (e >> 20) * MIB;
                // Bytes of this block inside the virtual size (payload i < payload_blocks).
                let payload = i - i / (geo.chunk_ratio + 1);
                let used_len =
                    u64::from(block_size).min(virtual_size - payload * u64::from(block_size));
                let end = off
                    .checked_add(used_len)
                    .filter(|&end| off >= MIB && end <= file_len);
                let Some(end) = end else {
                    return Err(corrupt(entry_at, format!("entry {i}: block at {off} is not inside the file ({file_len} bytes) past 1 MiB")));
                };
                used.push(off..end);
                off
            }
            PAYLOAD_BLOCK_PARTIALLY_PRESENT => {
                return Err(Error::Unsupported {
                    format: FORMAT,
                    feature: format!("partially present block (BAT entry {i}; differencing disk)"),
                });
            }
            other => {
                return Err(corrupt(
                    entry_at,
                    format!("entry {i}: unknown payload state {other}"),
                ))
            }
        };
        offsets.push(block);
    }
    debug_assert_eq!(offsets.len() as u64, geo.payload_blocks);
    check_disjoint(&mut used).map_err(|d| corrupt(bat.start, d))?;
    Ok(BlockMap { offsets })
}

/// Fails if any two non-empty ranges overlap (blocks with blocks, blocks
/// with metadata). An empty range (a log of length 0) overlaps nothing.
fn check_disjoint(ranges: &mut Vec<Range<u64>>) -> std::result::Result<(), String> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| (r.start, r.end));
    for w in ranges.windows(2) {
        if w[1].start < w[0].end {
            return Err(format!("file ranges {:?} and {:?} overlap", w[0], w[1]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_sizes_bat_for_trailing_bitmap_entry() {
        // 4 GiB + 1 MiB with 1 MiB blocks: 4097 payload, 2 bitmap entries.
        let g = BatGeometry::new((4 << 30) + (1 << 20), 1 << 20, 512);
        assert_eq!(g.payload_blocks, 4097);
        assert_eq!(g.written_entries(), 4099);
        assert_eq!(g.needed_entries(), 4098);
        assert_eq!(g.region_length(), 1 << 20);
        // Exactly 4 GiB: the last payload entry is 4095, no bitmap needed by qemu.
        let g = BatGeometry::new(4 << 30, 1 << 20, 512);
        assert_eq!((g.needed_entries(), g.written_entries()), (4096, 4097));
    }

    fn bat(entries: &[u64]) -> Vec<u8> {
        entries.iter().flat_map(|e| e.to_le_bytes()).collect()
    }

    /// A source whose BAT sits at 0 and whose length is `len`.
    struct Src(Vec<u8>, u64);
    impl ReadAt for Src {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.0.as_slice().read_exact_at(buf, offset)
        }
        fn len(&self) -> u64 {
            self.1
        }
    }

    fn read_bat(entries: &[u64], file_len: u64) -> Result<BlockMap> {
        let g = BatGeometry::new(2 << 20, 1 << 20, 512);
        let mut b = bat(entries);
        b.resize(4096, 0);
        read(
            &Src(b, file_len),
            0..4096,
            g,
            1 << 20,
            2 << 20,
            std::slice::from_ref(&(0..(4 << 20))),
        )
    }

    #[test]
    fn bat_reads_present_and_zero_blocks() {
        let m = read_bat(
            &[
                entry(PAYLOAD_BLOCK_FULLY_PRESENT, 5 << 20),
                entry(PAYLOAD_BLOCK_ZERO, 0),
            ],
            8 << 20,
        )
        .unwrap();
        assert_eq!((m.get(0), m.get(1), m.get(2)), (Some(5 << 20), None, None));
    }

    #[test]
    fn bat_entry_rejects_offset_past_end_of_file() {
        let e = [entry(PAYLOAD_BLOCK_FULLY_PRESENT, 7 << 20), 0];
        assert!(matches!(
            read_bat(&e, (7 << 20) + 4096),
            Err(Error::Corrupt { .. })
        ));
        let e = [(1u64 << 63) | PAYLOAD_BLOCK_FULLY_PRESENT, 0];
        assert!(matches!(read_bat(&e, 8 << 20), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn bat_rejects_overlapping_blocks_and_metadata() {
        let p = PAYLOAD_BLOCK_FULLY_PRESENT;
        assert!(read_bat(&[entry(p, 5 << 20), entry(p, 5 << 20)], 8 << 20).is_err());
        assert!(read_bat(&[entry(p, 3 << 20), 0], 8 << 20).is_err());
    }

    #[test]
    fn bat_rejects_reserved_bits_unknown_states_and_differencing() {
        assert!(matches!(
            read_bat(&[1 << 3, 0], 8 << 20),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            read_bat(&[4, 0], 8 << 20),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            read_bat(&[PAYLOAD_BLOCK_PARTIALLY_PRESENT, 0], 8 << 20),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn bat_rejects_region_too_small() {
        let g = BatGeometry::new(2 << 20, 1 << 20, 512);
        assert!(read(&Src(vec![0; 16], 16), 0..8, g, 1 << 20, 2 << 20, &[]).is_err());
    }
}
