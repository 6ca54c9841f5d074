//! Google Compute Engine image: what `tar --format=oldgnu -Sczf image.tar.gz
//! disk.raw` makes (Google's documented form), streamed front to back.
//!
//! ```text
//! gzip( oldgnu 'S' header "disk.raw" [+ extension blocks]   sparse map = the allocated ranges
//!       data of the allocated ranges, concatenated, padded to 512
//!       two zero blocks, zeros up to the next 10240-byte record )
//! ```
//!
//! The sparse map is the allocation map `begin` gets (widened to whole
//! 512-byte blocks, see `block_aligned`), so the header is
//! known before the data; the file is written once, in order, and hashed as
//! it goes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;

use super::gzip::ParallelGzip;
use super::tar;
use crate::hash::StreamHash;
use crate::{Error, Format, ImageSink, ImageSummary, Result};

/// The member name Google's import expects.
pub const MEMBER: &str = "disk.raw";

static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The output file, counted and hashed as gzip writes it.
struct Out {
    file: BufWriter<File>,
    at: u64,
    hash: StreamHash,
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.write_at(self.at, &buf[..n]);
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `disk.raw` as a sparse GNU tar, gzip compressed.
pub struct GceWriter {
    gzip: Option<ParallelGzip<Out>>,
    mtime: u64,
    size: u64,
    /// The allocated ranges, and where the data stream stands in them.
    ranges: Vec<Range<u64>>,
    cursor: Cursor,
    /// Tar bytes so far (to pad the archive).
    tar_len: u64,
}

/// The allocated ranges widened to whole 512-byte blocks (the last may end
/// at `size`) and merged. GNU tar stores each sparse region padded to a
/// block while bsdtar and Go read them back to back; with aligned regions
/// the two readings agree. The widened bytes are zeros.
fn block_aligned(allocated: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(allocated.len());
    for r in allocated {
        let start = r.start / tar::BLOCK * tar::BLOCK;
        let end = tar::padded(r.end).min(size);
        match out.last_mut() {
            Some(last) if last.end >= start => last.end = last.end.max(end),
            _ => out.push(start..end),
        }
    }
    out
}

/// A position in the concatenated data of the allocated ranges.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// Index of the range the next byte belongs to.
    range: usize,
    /// Disk offset of the next byte.
    at: u64,
}

impl GceWriter {
    /// A writer into `file` compressing on `threads` threads; hashes the
    /// file when `hash`.
    pub fn new(file: File, mtime: u64, threads: usize, hash: bool) -> Result<Self> {
        let out = Out {
            file: BufWriter::with_capacity(1 << 20, file),
            at: 0,
            hash: StreamHash::enabled(hash),
        };
        Ok(Self {
            gzip: Some(ParallelGzip::new(out, threads)?),
            mtime,
            size: 0,
            ranges: Vec::new(),
            cursor: Cursor::default(),
            tar_len: 0,
        })
    }

