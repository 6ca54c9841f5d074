//! GUID Partition Table (UEFI 2.10 §5.3): protective MBR, primary and backup
//! headers and entry arrays, encoded straight into extents (no full-size
//! device needed, unlike the `gpt` crate, whose `add_partition` also draws
//! random partition GUIDs) and decoded for `inspect` and the tests.
//!
//! ```text
//! LBA 0 PMBR | LBA 1 header | LBA 2..33 entries | partitions ... | entries | last LBA: backup header
//! ```

use imgbuild_formats::{ReadAt, VirtualDiskBuilder};
use serde::Serialize;

use crate::ids::{guid_le, uuid_string};

/// Logical block size (512-byte LBAs).
pub const LBA: u64 = 512;
/// Entries in each array (UEFI minimum 16 KiB: 128 x 128 bytes).
pub const ENTRIES: u64 = 128;
/// Size of one entry.
pub const ENTRY_SIZE: u64 = 128;
/// LBAs of one entry array.
const ARRAY_LBAS: u64 = ENTRIES * ENTRY_SIZE / LBA;
/// First usable LBA: PMBR + header + array.
pub const FIRST_USABLE: u64 = 2 + ARRAY_LBAS;

/// Partition type GUIDs (UEFI; Discoverable Partitions Specification).
pub mod types {
    /// EFI System Partition.
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Linux root (x86-64).
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Linux root (AArch64).
    pub const ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
    /// Extended boot loader partition.
    pub const XBOOTLDR: &str = "bc13c2ff-59e6-4262-a352-b275fd6f7172";
    /// Linux /usr (x86-64).
    pub const USR_X86_64: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
    /// Linux swap.
    pub const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
    /// Linux generic data.
    pub const LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    /// BIOS boot partition.
    pub const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";

    /// A readable name for a type GUID.
    pub fn name(guid: &str) -> &'static str {
        match guid {
            ESP => "esp",
            ROOT_X86_64 => "root-x86-64",
            ROOT_ARM64 => "root-arm64",
            XBOOTLDR => "xbootldr",
            USR_X86_64 => "usr-x86-64",
            SWAP => "swap",
            LINUX_DATA => "linux-data",
            BIOS_BOOT => "bios-boot",
            _ => "unknown",
        }
    }
}

/// One partition to write. `first_lba..=last_lba` is inclusive, as in GPT.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Type GUID (big-endian/textual byte order).
    pub type_guid: [u8; 16],
    /// Unique partition GUID (big-endian/textual byte order).
    pub guid: [u8; 16],
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// Name (at most 36 UTF-16 code units).
    pub name: String,
}

/// A partition as `inspect` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Start, bytes.
    pub start: u64,
    /// End (exclusive), bytes.
    pub end: u64,
    /// Type GUID.
    pub type_guid: String,
    /// Readable type name.
    pub type_name: String,
    /// Unique GUID.
    pub guid: String,
    /// Name.
    pub name: String,
    /// Attribute bits.
    pub attributes: u64,
}

/// What is wrong with a partition table to be written.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// The disk cannot hold the tables.
    #[error("disk of {size} bytes is too small for a GPT (or not a multiple of 512)")]
    DiskTooSmall {
        /// Disk size.
        size: u64,
    },
    /// A partition lies outside the usable area or overlaps another.
    #[error("partition {index} ({name:?}) at LBA {first}..={last} is outside LBA {first_usable}..={last_usable} or overlaps the previous one")]
    BadPartition {
        /// 1-based index.
        index: usize,
        /// Its name.
        name: String,
        /// First LBA.
        first: u64,
        /// Last LBA.
        last: u64,
        /// First usable LBA.
        first_usable: u64,
        /// Last usable LBA.
        last_usable: u64,
    },
    /// A name is longer than 36 UTF-16 units.
    #[error("partition name {0:?} is longer than 36 UTF-16 code units")]
    NameTooLong(String),
    /// More partitions than entries.
    #[error("{0} partitions; a GPT here holds at most 128")]
    TooMany(usize),
}

