//! The VHDX writer: lays out everything in `begin`, streams blocks in guest
//! order, and writes the identifier, headers, region tables and metadata in
//! `finish`, once the GUIDs are known.
//!
//! ```text
//! 0 ─ header section ─ 1M ─ log (empty) ─ 2M ─ BAT ─ +bat_len ─ metadata (1M) ─ present blocks, guest order
//! ```
//!
//! Dynamic: only blocks overlapping allocated ranges are stored
//! (FULLY_PRESENT); every other payload entry is PAYLOAD_BLOCK_ZERO with
//! FileOffsetMB 0, because only ZERO guarantees zeros (NOT_PRESENT "may
//! return arbitrary data", MS-VHDX 2.5.1.1; qemu writes ZERO too).
//! Fixed: LeaveBlockAllocated = 1 and every block FULLY_PRESENT, contiguous.
//!
//! With `WriteOptions::detect_zeros` (a dynamic disk whose allocation map
//! may hold zeros) a block is stored when its first non-zero byte arrives,
//! in guest order, and the BAT is written in `finish`.
//!
//! GUIDs come from `WriteOptions::seed`, or, without one, from a SHA-256 of
//! the layout and of the data as it streams: the same disk always gives the
//! same bytes. With a seed everything is known in `begin`, so the file is
//! written strictly front to back (identifier, headers, region tables, BAT,
//! metadata, then blocks) and hashed as it goes ([`crate::hash`]); without
//! one, the identifier, headers, region tables and metadata come in `finish`.

use std::fs::File;
use std::ops::Range;

use super::bat::{entry, BatGeometry, PAYLOAD_BLOCK_FULLY_PRESENT, PAYLOAD_BLOCK_ZERO};
use super::guid::Guid;
use super::header::{encode_file_identifier, Header, CREATOR, HEADER_OFFSETS};
use super::metadata::{self, DiskParams};
use super::region::{self, Region, Regions, REGION_OFFSETS};
use super::{
    payload_bat_index, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, MIB, MIN_BLOCK_SIZE,
};
use crate::hash::{ContentId, StreamHash};
use crate::io::WriteAt;
use crate::{Error, Format, ImageSink, ImageSummary, Result, Subformat, WriteOptions};

/// The log: 1 MiB at 1 MiB, empty (LogGuid 0). qemu needs a valid LogOffset
/// even for an empty log (formats-facts 2.3).
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u32 = 1 << 20;
const BAT_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u32 = 1 << 20;
/// Physical sector size we declare: 4096 (qemu accepts it with 512 logical).
const PHYSICAL_SECTOR: u32 = 4096;

/// A run of present blocks: guest blocks `first..first+count` stored
/// contiguously from stored-block number `stored`.
#[derive(Clone, Copy, Debug)]
struct Run {
    first: u64,
    count: u64,
    stored: u64,
}

/// Where everything goes, fixed in `begin`.
#[derive(Debug)]
struct Layout {
    params: DiskParams,
    regions: Regions,
    data_start: u64,
    runs: Vec<Run>,
    stored_blocks: u64,
}

/// Writes a VHDX file (see the module doc).
pub struct VhdxWriter {
    file: File,
    block_size: u32,
    logical_sector: u32,
    fixed: bool,
    /// Store blocks as they prove non-zero (see the module doc).
    lazy: bool,
    seed: Option<[u8; 32]>,
    hasher: ContentId,
    /// SHA-256 of the file as written (front to back when seeded).
    hash: StreamHash,
    layout: Option<Layout>,
}

