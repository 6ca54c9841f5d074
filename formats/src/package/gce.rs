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
