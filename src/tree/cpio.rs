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

/// "070701": newc, `Documentation/driver-api/early-userspace/buffer-format.rst`.
const MAGIC_NEWC: &[u8; 6] = b"070701";
/// "070702": newc with a checksum of the data bytes.
const MAGIC_CRC: &[u8; 6] = b"070702";
/// Header length: 6-byte magic plus 13 fields of 8 hex digits.
const HEADER_LEN: usize = 110;
/// The kernel refuses names longer than `PATH_MAX` (`do_header`).
const PATH_MAX: u32 = 4096;
/// The name that ends an archive.
const TRAILER: &[u8] = b"TRAILER!!!";
/// lz4 legacy frame magic (`lib/decompress_unlz4.c`, `ARCHIVE_MAGICNUMBER`).
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of one lz4 legacy block (`LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE`).
const LZ4_CHUNK: usize = 8 << 20;
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

/// Where in the initramfs something is: the segment's start in the file, its
/// compression, and the offset inside the unpacked stream (for an
/// uncompressed segment, the offset in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Byte offset of the segment in the initramfs file.
    pub segment: u64,
    /// How the segment is stored.
    pub compression: Compression,
    /// Offset in the unpacked stream (the file offset when uncompressed).
    pub offset: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.compression {
            Compression::None => write!(f, "initramfs byte {}", self.offset),
            c => write!(
                f,
                "initramfs byte {} ({c} stream), unpacked byte {}",
                self.segment, self.offset
            ),
        }
    }
}

/// What went wrong reading an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A "070702" entry whose data does not sum to its header's checksum.
    #[error("{at}: {name:?}: data checksum is {found:#010x}, header says {expected:#010x}")]
    BadChecksum {
        /// Where the entry's header is.
        at: Location,
        /// The entry.
        name: String,
        /// The header's value.
        expected: u32,
        /// The sum of the data bytes.
        found: u32,
    },
    /// A header field that is not eight hex digits.
    #[error("{at}: cpio header field {field} is not 8 hex digits: {found:?}")]
    BadField {
        /// Where the header is.
        at: Location,
        /// The field's name in buffer-format.rst.
        field: &'static str,
        /// The bytes found.
        found: String,
    },
    /// Something other than a cpio header where one must start.
    #[error("{at}: expected cpio magic \"070701\" or \"070702\", found {found:?}")]
    BadMagic {
        /// Where the header should be.
        at: Location,
        /// The first six bytes found.
        found: String,
    },
    /// A name that is empty, longer than `PATH_MAX` or not NUL-terminated.
    #[error("{at}: cpio name of {len} bytes is empty, longer than 4096 (PATH_MAX) or not NUL-terminated")]
    BadName {
        /// Where the header is.
        at: Location,
        /// The header's namesize.
        len: u32,
    },
    /// An archive resumes after zero padding at an offset that is not a multiple of 4.
    #[error("{at}: next cpio archive after zero padding is not 4-byte aligned")]
    BrokenPadding {
        /// Where the archive starts.
        at: Location,
    },
    /// The decompressor failed (corrupt or truncated stream).
    #[error("{at}: {compression} stream is corrupt or truncated")]
    Decompress {
        /// How far the unpacked stream got.
        at: Location,
        /// The stream's compression.
        compression: Compression,
        /// The decompressor's error.
        #[source]
        source: io::Error,
    },
    /// Reading the initramfs file failed.
    #[error("reading the initramfs at byte {offset}")]
    Io {
        /// Where.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A bound from [`Limits`] was reached.
    #[error("{at}: more than {limit} {what}")]
    Limit {
        /// Where.
        at: Location,
        /// What was counted.
        what: &'static str,
        /// The bound.
        limit: u64,
    },
    /// The stream ends inside a structure.
    #[error("{at}: stream ends inside {structure}")]
    Truncated {
        /// Where the structure starts.
        at: Location,
        /// What was being read.
        structure: &'static str,
    },
    /// Neither a cpio archive nor a compressed stream the kernel knows.
    #[error("initramfs byte {offset}: {found:02x?} starts neither a cpio archive nor a known compressed stream")]
    UnknownMagic {
        /// Where.
        offset: u64,
        /// Up to 6 bytes found there.
        found: Vec<u8>,
    },
    /// A format the kernel knows and this reader does not.
    #[error("{at}: {feature} is not supported")]
    Unsupported {
        /// Where.
        at: Location,
        /// What.
        feature: &'static str,
    },
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
    let decompress = |source| CpioError::Decompress {
        at: loc,
        compression,
        source,
    };
    let lzma = |r: Result<liblzma::stream::Stream, liblzma::stream::Error>| {
        r.map_err(|e| decompress(e.into()))
    };
    let decoder: Box<dyn Read + '_> = match compression {
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
    };
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

