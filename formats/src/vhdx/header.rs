//! The file type identifier (MS-VHDX 2.2.1) and the two headers (2.2.2).

use super::guid::Guid;
use super::{crc_with_zeroed, FORMAT, MIB};
use crate::io::{le16, le32, le64};
use crate::{Error, Result};

/// "vhdxfile" (MS-VHDX 2.2.1).
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// "head" (MS-VHDX 2.2.2).
pub const HEADER_SIGNATURE: &[u8; 4] = b"head";
/// Offsets of header 1 and header 2 (MS-VHDX 2.2).
pub const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
/// The header's checksummed size (MS-VHDX 2.2.2).
pub const HEADER_SIZE: usize = 4096;
/// The creator string we write. Diagnostic only; no version number, so the
/// bytes do not change between builds of imgbuild.
pub const CREATOR: &str = "imgbuild";

/// The first 64 KiB: signature then the creator as UTF-16LE (512 bytes max).
pub fn encode_file_identifier(creator: &str) -> Vec<u8> {
    let mut b = vec![0u8; super::KIB64];
    b[..8].copy_from_slice(FILE_SIGNATURE);
    let utf16: Vec<u8> = creator
        .encode_utf16()
        .take(255)
        .flat_map(u16::to_le_bytes)
        .collect();
    b[8..8 + utf16.len()].copy_from_slice(&utf16);
    b
}

/// The creator string of a file type identifier (up to the first NUL).
pub fn decode_creator(b: &[u8]) -> String {
    let units: Vec<u16> = b[8..8 + 512]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// A VHDX header (MS-VHDX 2.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header with the larger number is current.
    pub sequence_number: u64,
    /// Changed on the first write after each open.
    pub file_write_guid: Guid,
    /// Changed before the first user-visible data change.
    pub data_write_guid: Guid,
    /// Zero when the log is empty.
    pub log_guid: Guid,
    /// Must be 0.
    pub log_version: u16,
    /// Must be 1.
    pub version: u16,
    /// Log size, a multiple of 1 MiB.
    pub log_length: u32,
    /// Log offset, a multiple of 1 MiB.
    pub log_offset: u64,
}

