//! The metadata region (MS-VHDX 2.6): a 64 KiB table of items, then the
//! items' data. A fixed or dynamic disk has exactly five required items.

use super::guid::{
    Guid, FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, PAGE83_DATA, PARENT_LOCATOR, PHYSICAL_SECTOR_SIZE,
    VIRTUAL_DISK_SIZE,
};
use super::region::Region;
use super::{FORMAT, KIB64, MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, MIB, MIN_BLOCK_SIZE};
use crate::io::{le16, le32, le64, ReadAt};
use crate::{Error, Result};

/// "metadata" (MS-VHDX 2.6.1.1).
pub const METADATA_SIGNATURE: &[u8; 8] = b"metadata";
/// Entry flags (MS-VHDX 2.6.1.2; qemu VHDX_META_FLAGS_*).
const IS_VIRTUAL_DISK: u32 = 1 << 1;
const IS_REQUIRED: u32 = 1 << 2;
/// At most 2047 entries (MS-VHDX 2.6.1.1).
const MAX_ENTRIES: u16 = 2047;

/// The disk parameters the five required items carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskParams {
    /// Payload block size (File Parameters).
    pub block_size: u32,
    /// LeaveBlockAllocated: a fully provisioned ("fixed") file.
    pub leave_block_allocated: bool,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// Page 83 data / virtual disk id.
    pub disk_id: Guid,
    /// Logical sector size: 512 or 4096.
    pub logical_sector: u32,
    /// Physical sector size: 512 or 4096.
    pub physical_sector: u32,
}

/// Item id, flags and data, in the order qemu writes them.
fn items(p: &DiskParams) -> [(Guid, u32, Vec<u8>); 5] {
    let vd = IS_VIRTUAL_DISK | IS_REQUIRED;
    let mut fp = p.block_size.to_le_bytes().to_vec();
    fp.extend_from_slice(&u32::from(p.leave_block_allocated).to_le_bytes());
    [
        (FILE_PARAMETERS, IS_REQUIRED, fp),
        (VIRTUAL_DISK_SIZE, vd, p.virtual_size.to_le_bytes().to_vec()),
        (PAGE83_DATA, vd, p.disk_id.to_le_bytes().to_vec()),
        (
            LOGICAL_SECTOR_SIZE,
            vd,
            p.logical_sector.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            vd,
            p.physical_sector.to_le_bytes().to_vec(),
        ),
    ]
}