/// The last usable LBA of a disk of `size` bytes.
pub fn last_usable(size: u64) -> u64 {
    size / LBA - 1 - ARRAY_LBAS - 1
}

/// Places the protective MBR (with `boot_code` in its first 440 bytes, the
/// area the MBR reserves for code), both headers and both entry arrays for
/// a disk of `size` bytes. Partitions must be sorted and must not overlap.
pub fn write(
    disk: &mut VirtualDiskBuilder,
    size: u64,
    disk_guid: [u8; 16],
    parts: &[Partition],
    boot_code: Option<&[u8; 440]>,
) -> Result<(), GptError> {
    if !size.is_multiple_of(LBA) || size / LBA < 2 * FIRST_USABLE + 1 {
        return Err(GptError::DiskTooSmall { size });
    }
    if parts.len() as u64 > ENTRIES {
        return Err(GptError::TooMany(parts.len()));
    }
    let last_lba = size / LBA - 1;
    let lu = last_usable(size);
    let mut prev_end = FIRST_USABLE;
    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        if p.first_lba < prev_end || p.last_lba < p.first_lba || p.last_lba > lu {
            return Err(GptError::BadPartition {
                index: i + 1,
                name: p.name.clone(),
                first: p.first_lba,
                last: p.last_lba,
                first_usable: FIRST_USABLE,
                last_usable: lu,
            });
        }
        prev_end = p.last_lba + 1;
        encode_entry(
            &mut array[i * ENTRY_SIZE as usize..][..ENTRY_SIZE as usize],
            p,
        )?;
    }
    let array_crc = crc32fast::hash(&array);
    let mut mbr = protective_mbr(size);
    if let Some(code) = boot_code {
        mbr[..440].copy_from_slice(code);
    }
    disk.bytes(0, mbr.to_vec());
    let primary = Header {
        my_lba: 1,
        alternate_lba: last_lba,
        entries_lba: 2,
        last_usable: lu,
        disk_guid,
        array_crc,
    };
    let backup = Header {
        my_lba: last_lba,
        alternate_lba: 1,
        entries_lba: last_lba - ARRAY_LBAS,
        ..primary
    };
    disk.bytes(LBA, primary.encode().to_vec());
    disk.bytes(2 * LBA, array.clone());
    disk.bytes((last_lba - ARRAY_LBAS) * LBA, array);
    disk.bytes(last_lba * LBA, backup.encode().to_vec());
    Ok(())
}