impl VhdxWriter {
    /// A writer into `file` (which should be empty). Fails on a block size
    /// that is not a power of two from 1 to 256 MiB or a logical sector size
    /// other than 512 or 4096.
    pub fn new(file: File, opts: &WriteOptions) -> Result<Self> {
        let block_size = opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(Error::InvalidOption {
                option: "block_size",
                detail: format!("{block_size} is not a power of two from 1 MiB to 256 MiB (VHDX)"),
            });
        }
        let logical_sector = opts.logical_sector_size.unwrap_or(512);
        if logical_sector != 512 && logical_sector != 4096 {
            return Err(Error::InvalidOption {
                option: "logical_sector_size",
                detail: format!("{logical_sector} is neither 512 nor 4096 (VHDX)"),
            });
        }
        Ok(Self {
            file,
            block_size,
            logical_sector,
            fixed: opts.subformat == Subformat::Fixed,
            lazy: opts.detect_zeros && opts.subformat != Subformat::Fixed,
            seed: opts.seed,
            hasher: ContentId::new(b"imgbuild-vhdx-content\0"),
            hash: StreamHash::enabled(opts.hash),
            layout: None,
        })
    }

    /// Plans the file. The virtual size must be a non-zero multiple of the
    /// logical sector size (MS-VHDX 2.6.2.2): we refuse rather than round up,
    /// so the disk a user gets is exactly the one described.
    fn plan(&self, size: u64, allocated: &[Range<u64>]) -> Result<Layout> {
        let ls = u64::from(self.logical_sector);
        if size == 0 || !size.is_multiple_of(ls) || size > MAX_VIRTUAL_SIZE {
            return Err(Error::InvalidOption {
                option: "virtual size",
                detail: format!("VHDX needs a non-zero multiple of the logical sector size {ls} up to 64 TB, got {size}"),
            });
        }
        let params = DiskParams {
            block_size: self.block_size,
            leave_block_allocated: self.fixed,
            virtual_size: size,
            disk_id: Guid::ZERO,
            logical_sector: self.logical_sector,
            physical_sector: PHYSICAL_SECTOR.max(self.logical_sector),
        };
        let geo = BatGeometry::new(size, self.block_size, self.logical_sector);
        let bat_len = geo.region_length();
        let bat = Region {
            offset: BAT_OFFSET,
            length: u32::try_from(bat_len).map_err(|_| too_big(size))?,
        };
        let metadata = Region {
            offset: BAT_OFFSET + bat_len,
            length: METADATA_LENGTH,
        };
        let runs = if self.lazy {
            Vec::new()
        } else if self.fixed {
            vec![Run {
                first: 0,
                count: geo.payload_blocks,
                stored: 0,
            }]
        } else {
            present_runs(allocated, u64::from(self.block_size), geo.payload_blocks)
        };
        let stored_blocks = runs.last().map_or(0, |r| r.stored + r.count);
        Ok(Layout {
            params,
            regions: Regions { bat, metadata },
            data_start: metadata.end(),
            runs,
            stored_blocks,
        })
    }

    /// File offset of guest offset `offset`, and the bytes left in its block.
    fn map(&self, layout: &Layout, offset: u64) -> Option<(u64, u64)> {
        let bs = u64::from(self.block_size);
        let block = offset / bs;
        let i = layout.runs.partition_point(|r| r.first + r.count <= block);
        let run = layout.runs.get(i).filter(|r| r.first <= block)?;
        let stored = run.stored + (block - run.first);
        Some((
            layout.data_start + stored * bs + offset % bs,
            bs - offset % bs,
        ))
    }

    /// Lazy mode: stores the block holding `at` (the next after every block
    /// stored) if `data`, up to the block's end, has a non-zero byte.
    fn store_if_non_zero(&self, layout: &mut Layout, at: u64, data: &[u8]) {
        let bs = u64::from(self.block_size);
        let block = at / bs;
        if self.map(layout, at).is_some() {
            return;
        }
        let n = usize::try_from(bs - at % bs)
            .unwrap_or(usize::MAX)
            .min(data.len());
        if data[..n].iter().all(|&b| b == 0) {
            return;
        }
        match layout.runs.last_mut() {
            Some(r) if r.first + r.count == block => r.count += 1,
            _ => layout.runs.push(Run {
                first: block,
                count: 1,
                stored: layout.stored_blocks,
            }),
        }
        layout.stored_blocks += 1;
    }

    /// Streams the BAT: payload entries FULLY_PRESENT or ZERO, bitmap entries 0.
    fn write_bat(&mut self, layout: &Layout) -> Result<()> {
        let geo = BatGeometry::new(
            layout.params.virtual_size,
            self.block_size,
            self.logical_sector,
        );
        let bs = u64::from(self.block_size);
        let mut buf = Vec::with_capacity(1 << 20);
        let mut pos = layout.regions.bat.offset;
        let mut runs = layout.runs.iter().peekable();
        for i in 0..geo.payload_blocks {
            while runs.peek().is_some_and(|r| r.first + r.count <= i) {
                runs.next();
            }
            let e = match runs.peek() {
                Some(r) if r.first <= i => entry(
                    PAYLOAD_BLOCK_FULLY_PRESENT,
                    layout.data_start + (r.stored + i - r.first) * bs,
                ),
                _ => entry(PAYLOAD_BLOCK_ZERO, 0),
            };
            let index = payload_bat_index(i, geo.chunk_ratio);
            let at = usize::try_from((layout.regions.bat.offset + index * 8) - pos)
                .expect("inside the 1 MiB buffer");
            buf.resize(at, 0); // bitmap entries between payload entries stay 0
            buf.extend_from_slice(&e.to_le_bytes());
            if buf.len() >= 1 << 20 {
                self.put(&buf, pos, "BAT")?;
                pos += buf.len() as u64;
                buf.clear();
            }
        }
        self.put(&buf, pos, "BAT")
    }

    /// Writes the file type identifier, both headers and both region tables
    /// (everything below 1 MiB), naming the disk from `seed`.
    fn write_headers(&mut self, layout: &mut Layout, seed: &[u8; 32]) -> Result<()> {
        layout.params.disk_id = Guid::derive(seed, "vhdx-virtual-disk-id");
        let header = |seq| Header {
            sequence_number: seq,
            file_write_guid: Guid::derive(seed, "vhdx-file-write"),
            data_write_guid: Guid::derive(seed, "vhdx-data-write"),
            log_guid: Guid::ZERO,
            log_version: 0,
            version: 1,
            log_length: LOG_LENGTH,
            log_offset: LOG_OFFSET,
        };
        self.put(&encode_file_identifier(CREATOR), 0, "file type identifier")?;
        // Headers 1 and 2 differ only in SequenceNumber: header 2 is current.
        self.put(&header(1).encode(), HEADER_OFFSETS[0], "header 1")?;
        self.put(&header(2).encode(), HEADER_OFFSETS[1], "header 2")?;
        let regions = region::encode(&layout.regions);
        self.put(&regions, REGION_OFFSETS[0], "region table 1")?;
        self.put(&regions, REGION_OFFSETS[1], "region table 2")
    }

    /// Writes the metadata region (after `write_headers` named the disk).
    fn write_metadata(&mut self, layout: &Layout) -> Result<()> {
        self.put(
            &metadata::encode(&layout.params),
            layout.regions.metadata.offset,
            "metadata",
        )
    }

    fn put(&mut self, buf: &[u8], offset: u64, what: &str) -> Result<()> {
        self.hash.write_at(offset, buf);
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(format!("vhdx: writing the {what} at {offset}"), e))
    }
}

