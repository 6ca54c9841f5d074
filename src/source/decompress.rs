//! Compression detection by magic bytes and one-time decompression into an
//! unnamed temporary file, so tar entries can be referenced by offset.
//!
//! The temporary file (the spill) is bounded: a compressed tar is hostile
//! input, and a few megabytes of gzip can inflate to terabytes. A tar of a
//! tree that fits a disk of D bytes cannot sensibly be much larger than D:
//! its file data is at most the disk's data blocks, and its per-entry
//! overhead (a 512-byte header, padding to 512 bytes, an occasional pax
//! header) is of the order of what each file costs the filesystem anyway (a
//! 256-byte inode, a directory entry, a 4 KiB block for any non-empty file).
//! [`UnpackLimit`] allows D plus one eighth of D for that overhead, at most
//! D + 1 GiB; inflating stops at the first byte past the bound, and the
//! spill, an unlinked file, is freed when the error is returned. A plain
//! (uncompressed) tar is read in place and needs no bound: it is the escape
//! hatch for a legitimate tar that is larger than the bound (one with huge
//! all-zero files, which become holes, or with very many empty entries).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgbuild_formats::io::SizedFile;

use super::zeros::{ZeroMap, ZeroScan};

use super::SourceError;

/// How a source file is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// Zstandard (RFC 8878), possibly several frames.
    Zstd,
    /// xz (XZ file format 1.2.1), possibly several streams.
    Xz,
}

impl Compression {
    /// Its usual name (`none`, `gzip`, `zstd`, `xz`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

/// gzip member header ID1 ID2 (RFC 1952 §2.3.1).
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// Zstandard frame magic 0xFD2FB528, little-endian (RFC 8878 §3.1.1).
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// xz stream header magic "\xFD7zXZ\0" (XZ format §2.1.1.1).
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// bzip2 "BZh" (recognised only to name it in the error).
const BZIP2_MAGIC: &[u8] = b"BZh";
/// lzip "LZIP".
const LZIP_MAGIC: &[u8] = b"LZIP";

/// The most a compressed tar may inflate to when its tree is meant for a
/// disk of `disk_size` bytes (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimit {
    /// Size of the disk (or filesystem) the tree must fit, in bytes.
    pub disk_size: u64,
}

impl UnpackLimit {
    /// Allowance for tar headers and padding above the disk size: 1/8 of it…
    pub const OVERHEAD_DIVISOR: u64 = 8;
    /// …but never more than 1 GiB.
    pub const MAX_OVERHEAD: u64 = 1 << 30;

    /// The limit for a tree that must fit `disk_size` bytes.
    pub fn for_disk(disk_size: u64) -> Self {
        Self { disk_size }
    }

    /// The bound in bytes: the disk size plus 1/8 of it, at most plus 1 GiB.
    pub fn bytes(self) -> u64 {
        let overhead = (self.disk_size / Self::OVERHEAD_DIVISOR).min(Self::MAX_OVERHEAD);
        self.disk_size.saturating_add(overhead)
    }
}

/// Detects the compression from the first bytes of a file.
pub fn detect(head: &[u8]) -> Result<Compression, &'static str> {
    if head.starts_with(GZIP_MAGIC) {
        Ok(Compression::Gzip)
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Compression::Zstd)
    } else if head.starts_with(XZ_MAGIC) {
        Ok(Compression::Xz)
    } else if head.starts_with(BZIP2_MAGIC) {
        Err("bzip2")
    } else if head.starts_with(LZIP_MAGIC) {
        Err("lzip")
    } else {
        Ok(Compression::None)
    }
}

/// Opens `path`; if it is compressed, decompresses it once into an unlinked
/// temporary file in `temp_dir` (default: `std::env::temp_dir()`) and returns
/// that instead, with the zero sectors of what was written (the same pass;
/// see [`ZeroMap`]). The returned file's offsets are those of the
/// uncompressed stream. With a `limit`, inflating stops as soon as the
/// output passes [`UnpackLimit::bytes`], and the partial temporary file is
/// freed ([`SourceError::UnpackedTooLarge`]).
pub fn open_decompressed(
    path: &Path,
    temp_dir: Option<&Path>,
    limit: Option<UnpackLimit>,
) -> Result<(SizedFile, Compression, Option<Arc<ZeroMap>>), SourceError> {
    let io_err = |action: &'static str| {
        move |source: io::Error| SourceError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let mut file = File::open(path).map_err(io_err("open"))?;
    let mut head = [0u8; 6];
    let n = read_up_to(&mut file, &mut head).map_err(io_err("read"))?;
    let method = detect(&head[..n]).map_err(|method| SourceError::UnsupportedCompression {
        path: path.to_owned(),
        method,
    })?;
    if method == Compression::None {
        return Ok((SizedFile::new(file).map_err(io_err("stat"))?, method, None));
    }
    let file = File::open(path).map_err(io_err("open"))?;
    let dir: PathBuf = temp_dir.map_or_else(std::env::temp_dir, Path::to_owned);
    let tmp = tempfile::tempfile_in(&dir).map_err(|source| SourceError::Io {
        path: dir.clone(),
        action: "create a temporary file in",
        source,
    })?;
    let input = BufReader::with_capacity(1 << 20, file);
    let zeros = ZeroMap::new();
    let mut out = Scanning {
        inner: BufWriter::with_capacity(1 << 20, tmp),
        scan: ZeroScan::new(zeros.clone()),
    };
    let (action, copied) = inflate(method, input, limit, &mut out);
    let copied = copied.map_err(io_err(action))?;
    if let Some(limit) = limit.filter(|l| copied > l.bytes()) {
        // Drop the buffered tail unwritten; the unlinked spill is freed with its handle.
        drop(out.inner.into_parts());
        return Err(SourceError::UnpackedTooLarge {
            path: path.to_owned(),
            method: method.name(),
            limit: limit.bytes(),
            disk_size: limit.disk_size,
        });
    }
    out.flush().map_err(io_err(action))?;
    let Scanning { inner, scan } = out;
    scan.finish();
    let tmp = inner.into_inner().map_err(|e| SourceError::Io {
        path: path.to_owned(),
        action,
        source: e.into_error(),
    })?;
    Ok((
        SizedFile::new(tmp).map_err(io_err("stat"))?,
        method,
        Some(zeros),
    ))
}

