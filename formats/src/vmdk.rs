//! VMDK `streamOptimized` (VMware "Virtual Disk Format 5.0", hosted sparse
//! extents with compressed grains and markers): what vSphere imports and
//! what an OVA carries. Written front to back in one pass:
//!
//! ```text
//! sector 0      sparse extent header (gdOffset = GD_AT_END)
//! sector 1..21  the embedded descriptor (createType="streamOptimized")
//! overHead      grain: lba u64, size u32, zlib data, padded to 512 …
//!               per grain table with grains: GT marker, 512 × u32 sector offsets
//!               GD marker, grain directory (one u32 per grain table, 0 = none)
//!               footer marker, footer (the header with gdOffset set), end-of-stream marker
//! ```
//!
//! Grains of all zeros are not written (their table entry stays 0, read as
//! zeros). Every byte follows from the disk and the options: the descriptor's
//! CID comes from the seed (or a constant), compression is zlib at a fixed
//! level, `ddb.adapterType` is `lsilogic` (what vSphere templates use).
//!
//! [`VmdkReader`] reads hosted sparse extents: streamOptimized (compressed
//! grains, the directory found through the footer) and monolithicSparse
//! (plain grains), as qemu-img and VMware write them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use flate2::write::ZlibEncoder;

use crate::io::{check_range, ReadAt, SizedFile};
use crate::{DiskImage, Error, Format, ImageSink, ImageSummary, Result};

const FORMAT: &str = "vmdk";
const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB), as VMware and qemu write.
pub const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per table (each table covers 32 MiB).
pub const GTES_PER_GT: u64 = 512;
/// "KDMV" read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
const VERSION_STREAM: u32 = 3;
/// Flags: valid new-line detection test, compressed grains, markers.
const FLAGS_STREAM: u32 = 1 | (1 << 16) | (1 << 17);
/// gdOffset of a stream-optimized header: the directory is at the end,
/// the footer says where.
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;
/// Sectors reserved for the embedded descriptor.
const DESCRIPTOR_SECTORS: u64 = 20;
/// Marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;
/// zlib level: fixed, so the bytes never depend on a default.
const LEVEL: u32 = 6;

/// The sparse extent header (512 bytes, little-endian).
fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; SECTOR as usize] {
    let mut h = [0u8; SECTOR as usize];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&VERSION_STREAM.to_le_bytes());
    h[8..12].copy_from_slice(&FLAGS_STREAM.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
    h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // rgdOffset: none
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&GRAIN_SECTORS.to_le_bytes()); // overHead
    h[72] = 0; // uncleanShutdown
    h[73..77].copy_from_slice(b"\n \r\n");
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// A marker sector: `value` (sectors of metadata that follow), size 0, type.
fn marker(value: u64, kind: u32) -> [u8; SECTOR as usize] {
    let mut m = [0u8; SECTOR as usize];
    m[0..8].copy_from_slice(&value.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Cylinders for the descriptor's geometry (16 heads, 63 sectors), as
/// VMware and qemu compute it.
fn cylinders(capacity_sectors: u64) -> u64 {
    (capacity_sectors / (16 * 63)).min(65535)
}

/// The embedded descriptor.
pub fn descriptor(capacity_sectors: u64, cid: u32, adapter: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\n# Extent description\n\
         RW {capacity_sectors} SPARSE \"disk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"{adapter}\"\n",
        cylinders(capacity_sectors)
    )
}

/// Writes a streamOptimized VMDK.
pub struct VmdkStreamWriter {
    out: BufWriter<File>,
    /// Bytes written so far (always a whole number of sectors between calls).
    pos: u64,
    size: u64,
    cid: u32,
    adapter: String,
    /// Grain table entries of the whole disk: sector of each grain's header.
    gtes: Vec<u32>,
    /// The grain being filled: its index and bytes.
    grain: Option<(u64, Vec<u8>)>,
}

impl VmdkStreamWriter {
    /// A writer into `file`; `seed` gives the descriptor's CID, `adapter`
    /// its `ddb.adapterType` (`ide`, `lsilogic`, `buslogic`, `legacyESX`).
    pub fn new(file: File, seed: Option<[u8; 32]>, adapter: &str) -> Self {
        let cid = seed.map_or(0x1d2c_3b4a, |s| {
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        });
        VmdkStreamWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            size: 0,
            cid,
            adapter: adapter.to_string(),
            gtes: Vec::new(),
            grain: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
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
        u32::try_from(self.pos / SECTOR).map_err(|_| Error::Unsupported {
            format: FORMAT,
            feature: "files above 2 TiB (grain table entries are 32-bit sectors)".into(),
        })
    }

    /// Compresses and writes grain `index` unless it is all zeros.
    fn flush_grain(&mut self) -> Result<()> {
        let Some((index, data)) = self.grain.take() else {
            return Ok(());
        };
        if data.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::new(LEVEL));
        z.write_all(&data)
            .map_err(|e| Error::io("compressing a VMDK grain".to_string(), e))?;
        let compressed = z
            .finish()
            .map_err(|e| Error::io("compressing a VMDK grain".to_string(), e))?;
        let at = self.sector()?;
        let lba = index * GRAIN_SECTORS;
        let mut head = [0u8; 12];
        head[0..8].copy_from_slice(&lba.to_le_bytes());
        head[8..12].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
        self.put(&head)?;
        self.put(&compressed)?;
        self.pad()?;
        let slot = usize::try_from(index).map_err(|_| Error::Unsupported {
            format: FORMAT,
            feature: "this many grains".into(),
        })?;
        self.gtes[slot] = at;
        Ok(())
    }
}

