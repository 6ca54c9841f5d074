//! Compression detection by magic bytes and one-time decompression into an
//! unnamed temporary file, so tar entries can be referenced by offset.

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
/// uncompressed stream.
pub fn open_decompressed(
    path: &Path,
    temp_dir: Option<&Path>,
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
    let action = match method {
        Compression::Gzip => "decompress gzip",
        Compression::Zstd => "decompress zstd",
        Compression::Xz => "decompress xz",
        Compression::None => unreachable!("handled above"),
    };
    let copied = match method {
        Compression::Gzip => io::copy(&mut flate2::bufread::MultiGzDecoder::new(input), &mut out),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(input)
            .and_then(|mut d| io::copy(&mut d, &mut out)),
        Compression::Xz => io::copy(
            &mut liblzma::bufread::XzDecoder::new_multi_decoder(input),
            &mut out,
        ),
        Compression::None => unreachable!("handled above"),
    };
    copied.map_err(io_err(action))?;
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
    use super::*;

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