/// Where parsed entries go, with the name budget.
struct Sink<'a> {
    out: &'a mut Vec<CpioEntry>,
    names: &'a mut usize,
    segment: usize,
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
fn parse_archive<R: BufRead>(c: &mut Counted<'_, R>, sink: &mut Sink<'_>) -> Result<(), CpioError> {
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
struct Counted<'l, R> {
    r: R,
    /// Offset of the next byte in the stream.
    pos: u64,
    segment: u64,
    compression: Compression,
    limits: &'l Limits,
}

impl<'l, R: BufRead> Counted<'l, R> {
    fn new(r: R, segment: u64, pos: u64, compression: Compression, limits: &'l Limits) -> Self {
        Self {
            r,
            pos,
            segment,
            compression,
            limits,
        }
    }

    fn loc(&self) -> Location {
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

    fn peek(&mut self) -> Result<Option<u8>, CpioError> {
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
    fn skip_zeros(&mut self) -> Result<(), CpioError> {
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

/// lz4 legacy stream (`lib/decompress_unlz4.c`): the magic, then blocks of
/// `le32 compressed length` + data, each unpacking to at most 8 MiB, up to
/// the end of the input. A repeated magic is skipped; a zero length (or the
/// end of the input) ends the stream, leaving trailing zeros to the caller.
struct Lz4Legacy<R> {
    r: R,
    started: bool,
    done: bool,
    compressed: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<R: BufRead> Lz4Legacy<R> {
    fn new(r: R) -> Self {
        Self {
            r,
            started: false,
            done: false,
            compressed: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// `LZ4_compressBound(8 MiB)`: the largest valid compressed block.
    fn max_block() -> usize {
        LZ4_CHUNK + LZ4_CHUNK / 255 + 16
    }

    /// Reads a little-endian u32, or `None` at a clean end of input.
    fn word(&mut self) -> io::Result<Option<u32>> {
        if self.r.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut w = [0u8; 4];
        self.r.read_exact(&mut w)?;
        Ok(Some(u32::from_le_bytes(w)))
    }

    fn next_block(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            if self.word()? != Some(LZ4_LEGACY_MAGIC) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad lz4 legacy magic",
                ));
            }
        }
        loop {
            let Some(len) = self.word()? else {
                self.done = true;
                return Ok(());
            };
            if len == LZ4_LEGACY_MAGIC {
                continue;
            }
            if len == 0 {
                self.done = true;
                return Ok(());
            }
            let len = usize::try_from(len).map_err(io::Error::other)?;
            if len > Self::max_block() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("lz4 block of {len} bytes"),
                ));
            }
            self.compressed.resize(len, 0);
            self.r.read_exact(&mut self.compressed)?;
            self.out.resize(LZ4_CHUNK, 0);
            let n = lz4_flex::block::decompress_into(&self.compressed, &mut self.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.out.truncate(n);
            self.out_pos = 0;
            return Ok(());
        }
    }
}

impl<R: BufRead> Read for Lz4Legacy<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.next_block()?;
        }
        let n = (self.out.len() - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