impl ImageSink for VmdkStreamWriter {
    fn begin(&mut self, size: u64, _allocated: &[Range<u64>]) -> Result<()> {
        if !size.is_multiple_of(SECTOR) {
            return Err(Error::Unsupported {
                format: FORMAT,
                feature: format!("a size of {size} bytes (not whole 512-byte sectors)"),
            });
        }
        self.size = size;
        let grains = usize::try_from(size.div_ceil(GRAIN)).map_err(|_| Error::Unsupported {
            format: FORMAT,
            feature: "this many grains".into(),
        })?;
        self.gtes = vec![0; grains.next_multiple_of(GTES_PER_GT as usize)];
        let capacity = size / SECTOR;
        self.put(&header(capacity, GD_AT_END))?;
        let mut desc = descriptor(capacity, self.cid, &self.adapter).into_bytes();
        desc.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
        self.put(&desc)?;
        // Up to overHead (one grain).
        let zeros = vec![0u8; (GRAIN - self.pos) as usize];
        self.put(&zeros)
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / GRAIN;
            if self.grain.as_ref().is_some_and(|(i, _)| *i != index) {
                self.flush_grain()?;
            }
            let (_, buf) = self
                .grain
                .get_or_insert_with(|| (index, vec![0u8; GRAIN as usize]));
            let within = (at % GRAIN) as usize;
            let n = rest.len().min(GRAIN as usize - within);
            buf[within..within + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<ImageSummary> {
        self.flush_grain()?;
        // Grain tables with at least one grain, then the directory.
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        let mut gd = vec![0u32; self.gtes.len() / GTES_PER_GT as usize];
        let gtes = std::mem::take(&mut self.gtes);
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
        let footer = header(self.size / SECTOR, gd_at);
        self.put(&footer)?;
        self.put(&marker(0, MARKER_EOS))?;
        self.out
            .flush()
            .map_err(|e| Error::io("flushing the VMDK".to_string(), e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("flushing the VMDK".to_string(), e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("syncing the VMDK".to_string(), e))?;
        Ok(ImageSummary {
            member: None,
            format: Format::Vmdk,
            virtual_size: self.size,
            file_size: self.pos,
            sha256: None,
        })
    }
}

/// The largest disk read: 64 TiB (bounds the directory's size).
const MAX_CAPACITY_SECTORS: u64 = (64 << 40) / SECTOR;

/// A hosted sparse VMDK extent, read as the disk it holds.
pub struct VmdkReader {
    file: SizedFile,
    size: u64,
    version: u32,
    flags: u32,
    grain: u64,
    gtes_per_gt: u64,
    compressed: bool,
    create_type: String,
    /// Grain directory: the sector of each grain table (0: none).
    gd: Vec<u32>,
    /// Grain tables read so far, by sector (tables several entries share are
    /// read once: memory stays bounded by the file).
    tables: Mutex<HashMap<u32, Arc<Vec<u32>>>>,
    /// The last grain inflated: (sector, bytes).
    last: Mutex<Option<(u32, Arc<Vec<u8>>)>>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

fn bad(feature: String) -> Error {
    Error::Unsupported {
        format: FORMAT,
        feature,
    }
}

impl VmdkReader {
    /// Opens `file`: its header (and for a stream-optimized extent its
    /// footer), then its grain directory.
    pub fn open(file: File) -> Result<VmdkReader> {
        let file = SizedFile::new(file).map_err(|e| Error::io("reading the VMDK's size", e))?;
        let len = file.len();
        let read = |at: u64, n: usize| -> Result<Vec<u8>> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, at)
                .map_err(|e| Error::io(format!("reading the VMDK at byte {at}"), e))?;
            Ok(b)
        };
        let mut h = read(0, SECTOR as usize)?;
        if le32(&h, 0) != MAGIC {
            return Err(bad(
                "a file without the KDMV magic (not a hosted sparse extent)".into(),
            ));
        }
        if le64(&h, 56) == GD_AT_END {
            // The footer: second to last sector, before end-of-stream.
            if len < 3 * SECTOR {
                return Err(bad("a stream-optimized file without its footer".into()));
            }
            h = read(len - 2 * SECTOR, SECTOR as usize)?;
            if le32(&h, 0) != MAGIC || le64(&h, 56) == GD_AT_END {
                return Err(bad(
                    "a stream-optimized file whose footer is not a header".into()
                ));
            }
        }
        let version = le32(&h, 4);
        let flags = le32(&h, 8);
        let capacity = le64(&h, 12);
        let grain_sectors = le64(&h, 20);
        let gtes_per_gt = u64::from(le32(&h, 44));
        let gd_offset = le64(&h, 56);
        let compressed = flags & (1 << 16) != 0;
        if !(1..=3).contains(&version) {
            return Err(bad(format!("version {version}")));
        }
        if !grain_sectors.is_power_of_two() || !(8..=2048).contains(&grain_sectors) {
            return Err(bad(format!("a grain of {grain_sectors} sectors")));
        }
        if !(1..=4096).contains(&gtes_per_gt) {
            return Err(bad(format!("{gtes_per_gt} entries per grain table")));
        }
        if capacity > MAX_CAPACITY_SECTORS {
            return Err(bad(format!(
                "a capacity of {capacity} sectors (above 64 TiB)"
            )));
        }
        if compressed && le32(&h, 77) & 0xffff != u32::from(COMPRESS_DEFLATE) {
            return Err(bad("compression other than deflate".into()));
        }
        let grain = grain_sectors * SECTOR;
        let tables = capacity.div_ceil(grain_sectors * gtes_per_gt);
        let gd_bytes = tables * 4;
        check_range(gd_offset.saturating_mul(SECTOR), gd_bytes as usize, len)
            .map_err(|e| Error::io("reading the VMDK's grain directory", e))?;
        let raw = read(gd_offset * SECTOR, gd_bytes as usize)?;
        let gd = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        let desc_at = le64(&h, 28);
        let desc_len = le64(&h, 36).min(2048) * SECTOR;
        let create_type = if desc_at > 0 && desc_at * SECTOR + desc_len <= len {
            let d = read(desc_at * SECTOR, desc_len as usize)?;
            let text = String::from_utf8_lossy(&d);
            text.lines()
                .find_map(|l| l.trim().strip_prefix("createType="))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(VmdkReader {
            file,
            size: capacity * SECTOR,
            version,
            flags,
            grain,
            gtes_per_gt,
            compressed,
            create_type,
            gd,
            tables: Mutex::new(HashMap::new()),
            last: Mutex::new(None),
        })
    }

    /// The grain table at `sector`.
    fn table(&self, sector: u32) -> io::Result<Arc<Vec<u32>>> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(&sector) {
            return Ok(t.clone());
        }
        let mut raw = vec![0u8; self.gtes_per_gt as usize * 4];
        self.file
            .read_exact_at(&mut raw, u64::from(sector) * SECTOR)?;
        let t = Arc::new(raw.chunks_exact(4).map(|c| le32(c, 0)).collect::<Vec<_>>());
        tables.insert(sector, t.clone());
        Ok(t)
    }

    /// The sector where grain `index` lies (0 or 1: reads as zeros).
    fn grain_sector(&self, index: u64) -> io::Result<u32> {
        let per = self.gtes_per_gt;
        let gt = self.gd.get((index / per) as usize).copied().unwrap_or(0);
        if gt == 0 {
            return Ok(0);
        }
        Ok(self.table(gt)?[(index % per) as usize])
    }

    /// A compressed grain, inflated.
    fn inflated(&self, sector: u32) -> io::Result<Arc<Vec<u8>>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, g)) = last.as_ref() {
            if *s == sector {
                return Ok(g.clone());
            }
        }
        let at = u64::from(sector) * SECTOR;
        let mut head = [0u8; 12];
        self.file.read_exact_at(&mut head, at)?;
        let size = u64::from(le32(&head, 8));
        check_range(at + 12, size as usize, self.file.len())?;
        let mut compressed = vec![0u8; size as usize];
        self.file.read_exact_at(&mut compressed, at + 12)?;
        let mut grain = Vec::with_capacity(self.grain as usize);
        flate2::read::ZlibDecoder::new(&compressed[..])
            .take(self.grain)
            .read_to_end(&mut grain)?;
        grain.resize(self.grain as usize, 0);
        let grain = Arc::new(grain);
        *last = Some((sector, grain.clone()));
        Ok(grain)
    }
}

