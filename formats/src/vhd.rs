//! Fixed VHD (Virtual PC / Azure): the disk's raw bytes, padded to a whole
//! MiB, then a 512-byte big-endian footer (VHD spec "Hard Disk Footer
//! Format"; formats-facts 2.11).
//!
//! ```text
//! 0                                   current_size   +512
//! | data (sparse holes where zero) … pad |  footer   |
//! ```
//!
//! Azure wants the virtual size a multiple of 1 MiB, so the footer's current
//! size is the disk size rounded up to 1 MiB (the summary says so). Creator
//! application "qem2" with a spec CHS: qemu before 10.0 sizes the disk from
//! current_size only for known creators such as "qem2" (otherwise from CHS,
//! which rounds down), and qemu 10 uses current_size for every creator but
//! "vpc " and "qemu". We write what `qemu-img convert -O vpc` would.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::hash::{ContentId, StreamHash};
use crate::io::{be32, be64, check_range, ReadAt, SizedFile, WriteAt};
use crate::{DiskImage, Error, Format, ImageSink, ImageSummary, Result, WriteOptions};

const FORMAT: &str = "vhd";
/// Footer size.
pub const FOOTER_SIZE: usize = 512;
/// "conectix".
const COOKIE: &[u8; 8] = b"conectix";
/// Features: bit 1 "reserved, must be set".
const FEATURES: u32 = 2;
const FORMAT_VERSION: u32 = 0x0001_0000;
/// Data offset of a fixed disk: all ones.
const FIXED_DATA_OFFSET: u64 = u64::MAX;
const CREATOR_APP: &[u8; 4] = b"qem2";
/// qemu's creator version for "qem2" (block/vpc.c).
const CREATOR_VERSION: u32 = 0x0005_0003;
const CREATOR_OS: &[u8; 4] = b"Wi2k";
/// Disk types.
const DISK_FIXED: u32 = 2;
const DISK_DYNAMIC: u32 = 3;
const DISK_DIFFERENCING: u32 = 4;
const MIB: u64 = 1 << 20;

/// Cylinders, heads, sectors per track for `total_sectors` (VHD spec
/// appendix "CHS calculation", as qemu `calculate_geometry`).
pub fn chs(total_sectors: u64) -> (u16, u8, u8) {
    let ts = total_sectors.min(65535 * 16 * 255);
    let (spt, heads, cth) = if ts >= 65535 * 16 * 63 {
        (255, 16, ts / 255)
    } else {
        let mut spt = 17;
        let mut cth = ts / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            (spt, heads, cth) = (31, 16, ts / 31);
        }
        if cth >= heads * 1024 {
            (spt, heads, cth) = (63, 16, ts / 63);
        }
        (spt, heads, cth)
    };
    let cyl = u16::try_from(cth / heads).unwrap_or(u16::MAX);
    (cyl, heads as u8, spt as u8)
}

/// The 512-byte footer of a fixed disk of `current_size` bytes.
pub fn encode_footer(current_size: u64, unique_id: [u8; 16]) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    f[0..8].copy_from_slice(COOKIE);
    f[8..12].copy_from_slice(&FEATURES.to_be_bytes());
    f[12..16].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    f[16..24].copy_from_slice(&FIXED_DATA_OFFSET.to_be_bytes());
    // 24..28 timestamp: 0 (2000-01-01), no clock.
    f[28..32].copy_from_slice(CREATOR_APP);
    f[32..36].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
    f[36..40].copy_from_slice(CREATOR_OS);
    f[40..48].copy_from_slice(&current_size.to_be_bytes());
    f[48..56].copy_from_slice(&current_size.to_be_bytes());
    let (c, h, s) = chs(current_size / 512);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&DISK_FIXED.to_be_bytes());
    f[68..84].copy_from_slice(&unique_id);
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// One's complement of the byte sum, the checksum field counted as zero.
pub fn checksum(f: &[u8; FOOTER_SIZE]) -> u32 {
    let sum = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    !sum
}

/// Writes a fixed VHD: data where it lies, holes elsewhere, footer last.
pub struct VhdWriter {
    file: File,
    seed: Option<[u8; 32]>,
    hasher: ContentId,
    /// The hash of the file being written (data in order, footer last).
    hash: StreamHash,
    size: u64,
    current_size: u64,
}