    fn gzip(&mut self) -> Result<&mut ParallelGzip<Out>> {
        self.gzip.as_mut().ok_or_else(|| Error::InvalidOption {
            option: "finish",
            detail: "the GCE writer was already finished".into(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.gzip()?.write(bytes)?;
        self.tar_len += bytes.len() as u64;
        Ok(())
    }

    fn put_zeros(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = usize::try_from(n.min(ZEROS.len() as u64)).expect("at most ZEROS.len()");
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Writes zeros for the allocated bytes from the cursor up to disk
    /// offset `to` (a gap nobody wrote reads as zeros), skipping holes.
    fn zeros_to(&mut self, to: u64) -> Result<()> {
        while let Some(r) = self.ranges.get(self.cursor.range).cloned() {
            let at = self.cursor.at.max(r.start);
            if to <= at {
                self.cursor.at = at;
                return Ok(());
            }
            let end = to.min(r.end);
            self.put_zeros(end - at)?;
            self.cursor.at = end;
            if end < r.end {
                return Ok(());
            }
            self.cursor.range += 1;
        }
        Ok(())
    }
}

impl ImageSink for GceWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        self.size = size;
        self.ranges = block_aligned(allocated, size);
        let header = tar::oldgnu_sparse(MEMBER, size, &self.ranges, self.mtime)?;
        self.put(&header)
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.zeros_to(offset)?;
        let end = offset + data.len() as u64;
        let inside = self
            .ranges
            .get(self.cursor.range)
            .is_some_and(|r| r.start <= offset && end <= r.end && offset == self.cursor.at);
        if !inside {
            return Err(Error::InvalidOption {
                option: "write_data",
                detail: format!(
                    "{} bytes at disk offset {offset} are out of order or outside the allocated ranges",
                    data.len()
                ),
            });
        }
        self.put(data)?;
        self.cursor.at = end;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        self.zeros_to(u64::MAX)?;
        let data_end = self.tar_len;
        self.put_zeros(tar::padded(data_end) - data_end)?;
        self.put_zeros(tar::end_padding(self.tar_len))?;
        let gzip = self.gzip.take().expect("checked by put above");
        let (mut out, len) = gzip.finish()?;
        out.flush()
            .map_err(|e| Error::io("flushing the GCE tar.gz", e))?;
        Ok(ImageSummary {
            format: Format::Raw,
            virtual_size: self.size,
            file_size: len,
            sha256: out.hash.finish(len),
            member: None,
        })
    }
}

/// Most sparse map entries [`unpack`] accepts (a 4 GiB disk has a few
/// thousand).
pub const MAX_SPARSE: usize = 1 << 20;

/// Unpacks `disk.raw` from the Compute Engine image `archive` (gzip'd GNU
/// tar, as [`GceWriter`] and `tar --format=oldgnu -Sczf` make it) into `out`,
/// holes left as holes: QEMU cannot read a disk inside gzip. Returns the
/// disk's size. Reads the headers with [`tar::parse`] (magic, checksum,
/// octal or base-256 numbers: a disk over 8 GiB has base-256 sizes), takes
/// sparse (`S`) and regular members, and skips others.
///
/// Bounded against a hostile archive: at most [`MAX_SPARSE`] map entries,
/// each inside the real size and after the previous one, and never more
/// data written than the member stores.
pub fn unpack(archive: impl std::io::Read, out: &File) -> Result<u64> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut r =
        flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, archive));
    let corrupt = |offset: u64, detail: String| Error::Corrupt {
        format: "GCE tar.gz",
        structure: "disk.raw",
        offset,
        detail,
    };
    let read = |r: &mut dyn Read, buf: &mut [u8], what: &str| {
        r.read_exact(buf)
            .map_err(|e| Error::io(format!("reading {what} of the GCE archive"), e))
    };
    let mut at = 0u64;
    let mut h = [0u8; 512];
    loop {
        read(&mut r, &mut h, "a tar header")?;
        let Some(member) = tar::parse(&h, at)? else {
            return Err(corrupt(at, format!("the archive has no member {MEMBER}")));
        };
        at += tar::BLOCK;
        let wanted = member.name.trim_start_matches("./") == MEMBER;
        if !wanted || !matches!(member.kind, tar::TYPE_GNU_SPARSE | tar::TYPE_FILE | 0) {
            let skip = tar::padded(member.size);
            let n = std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())
                .map_err(|e| Error::io("skipping a member of the GCE archive", e))?;
            if n < skip {
                return Err(corrupt(
                    at,
                    format!("member {:?} is cut short", member.name),
                ));
            }
            at += skip;
            continue;
        }
        let (size, map) = if member.kind == tar::TYPE_GNU_SPARSE {
            let tar::SparseHeader {
                entries: mut map,
                mut extended,
                realsize,
            } = tar::parse_oldgnu_sparse(&h, at - tar::BLOCK)?;
            while extended {
                read(&mut r, &mut h, "a sparse extension block")?;
                let (more, next) = tar::parse_sparse_extension(&h, at)?;
                at += tar::BLOCK;
                map.extend(more);
                extended = next;
                if map.len() > MAX_SPARSE {
                    return Err(corrupt(
                        at,
                        format!("more than {MAX_SPARSE} sparse map entries"),
                    ));
                }
            }
            (realsize, map)
        } else {
            (member.size, vec![(0, member.size)])
        };
        out.set_len(size)
            .map_err(|e| Error::io("sizing the unpacked disk.raw", e))?;
        let (mut left, mut end) = (member.size, 0u64);
        let mut buf = vec![0u8; 1 << 20];
        for (offset, len) in map {
            if offset < end || offset.checked_add(len).is_none_or(|e| e > size) {
                return Err(corrupt(at, format!(
                    "sparse entry at {offset} of {len} bytes is out of order or past the size {size}"
                )));
            }
            if len > left {
                return Err(corrupt(
                    at,
                    "the sparse map holds more data than the member".into(),
                ));
            }
            let mut done = 0u64;
            while done < len {
                let n = usize::try_from((len - done).min(buf.len() as u64)).expect("at most 1 MiB");
                read(&mut r, &mut buf[..n], "disk.raw")?;
                // All-zero chunks stay holes.
                if buf[..n].iter().any(|&b| b != 0) {
                    out.write_all_at(&buf[..n], offset + done)
                        .map_err(|e| Error::io("writing the unpacked disk.raw", e))?;
                }
                done += n as u64;
            }
            left -= len;
            end = offset + len;
        }
        return Ok(size);
    }
}

