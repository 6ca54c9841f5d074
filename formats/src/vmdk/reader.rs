//! The hosted sparse extent reader (streamOptimized and monolithicSparse).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::{COMPRESS_DEFLATE, FORMAT, GD_AT_END, MAGIC, SECTOR};
use crate::io::{check_range, ReadAt, SizedFile};
use crate::{DiskImage, Error, Format, Result};

/// The largest disk read: 64 TiB (bounds the directory's size).
const MAX_CAPACITY_SECTORS: u64 = (64 << 40) / SECTOR;

/// A hosted sparse VMDK extent, read as the disk it holds.
pub struct VmdkReader {
    file: Arc<dyn ReadAt>,
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
        Self::from_reader(Arc::new(file))
    }

    /// [`VmdkReader::open`] over any positional reader (bytes in memory, a
    /// range of a package file).
    pub fn from_reader(file: Arc<dyn ReadAt>) -> Result<VmdkReader> {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::{Header, FLAG_NL_DETECT};
    use super::*;

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("temp file");
        f.write_all(bytes).expect("write");
        f
    }

    fn plain_header(gd_offset: u64) -> Header {
        Header {
            version: 1,
            flags: FLAG_NL_DETECT,
            capacity_sectors: 2048,
            rgd_offset: 0,
            gd_offset,
            overhead: 128,
            compress: 0,
        }
    }

    #[test]
    fn a_truncated_header_is_an_error() {
        let h = plain_header(1);
        for len in [0, 4, 100, 511] {
            let r = VmdkReader::open(file_of(&h.encode()[..len]));
            assert!(r.is_err(), "{len} bytes");
        }
    }

    #[test]
    fn a_grain_directory_past_the_end_of_the_file_is_an_error() {
        for gd in [4, 1 << 40, u64::MAX - 1] {
            let r = VmdkReader::open(file_of(&plain_header(gd).encode()));
            let e = r.err().unwrap_or_else(|| panic!("gd at {gd}: opened"));
            assert!(e.to_string().contains("grain directory"), "gd at {gd}: {e}");
        }
    }

    #[test]
    fn a_grain_table_past_the_end_of_the_file_reads_as_an_error() {
        // Directory at sector 1 naming a table at sector 1000 (past the end).
        let mut file = plain_header(1).encode().to_vec();
        let mut gd = [0u8; 512];
        gd[0..4].copy_from_slice(&1000u32.to_le_bytes());
        file.extend_from_slice(&gd);
        let r = VmdkReader::open(file_of(&file)).expect("the header is valid");
        let mut buf = [0u8; 512];
        assert!(r.read_exact_at(&mut buf, 0).is_err());
        assert!(r.allocated().is_err());
    }

    #[test]
    fn a_grain_past_the_end_of_the_file_reads_as_an_error() {
        // Directory at sector 1, table at sector 2, grain 0 at sector 5000.
        let mut file = plain_header(1).encode().to_vec();
        let mut gd = [0u8; 512];
        gd[0..4].copy_from_slice(&2u32.to_le_bytes());
        file.extend_from_slice(&gd);
        let mut gt = [0u8; 2048];
        gt[0..4].copy_from_slice(&5000u32.to_le_bytes());
        file.extend_from_slice(&gt);
        let r = VmdkReader::open(file_of(&file)).expect("the header is valid");
        let mut buf = [0u8; 4096];
        assert!(r.read_exact_at(&mut buf, 0).is_err());
    }
}
