//! VHDX (MS-VHDX 1.0): Hyper-V's virtual hard disk, written in one pass and
//! read back. Our own implementation of the parts a fixed or dynamic disk
//! needs; differencing disks and log replay are refused.
//!
//! ```text
//! 0        64K      128K     192K     256K     320K   1M      2M        2M+bat        +1M
//! |FileType|Header1 |Header2 |Region1 |Region2 | ...  | Log   | BAT ... | Metadata    | blocks in guest order …
//! ```
//!
//! Everything is little-endian, GUIDs are mixed-endian (data1..3 LE, data4
//! raw) and every structure carries a CRC-32C (MS-VHDX 2).

mod bat;
mod guid;
mod header;
mod metadata;
mod reader;
mod region;
mod writer;

pub use guid::Guid;
pub use reader::VhdxReader;
pub use writer::VhdxWriter;

/// Format name used in errors.
pub(crate) const FORMAT: &str = "vhdx";

/// One MiB: the alignment of every region, log and block (MS-VHDX 2.1).
pub(crate) const MIB: u64 = 1 << 20;
/// 64 KiB: the size of the file type identifier, header slots, region tables
/// and the metadata table (MS-VHDX 2.2, 2.6.1).
pub(crate) const KIB64: usize = 64 * 1024;

/// Smallest and largest block size (MS-VHDX 2.6.2.1).
pub const MIN_BLOCK_SIZE: u32 = 1 << 20;
/// Largest block size (MS-VHDX 2.6.2.1).
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Block size we write unless told otherwise: small blocks keep a sparse
/// disk's file small (qemu uses 8–32 MiB).
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Largest virtual disk size: 64 TB (MS-VHDX 2.6.2.2).
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// CRC-32C of `buf` with the 4-byte checksum field at `at` taken as zero
/// (MS-VHDX 2: "computed over the entire structure with the checksum field
/// set to zero").
pub(crate) fn crc_with_zeroed(buf: &[u8], at: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..at]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &buf[at + 4..])
}

/// Chunk ratio: payload blocks per sector bitmap block,
/// `2^23 × LogicalSectorSize / BlockSize` (MS-VHDX 2.5).
pub(crate) fn chunk_ratio(logical_sector: u32, block_size: u32) -> u64 {
    ((1u64 << 23) * u64::from(logical_sector)) / u64::from(block_size)
}

/// BAT index of payload block `i`: one sector bitmap entry follows every
/// `chunk_ratio` payload entries (MS-VHDX 2.5).
pub(crate) fn payload_bat_index(i: u64, chunk_ratio: u64) -> u64 {
    i + i / chunk_ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ratio_matches_spec_examples() {
        assert_eq!(chunk_ratio(512, 32 << 20), 128);
        assert_eq!(chunk_ratio(512, 1 << 20), 4096);
        assert_eq!(chunk_ratio(512, 256 << 20), 16);
        assert_eq!(chunk_ratio(4096, 1 << 20), 32768);
    }

    #[test]
    fn interleave_skips_a_bitmap_entry_every_chunk() {
        // Chunk ratio 4: payload 0..3 at 0..3, bitmap at 4, payload 4 at 5.
        assert_eq!(payload_bat_index(3, 4), 3);
        assert_eq!(payload_bat_index(4, 4), 5);
        assert_eq!(payload_bat_index(8, 4), 10);
        // 1 MiB blocks, 512-byte sectors: block 4096 (at 4 GiB) is entry 4097.
        assert_eq!(payload_bat_index(4096, 4096), 4097);
    }

    #[test]
    fn crc32c_known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
        let mut b = [0u8; 12];
        b[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(crc_with_zeroed(&b, 4), crc32c::crc32c(&[0u8; 12]));
    }
}
