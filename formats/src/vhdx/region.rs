//! The region table (MS-VHDX 2.2.3): where the BAT and the metadata live.
//! Two identical 64 KiB copies at 192 KiB and 256 KiB.

use super::guid::{Guid, BAT_REGION, METADATA_REGION};
use super::{crc_with_zeroed, FORMAT, KIB64, MIB};
use crate::io::{le32, le64};
use crate::{Error, Result};

/// "regi" (MS-VHDX 2.2.3.1).
pub const REGION_SIGNATURE: &[u8; 4] = b"regi";
/// Offsets of the two region tables (MS-VHDX 2.2).
pub const REGION_OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
/// At most 2047 entries (MS-VHDX 2.2.3.1).
const MAX_ENTRIES: u32 = 2047;

/// A region: a 1 MiB-aligned byte range of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// File offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u32,
}

impl Region {
    /// End offset (exclusive); cannot overflow for validated regions.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(u64::from(self.length))
    }
}

/// The two regions a fixed or dynamic disk has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regions {
    /// Block allocation table.
    pub bat: Region,
    /// Metadata region.
    pub metadata: Region,
}

/// The 64 KiB region table listing the BAT and the metadata region, both
/// Required as the spec says (qemu writes 0 there but accepts 1).
pub fn encode(regions: &Regions) -> Vec<u8> {
    let mut b = vec![0u8; KIB64];
    b[0..4].copy_from_slice(REGION_SIGNATURE);
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    for (i, (guid, r)) in [
        (BAT_REGION, regions.bat),
        (METADATA_REGION, regions.metadata),
    ]
    .iter()
    .enumerate()
    {
        let e = 16 + 32 * i;
        b[e..e + 16].copy_from_slice(&guid.to_le_bytes());
        b[e + 16..e + 24].copy_from_slice(&r.offset.to_le_bytes());
        b[e + 24..e + 28].copy_from_slice(&r.length.to_le_bytes());
        b[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
    }
    let crc = crc_with_zeroed(&b, 4);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Parses a region table read at `offset` from a file of `file_len` bytes.
pub fn decode(b: &[u8], offset: u64, file_len: u64) -> Result<Regions> {
    let corrupt = |detail: String| Error::Corrupt {
        format: FORMAT,
        structure: "region table",
        offset,
        detail,
    };
    if b.len() < KIB64 || &b[0..4] != REGION_SIGNATURE {
        return Err(corrupt("signature is not \"regi\"".into()));
    }
    let b = &b[..KIB64];
    let (stored, computed) = (le32(b, 4), crc_with_zeroed(b, 4));
    if stored != computed {
        return Err(Error::BadChecksum {
            format: FORMAT,
            structure: "region table",
            offset,
            expected: stored,
            found: computed,
        });
    }
    let count = le32(b, 8);
    if count > MAX_ENTRIES {
        return Err(corrupt(format!("EntryCount {count} exceeds {MAX_ENTRIES}")));
    }
    let (mut bat, mut metadata) = (None, None);
    for i in 0..usize::try_from(count).map_err(|_| corrupt("EntryCount".into()))? {
        let e = 16 + 32 * i;
        let guid = Guid::from_le_slice(b, e);
        let region = Region {
            offset: le64(b, e + 16),
            length: le32(b, e + 24),
        };
        let required = le32(b, e + 28) & 1 == 1;
        let slot = if guid == BAT_REGION {
            &mut bat
        } else if guid == METADATA_REGION {
            &mut metadata
        } else if required {
            return Err(Error::Unsupported {
                format: FORMAT,
                feature: format!("unknown required region {guid}"),
            });
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(corrupt(format!("region {guid} listed twice")));
        }
        check_region(&region, file_len).map_err(|d| corrupt(format!("region {guid}: {d}")))?;
        *slot = Some(region);
    }
    let bat = bat.ok_or_else(|| corrupt("no BAT region".into()))?;
    let metadata = metadata.ok_or_else(|| corrupt("no metadata region".into()))?;
    if bat.offset < metadata.end() && metadata.offset < bat.end() {
        return Err(corrupt("the BAT and metadata regions overlap".into()));
    }
    Ok(Regions { bat, metadata })
}

/// A region is 1 MiB-aligned, past the header section, non-empty and inside the file.
fn check_region(r: &Region, file_len: u64) -> std::result::Result<(), String> {
    if r.offset < MIB || !r.offset.is_multiple_of(MIB) {
        return Err(format!(
            "FileOffset {} is not a multiple of 1 MiB past 1 MiB",
            r.offset
        ));
    }
    if r.length == 0 || !u64::from(r.length).is_multiple_of(MIB) {
        return Err(format!(
            "Length {} is not a non-zero multiple of 1 MiB",
            r.length
        ));
    }
    match r.offset.checked_add(u64::from(r.length)) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(format!("ends past the end of the file ({file_len} bytes)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: Regions = Regions {
        bat: Region {
            offset: 2 << 20,
            length: 1 << 20,
        },
        metadata: Region {
            offset: 3 << 20,
            length: 1 << 20,
        },
    };

    #[test]
    fn region_table_round_trips() {
        let b = encode(&REGIONS);
        assert_eq!(decode(&b, 0, 8 << 20).unwrap(), REGIONS);
    }

    #[test]
    fn region_table_rejects_bad_checksum_and_regions_past_eof() {
        let mut b = encode(&REGIONS);
        b[60000] = 1;
        assert!(matches!(
            decode(&b, 0, 8 << 20),
            Err(Error::BadChecksum { .. })
        ));
        assert!(matches!(
            decode(&encode(&REGIONS), 0, 3 << 20),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn region_table_rejects_overlap_and_misalignment() {
        let overlap = Regions {
            bat: REGIONS.bat,
            metadata: Region {
                offset: 2 << 20,
                length: 1 << 20,
            },
        };
        assert!(decode(&encode(&overlap), 0, 8 << 20).is_err());
        let odd = Regions {
            bat: Region {
                offset: (2 << 20) + 4096,
                length: 1 << 20,
            },
            ..REGIONS
        };
        assert!(decode(&encode(&odd), 0, 8 << 20).is_err());
    }

    #[test]
    fn unknown_required_region_is_unsupported() {
        let mut b = encode(&REGIONS);
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        let e = 16 + 64;
        b[e..e + 16].copy_from_slice(&[7u8; 16]);
        b[e + 16..e + 24].copy_from_slice(&(4u64 << 20).to_le_bytes());
        b[e + 24..e + 28].copy_from_slice(&(1u32 << 20).to_le_bytes());
        b[e + 28] = 1;
        let crc = crc_with_zeroed(&b, 4);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode(&b, 0, 8 << 20),
            Err(Error::Unsupported { .. })
        ));
        b[e + 28] = 0;
        let crc = crc_with_zeroed(&b, 4);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&b, 0, 8 << 20).unwrap(), REGIONS);
    }
}
