//! The cpio "newc" (`070701`) and "crc" (`070702`) archive format
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`) over a
//! counted stream.

use std::io::BufRead;

use super::{Compression, CpioEntry, CpioError, Limits, Location};

/// "070701": newc, `Documentation/driver-api/early-userspace/buffer-format.rst`.
pub(super) const MAGIC_NEWC: &[u8; 6] = b"070701";
/// "070702": newc with a checksum of the data bytes.
pub(super) const MAGIC_CRC: &[u8; 6] = b"070702";
/// Header length: 6-byte magic plus 13 fields of 8 hex digits.
const HEADER_LEN: usize = 110;
/// The kernel refuses names longer than `PATH_MAX` (`do_header`).
const PATH_MAX: u32 = 4096;
/// The name that ends an archive.
const TRAILER: &[u8] = b"TRAILER!!!";

/// Where parsed entries go, with the name budget.
pub(super) struct Sink<'a> {
    pub(super) out: &'a mut Vec<CpioEntry>,
    pub(super) names: &'a mut usize,
    pub(super) segment: usize,
}

/// The 13 header fields after the magic, in order (buffer-format.rst).
const FIELDS: [&str; 13] = [
    "c_ino",
    "c_mode",
    "c_uid",
    "c_gid",
    "c_nlink",
    "c_mtime",
    "c_filesize",
    "c_maj",
    "c_min",
    "c_rmaj",
    "c_rmin",
    "c_namesize",
    "c_chksum",
];

/// Parses one archive, up to and including its `TRAILER!!!` entry.
pub(super) fn parse_archive<R: BufRead>(
    c: &mut Counted<'_, R>,
    sink: &mut Sink<'_>,
) -> Result<(), CpioError> {
    loop {
        let at = c.loc();
        let mut header = [0u8; HEADER_LEN];
        c.read_exact(&mut header, at, "a cpio header")?;
        let crc = match &header[..6] {
            m if m == MAGIC_NEWC => false,
            m if m == MAGIC_CRC => true,
            m => {
                return Err(CpioError::BadMagic {
                    at,
                    found: String::from_utf8_lossy(m).into_owned(),
                })
            }
        };
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let start = 6 + 8 * i;
            *v = hex8(&header[start..start + 8]).ok_or_else(|| CpioError::BadField {
                at,
                field: FIELDS[i],
                found: String::from_utf8_lossy(&header[start..start + 8]).into_owned(),
            })?;
        }
        let (mode, size, namesize, chksum) = (f[1], f[6], f[11], f[12]);
        if namesize == 0 || namesize > PATH_MAX {
            return Err(CpioError::BadName { at, len: namesize });
        }
        let mut name = vec![0u8; namesize as usize]; // at most PATH_MAX, checked above
        c.read_exact(&mut name, at, "a cpio name")?;
        if name.pop() != Some(0) {
            return Err(CpioError::BadName { at, len: namesize });
        }
        if let Some(nul) = name.iter().position(|&b| b == 0) {
            name.truncate(nul);
        }
        c.align4(at)?;
        let sum = c.skip(u64::from(size), at)?;
        c.align4(at)?;
        if crc && sum != chksum {
            let name = String::from_utf8_lossy(&name).into_owned();
            return Err(CpioError::BadChecksum {
                at,
                name,
                expected: chksum,
                found: sum,
            });
        }
        if name == TRAILER {
            return Ok(());
        }
        if sink.out.len() >= c.limits.max_entries {
            return Err(CpioError::Limit {
                at,
                what: "entries",
                limit: c.limits.max_entries as u64,
            });
        }
        *sink.names += name.len();
        if *sink.names > c.limits.max_name_bytes {
            return Err(CpioError::Limit {
                at,
                what: "bytes of names",
                limit: c.limits.max_name_bytes as u64,
            });
        }
        sink.out.push(CpioEntry {
            name,
            mode,
            size,
            segment: sink.segment,
        });
    }
}

/// Eight ASCII hex digits (either case), as `simple_strtoul(.., 16)` reads them.
fn hex8(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        Some((acc << 4) | char::from(c).to_digit(16)?)
    })
}

/// A `BufRead` over a stream that counts what it consumed and maps errors to
/// [`CpioError`]s that say where.
pub(super) struct Counted<'l, R> {
    r: R,
    /// Offset of the next byte in the stream.
    pub(super) pos: u64,
    segment: u64,
    compression: Compression,
    limits: &'l Limits,
}

impl<'l, R: BufRead> Counted<'l, R> {
    pub(super) fn new(
        r: R,
        segment: u64,
        pos: u64,
        compression: Compression,
        limits: &'l Limits,
    ) -> Self {
        Self {
            r,
            pos,
            segment,
            compression,
            limits,
        }
    }

    pub(super) fn loc(&self) -> Location {
        Location {
            segment: self.segment,
            compression: self.compression,
            offset: self.pos,
        }
    }

    fn fill(&mut self) -> Result<&[u8], CpioError> {
        let at = self.loc();
        self.r.fill_buf().map_err(|source| match at.compression {
            Compression::None => CpioError::Io {
                offset: at.offset,
                source,
            },
            compression => CpioError::Decompress {
                at,
                compression,
                source,
            },
        })
    }

    fn consume(&mut self, n: usize) -> Result<(), CpioError> {
        self.r.consume(n);
        self.pos += n as u64;
        if self.compression != Compression::None && self.pos > self.limits.max_unpacked {
            return Err(CpioError::Limit {
                at: self.loc(),
                what: "unpacked bytes",
                limit: self.limits.max_unpacked,
            });
        }
        Ok(())
    }

    pub(super) fn peek(&mut self) -> Result<Option<u8>, CpioError> {
        Ok(self.fill()?.first().copied())
    }

    fn read_exact(
        &mut self,
        buf: &mut [u8],
        at: Location,
        structure: &'static str,
    ) -> Result<(), CpioError> {
        let mut done = 0;
        while done < buf.len() {
            let avail = self.fill()?;
            if avail.is_empty() {
                return Err(CpioError::Truncated { at, structure });
            }
            let n = avail.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&avail[..n]);
            self.consume(n)?;
            done += n;
        }
        Ok(())
    }

    /// Skips `n` bytes of file data, returning their byte sum (the "070702" checksum).
    fn skip(&mut self, mut n: u64, at: Location) -> Result<u32, CpioError> {
        let mut sum = 0u32;
        while n > 0 {
            let avail = self.fill()?;
            if avail.is_empty() {
                return Err(CpioError::Truncated {
                    at,
                    structure: "cpio file data",
                });
            }
            let k = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            sum = avail[..k]
                .iter()
                .fold(sum, |s, &b| s.wrapping_add(u32::from(b)));
            self.consume(k)?;
            n -= k as u64;
        }
        Ok(sum)
    }

    fn align4(&mut self, at: Location) -> Result<(), CpioError> {
        let pad = (4 - self.pos % 4) % 4;
        self.skip(pad, at).map(|_| ()).map_err(|e| match e {
            CpioError::Truncated { at, .. } => CpioError::Truncated {
                at,
                structure: "cpio padding",
            },
            e => e,
        })
    }

    /// Consumes zero bytes up to the next non-zero byte or the end.
    pub(super) fn skip_zeros(&mut self) -> Result<(), CpioError> {
        loop {
            let avail = self.fill()?;
            let zeros = avail.iter().take_while(|&&b| b == 0).count();
            let all = zeros == avail.len();
            if zeros == 0 {
                return Ok(());
            }
            self.consume(zeros)?;
            if !all {
                return Ok(());
            }
        }
    }
}