impl ReadAt for VmdkReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at / self.grain;
            let within = at % self.grain;
            let n = (buf.len() - done).min((self.grain - within) as usize);
            let out = &mut buf[done..done + n];
            match self.grain_sector(index)? {
                0 | 1 => out.fill(0),
                s if self.compressed => {
                    let g = self.inflated(s)?;
                    out.copy_from_slice(&g[within as usize..within as usize + n]);
                }
                s => {
                    let from = u64::from(s) * SECTOR + within;
                    check_range(from, n, self.file.len())?;
                    self.file.read_exact_at(out, from)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.size
    }
}

impl DiskImage for VmdkReader {
    fn format(&self) -> Format {
        Format::Vmdk
    }

    fn allocated(&self) -> Result<Vec<Range<u64>>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        let per = self.gtes_per_gt;
        // Table by table: a directory entry of 0 skips its whole table.
        for (t, &gt) in self.gd.iter().enumerate() {
            if gt == 0 {
                continue;
            }
            let table = self
                .table(gt)
                .map_err(|e| Error::io("reading a VMDK grain table", e))?;
            for (i, &s) in table.iter().enumerate() {
                let start = (t as u64 * per + i as u64) * self.grain;
                if s <= 1 || start >= self.size {
                    continue;
                }
                let end = (start + self.grain).min(self.size);
                match out.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => out.push(start..end),
                }
            }
        }
        Ok(out)
    }

    fn facts(&self) -> Vec<(String, String)> {
        vec![
            ("create type".into(), self.create_type.clone()),
            ("version".into(), self.version.to_string()),
            ("flags".into(), format!("{:#x}", self.flags)),
            ("grain size".into(), self.grain.to_string()),
            ("compressed grains".into(), self.compressed.to_string()),
            ("grain tables".into(), self.gd.len().to_string()),
        ]
    }
}
