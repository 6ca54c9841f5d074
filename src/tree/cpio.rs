//! Initramfs reader: lists the entries of a Linux initramfs image the way the
//! kernel unpacks it (`init/initramfs.c`, `unpack_to_rootfs`).
//!
//! ```text
//! initrd ── segment 0: cpio "070701" (uncompressed; early microcode: kernel/x86/microcode/…)
//!        ── zeros (any count: padding between segments)
//!        ── segment 1: gzip | zstd | xz | lzma | lz4-legacy stream ─► cpio, cpio, … (zero padded)
//!        ── …
//! ```
//! A segment starting with `'0'` at a 4-byte-aligned offset is an
//! uncompressed archive; anything else non-zero must be a compressed stream
//! (magic numbers from `lib/decompress.c`). One compressed segment holds one
//! gzip member, one zstd frame, one xz stream or one lz4 legacy stream (which
//! runs to the end of the file), and must end between archives, as the kernel
//! requires ("junk at the end of compressed archive").
//!
//! cpio format: "newc" (`070701`) and "crc" (`070702`) from
//! `Documentation/driver-api/early-userspace/buffer-format.rst`: a 110-byte
//! ASCII header of 13 eight-digit hex fields, the NUL-terminated name, padding
//! to 4 bytes, the data, padding to 4 bytes; `TRAILER!!!` ends an archive.
//!
//! Every number is hostile: names are bounded by `PATH_MAX`, entries and
//! unpacked bytes by [`Limits`], file data is streamed and never held.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;

use super::FileData;

mod error;
mod lz4;
mod newc;

pub use error::{CpioError, Location};
use lz4::Lz4Legacy;
#[cfg(test)]
use lz4::LZ4_LEGACY_MAGIC;
use newc::{parse_archive, Counted, Sink};
#[cfg(test)]
use newc::{MAGIC_CRC, MAGIC_NEWC};

/// Memory limit handed to liblzma (dictionary sizes above it are refused).
const XZ_MEMLIMIT: u64 = 256 << 20;
/// Read-buffer size for the initrd and the decompressed streams.
const BUF: usize = 64 << 10;

/// How a segment of the initramfs is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain cpio archive (early microcode, or an uncompressed initramfs).
    None,
    /// gzip, magic `1f 8b`.
    Gzip,
    /// zstd, magic `28 b5 2f fd`.
    Zstd,
    /// xz, magic `fd "7zXZ" 00`.
    Xz,
    /// legacy `.lzma` ("LZMA alone"), magic `5d 00 00`.
    Lzma,
    /// lz4 legacy format (what `lz4 -l` and the kernel use), magic `02 21 4c 18`.
    Lz4Legacy,
    /// bzip2, magic `"BZh"`: recognised, not supported.
    Bzip2,
    /// lzo (lzop), magic `89 "LZO"`: recognised, not supported.
    Lzo,
}

impl Compression {
    /// Recognises a compressed stream by its first bytes (`lib/decompress.c`).
    pub fn detect(magic: &[u8]) -> Option<Self> {
        let table: [(&[u8], Compression); 7] = [
            (b"\x1f\x8b", Compression::Gzip),
            (b"\x28\xb5\x2f\xfd", Compression::Zstd),
            (b"\xfd7zXZ\x00", Compression::Xz),
            (b"\x5d\x00\x00", Compression::Lzma),
            (b"\x02\x21\x4c\x18", Compression::Lz4Legacy),
            (b"BZh", Compression::Bzip2),
            (b"\x89LZO", Compression::Lzo),
        ];
        table
            .iter()
            .find(|(m, _)| magic.starts_with(m))
            .map(|(_, c)| *c)
    }

    /// Lower-case name as the kernel prints it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lz4Legacy => "lz4",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "lzo",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bounds on what a (possibly hostile) initramfs may make the reader do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Entries over all archives.
    pub max_entries: usize,
    /// Name bytes over all entries.
    pub max_name_bytes: usize,
    /// Unpacked bytes per compressed segment.
    pub max_unpacked: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 1 << 20,
            max_name_bytes: 64 << 20,
            max_unpacked: 16 << 30,
        }
    }
}

/// One file, directory, link or device in an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioEntry {
    /// The name as stored (usually relative, sometimes with `./`).
    pub name: Vec<u8>,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// Data length (the target for a symlink).
    pub size: u32,
    /// Index of the segment in [`Initramfs::segments`].
    pub segment: usize,
}

impl CpioEntry {
    /// The name without leading `/` and `./`.
    pub fn path(&self) -> &[u8] {
        let mut p = self.name.as_slice();
        loop {
            if let Some(rest) = p.strip_prefix(b"./") {
                p = rest;
            } else if let Some(rest) = p.strip_prefix(b"/") {
                p = rest;
            } else {
                return p;
            }
        }
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// One run of the initramfs: an uncompressed archive or one compressed stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Byte offset in the file.
    pub offset: u64,
    /// Bytes of the file it spans (including the zero padding after an
    /// uncompressed archive).
    pub len: u64,
    /// How it is stored.
    pub compression: Compression,
    /// Its entries, as indices into [`Initramfs::entries`].
    pub entries: Range<usize>,
}

/// The listing of an initramfs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Initramfs {
    /// Segments in file order.
    pub segments: Vec<Segment>,
    /// Entries in file order (`TRAILER!!!` left out).
    pub entries: Vec<CpioEntry>,
}

/// Lists an initramfs with the default [`Limits`].
pub fn list(data: &FileData) -> Result<Initramfs, CpioError> {
    list_with_limits(data, &Limits::default())
}

