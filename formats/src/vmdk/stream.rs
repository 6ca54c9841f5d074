//! The streamOptimized writer: grains are gathered into jobs, compressed on
//! a pool of worker threads ([`crate::pool`]) and written in disk order as
//! they come back, so the bytes never depend on the thread count.
//!
//! The file is written strictly front to back with sequential `write`
//! calls on its cursor (no seek, no positional write): the OVA packager
//! hands us a clone of a file whose shared cursor sits inside a tar.
//!
//! Possible later optimisation: qcow2's compressed clusters are deflate of
//! the same 64 KiB at the same level, but raw deflate with a 4 KiB window
//! (qemu's windowBits -12), while VMDK grains are zlib streams with a 32 KiB
//! window; sharing compressed data between the two outputs of one build
//! would need the qcow2 writer to take the larger window (qemu reads it).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;

use flate2::{Compress, FlushCompress, Status};

use super::{
    cid, grains_of, header_and_descriptor, marker, sector_u32, Header, GD_AT_END, GRAIN,
    GRAIN_SECTORS, GTES_PER_GT, LEVEL, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR,
};
use crate::pool::{self, OrderedPool};
use crate::{Error, Format, ImageSink, ImageSummary, Result, WriteOptions};

/// Grains per job (2 MiB of disk data).
const GRAINS_PER_JOB: usize = 32;

/// Whole grains to compress: their indices and bytes (`GRAIN` each).
struct Job {
    grains: Vec<u64>,
    data: Vec<u8>,
}

/// A job done: each non-zero grain's index and its zlib stream's range in
/// `packed`; all-zero grains are left out.
struct Done {
    grains: Vec<(u64, Range<usize>)>,
    packed: Vec<u8>,
}

/// Writes a streamOptimized VMDK (see the module doc).
pub struct VmdkStreamWriter {
    out: Output,
    threads: usize,
    pool: Option<OrderedPool<Job, Result<Done>>>,
    /// Grains being gathered, and their bytes.
    grains: Vec<u64>,
    data: Vec<u8>,
}

/// The file and what is known of it.
struct Output {
    file: BufWriter<File>,
    /// Bytes written so far (a whole number of sectors between grains).
    pos: u64,
    size: u64,
    cid: u32,
    adapter: String,
    /// Grain table entries of the whole disk: sector of each grain's header.
    gtes: Vec<u32>,
}

impl VmdkStreamWriter {
    /// A writer into `file` compressing on all cores; `seed` gives the
    /// descriptor's CID, `adapter` its `ddb.adapterType` (`ide`,
    /// `lsilogic`, `buslogic`, `legacyESX`).
    pub fn new(file: File, seed: Option<[u8; 32]>, adapter: &str) -> Self {
        let threads = pool::threads(None).expect("the default is at least 1");
        Self::with_threads(file, seed, adapter, threads)
    }

    /// [`Self::new`] with `opts.seed` and `opts.threads` (0 threads is refused).
    pub fn with_options(file: File, opts: &WriteOptions, adapter: &str) -> Result<Self> {
        let threads = pool::threads(opts.threads)?;
        Ok(Self::with_threads(file, opts.seed, adapter, threads))
    }

    fn with_threads(file: File, seed: Option<[u8; 32]>, adapter: &str, threads: usize) -> Self {
        VmdkStreamWriter {
            out: Output {
                file: BufWriter::with_capacity(1 << 20, file),
                pos: 0,
                size: 0,
                cid: cid(seed),
                adapter: adapter.to_string(),
                gtes: Vec::new(),
            },
            threads,
            pool: None,
            grains: Vec::with_capacity(GRAINS_PER_JOB),
            data: Vec::new(),
        }
    }

    /// Hands the gathered grains to the pool, writing the jobs already done.
    fn submit(&mut self) -> Result<()> {
        if self.grains.is_empty() {
            return Ok(());
        }
        let job = Job {
            grains: std::mem::replace(&mut self.grains, Vec::with_capacity(GRAINS_PER_JOB)),
            data: std::mem::take(&mut self.data),
        };
        let pool = self.pool.as_mut().ok_or_else(|| not_begun("write_data"))?;
        let out = &mut self.out;
        pool.submit(job, &mut |done| out.place(done?))
    }
}

