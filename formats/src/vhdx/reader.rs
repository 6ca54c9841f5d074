//! The VHDX reader: validates every structure of a fixed or dynamic file and
//! reads it as a disk. Differencing disks and files with a log to replay are
//! refused (`Error::Unsupported`); hostile input gives an error, never a
//! panic, a hang or an allocation larger than the file.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use super::bat::{self, BatGeometry, BlockMap};
use super::guid::Guid;
use super::header::{
    decode_creator, pick_current, Header, FILE_SIGNATURE, HEADER_OFFSETS, HEADER_SIZE,
};
use super::metadata::{self, DiskParams};
use super::region::{self, Regions, REGION_OFFSETS};
use super::{FORMAT, KIB64, MIB};
use crate::io::{check_range, ReadAt, SizedFile};
use crate::{DiskImage, Error, Format, Result};

/// An opened VHDX file.
pub struct VhdxReader {
    src: Arc<dyn ReadAt>,
    params: DiskParams,
    blocks: BlockMap,
    header: Header,
    current: usize,
    sequence_numbers: [Option<u64>; 2],
    regions: Regions,
    creator: String,
}

impl VhdxReader {
    /// Opens a VHDX file.
    pub fn open(file: File) -> Result<Self> {
        let f = SizedFile::new(file).map_err(|e| Error::io("vhdx: reading the file size", e))?;
        Self::new(Arc::new(f))
    }

    /// Parses and validates a VHDX held by any positional reader (fuzzers
    /// pass a `Vec<u8>`).
    pub fn new(src: Arc<dyn ReadAt>) -> Result<Self> {
        let file_len = src.len();
        let section = 5 * KIB64 as u64;
        if file_len < section {
            return Err(Error::Truncated {
                format: FORMAT,
                structure: "header section",
                offset: 0,
                need: section,
                file_len,
            });
        }
        let mut head = vec![0u8; 5 * KIB64];
        src.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("vhdx: reading the header section", e))?;
        if &head[..8] != FILE_SIGNATURE {
            return Err(Error::Corrupt {
                format: FORMAT,
                structure: "file type identifier",
                offset: 0,
                detail: "signature is not \"vhdxfile\"".into(),
            });
        }
        let slot = |i: usize| {
            let at = usize::try_from(HEADER_OFFSETS[i]).expect("64/128 KiB");
            &head[at..at + HEADER_SIZE]
        };
        let parsed = [
            Header::decode(slot(0), HEADER_OFFSETS[0]),
            Header::decode(slot(1), HEADER_OFFSETS[1]),
        ];
        let sequence_numbers = [
            parsed[0].as_ref().ok().map(|h| h.sequence_number),
            parsed[1].as_ref().ok().map(|h| h.sequence_number),
        ];
        let [p0, p1] = parsed;
        let (current, header) = pick_current([(slot(0), p0), (slot(1), p1)])?;
        header.validate(HEADER_OFFSETS[current])?;
        let regions = Self::regions(&head, file_len)?;
        let log = header.log_offset
            ..header
                .log_offset
                .saturating_add(u64::from(header.log_length));
        if log.end > file_len {
            return Err(Error::Corrupt {
                format: FORMAT,
                structure: "header",
                offset: HEADER_OFFSETS[current],
                detail: format!("log {log:?} ends past the end of the file ({file_len} bytes)"),
            });
        }
        let params = metadata::decode(src.as_ref(), regions.metadata)?;
        let geo = BatGeometry::new(
            params.virtual_size,
            params.block_size,
            params.logical_sector,
        );
        let reserved = [
            0..MIB,
            log,
            regions.bat.offset..regions.bat.end(),
            regions.metadata.offset..regions.metadata.end(),
        ];
        let blocks = bat::read(
            src.as_ref(),
            regions.bat.offset..regions.bat.end(),
            geo,
            params.block_size,
            params.virtual_size,
            &reserved,
        )?;
        Ok(Self {
            src,
            params,
            blocks,
            header,
            current,
            sequence_numbers,
            regions,
            creator: decode_creator(&head),
        })
    }

    /// The first valid region table: copy 1, else copy 2.
    fn regions(head: &[u8], file_len: u64) -> Result<Regions> {
        let table = |i: usize| {
            let at = usize::try_from(REGION_OFFSETS[i]).expect("192/256 KiB");
            region::decode(&head[at..at + KIB64], REGION_OFFSETS[i], file_len)
        };
        table(0).or_else(|first| table(1).map_err(|_| first))
    }

    /// The disk parameters (block size, sector sizes, virtual size, id).
    pub fn params(&self) -> DiskParams {
        self.params
    }

    /// The virtual disk id (Page 83 data).
    pub fn disk_id(&self) -> Guid {
        self.params.disk_id
    }

    fn present_blocks(&self) -> usize {
        self.blocks.offsets.iter().filter(|&&o| o != 0).count()
    }
}

impl ReadAt for VhdxReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.params.virtual_size)?;
        let bs = u64::from(self.params.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let block = usize::try_from(at / bs)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let in_block = at % bs;
            let n = usize::try_from(bs - in_block)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match self.blocks.get(block) {
                Some(file_at) => self.src.read_exact_at(dst, file_at + in_block)?,
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.params.virtual_size
    }
}

impl DiskImage for VhdxReader {
    fn format(&self) -> Format {
        Format::Vhdx
    }

    fn allocated(&self) -> Result<Vec<Range<u64>>> {
        let bs = u64::from(self.params.block_size);
        let mut out: Vec<Range<u64>> = Vec::new();
        for (i, _) in self
            .blocks
            .offsets
            .iter()
            .enumerate()
            .filter(|(_, &o)| o != 0)
        {
            let start = i as u64 * bs;
            let end = (start + bs).min(self.params.virtual_size);
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
        Ok(out)
    }

    fn facts(&self) -> Vec<(String, String)> {
        let p = &self.params;
        let seq = |s: Option<u64>| s.map_or_else(|| "invalid".to_string(), |n| n.to_string());
        let facts = [
            ("creator", self.creator.clone()),
            (
                "subformat",
                if p.leave_block_allocated {
                    "fixed"
                } else {
                    "dynamic"
                }
                .to_string(),
            ),
            ("block size", p.block_size.to_string()),
            ("logical sector size", p.logical_sector.to_string()),
            ("physical sector size", p.physical_sector.to_string()),
            ("virtual disk id", p.disk_id.to_string()),
            ("current header", (self.current + 1).to_string()),
            ("header 1 sequence number", seq(self.sequence_numbers[0])),
            ("header 2 sequence number", seq(self.sequence_numbers[1])),
            ("file write guid", self.header.file_write_guid.to_string()),
            ("data write guid", self.header.data_write_guid.to_string()),
            (
                "log",
                format!(
                    "{} bytes at {}, guid {}",
                    self.header.log_length, self.header.log_offset, self.header.log_guid
                ),
            ),
            (
                "bat region",
                format!(
                    "{} bytes at {}",
                    self.regions.bat.length, self.regions.bat.offset
                ),
            ),
            (
                "metadata region",
                format!(
                    "{} bytes at {}",
                    self.regions.metadata.length, self.regions.metadata.offset
                ),
            ),
            ("payload blocks", self.blocks.offsets.len().to_string()),
            ("present blocks", self.present_blocks().to_string()),
        ];
        facts.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}