fn too_big(size: u64) -> Error {
    Error::InvalidOption {
        option: "virtual size",
        detail: format!("{size} needs a BAT larger than 4 GiB"),
    }
}

/// Merged runs of blocks overlapping `allocated`, numbered in guest order.
fn present_runs(allocated: &[Range<u64>], bs: u64, payload_blocks: u64) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for r in allocated.iter().filter(|r| r.start < r.end) {
        let (first, last) = (
            r.start / bs,
            ((r.end - 1) / bs).min(payload_blocks.saturating_sub(1)),
        );
        match runs.last_mut() {
            Some(prev) if prev.first + prev.count >= first => {
                prev.count = prev.count.max(last + 1 - prev.first);
            }
            _ => {
                let stored = runs.last().map_or(0, |p| p.stored + p.count);
                runs.push(Run {
                    first,
                    count: last + 1 - first,
                    stored,
                });
            }
        }
    }
    runs
}

impl ImageSink for VhdxWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        let layout = self.plan(size, allocated)?;
        for v in [
            size,
            u64::from(self.block_size),
            u64::from(self.logical_sector),
            u64::from(self.fixed),
        ] {
            self.hasher.meta(&v.to_le_bytes());
        }
        for r in allocated {
            self.hasher.meta(&r.start.to_le_bytes());
            self.hasher.meta(&r.end.to_le_bytes());
        }
        let file_len = layout.data_start + layout.stored_blocks * u64::from(self.block_size);
        self.file
            .set_len(file_len)
            .map_err(|e| Error::io("vhdx: sizing the file", e))?;
        let mut layout = layout;
        if let Some(seed) = self.seed {
            self.write_headers(&mut layout, &seed)?;
        }
        if !self.lazy {
            self.write_bat(&layout)?;
        }
        if self.seed.is_some() {
            self.write_metadata(&layout)?;
        }
        self.layout = Some(layout);
        Ok(())
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut layout = self.layout.take().ok_or_else(|| not_begun("write_data"))?;
        // The content hash only names the disk when no seed does.
        if self.seed.is_none() {
            self.hasher.data(offset, data);
        }
        let mut done = 0usize;
        let result = loop {
            if done == data.len() {
                break Ok(());
            }
            let at = offset + done as u64;
            if self.lazy {
                self.store_if_non_zero(&mut layout, at, &data[done..]);
            }
            let Some((file_at, room)) = self.map(&layout, at) else {
                if self.lazy {
                    // An all-zero stretch of a block not stored: skip it.
                    let bs = u64::from(self.block_size);
                    done += usize::try_from(bs - at % bs)
                        .unwrap_or(usize::MAX)
                        .min(data.len() - done);
                    continue;
                }
                break Err(Error::io(
                    format!("vhdx: data at disk offset {at} lies outside the allocated ranges given to begin"),
                    std::io::ErrorKind::InvalidInput.into(),
                ));
            };
            let n = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .min(data.len() - done);
            let chunk = &data[done..done + n];
            // The file was sized in begin: zeros need not be written (holes).
            if chunk.iter().any(|&b| b != 0) {
                if let Err(e) = self.put(chunk, file_at, "block data") {
                    break Err(e);
                }
            }
            done += n;
        };
        self.layout = Some(layout);
        result
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        let mut layout = self.layout.take().ok_or_else(|| not_begun("finish"))?;
        if self.seed.is_none() {
            let seed: [u8; 32] = self.hasher.clone().finish();
            self.write_headers(&mut layout, &seed)?;
            self.write_metadata(&layout)?;
        }
        let file_size = layout.data_start + layout.stored_blocks * u64::from(self.block_size);
        if self.lazy {
            self.write_bat(&layout)?;
            self.file
                .set_len(file_size)
                .map_err(|e| Error::io("vhdx: sizing the file", e))?;
        }
        Ok(ImageSummary {
            member: None,
            format: Format::Vhdx,
            virtual_size: layout.params.virtual_size,
            file_size,
            sha256: self.hash.clone().finish(file_size),
        })
    }
}

