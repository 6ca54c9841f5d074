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
//! once), and becomes one gzip member ([`super::gzip`]). The file is
//! written once, in order, and hashed as it goes.
//!
//! The gzip is a series of members (RFC 1952 2.2), as Google's own exporter
//! writes it since GoogleCloudPlatform/compute-image-import#213 (chunks
//! gzipped apart and concatenated; its output is what `gcloud compute
//! images create` takes back); GNU tar's `-z` and `gzip -t` read it as any
//! other. Google's import asks only for a gzip-compressed GNU (oldgnu) tar
//! holding `disk.raw` (Compute Engine docs, "import-existing-image";
//! shared/notes/cloud-facts.md, "Google Compute Engine").

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;

use super::gzip::GzipMembers;
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
    gzip: Option<GzipMembers<Out>>,
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
            gzip: Some(GzipMembers::new(out)),
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

    fn gzip(&mut self) -> Result<&mut GzipMembers<Out>> {
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
            self.put_grain(&packed[g.deflate], g.crc32, len as u64)?;
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
            self.put_grain(&batch.packed[g.deflate.clone()], g.crc32, u64::from(g.len))?;
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
        // Read and write: the test reads the unpacked disk back.
        let out = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("disk.raw"))
            .unwrap();
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