/// Decompresses `input` into `out`, at most one byte past `limit` (so that
/// crossing it is seen and nothing more is inflated). Returns the action's
/// name for errors and the bytes written.
fn inflate(
    method: Compression,
    input: BufReader<File>,
    limit: Option<UnpackLimit>,
    out: &mut impl Write,
) -> (&'static str, io::Result<u64>) {
    let cap = limit.map_or(u64::MAX, |l| l.bytes().saturating_add(1));
    match method {
        Compression::Gzip => (
            "decompress gzip",
            io::copy(
                &mut flate2::bufread::MultiGzDecoder::new(input).take(cap),
                out,
            ),
        ),
        Compression::Zstd => (
            "decompress zstd",
            zstd::stream::read::Decoder::with_buffer(input)
                .and_then(|d| io::copy(&mut d.take(cap), out)),
        ),
        Compression::Xz => (
            "decompress xz",
            io::copy(
                &mut liblzma::bufread::XzDecoder::new_multi_decoder(input).take(cap),
                out,
            ),
        ),
        // A plain file is read in place; nothing to inflate.
        Compression::None => ("read", Ok(0)),
    }
}

/// A writer that maps the zero sectors of what passes through it.
struct Scanning<W> {
    inner: W,
    scan: ZeroScan,
}

impl<W: Write> Write for Scanning<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use imgbuild_formats::ReadAt;

    use super::*;

    /// Issue 14 (compressed-tar bomb): the bound is the disk size plus 1/8,
    /// the allowance capped at 1 GiB, saturating at `u64::MAX`.
    #[test]
    fn unpack_limit_is_disk_plus_an_eighth_at_most_a_gib() {
        let gib = 1u64 << 30;
        assert_eq!(UnpackLimit::for_disk(8 << 20).bytes(), 9 << 20);
        assert_eq!(UnpackLimit::for_disk(8 * gib).bytes(), 9 * gib);
        assert_eq!(UnpackLimit::for_disk(64 * gib).bytes(), 65 * gib);
        assert_eq!(UnpackLimit::for_disk(0).bytes(), 0);
        assert_eq!(UnpackLimit::for_disk(u64::MAX).bytes(), u64::MAX);
    }

    /// Issue 14 (compressed-tar bomb): a stream of exactly the bound is
    /// read whole; one byte more is refused.
    #[test]
    fn unpack_limit_is_inclusive_to_the_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let limit = UnpackLimit::for_disk(8 << 20);
        for (len, fits) in [(limit.bytes(), true), (limit.bytes() + 1, false)] {
            let path = dir.path().join(format!("{len}.gz"));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&vec![0u8; usize::try_from(len).expect("small")])
                .expect("compress");
            std::fs::write(&path, gz.finish().expect("compress")).expect("write");
            let got = open_decompressed(&path, Some(dir.path()), Some(limit));
            match (got, fits) {
                (Ok((file, Compression::Gzip, _)), true) => assert_eq!(file.len(), len),
                (Err(SourceError::UnpackedTooLarge { limit: l, .. }), false) => {
                    assert_eq!(l, limit.bytes());
                }
                (other, _) => panic!("{len} bytes: {:?}", other.map(|r| r.1)),
            }
        }
    }

    #[test]
    fn detect_names_each_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Ok(Compression::Gzip));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Ok(Compression::Zstd));
        assert_eq!(
            detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Ok(Compression::Xz)
        );
        assert_eq!(detect(b"BZh91AY"), Err("bzip2"));
        assert_eq!(detect(b"etc/"), Ok(Compression::None));
        assert_eq!(detect(b""), Ok(Compression::None));
    }
}