impl Header {
    /// The 4 KiB header with its checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(HEADER_SIGNATURE);
        b[8..16].copy_from_slice(&self.sequence_number.to_le_bytes());
        b[16..32].copy_from_slice(&self.file_write_guid.to_le_bytes());
        b[32..48].copy_from_slice(&self.data_write_guid.to_le_bytes());
        b[48..64].copy_from_slice(&self.log_guid.to_le_bytes());
        b[64..66].copy_from_slice(&self.log_version.to_le_bytes());
        b[66..68].copy_from_slice(&self.version.to_le_bytes());
        b[68..72].copy_from_slice(&self.log_length.to_le_bytes());
        b[72..80].copy_from_slice(&self.log_offset.to_le_bytes());
        let crc = crc_with_zeroed(&b, 4);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a 4 KiB header read at `offset`, checking signature and
    /// checksum only (a header failing either is "not valid", MS-VHDX 2.2.2).
    pub fn decode(b: &[u8], offset: u64) -> Result<Header> {
        if b.len() < HEADER_SIZE || &b[0..4] != HEADER_SIGNATURE {
            return Err(corrupt(offset, "signature is not \"head\"".into()));
        }
        let b = &b[..HEADER_SIZE];
        let stored = le32(b, 4);
        let computed = crc_with_zeroed(b, 4);
        if stored != computed {
            return Err(Error::BadChecksum {
                format: FORMAT,
                structure: "header",
                offset,
                expected: stored,
                found: computed,
            });
        }
        Ok(Header {
            sequence_number: le64(b, 8),
            file_write_guid: Guid::from_le_slice(b, 16),
            data_write_guid: Guid::from_le_slice(b, 32),
            log_guid: Guid::from_le_slice(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        })
    }

    /// Checks the fields of the current header (MS-VHDX 2.2.2). The 4016
    /// reserved bytes are not checked: qemu does not either, and they carry
    /// no meaning we could misread.
    pub fn validate(&self, offset: u64) -> Result<()> {
        if self.version != 1 {
            return Err(corrupt(
                offset,
                format!("Version is {}, expected 1", self.version),
            ));
        }
        if self.log_version != 0 {
            return Err(corrupt(
                offset,
                format!("LogVersion is {}, expected 0", self.log_version),
            ));
        }
        if self.log_offset < MIB || !self.log_offset.is_multiple_of(MIB) {
            return Err(corrupt(
                offset,
                format!(
                    "LogOffset {} is not a multiple of 1 MiB past 1 MiB",
                    self.log_offset
                ),
            ));
        }
        if !u64::from(self.log_length).is_multiple_of(MIB) {
            return Err(corrupt(
                offset,
                format!("LogLength {} is not a multiple of 1 MiB", self.log_length),
            ));
        }
        if !self.log_guid.is_zero() {
            return Err(Error::Unsupported {
                format: FORMAT,
                feature: format!(
                    "log replay needed (LogGuid {} is set; replay it with `qemu-img check -r all` or Hyper-V)",
                    self.log_guid
                ),
            });
        }
        Ok(())
    }
}

/// Picks the current header from the two slots, qemu's rule (block/vhdx.c
/// `vhdx_parse_header`): the only valid one, else the larger sequence number;
/// equal numbers only when both headers are byte-identical.
pub fn pick_current(slots: [(&[u8], Result<Header>); 2]) -> Result<(usize, Header)> {
    let [(raw1, h1), (raw2, h2)] = slots;
    match (h1, h2) {
        (Ok(a), Ok(b)) => {
            if a.sequence_number > b.sequence_number {
                Ok((0, a))
            } else if b.sequence_number > a.sequence_number {
                Ok((1, b))
            } else if raw1[..HEADER_SIZE] == raw2[..HEADER_SIZE] {
                Ok((0, a))
            } else {
                Err(corrupt(
                    HEADER_OFFSETS[0],
                    format!(
                        "both headers have sequence number {} but differ",
                        a.sequence_number
                    ),
                ))
            }
        }
        (Ok(a), Err(_)) => Ok((0, a)),
        (Err(_), Ok(b)) => Ok((1, b)),
        (Err(e), Err(_)) => Err(e),
    }
}

fn corrupt(offset: u64, detail: String) -> Error {
    Error::Corrupt {
        format: FORMAT,
        structure: "header",
        offset,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Header {
        Header {
            sequence_number: seq,
            file_write_guid: Guid([1; 16]),
            data_write_guid: Guid([2; 16]),
            log_guid: Guid::ZERO,
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        }
    }

    #[test]
    fn header_round_trips_and_checksum_covers_4k() {
        let b = sample(7).encode();
        assert_eq!(&b[0..4], b"head");
        assert_eq!(Header::decode(&b, 0).unwrap(), sample(7));
        let mut bad = b.clone();
        bad[4095] = 1;
        assert!(matches!(
            Header::decode(&bad, 0),
            Err(Error::BadChecksum { .. })
        ));
    }

    #[test]
    fn larger_sequence_wins_and_equal_must_be_identical() {
        let (a, b) = (sample(1).encode(), sample(2).encode());
        let pick =
            pick_current([(&a, Header::decode(&a, 0)), (&b, Header::decode(&b, 0))]).unwrap();
        assert_eq!(pick.0, 1);
        let mut c = sample(1);
        c.data_write_guid = Guid([9; 16]);
        let c = c.encode();
        assert!(pick_current([(&a, Header::decode(&a, 0)), (&c, Header::decode(&c, 0))]).is_err());
        assert_eq!(
            pick_current([(&a, Header::decode(&a, 0)), (&a, Header::decode(&a, 0))])
                .unwrap()
                .0,
            0
        );
        let junk = vec![0u8; HEADER_SIZE];
        assert_eq!(
            pick_current([
                (&junk, Header::decode(&junk, 0)),
                (&a, Header::decode(&a, 0))
            ])
            .unwrap()
            .0,
            1
        );
    }

    #[test]
    fn header_rejects_log_and_bad_versions() {
        let mut h = sample(1);
        h.log_guid = Guid([3; 16]);
        assert!(matches!(h.validate(0), Err(Error::Unsupported { .. })));
        let mut h = sample(1);
        h.version = 2;
        assert!(matches!(h.validate(0), Err(Error::Corrupt { .. })));
        let mut h = sample(1);
        h.log_offset = 4096;
        assert!(matches!(h.validate(0), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn creator_round_trips() {
        let b = encode_file_identifier(CREATOR);
        assert_eq!(&b[..8], b"vhdxfile");
        assert_eq!(decode_creator(&b), "imgbuild");
    }
}
