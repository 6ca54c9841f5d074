//! The monolithicSparse writer (VMware Workstation and Fusion): plain
//! grains, laid out as VMware and qemu-img (block/vmdk.c
//! vmdk_init_extent) lay them out:
//!
//! ```text
//! sector 0       header (version 1, flags: new-line test | redundant grain table)
//! sector 1..21   embedded descriptor (createType="monolithicSparse")
//! rgdOffset 21   redundant grain directory, then every redundant grain table
//! gdOffset       grain directory, then every grain table (each 4 sectors)
//! overHead       grains of 64 KiB, non-zero ones only, in disk order
//! ```
//!
//! Every grain table exists (the directories are fixed when the size is
//! known); a table's entries are the grains' sectors, 0 for a grain never
//! written (reads as zeros). The header, descriptor and directories are
//! written in `begin`, the grains as they stream, the tables in `finish`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;

use super::{
    cid, grains_of, header_and_descriptor, sector_u32, Header, DESCRIPTOR_SECTORS, FLAG_NL_DETECT,
    FLAG_REDUNDANT_GT, GRAIN, GRAIN_SECTORS, GTES_PER_GT, SECTOR,
};
use crate::io::WriteAt;
use crate::{Error, Format, ImageSink, ImageSummary, Result};

/// Sectors of one grain table (512 entries of 4 bytes).
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;

/// Where the metadata lies, in sectors.
#[derive(Clone, Copy, Debug)]
struct Layout {
    tables: u64,
    gd_sectors: u64,
    rgd: u64,
    gd: u64,
    /// First grain.
    overhead: u64,
}

impl Layout {
    fn new(grains: u64) -> Self {
        let tables = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (tables * 4).div_ceil(SECTOR);
        let rgd = 1 + DESCRIPTOR_SECTORS;
        let gd = rgd + gd_sectors + tables * GT_SECTORS;
        let overhead = (gd + gd_sectors + tables * GT_SECTORS).next_multiple_of(GRAIN_SECTORS);
        Layout {
            tables,
            gd_sectors,
            rgd,
            gd,
            overhead,
        }
    }

    /// A grain directory at `at`: table `i` follows the directory.
    fn directory(&self, at: u64) -> Result<Vec<u8>> {
        let mut b = vec![0u8; (self.gd_sectors * SECTOR) as usize];
        for i in 0..self.tables {
            let gt = sector_u32(at + self.gd_sectors + i * GT_SECTORS)?;
            let slot = (i * 4) as usize;
            b[slot..slot + 4].copy_from_slice(&gt.to_le_bytes());
        }
        Ok(b)
    }
}

/// Writes a monolithicSparse VMDK (see the module doc).
pub struct VmdkSparseWriter {
    out: BufWriter<File>,
    cid: u32,
    adapter: String,
    size: u64,
    layout: Option<Layout>,
    /// Next free sector for a grain.
    next: u64,
    /// Grain table entries of the whole disk.
    gtes: Vec<u32>,
    /// The grain being filled: its index and bytes.
    grain: Option<(u64, Vec<u8>)>,
}

impl VmdkSparseWriter {
    /// A writer into `file` (which should be empty); `seed` gives the
    /// descriptor's CID, `adapter` its `ddb.adapterType`.
    pub fn new(file: File, seed: Option<[u8; 32]>, adapter: &str) -> Self {
        VmdkSparseWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            cid: cid(seed),
            adapter: adapter.to_string(),
            size: 0,
            layout: None,
            next: 0,
            gtes: Vec::new(),
            grain: None,
        }
    }

    fn put(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing the VMDK's {what}"), e))
    }

    /// Writes grain `index` at the next free sector unless it is all zeros.
    fn flush_grain(&mut self) -> Result<()> {
        let Some((index, data)) = self.grain.take() else {
            return Ok(());
        };
        if data.iter().any(|&b| b != 0) {
            let at = sector_u32(self.next)?;
            self.put(&data, "grains")?;
            let slot = usize::try_from(index).expect("indices below the grain count, a usize");
            self.gtes[slot] = at;
            self.next += GRAIN_SECTORS;
        }
        Ok(())
    }
}

impl ImageSink for VmdkSparseWriter {
    fn begin(&mut self, size: u64, _allocated: &[Range<u64>]) -> Result<()> {
        let grains = grains_of(size)?;
        let layout = Layout::new(grains as u64);
        self.size = size;
        self.gtes = vec![0; grains.next_multiple_of(GTES_PER_GT as usize)];
        let h = Header {
            version: 1,
            flags: FLAG_NL_DETECT | FLAG_REDUNDANT_GT,
            capacity_sectors: size / SECTOR,
            rgd_offset: layout.rgd,
            gd_offset: layout.gd,
            overhead: layout.overhead,
            compress: 0,
        };
        let head = header_and_descriptor(&h, "monolithicSparse", self.cid, &self.adapter);
        self.put(&head, "header")?;
        // Directories now, tables (zeros until finish) after each.
        let tables = vec![0u8; (layout.tables * GT_SECTORS * SECTOR) as usize];
        for at in [layout.rgd, layout.gd] {
            self.put(&layout.directory(at)?, "grain directory")?;
            self.put(&tables, "grain tables")?;
        }
        let written = layout.gd + layout.gd_sectors + layout.tables * GT_SECTORS;
        self.put(
            &vec![0u8; ((layout.overhead - written) * SECTOR) as usize],
            "padding",
        )?;
        self.next = layout.overhead;
        self.layout = Some(layout);
        Ok(())
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(Error::ExtentOutsideDisk {
                offset,
                len: data.len() as u64,
                size: self.size,
            });
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / GRAIN;
            match &self.grain {
                Some((i, _)) if *i > index => {
                    return Err(Error::InvalidOption {
                        option: "write order",
                        detail: format!("VMDK data at disk offset {at} arrived after grain {i}"),
                    })
                }
                Some((i, _)) if *i != index => self.flush_grain()?,
                _ => {}
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
        let layout = self.layout.ok_or_else(|| Error::InvalidOption {
            option: "write order",
            detail: "VMDK finish called before begin".into(),
        })?;
        self.out
            .flush()
            .map_err(|e| Error::io("flushing the VMDK".to_string(), e))?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io("flushing the VMDK".to_string(), e.into_error()))?;
        let tables: Vec<u8> = self.gtes.iter().flat_map(|e| e.to_le_bytes()).collect();
        for at in [layout.rgd, layout.gd] {
            file.write_all_at(&tables, (at + layout.gd_sectors) * SECTOR)
                .map_err(|e| Error::io("writing the VMDK's grain tables".to_string(), e))?;
        }
        let file_size = self.next * SECTOR;
        file.set_len(file_size)
            .map_err(|e| Error::io("sizing the VMDK".to_string(), e))?;
        file.sync_all()
            .map_err(|e| Error::io("syncing the VMDK".to_string(), e))?;
        Ok(ImageSummary {
            member: None,
            format: Format::Vmdk,
            virtual_size: self.size,
            file_size,
            sha256: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_qemu_img_for_one_gib() {
        // qemu-img create -f vmdk -o subformat=monolithicSparse x 1G:
        // rgdOffset 21, gdOffset 21 + 1 + 32 * 4 = 150, overHead 384
        // (150 + 1 + 128 = 279, rounded up to 128 sectors).
        let l = Layout::new((1 << 30) / GRAIN);
        assert_eq!((l.tables, l.gd_sectors), (32, 1));
        assert_eq!((l.rgd, l.gd, l.overhead), (21, 150, 384));
    }
}
