//! The streamOptimized writer: each grain is deflated once by
//! [`crate::grain`] (on the worker pool, [`crate::pool`]), as a zlib
//! stream that GCE's tar.gz of the same disk shares, and written in disk
//! order as the grains come back, so the bytes never depend on the thread
//! count or on the other outputs of the build.
//!
//! The file is written strictly front to back with sequential `write`
//! calls on its cursor (no seek, no positional write): the OVA packager
//! hands us a clone of a file whose shared cursor sits inside a tar.
//!
//! qcow2's compressed clusters are deflate of the same 64 KiB, but raw
//! deflate with a 4 KiB window (qemu's windowBits -12) and they stay so
//! (qemu reads a larger window, but the bytes would change for no gain
//! unless a build also made a VMDK from the same disk).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;

use super::{
    cid, grains_of, header_and_descriptor, marker, sector_u32, Header, GD_AT_END, GRAIN,
    GRAIN_SECTORS, GTES_PER_GT, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, SECTOR,
};
use crate::grain::{GrainBatch, GrainSink, GrainStage};
use crate::pool;
use crate::{Error, Format, ImageSink, ImageSummary, Result, WriteOptions};

/// Writes a streamOptimized VMDK (see the module doc).
pub struct VmdkStreamWriter {
    out: Output,
    threads: usize,
    /// Deflates the data given to `write_data` (not made when the tee
    /// hands over deflated grains instead).
    stage: Option<GrainStage>,
    /// The allocation map `begin` got, for that stage.
    allocated: Vec<Range<u64>>,
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
    /// Index of the next grain that may come.
    next: u64,
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
                next: 0,
            },
            threads,
            stage: None,
            allocated: Vec::new(),
        }
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

    /// Writes the batch's non-zero grains of `disk`: lba u64, size u32,
    /// zlib stream, padding.
    fn place(&mut self, batch: &GrainBatch, disk: u64) -> Result<()> {
        for g in batch.of(disk) {
            if g.index < self.next || g.index >= self.gtes.len() as u64 {
                return Err(Error::InvalidOption {
                    option: "write order",
                    detail: format!("VMDK grain {} arrived after grain {}", g.index, self.next),
                });
            }
            self.next = g.index + 1;
            if g.zero {
                continue;
            }
            let at = self.sector()?;
            let compressed = &batch.packed[g.zlib.clone()];
            let mut head = [0u8; 12];
            head[0..8].copy_from_slice(&(g.index * GRAIN_SECTORS).to_le_bytes());
            head[8..12].copy_from_slice(
                &u32::try_from(compressed.len())
                    .expect("a compressed grain is under 4 GiB")
                    .to_le_bytes(),
            );
            self.put(&head)?;
            self.put(compressed)?;
            self.pad()?;
            let slot = usize::try_from(g.index).expect("indices below the grain count, a usize");
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

impl GrainSink for VmdkStreamWriter {
    fn threads(&self) -> usize {
        self.threads
    }

    fn write_grains(&mut self, batch: &GrainBatch, disk: u64) -> Result<()> {
        self.out.place(batch, disk)
    }
}

impl ImageSink for VmdkStreamWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        let grains = grains_of(size)?;
        self.allocated = allocated.to_vec();
        self.out.size = size;
        self.out.gtes = vec![0; grains.next_multiple_of(GTES_PER_GT as usize)];
        let h = Header::stream(size / SECTOR, GD_AT_END);
        let head = header_and_descriptor(&h, "streamOptimized", self.out.cid, &self.out.adapter);
        self.out.put(&head)?;
        // Up to overHead (one grain).
        let zeros = vec![0u8; (GRAIN - self.out.pos) as usize];
        self.out.put(&zeros)
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if self.out.pos == 0 {
            return Err(not_begun("write_data"));
        }
        let mut stage = match self.stage.take() {
            Some(s) => s,
            None => GrainStage::new(
                vec![(0, self.out.size, std::mem::take(&mut self.allocated))],
                self.threads,
            )?,
        };
        let out = &mut self.out;
        let r = stage.push(offset, data, 1, &mut |b| out.place(&b, 1));
        self.stage = Some(stage);
        r
    }

    fn grain_sink(&mut self) -> Option<&mut dyn GrainSink> {
        Some(self)
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        if self.out.pos == 0 {
            return Err(not_begun("finish"));
        }
        if let Some(stage) = self.stage.take() {
            let out = &mut self.out;
            stage.finish(&mut |b| out.place(&b, 1))?;
        }
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