impl VhdWriter {
    /// A writer into `file` (which should be empty).
    pub fn new(file: File, opts: &WriteOptions) -> Self {
        Self {
            file,
            seed: opts.seed,
            hasher: ContentId::new(b"imgbuild-vhd-content\0"),
            hash: StreamHash::enabled(opts.hash),
            size: 0,
            current_size: 0,
        }
    }
}

impl ImageSink for VhdWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        let current_size =
            size.checked_next_multiple_of(MIB)
                .ok_or_else(|| Error::InvalidOption {
                    option: "virtual size",
                    detail: format!("{size} cannot be rounded up to 1 MiB"),
                })?;
        (self.size, self.current_size) = (size, current_size);
        self.hasher.meta(&size.to_le_bytes());
        for r in allocated {
            self.hasher.meta(&r.start.to_le_bytes());
            self.hasher.meta(&r.end.to_le_bytes());
        }
        self.file
            .set_len(current_size + FOOTER_SIZE as u64)
            .map_err(|e| Error::io("vhd: sizing the file", e))
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        // The content hash only names the disk when no seed does.
        if self.seed.is_none() {
            self.hasher.data(offset, data);
        }
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(Error::ExtentOutsideDisk {
                offset,
                len: data.len() as u64,
                size: self.size,
            });
        }
        if data.iter().all(|&b| b == 0) {
            return Ok(());
        }
        self.hash.write_at(offset, data);
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io(format!("vhd: writing data at {offset}"), e))
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        let seed = self.seed.unwrap_or_else(|| self.hasher.clone().finish());
        let mut h = Sha256::new();
        h.update(b"imgbuild-vhd-unique-id\0");
        h.update(seed);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize()[..16]);
        let footer = encode_footer(self.current_size, id);
        self.hash.write_at(self.current_size, &footer);
        self.file
            .write_all_at(&footer, self.current_size)
            .map_err(|e| {
                Error::io(
                    format!("vhd: writing the footer at {}", self.current_size),
                    e,
                )
            })?;
        Ok(ImageSummary {
            member: None,
            format: Format::Vhd,
            virtual_size: self.current_size,
            file_size: self.current_size + FOOTER_SIZE as u64,
            sha256: self
                .hash
                .clone()
                .finish(self.current_size + FOOTER_SIZE as u64),
        })
    }
}

/// Reads a fixed VHD.
pub struct VhdReader {
    src: Arc<dyn ReadAt>,
    file: Option<Arc<SizedFile>>,
    size: u64,
    footer: [u8; FOOTER_SIZE],
}

impl VhdReader {
    /// Opens a fixed VHD file; holes in its data part are reported unallocated.
    pub fn open(file: File) -> Result<Self> {
        let f =
            Arc::new(SizedFile::new(file).map_err(|e| Error::io("vhd: reading the file size", e))?);
        let mut r = Self::new(f.clone())?;
        r.file = Some(f);
        Ok(r)
    }

    /// Parses the footer of a fixed VHD held by any positional reader.
    pub fn new(src: Arc<dyn ReadAt>) -> Result<Self> {
        let len = src.len();
        let Some(at) = len.checked_sub(FOOTER_SIZE as u64) else {
            return Err(Error::Truncated {
                format: FORMAT,
                structure: "footer",
                offset: 0,
                need: FOOTER_SIZE as u64,
                file_len: len,
            });
        };
        let mut f = [0u8; FOOTER_SIZE];
        src.read_exact_at(&mut f, at)
            .map_err(|e| Error::io("vhd: reading the footer", e))?;
        let corrupt = |detail: String| Error::Corrupt {
            format: FORMAT,
            structure: "footer",
            offset: at,
            detail,
        };
        if &f[0..8] != COOKIE {
            return Err(corrupt("cookie is not \"conectix\"".into()));
        }
        let (stored, computed) = (be32(&f, 64), checksum(&f));
        if stored != computed {
            return Err(Error::BadChecksum {
                format: FORMAT,
                structure: "footer",
                offset: at,
                expected: stored,
                found: computed,
            });
        }
        if be32(&f, 12) >> 16 != 1 {
            return Err(corrupt(format!(
                "format version {:#010x}, expected major version 1",
                be32(&f, 12)
            )));
        }
        match be32(&f, 60) {
            DISK_FIXED => {}
            t @ (DISK_DYNAMIC | DISK_DIFFERENCING) => {
                let kind = if t == DISK_DYNAMIC {
                    "dynamic"
                } else {
                    "differencing"
                };
                return Err(Error::Unsupported {
                    format: FORMAT,
                    feature: format!("{kind} VHD (only fixed VHDs are read)"),
                });
            }
            t => return Err(corrupt(format!("disk type {t}, expected 2 (fixed)"))),
        }
        let size = be64(&f, 48);
        if size > at {
            return Err(corrupt(format!(
                "current size {size} exceeds the {at} data bytes before the footer"
            )));
        }
        Ok(Self {
            src,
            file: None,
            size,
            footer: f,
        })
    }
}