fn protective_mbr(size: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    let r = &mut m[446..462];
    r[0] = 0x00; // not bootable
    r[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // starting CHS
    r[4] = 0xEE; // GPT protective
    r[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // ending CHS
    r[8..12].copy_from_slice(&1u32.to_le_bytes());
    let sectors = u32::try_from(size / LBA - 1).unwrap_or(u32::MAX);
    r[12..16].copy_from_slice(&sectors.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

fn encode_entry(e: &mut [u8], p: &Partition) -> Result<(), GptError> {
    e[0..16].copy_from_slice(&guid_le(p.type_guid));
    e[16..32].copy_from_slice(&guid_le(p.guid));
    e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
    e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
    e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
    let units: Vec<u16> = p.name.encode_utf16().collect();
    if units.len() > 36 {
        return Err(GptError::NameTooLong(p.name.clone()));
    }
    for (i, u) in units.iter().enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    entries_lba: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    array_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&self.my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&self.alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guid_le(self.disk_guid));
        h[72..80].copy_from_slice(&self.entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&self.array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// Why a disk's GPT cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GptReadError {
    /// Reading the disk failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `HeaderSize` is outside 92..=512.
    #[error("GPT header size {0} is invalid")]
    HeaderSize(usize),
    /// `HeaderCRC32` does not match.
    #[error("GPT header checksum mismatch")]
    HeaderChecksum,
    /// The entry count or size is not one we read.
    #[error("GPT entry array shape {entries} x {entry_size} is invalid")]
    ArrayShape {
        /// `NumberOfPartitionEntries`.
        entries: u64,
        /// `SizeOfPartitionEntry`.
        entry_size: u64,
    },
    /// The entry array does not lie inside the disk.
    #[error("GPT entry array lies outside the disk")]
    ArrayOutside,
    /// `PartitionEntryArrayCRC32` does not match.
    #[error("GPT entry array checksum mismatch")]
    ArrayChecksum,
}

/// Reads the primary GPT of a disk. `Ok(None)` when there is none (no
/// signature); an error when one is there but damaged.
pub fn read_partitions(disk: &dyn ReadAt) -> Result<Option<Vec<PartitionInfo>>, GptReadError> {
    use imgbuild_formats::io::{le32, le64};
    if disk.len() < 3 * LBA {
        return Ok(None);
    }
    let mut h = [0u8; 512];
    disk.read_exact_at(&mut h, LBA)?;
    if &h[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let hsize = le32(&h, 12) as usize;
    if !(92..=512).contains(&hsize) {
        return Err(GptReadError::HeaderSize(hsize));
    }
    let mut c = h;
    c[16..20].fill(0);
    let crc = crc32fast::hash(&c[..hsize]);
    if crc != le32(&h, 16) {
        return Err(GptReadError::HeaderChecksum);
    }
    let (lba, n, esize) = (
        le64(&h, 72),
        u64::from(le32(&h, 80)),
        u64::from(le32(&h, 84)),
    );
    if esize < 128 || esize % 8 != 0 || esize > 4096 || n > 4096 {
        return Err(GptReadError::ArrayShape {
            entries: n,
            entry_size: esize,
        });
    }
    let array_len = n * esize;
    let inside = lba
        .checked_mul(LBA)
        .and_then(|o| o.checked_add(array_len))
        .is_some_and(|e| e <= disk.len());
    if !inside {
        return Err(GptReadError::ArrayOutside);
    }
    let mut array = vec![0u8; array_len as usize];
    disk.read_exact_at(&mut array, lba * LBA)?;
    if crc32fast::hash(&array) != le32(&h, 88) {
        return Err(GptReadError::ArrayChecksum);
    }
    let mut out = Vec::new();
    for e in array.chunks(esize as usize) {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&e[0..16]);
        let mut g = [0u8; 16];
        g.copy_from_slice(&e[16..32]);
        let units: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let type_guid = uuid_string(guid_le(t));
        out.push(PartitionInfo {
            start: le64(e, 32).saturating_mul(LBA),
            end: le64(e, 40).saturating_add(1).saturating_mul(LBA),
            type_name: types::name(&type_guid).to_string(),
            type_guid,
            guid: uuid_string(guid_le(g)),
            name: String::from_utf16_lossy(&units),
            attributes: le64(e, 48),
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::parse_uuid;

    fn part(first: u64, last: u64, name: &str) -> Partition {
        Partition {
            type_guid: parse_uuid(types::ESP).unwrap(),
            guid: [7; 16],
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.into(),
        }
    }

    #[test]
    fn round_trips_through_the_reader() {
        let size = 64 << 20;
        let mut b = VirtualDiskBuilder::new(size);
        write(&mut b, size, [1; 16], &[part(2048, 4095, "esp")], None).unwrap();
        let disk = b.build().unwrap();
        let parts = read_partitions(&disk).unwrap().unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].start, parts[0].end), (1 << 20, 2 << 20));
        assert_eq!(parts[0].type_name, "esp");
        assert_eq!(parts[0].name, "esp");
    }

    #[test]
    fn rejects_overlap_and_out_of_range() {
        let size = 64 << 20;
        let mut b = VirtualDiskBuilder::new(size);
        let err = write(
            &mut b,
            size,
            [1; 16],
            &[part(2048, 4095, "a"), part(4000, 5000, "b")],
            None,
        )
        .unwrap_err();
        assert!(matches!(err, GptError::BadPartition { index: 2, .. }));
        let err = write(&mut b, size, [1; 16], &[part(2048, size / 512, "a")], None).unwrap_err();
        assert!(matches!(err, GptError::BadPartition { index: 1, .. }));
    }
}