#[cfg(test)]
mod unpack_tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    /// A GNU tar (`--format=oldgnu -S`) of a file with more holes than the
    /// header's four map entries unpacks to the same bytes.
    #[test]
    fn gnu_tar_sparse_archives_unpack_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let f = File::create(&raw).unwrap();
        f.set_len(64 << 20).unwrap();
        for i in 0..9u64 {
            f.write_all_at(&[i as u8 + 1; 5000], i * (7 << 20) + 123)
                .unwrap();
        }
        drop(f);
        let tgz = dir.path().join("image.tar.gz");
        let ok = Command::new("tar")
            .args(["--format=oldgnu", "-Sczf"])
            .arg(&tgz)
            .arg("-C")
            .arg(dir.path())
            .arg("disk.raw")
            .status()
            .expect("GNU tar");
        assert!(ok.success());
        let out = dir.path().join("out.raw");
        let o = File::create(&out).unwrap();
        let size = unpack(File::open(&tgz).unwrap(), &o).unwrap();
        assert_eq!(size, 64 << 20);
        assert_eq!(std::fs::read(&raw).unwrap(), std::fs::read(&out).unwrap());
    }

    /// What our writer makes of a 10 GiB disk (base-256 sizes and offsets,
    /// which octal-only readers refuse) unpacks to its data at its places.
    #[test]
    fn a_disk_over_8_gib_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("big.tar.gz");
        let size = 10u64 << 30;
        let mut w: Box<dyn ImageSink> =
            Box::new(GceWriter::new(File::create(&tgz).unwrap(), 0, 2, false).unwrap());
        let (a, b) = (4096u64, (9u64 << 30) + 8192);
        w.begin(size, &[a..a + 512, b..b + 1024]).unwrap();
        w.write_data(a, &[7u8; 512]).unwrap();
        w.write_data(b, &[9u8; 1024]).unwrap();
        w.finish().unwrap();
        let out = File::create(dir.path().join("disk.raw")).unwrap();
        assert_eq!(unpack(File::open(&tgz).unwrap(), &out).unwrap(), size);
        assert_eq!(out.metadata().unwrap().len(), size);
        let mut buf = vec![0u8; 1024];
        out.read_exact_at(&mut buf[..512], a).unwrap();
        assert!(buf[..512].iter().all(|&x| x == 7));
        out.read_exact_at(&mut buf, b).unwrap();
        assert!(buf.iter().all(|&x| x == 9));
        out.read_exact_at(&mut buf, b - 1024).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let out = File::create(dir.path().join("o")).unwrap();
        assert!(unpack(&b"not gzip"[..], &out).is_err());
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &[b'7'; 1024]).unwrap();
        let err = unpack(&e.finish().unwrap()[..], &out).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::block_aligned;

    #[test]
    fn ranges_widen_to_blocks_and_merge() {
        let r = block_aligned(&[1..10, 600..1000, 1030..1100, 5000..5003], 5003);
        // 1..10 and 600..1000 become touching blocks, merged with 1030..1100.
        assert_eq!(r, vec![0..1536, 4608..5003]);
    }
}