impl ReadAt for VhdReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.src.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.size
    }
}

impl DiskImage for VhdReader {
    fn format(&self) -> Format {
        Format::Vhd
    }

    fn allocated(&self) -> Result<Vec<Range<u64>>> {
        let Some(file) = &self.file else {
            return Ok(if self.size > 0 {
                std::iter::once(0..self.size).collect()
            } else {
                Vec::new()
            });
        };
        let ranges = crate::raw::data_ranges(file.file(), file.len())?;
        Ok(ranges
            .into_iter()
            .filter(|r| r.start < self.size)
            .map(|r| r.start..r.end.min(self.size))
            .collect())
    }

    fn facts(&self) -> Vec<(String, String)> {
        let f = &self.footer;
        let text = |r: Range<usize>| String::from_utf8_lossy(&f[r]).into_owned();
        let id: String = f[68..84].iter().map(|b| format!("{b:02x}")).collect();
        vec![
            ("disk type".into(), "fixed".into()),
            (
                "creator".into(),
                format!(
                    "{:?} {:#010x} {:?}",
                    text(28..32),
                    be32(f, 32),
                    text(36..40)
                ),
            ),
            ("original size".into(), be64(f, 40).to_string()),
            ("current size".into(), be64(f, 48).to_string()),
            (
                "geometry".into(),
                format!("{}/{}/{}", u16::from_be_bytes([f[56], f[57]]), f[58], f[59]),
            ),
            ("timestamp".into(), be32(f, 24).to_string()),
            ("unique id".into(), id),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_matches_qemu_examples() {
        // 64 MiB: 17 sectors, ceil(7710 / 1024) = 8 heads, 7710 / 8 cylinders.
        assert_eq!(chs(64 << 11), (963, 8, 17));
        assert_eq!(chs(u64::MAX), (65535, 16, 255));
        // 65535·16·63 sectors: the 255-sectors branch, 259056 cylinder-heads.
        assert_eq!(chs(65535 * 16 * 63), (16191, 16, 255));
    }

    fn footer_src(f: [u8; FOOTER_SIZE], data: u64) -> Arc<dyn ReadAt> {
        let mut v = vec![0u8; usize::try_from(data).unwrap()];
        v.extend_from_slice(&f);
        Arc::new(v)
    }

    #[test]
    fn footer_round_trips() {
        let f = encode_footer(MIB, [7; 16]);
        let r = VhdReader::new(footer_src(f, MIB)).unwrap();
        assert_eq!(r.len(), MIB);
        assert_eq!(r.allocated().unwrap(), vec![0..MIB]);
    }

    #[test]
    fn footer_rejects_bad_checksum_cookie_and_types() {
        let mut f = encode_footer(MIB, [7; 16]);
        f[100] = 1;
        assert!(matches!(
            VhdReader::new(footer_src(f, MIB)),
            Err(Error::BadChecksum { .. })
        ));
        let mut f = encode_footer(MIB, [7; 16]);
        f[0] = b'x';
        assert!(matches!(
            VhdReader::new(footer_src(f, MIB)),
            Err(Error::Corrupt { .. })
        ));
        for (t, unsupported) in [(3u32, true), (4, true), (9, false)] {
            let mut f = encode_footer(MIB, [7; 16]);
            f[60..64].copy_from_slice(&t.to_be_bytes());
            let sum = checksum(&f);
            f[64..68].copy_from_slice(&sum.to_be_bytes());
            let r = VhdReader::new(footer_src(f, MIB));
            assert_eq!(
                matches!(r, Err(Error::Unsupported { .. })),
                unsupported,
                "type {t}"
            );
            assert!(r.is_err());
        }
    }

    #[test]
    fn footer_rejects_size_past_data_and_short_files() {
        let f = encode_footer(2 * MIB, [7; 16]);
        assert!(matches!(
            VhdReader::new(footer_src(f, MIB)),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            VhdReader::new(Arc::new(vec![0u8; 100])),
            Err(Error::Truncated { .. })
        ));
    }
}
