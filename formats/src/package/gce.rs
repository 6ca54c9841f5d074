//! Google Compute Engine image: what `tar --format=oldgnu -Sczf image.tar.gz
//! disk.raw` makes (Google's documented form), streamed front to back.
//!
//! ```text
//! gzip( oldgnu 'S' header "disk.raw" [+ extension blocks]   sparse map = the allocated grains
//!       data of the allocated grains, concatenated
//!       two zero blocks, zeros up to the next 10240-byte record )
//! ```
//!
//! The sparse map is the allocation map `begin` gets widened to whole
//! 64 KiB grains (see `grain_aligned`), so the header is known before the
//! data and the data is a run of whole grains: each grain's deflate comes
//! from [`crate::grain`], shared with a VMDK of the same disk (deflated
//! once), and the gzip member is assembled from those runs
//! ([`super::gzip`]). The file is written once, in order, and hashed as it
//! goes.
//!
//! The gzip is one member (RFC 1952) whose deflate stream is made of
//! sync-flushed runs and one final block, the shape pigz writes and the
//! shape this writer had before grains were shared: GNU tar's `-z` (gzip)
//! reads it as any other. Google's import asks only for a gzip-compressed
//! GNU (oldgnu) tar holding `disk.raw` (Compute Engine docs,
//! "import-existing-image"; shared/notes/cloud-facts.md, "Google Compute
//! Engine"); a single member avoids depending on a reader's support for
//! several.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;

use super::gzip::GzipStream;
use super::tar;
use crate::grain::{Deflater, GrainBatch, GrainSink, GrainStage, GRAIN};
use crate::hash::StreamHash;
use crate::{Error, Format, ImageSink, ImageSummary, Result};

/// The member name Google's import expects.
pub const MEMBER: &str = "disk.raw";

static ZEROS: [u8; 16 << 10] = [0; 16 << 10];

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
    gzip: Option<GzipStream<Out>>,
    mtime: u64,
    size: u64,
    threads: usize,
    /// The allocation map `begin` got (for a stage of our own).
    allocated: Vec<Range<u64>>,
    /// The allocated grains, and the disk offset of the next one due.
    ranges: Vec<Range<u64>>,
    range: usize,
    at: u64,
    /// Tar bytes so far (to pad the archive).
    tar_len: u64,
    /// Deflates the data given to `write_data` (not made when the tee
    /// hands over deflated grains instead).
    stage: Option<GrainStage>,
    /// Deflates zero grains nobody wrote; keeps the last one.
    zeros: Deflater,
}

/// The allocated ranges widened to whole grains (the last may end at
/// `size`) and merged. Whole grains are what makes each grain's deflate
/// usable here as is; the widened bytes are zeros. Grain boundaries are
/// 512-byte blocks too, so GNU tar (which pads each sparse region to a
/// block) and bsdtar and Go (which read them back to back) agree.
fn grain_aligned(allocated: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::with_capacity(allocated.len());
    for r in allocated {
        let start = r.start / GRAIN * GRAIN;
        let end = r.end.next_multiple_of(GRAIN).min(size);
        match out.last_mut() {
            Some(last) if last.end >= start => last.end = last.end.max(end),
            _ => out.push(start..end),
        }
    }
    out
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
            gzip: Some(GzipStream::new(out)?),
            mtime,
            size: 0,
            threads,
            allocated: Vec::new(),
            ranges: Vec::new(),
            range: 0,
            at: 0,
            tar_len: 0,
            stage: None,
            zeros: Deflater::new(),
        })
    }

    fn gzip(&mut self) -> Result<&mut GzipStream<Out>> {
        self.gzip.as_mut().ok_or_else(|| Error::InvalidOption {
            option: "finish",
            detail: "the GCE writer was already finished".into(),
        })
    }

    /// Appends the next grain due: `len` bytes deflated as `run`.
    fn put_grain(&mut self, run: &[u8], crc: u32, len: u64) -> Result<()> {
        self.gzip()?.put_deflated(run, crc, len)?;
        self.tar_len += len;
        self.at += len;
        if self
            .ranges
            .get(self.range)
            .is_some_and(|r| self.at == r.end)
        {
            self.range += 1;
            self.at = self.ranges.get(self.range).map_or(self.at, |r| r.start);
        }
        Ok(())
    }

    /// Appends zero grains for the grains due before disk offset `to` (a
    /// grain nobody wrote reads as zeros).
    fn zeros_to(&mut self, to: u64) -> Result<()> {
        while self.range < self.ranges.len() && self.at < to {
            let end = self.ranges[self.range].end;
            let len = (end - self.at).min(GRAIN) as usize;
            let mut packed = Vec::new();
            let g = self.zeros.grain(&crate::grain::ZEROS[..len], &mut packed)?;
            self.put_grain(&packed[g.body], g.crc32, len as u64)?;
        }
        Ok(())
    }
}

impl GrainSink for GceWriter {
    fn threads(&self) -> usize {
        self.threads
    }

    fn write_grains(&mut self, batch: &GrainBatch, disk: u64) -> Result<()> {
        for g in batch.of(disk) {
            let offset = g.index * GRAIN;
            self.zeros_to(offset)?;
            let due = self
                .ranges
                .get(self.range)
                .is_some_and(|r| self.at == offset && offset + u64::from(g.len) <= r.end);
            if !due {
                return Err(Error::InvalidOption {
                    option: "write_data",
                    detail: format!(
                        "grain at disk offset {offset} is out of order or outside the allocated ranges"
                    ),
                });
            }
            self.put_grain(&batch.packed[g.body.clone()], g.crc32, u64::from(g.len))?;
        }
        Ok(())
    }
}

impl ImageSink for GceWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        self.size = size;
        self.allocated = allocated.to_vec();
        self.ranges = grain_aligned(allocated, size);
        self.at = self.ranges.first().map_or(0, |r| r.start);
        let header = tar::oldgnu_sparse(MEMBER, size, &self.ranges, self.mtime)?;
        self.gzip()?.write(&header)?;
        self.tar_len += header.len() as u64;
        Ok(())
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut stage = match self.stage.take() {
            Some(s) => s,
            None => GrainStage::new(
                vec![(0, self.size, std::mem::take(&mut self.allocated))],
                self.threads,
            )?,
        };
        let r = stage.push(offset, data, 1, &mut |b| self.write_grains(&b, 1));
        self.stage = Some(stage);
        r
    }

    fn grain_sink(&mut self) -> Option<&mut dyn GrainSink> {
        Some(self)
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        if let Some(stage) = self.stage.take() {
            stage.finish(&mut |b| self.write_grains(&b, 1))?;
        }
        self.zeros_to(u64::MAX)?;
        // The data's padding to a block (a disk size not a multiple of
        // 512), the two zero blocks and the record's padding.
        let pad = tar::padded(self.tar_len) - self.tar_len;
        let tail = pad + tar::end_padding(self.tar_len + pad);
        let gzip = self.gzip.take().expect("checked by put above");
        let tail = usize::try_from(tail).expect("under a record and a block");
        let (mut out, len) = gzip.finish(&ZEROS[..tail])?;
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
    use super::grain_aligned;

    #[test]
    fn ranges_widen_to_grains_and_merge() {
        let k = 1024;
        let r = grain_aligned(
            &[
                1..10,
                70 * k..80 * k,
                130 * k..131 * k,
                300 * k..300 * k + 3,
            ],
            300 * k + 3,
        );
        // 1..10 and 70 KiB.. become touching grains, merged with 130 KiB..
        assert_eq!(r, vec![0..192 * k, 256 * k..300 * k + 3]);
    }
}
