//! L1 and L2 table entries (qcow2.rst, "Cluster mapping").
//!
//! ```text
//! L1 entry:  63 COPIED | 56-62 reserved | 9-55 L2 table offset | 0-8 reserved
//! L2 entry:  63 COPIED | 62 compressed  | 0-61 cluster descriptor
//!   standard:   56-61 reserved | 9-55 host cluster offset | 1-8 reserved | 0 reads-as-zero (v3)
//!   compressed: x = 62 - (cluster_bits - 8)
//!               x-61 additional 512-byte sectors | 0..x-1 host byte offset
//! ```

use super::corrupt;
use crate::Result;

/// Bit 63 of L1/L2 entries: the target's refcount is exactly 1.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: compressed cluster.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 descriptor: the cluster reads as zeros (v3).
pub const OFLAG_ZERO: u64 = 1;
/// Bits 9-55: a cluster-aligned host offset (L1 entries, standard L2 entries).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Reserved bits of an L1 entry: 0-8 and 56-62.
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Reserved bits of a standard L2 entry, bit 0 excluded: 1-8 and 56-61.
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Size of the sectors compressed lengths are counted in.
pub const SECTOR: u64 = 512;

/// What one L2 entry says about a guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Entry {
    /// Not allocated: reads as zeros (there is no backing file).
    Unallocated,
    /// Reads as zeros (v3 zero flag), whether or not a host cluster is kept.
    Zero,
    /// Data in the host cluster at this offset.
    Standard(u64),
    /// Compressed data starting at host byte `offset`, at most `len` bytes
    /// (up to the end of its last sector).
    Compressed {
        /// Host byte offset of the compressed stream.
        offset: u64,
        /// Bytes from `offset` to the end of the stream's last sector.
        len: u64,
    },
}

/// An L1 entry pointing at the L2 table at `l2_offset` with refcount 1.
pub fn encode_l1(l2_offset: u64) -> u64 {
    l2_offset | OFLAG_COPIED
}

/// Decodes an L1 entry: the L2 table offset, or `None` when unallocated.
/// `at` is the entry's file offset, for errors.
pub fn decode_l1(entry: u64, at: u64) -> Result<Option<u64>> {
    if entry & L1_RESERVED != 0 {
        return Err(corrupt(
            "L1 entry",
            at,
            format!("{entry:#018x} has reserved bits set"),
        ));
    }
    let off = entry & OFFSET_MASK;
    Ok((off != 0).then_some(off))
}

/// A standard L2 entry for a data cluster at `host` with refcount 1.
pub fn encode_standard(host: u64) -> u64 {
    host | OFLAG_COPIED
}

/// A compressed L2 entry for `len` bytes at host byte `offset`. COPIED is
/// never set on compressed entries (qcow2.rst).
pub fn encode_compressed(offset: u64, len: u64, cluster_bits: u32) -> u64 {
    let x = 62 - (cluster_bits - 8);
    let extra_sectors = (offset + len - 1) / SECTOR - offset / SECTOR;
    OFLAG_COMPRESSED | (extra_sectors << x) | offset
}

/// Decodes an L2 entry of an image with `cluster_bits`; `v3` enables the zero
/// flag. `at` is the entry's file offset, for errors.
pub fn decode_l2(entry: u64, cluster_bits: u32, v3: bool, at: u64) -> Result<L2Entry> {
    if entry & OFLAG_COMPRESSED != 0 {
        let x = 62 - (cluster_bits - 8);
        let offset = entry & ((1u64 << x) - 1);
        let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
        // qemu qcow2_parse_compressed_l2_entry: csize = sectors * 512 - (offset & 511).
        let len = sectors * SECTOR - (offset % SECTOR);
        if entry & OFLAG_COPIED != 0 {
            return Err(corrupt(
                "L2 entry",
                at,
                format!("compressed entry {entry:#018x} has COPIED set"),
            ));
        }
        return Ok(L2Entry::Compressed { offset, len });
    }
    let reserved = if v3 {
        L2_RESERVED
    } else {
        L2_RESERVED | OFLAG_ZERO
    };
    if entry & reserved != 0 {
        return Err(corrupt(
            "L2 entry",
            at,
            format!("{entry:#018x} has reserved bits set (unaligned data cluster offset?)"),
        ));
    }
    let host = entry & OFFSET_MASK;
    if !host.is_multiple_of(1u64 << cluster_bits) {
        return Err(corrupt(
            "L2 entry",
            at,
            format!("data cluster offset {host:#x} is not cluster aligned"),
        ));
    }
    Ok(if v3 && entry & OFLAG_ZERO != 0 {
        L2Entry::Zero
    } else if host == 0 {
        L2Entry::Unallocated
    } else {
        L2Entry::Standard(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_entry_matches_qemu_example() {
        // formats-facts §1.4: a stream at 0x50000 of 35029 bytes with 64 KiB
        // clusters spans 69 sectors, i.e. 68 additional ones.
        let e = encode_compressed(0x50000, 35029, 16);
        assert_eq!(e >> 54 & 0xff, 68, "additional sectors at bit 54");
        assert_eq!(e & OFLAG_COPIED, 0, "no COPIED on compressed entries");
        let L2Entry::Compressed { offset, len } = decode_l2(e, 16, true, 0).unwrap() else {
            panic!("not decoded as compressed");
        };
        assert_eq!(offset, 0x50000);
        assert_eq!(len, 69 * 512);
    }

    #[test]
    fn standard_entry_round_trips_and_rejects_unaligned() {
        assert_eq!(
            decode_l2(encode_standard(0x70000), 16, true, 0).unwrap(),
            L2Entry::Standard(0x70000)
        );
        assert_eq!(decode_l2(OFLAG_ZERO, 16, true, 0).unwrap(), L2Entry::Zero);
        assert_eq!(decode_l2(0, 16, true, 0).unwrap(), L2Entry::Unallocated);
        assert!(decode_l2(0x50200 | OFLAG_COPIED, 16, true, 0).is_err());
        assert!(
            decode_l2(OFLAG_ZERO, 16, false, 0).is_err(),
            "zero flag is reserved in v2"
        );
    }

    #[test]
    fn l1_entry_rejects_reserved_bits() {
        assert_eq!(decode_l1(encode_l1(0x30000), 0).unwrap(), Some(0x30000));
        assert_eq!(decode_l1(0, 0).unwrap(), None);
        assert!(decode_l1(0x30001, 0).is_err());
    }
}