impl Output {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing the VMDK at byte {}", self.pos), e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Pads to the next sector boundary.
    fn pad(&mut self) -> Result<()> {
        let rest = self.pos.next_multiple_of(SECTOR) - self.pos;
        let zeros = [0u8; SECTOR as usize];
        self.put(&zeros[..rest as usize])
    }

    fn sector(&self) -> Result<u32> {
        sector_u32(self.pos / SECTOR)
    }

    /// Writes one job's grains: lba u64, size u32, zlib data, padding.
    fn place(&mut self, done: Done) -> Result<()> {
        for (index, range) in done.grains {
            let at = self.sector()?;
            let compressed = &done.packed[range];
            let mut head = [0u8; 12];
            head[0..8].copy_from_slice(&(index * GRAIN_SECTORS).to_le_bytes());
            head[8..12].copy_from_slice(
                &u32::try_from(compressed.len())
                    .expect("a compressed grain is under 4 GiB")
                    .to_le_bytes(),
            );
            self.put(&head)?;
            self.put(compressed)?;
            self.pad()?;
            let slot = usize::try_from(index).expect("indices below the grain count, a usize");
            self.gtes[slot] = at;
        }
        Ok(())
    }

    /// Grain tables with at least one grain, the directory, the footer and
    /// the end-of-stream marker.
    fn finish(&mut self) -> Result<()> {
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        let gtes = std::mem::take(&mut self.gtes);
        let mut gd = vec![0u32; gtes.len() / GTES_PER_GT as usize];
        for (slot, entries) in gd.iter_mut().zip(gtes.chunks(GTES_PER_GT as usize)) {
            if entries.iter().all(|&e| e == 0) {
                continue;
            }
            let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            self.put(&marker(gt_sectors, MARKER_GT))?;
            *slot = self.sector()?;
            self.put(&bytes)?;
        }
        let gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
        let gd_sectors = (gd_bytes.len() as u64).div_ceil(SECTOR);
        self.put(&marker(gd_sectors, MARKER_GD))?;
        let gd_at = u64::from(self.sector()?);
        self.put(&gd_bytes)?;
        self.pad()?;
        self.put(&marker(1, MARKER_FOOTER))?;
        self.put(&Header::stream(self.size / SECTOR, gd_at).encode())?;
        self.put(&marker(0, MARKER_EOS))?;
        self.file
            .flush()
            .map_err(|e| Error::io("flushing the VMDK".to_string(), e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io("syncing the VMDK".to_string(), e))
    }
}

impl ImageSink for VmdkStreamWriter {
    fn begin(&mut self, size: u64, _allocated: &[Range<u64>]) -> Result<()> {
        let grains = grains_of(size)?;
        self.out.size = size;
        self.out.gtes = vec![0; grains.next_multiple_of(GTES_PER_GT as usize)];
        let h = Header::stream(size / SECTOR, GD_AT_END);
        let head = header_and_descriptor(&h, "streamOptimized", self.out.cid, &self.out.adapter);
        self.out.put(&head)?;
        // Up to overHead (one grain).
        let zeros = vec![0u8; (GRAIN - self.out.pos) as usize];
        self.out.put(&zeros)?;
        self.pool = Some(OrderedPool::start(
            "vmdk-compress",
            "compressing VMDK grains",
            self.threads,
            || Ok(Compress::new(flate2::Compression::new(LEVEL), true)),
            compress_job,
        )?);
        Ok(())
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > self.out.size)
        {
            return Err(Error::ExtentOutsideDisk {
                offset,
                len: data.len() as u64,
                size: self.out.size,
            });
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / GRAIN;
            match self.grains.last() {
                Some(&last) if last == index => {}
                Some(&last) if last > index => {
                    return Err(Error::InvalidOption {
                        option: "write order",
                        detail: format!("VMDK data at disk offset {at} arrived after grain {last}"),
                    });
                }
                _ => {
                    if self.grains.len() == GRAINS_PER_JOB {
                        self.submit()?;
                    }
                    if self.data.capacity() == 0 {
                        self.data.reserve_exact(GRAINS_PER_JOB * GRAIN as usize);
                    }
                    self.grains.push(index);
                    self.data.resize(self.data.len() + GRAIN as usize, 0);
                }
            }
            let within = (at % GRAIN) as usize;
            let n = rest.len().min(GRAIN as usize - within);
            let base = (self.grains.len() - 1) * GRAIN as usize + within;
            self.data[base..base + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        self.submit()?;
        let pool = self.pool.take().ok_or_else(|| not_begun("finish"))?;
        let out = &mut self.out;
        pool.finish(&mut |done| out.place(done?))?;
        self.out.finish()?;
        Ok(ImageSummary {
            member: None,
            format: Format::Vmdk,
            virtual_size: self.out.size,
            file_size: self.out.pos,
            sha256: None,
        })
    }
}

/// Compresses a job's grains, one zlib stream each (level [`LEVEL`]).
fn compress_job(z: &mut Compress, job: Job) -> Result<Done> {
    let mut packed = Vec::with_capacity(job.data.len() / 2);
    let mut grains = Vec::with_capacity(job.grains.len());
    for (&index, grain) in job.grains.iter().zip(job.data.chunks_exact(GRAIN as usize)) {
        if grain.iter().all(|&b| b == 0) {
            continue;
        }
        let start = packed.len();
        // Room for the worst case (deflate's stored blocks plus the zlib
        // header and trailer): Finish always completes in one call.
        packed.reserve(grain.len() + grain.len() / 8 + 128);
        z.reset();
        match z.compress_vec(grain, &mut packed, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => grains.push((index, start..packed.len())),
            Ok(status) => {
                return Err(Error::io(
                    "compressing a VMDK grain",
                    std::io::Error::other(format!("deflate stopped early ({status:?})")),
                ))
            }
            Err(e) => return Err(Error::io("compressing a VMDK grain", e.into())),
        }
    }
    Ok(Done { grains, packed })
}

fn not_begun(what: &str) -> Error {
    Error::InvalidOption {
        option: "write order",
        detail: format!("VMDK {what} called before begin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_images, VirtualDiskBuilder};

    fn write(disk: &crate::VirtualDisk, threads: usize) -> Vec<u8> {
        let f = tempfile::tempfile().unwrap();
        let opts = WriteOptions {
            threads: Some(threads),
            ..WriteOptions::default()
        };
        let sink =
            VmdkStreamWriter::with_options(f.try_clone().unwrap(), &opts, "lsilogic").unwrap();
        write_images(disk, vec![Box::new(sink)]).unwrap();
        std::fs::read(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))
        .unwrap()
    }

    #[test]
    fn one_and_three_threads_give_identical_files() {
        let mut b = VirtualDiskBuilder::new(40 << 20);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        // Compressible text, random bytes, zeros inside an extent, a tail.
        b.bytes(
            0,
            (0..3_000_000u32)
                .map(|i| (i / 7 % 251) as u8)
                .collect::<Vec<_>>(),
        );
        b.bytes(
            5 << 20,
            (0..700_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<_>>(),
        );
        b.bytes(9 << 20, vec![0u8; 1 << 20]);
        b.bytes((40 << 20) - 512, vec![7u8; 512]);
        let disk = b.build().unwrap();
        let one = write(&disk, 1);
        assert_eq!(one, write(&disk, 3));
        assert_eq!(one, write(&disk, 2));
    }

    #[test]
    fn writes_only_through_the_cursor_from_where_it_stands() {
        // The OVA packager's case: the file's cursor is already inside it.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[0xAA; 1536]).unwrap();
        let mut b = VirtualDiskBuilder::new(4 << 20);
        b.bytes(70_000, vec![1u8; 200_000]);
        let disk = b.build().unwrap();
        let sink = VmdkStreamWriter::new(f.try_clone().unwrap(), None, "lsilogic");
        let summary = write_images(&disk, vec![Box::new(sink)]).unwrap().remove(0);
        let all = std::fs::read(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))
        .unwrap();
        assert_eq!(&all[..1536], &[0xAA; 1536][..]);
        assert_eq!(all.len() as u64, 1536 + summary.file_size);
        assert_eq!(&all[1536..1540], b"KDMV");
        assert_eq!(all[1536..].len() as u64 % SECTOR, 0);
    }

    #[test]
    fn zero_threads_are_refused() {
        let opts = WriteOptions {
            threads: Some(0),
            ..WriteOptions::default()
        };
        assert!(
            VmdkStreamWriter::with_options(tempfile::tempfile().unwrap(), &opts, "ide").is_err()
        );
    }
}