/// Lists an initramfs: every segment and every entry, in file order.
pub fn list_with_limits(data: &FileData, limits: &Limits) -> Result<Initramfs, CpioError> {
    let mut input = Input::new(data);
    let mut out = Initramfs::default();
    let mut names = 0usize;
    loop {
        let at = input.pos();
        let Some(first) = input
            .peek()
            .map_err(|source| CpioError::Io { offset: at, source })?
        else {
            return Ok(out);
        };
        if first == 0 {
            input
                .skip_zeros()
                .map_err(|source| CpioError::Io { offset: at, source })?;
            continue;
        }
        let first_entry = out.entries.len();
        let compression = if first == b'0' && at.is_multiple_of(4) {
            let mut c = Counted::new(&mut input, at, at, Compression::None, limits);
            let mut sink = Sink {
                out: &mut out.entries,
                names: &mut names,
                segment: out.segments.len(),
            };
            parse_archive(&mut c, &mut sink)?;
            c.skip_zeros()?;
            Compression::None
        } else {
            let segment = out.segments.len();
            let mut sink = Sink {
                out: &mut out.entries,
                names: &mut names,
                segment,
            };
            unpack_compressed(&mut input, at, limits, &mut sink)?
        };
        let len = input.pos() - at;
        out.segments.push(Segment {
            offset: at,
            len,
            compression,
            entries: first_entry..out.entries.len(),
        });
    }
}

/// The decoder of a `compression` stream read from `input`.
fn decoder<'i>(
    input: &'i mut Input<'_>,
    compression: Compression,
    loc: Location,
) -> Result<Box<dyn Read + 'i>, CpioError> {
    let decompress = |source| CpioError::Decompress {
        at: loc,
        compression,
        source,
    };
    let lzma = |r: Result<liblzma::stream::Stream, liblzma::stream::Error>| {
        r.map_err(|e| decompress(e.into()))
    };
    Ok(match compression {
        Compression::None => unreachable!("detect never returns None"),
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(&mut *input)),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::with_buffer(&mut *input).map_err(decompress)?;
            Box::new(d.single_frame())
        }
        Compression::Xz => {
            let s = lzma(liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(&mut *input, s))
        }
        Compression::Lzma => {
            let s = lzma(liblzma::stream::Stream::new_lzma_decoder(XZ_MEMLIMIT))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(&mut *input, s))
        }
        Compression::Lz4Legacy => Box::new(Lz4Legacy::new(&mut *input)),
        Compression::Bzip2 => {
            return Err(CpioError::Unsupported {
                at: loc,
                feature: "bzip2-compressed initramfs",
            })
        }
        Compression::Lzo => {
            return Err(CpioError::Unsupported {
                at: loc,
                feature: "lzo-compressed initramfs",
            })
        }
    })
}

/// Decompresses the stream at `at` and parses the archives inside it.
fn unpack_compressed(
    input: &mut Input<'_>,
    at: u64,
    limits: &Limits,
    sink: &mut Sink<'_>,
) -> Result<Compression, CpioError> {
    let magic = input
        .peek_n(6)
        .map_err(|source| CpioError::Io { offset: at, source })?;
    let Some(compression) = Compression::detect(&magic) else {
        return Err(CpioError::UnknownMagic {
            offset: at,
            found: magic,
        });
    };
    let loc = Location {
        segment: at,
        compression,
        offset: 0,
    };
    let decoder = decoder(input, compression, loc)?;
    let mut c = Counted::new(
        BufReader::with_capacity(BUF, decoder),
        at,
        0,
        compression,
        limits,
    );
    loop {
        c.skip_zeros()?;
        if c.peek()?.is_none() {
            break;
        }
        if !c.pos.is_multiple_of(4) {
            return Err(CpioError::BrokenPadding { at: c.loc() });
        }
        parse_archive(&mut c, sink)?;
    }
    drop(c);
    if input.pos() == at {
        // A decoder that consumed nothing would loop forever on the same bytes.
        return Err(CpioError::Decompress {
            at: loc,
            compression,
            source: io::Error::other("consumed no input"),
        });
    }
    Ok(compression)
}

/// A buffered reader over a [`FileData`] that knows its position.
struct Input<'a> {
    data: &'a FileData,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    start: usize,
    end: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a FileData) -> Self {
        Self {
            data,
            buf: vec![0; BUF],
            buf_at: 0,
            start: 0,
            end: 0,
        }
    }

    fn pos(&self) -> u64 {
        self.buf_at + self.start as u64
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        Ok(self.fill_buf()?.first().copied())
    }

    /// Up to `n` bytes from the current position, not consumed.
    fn peek_n(&self, n: u64) -> io::Result<Vec<u8>> {
        let at = self.pos();
        let k = n.min(self.data.len().saturating_sub(at));
        let mut out = vec![0u8; usize::try_from(k).map_err(io::Error::other)?];
        self.data.read_at(at, &mut out)?;
        Ok(out)
    }

    fn skip_zeros(&mut self) -> io::Result<()> {
        loop {
            let avail = self.fill_buf()?;
            let zeros = avail.iter().take_while(|&&b| b == 0).count();
            let stop = zeros < avail.len() || avail.is_empty();
            self.consume(zeros);
            if stop {
                return Ok(());
            }
        }
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            let at = self.pos();
            let n = self
                .data
                .len()
                .saturating_sub(at)
                .min(self.buf.len() as u64);
            let n = usize::try_from(n).map_err(io::Error::other)?;
            self.data.read_at(at, &mut self.buf[..n])?;
            self.buf_at = at;
            self.start = 0;
            self.end = n;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.start = (self.start + amt).min(self.end);
    }
}

impl Read for Input<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