/// The start of the metadata region: the table, then the items packed from
/// 64 KiB. The rest of the region is zeros.
pub fn encode(p: &DiskParams) -> Vec<u8> {
    let items = items(p);
    let mut b = vec![0u8; KIB64];
    b[0..8].copy_from_slice(METADATA_SIGNATURE);
    b[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    for (i, (guid, flags, data)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        let at = b.len() as u32;
        b[e..e + 16].copy_from_slice(&guid.to_le_bytes());
        b[e + 16..e + 20].copy_from_slice(&at.to_le_bytes());
        b[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        b[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(data);
    }
    b
}

/// Reads and validates the metadata region `region` of `src`.
pub fn decode(src: &dyn ReadAt, region: Region) -> Result<DiskParams> {
    let corrupt = |offset: u64, detail: String| Error::Corrupt {
        format: FORMAT,
        structure: "metadata",
        offset,
        detail,
    };
    let mut table = vec![0u8; KIB64];
    src.read_exact_at(&mut table, region.offset).map_err(|e| {
        Error::io(
            format!("vhdx: reading the metadata table at {}", region.offset),
            e,
        )
    })?;
    if &table[0..8] != METADATA_SIGNATURE {
        return Err(corrupt(
            region.offset,
            "signature is not \"metadata\"".into(),
        ));
    }
    let count = le16(&table, 10);
    if count > MAX_ENTRIES {
        return Err(corrupt(
            region.offset,
            format!("EntryCount {count} exceeds {MAX_ENTRIES}"),
        ));
    }
    let mut found: [Option<Vec<u8>>; 5] = Default::default();
    let known = [
        FILE_PARAMETERS,
        VIRTUAL_DISK_SIZE,
        PAGE83_DATA,
        LOGICAL_SECTOR_SIZE,
        PHYSICAL_SECTOR_SIZE,
    ];
    let lens = [8usize, 8, 16, 4, 4];
    for i in 0..usize::from(count) {
        let e = 32 + 32 * i;
        let entry_at = region.offset + e as u64;
        let guid = Guid::from_le_slice(&table, e);
        let (offset, length, flags) = (
            le32(&table, e + 16),
            le32(&table, e + 20),
            le32(&table, e + 24),
        );
        if flags & !0b111 != 0 || le32(&table, e + 28) != 0 {
            return Err(corrupt(entry_at, format!("item {guid}: reserved bits set")));
        }
        if length > 0
            && (offset < KIB64 as u32
                || u64::from(offset) + u64::from(length) > u64::from(region.length))
        {
            return Err(corrupt(
                entry_at,
                format!("item {guid}: {length} bytes at {offset} lie outside 64 KiB..region end"),
            ));
        }
        if u64::from(length) > MIB {
            return Err(corrupt(
                entry_at,
                format!("item {guid}: Length {length} exceeds 1 MiB"),
            ));
        }
        let Some(k) = known.iter().position(|g| *g == guid) else {
            if guid == PARENT_LOCATOR {
                return Err(Error::Unsupported {
                    format: FORMAT,
                    feature: "differencing disk (parent locator)".into(),
                });
            }
            if flags & IS_REQUIRED != 0 {
                return Err(Error::Unsupported {
                    format: FORMAT,
                    feature: format!("unknown required metadata item {guid}"),
                });
            }
            continue;
        };
        if found[k].is_some() {
            return Err(corrupt(entry_at, format!("item {guid} listed twice")));
        }
        if length as usize != lens[k] {
            return Err(corrupt(
                entry_at,
                format!("item {guid}: Length {length}, expected {}", lens[k]),
            ));
        }
        let mut data = vec![0u8; lens[k]];
        src.read_exact_at(&mut data, region.offset + u64::from(offset))
            .map_err(|e| Error::io(format!("vhdx: reading metadata item {guid}"), e))?;
        found[k] = Some(data);
    }
    let [Some(fp), Some(vs), Some(id), Some(ls), Some(ps)] = found else {
        let missing = known
            .iter()
            .zip(&found)
            .find(|(_, f)| f.is_none())
            .map(|(g, _)| *g)
            .unwrap_or_default();
        return Err(corrupt(
            region.offset,
            format!("required item {missing} is missing"),
        ));
    };
    let params = DiskParams {
        block_size: le32(&fp, 0),
        leave_block_allocated: le32(&fp, 4) & 1 == 1,
        virtual_size: le64(&vs, 0),
        disk_id: Guid::from_le_slice(&id, 0),
        logical_sector: le32(&ls, 0),
        physical_sector: le32(&ps, 0),
    };
    let fp_flags = le32(&fp, 4);
    if fp_flags & 2 != 0 {
        return Err(Error::Unsupported {
            format: FORMAT,
            feature: "differencing disk (HasParent)".into(),
        });
    }
    if fp_flags & !3 != 0 {
        return Err(corrupt(
            region.offset,
            format!("File Parameters flags {fp_flags:#x} has reserved bits set"),
        ));
    }
    validate(&params).map_err(|d| corrupt(region.offset, d))?;
    Ok(params)
}

/// Range checks of MS-VHDX 2.6.2.
pub fn validate(p: &DiskParams) -> std::result::Result<(), String> {
    if !p.block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&p.block_size)
    {
        return Err(format!(
            "BlockSize {} is not a power of two from 1 MiB to 256 MiB",
            p.block_size
        ));
    }
    for (name, v) in [
        ("LogicalSectorSize", p.logical_sector),
        ("PhysicalSectorSize", p.physical_sector),
    ] {
        if v != 512 && v != 4096 {
            return Err(format!("{name} {v} is neither 512 nor 4096"));
        }
    }
    if p.virtual_size == 0
        || p.virtual_size > MAX_VIRTUAL_SIZE
        || !p.virtual_size.is_multiple_of(u64::from(p.logical_sector))
    {
        return Err(format!(
            "VirtualDiskSize {} is not a non-zero multiple of {} up to 64 TB",
            p.virtual_size, p.logical_sector
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: DiskParams = DiskParams {
        block_size: 1 << 20,
        leave_block_allocated: false,
        virtual_size: 10 << 20,
        disk_id: Guid([5; 16]),
        logical_sector: 512,
        physical_sector: 4096,
    };
    const R: Region = Region {
        offset: 0,
        length: 1 << 20,
    };

    fn region(b: &[u8]) -> Vec<u8> {
        let mut r = b.to_vec();
        r.resize(1 << 20, 0);
        r
    }

    #[test]
    fn metadata_round_trips_with_qemu_layout() {
        let b = encode(&P);
        // Items packed from 64 KiB in qemu's order: 8, 8, 16, 4, 4 bytes.
        assert_eq!(le32(&b, 32 + 16), 0x10000);
        assert_eq!(le32(&b, 32 + 4 * 32 + 16), 0x10024);
        assert_eq!(le32(&b, 32 + 24), 4);
        assert_eq!(le32(&b, 64 + 24), 6);
        assert_eq!(decode(&region(&b), R).unwrap(), P);
    }

    #[test]
    fn metadata_rejects_bad_block_size_and_sizes() {
        for bad in [
            DiskParams {
                block_size: 3 << 20,
                ..P
            },
            DiskParams {
                block_size: 512 << 20,
                ..P
            },
            DiskParams {
                logical_sector: 1024,
                ..P
            },
            DiskParams {
                virtual_size: MAX_VIRTUAL_SIZE + 512,
                ..P
            },
            DiskParams {
                virtual_size: 1000,
                ..P
            },
            DiskParams {
                virtual_size: 0,
                ..P
            },
        ] {
            assert!(
                matches!(
                    decode(&region(&encode(&bad)), R),
                    Err(Error::Corrupt { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn metadata_refuses_parents_and_unknown_required_items() {
        let mut b = encode(&P);
        b[0x10004] = 2; // HasParent
        assert!(matches!(
            decode(&region(&b), R),
            Err(Error::Unsupported { .. })
        ));
        let mut b = encode(&P);
        b[32..48].copy_from_slice(&[9u8; 16]); // File Parameters id replaced by an unknown one
        assert!(matches!(
            decode(&region(&b), R),
            Err(Error::Unsupported { .. })
        ));
        let mut b = encode(&P);
        b[32 + 24] = 0; // ... not required: skipped, then File Parameters is missing
        b[32..48].copy_from_slice(&[9u8; 16]);
        assert!(matches!(decode(&region(&b), R), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn metadata_rejects_items_outside_region() {
        let mut b = encode(&P);
        b[32 + 16..32 + 20].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        assert!(matches!(decode(&region(&b), R), Err(Error::Corrupt { .. })));
    }
}