fn not_begun(what: &str) -> Error {
    Error::io(
        format!("vhdx: {what} called before begin"),
        std::io::ErrorKind::InvalidInput.into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_ranges_sharing_or_touching_blocks() {
        let mb = 1 << 20;
        let runs = present_runs(
            &[0..10, mb - 1..mb + 1, 5 * mb..5 * mb + 1, 6 * mb..7 * mb],
            mb,
            8,
        );
        let got: Vec<_> = runs.iter().map(|r| (r.first, r.count, r.stored)).collect();
        assert_eq!(got, vec![(0, 2, 0), (5, 2, 2)]);
    }

    #[test]
    fn writer_rejects_bad_options() {
        let f = || tempfile_file();
        for bs in [0u32, 512 << 10, 3 << 20, 512 << 20] {
            let o = WriteOptions {
                block_size: Some(bs),
                ..Default::default()
            };
            assert!(
                matches!(VhdxWriter::new(f(), &o), Err(Error::InvalidOption { .. })),
                "{bs}"
            );
        }
        let o = WriteOptions {
            logical_sector_size: Some(1024),
            ..Default::default()
        };
        assert!(matches!(
            VhdxWriter::new(f(), &o),
            Err(Error::InvalidOption { .. })
        ));
        let mut w = VhdxWriter::new(f(), &WriteOptions::default()).unwrap();
        assert!(matches!(
            w.begin(1000, &[]),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(w.begin(0, &[]), Err(Error::InvalidOption { .. })));
    }

    fn tempfile_file() -> File {
        tempfile::tempfile().expect("temp file")
    }
}
