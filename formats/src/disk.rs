//! `VirtualDisk`: what every image writer consumes.
//!
//! A disk is its virtual size plus an ordered list of extents. Each extent is
//! either bytes built in memory (partition tables, superblocks, directories) or
//! a byte range of a source that can be read positionally (file contents inside
//! a tar, a data cluster of an image being converted). Gaps read as zeros.
//!
//! ```text
//!  0                                                          size
//!  |[Bytes]   [Source(tar, 0x4200..)]        [Bytes]            |
//!           gap = zeros                gap = zeros
//! ```

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use crate::io::ReadAt;
use crate::Error;

/// Where an extent's bytes come from.
#[derive(Clone)]
pub enum ExtentData {
    /// Bytes held in memory; the extent covers all of them.
    Bytes(Arc<[u8]>),
    /// `len` bytes of `source` starting at `offset`.
    Source {
        /// The data source (a file, a reader, a buffer).
        source: Arc<dyn ReadAt>,
        /// Offset inside the source.
        offset: u64,
    },
}

impl fmt::Debug for ExtentData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Self::Source { offset, .. } => write!(f, "Source(@{offset})"),
        }
    }
}

/// One run of data at a fixed place on the disk.
#[derive(Clone, Debug)]
pub struct Extent {
    /// Disk offset of the first byte.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub len: u64,
    /// Where the bytes come from.
    pub data: ExtentData,
}

impl Extent {
    /// The disk range this extent covers.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.len
    }

    /// Reads `buf.len()` bytes starting `at` bytes into the extent.
    pub fn read(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        crate::io::check_range(at, buf.len(), self.len)?;
        match &self.data {
            ExtentData::Bytes(b) => b.read_exact_at(buf, at),
            ExtentData::Source { source, offset } => source.read_exact_at(buf, offset + at),
        }
    }
}

/// A virtual disk: a size and sorted, non-overlapping extents inside it.
#[derive(Clone, Debug, Default)]
pub struct VirtualDisk {
    size: u64,
    extents: Vec<Extent>,
}

impl VirtualDisk {
    /// The virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The extents, sorted by offset, non-overlapping, inside `size`.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Bytes covered by extents.
    pub fn data_len(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// The disk ranges that hold data, adjacent extents merged.
    pub fn allocated(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for e in &self.extents {
            match out.last_mut() {
                Some(last) if last.end == e.offset => last.end = e.offset + e.len,
                _ => out.push(e.range()),
            }
        }
        out
    }

    /// Fills `buf` with the disk's bytes at `offset` (zeros in gaps).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        crate::io::check_range(offset, buf.len(), self.size)?;
        buf.fill(0);
        let end = offset + buf.len() as u64;
        let first = self.extents.partition_point(|e| e.offset + e.len <= offset);
        for e in self.extents[first..].iter().take_while(|e| e.offset < end) {
            let start = e.offset.max(offset);
            let stop = (e.offset + e.len).min(end);
            let dst = usize::try_from(start - offset).expect("inside buf")
                ..usize::try_from(stop - offset).expect("inside buf");
            e.read(start - e.offset, &mut buf[dst])?;
        }
        Ok(())
    }
}

impl ReadAt for VirtualDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_at(offset, buf)
    }

    fn len(&self) -> u64 {
        self.size
    }
}

/// Collects extents in any order and checks them into a [`VirtualDisk`].
#[derive(Debug, Default)]
pub struct VirtualDiskBuilder {
    size: u64,
    extents: Vec<Extent>,
}

impl VirtualDiskBuilder {
    /// A builder for a disk of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            extents: Vec::new(),
        }
    }

    /// Places in-memory bytes at `offset`. Empty buffers are ignored.
    pub fn bytes(&mut self, offset: u64, bytes: impl Into<Arc<[u8]>>) -> &mut Self {
        let bytes: Arc<[u8]> = bytes.into();
        if !bytes.is_empty() {
            let len = bytes.len() as u64;
            self.extents.push(Extent {
                offset,
                len,
                data: ExtentData::Bytes(bytes),
            });
        }
        self
    }

    /// Places `len` bytes of `source` (from `source_offset`) at `offset`.
    pub fn source(
        &mut self,
        offset: u64,
        len: u64,
        source: Arc<dyn ReadAt>,
        source_offset: u64,
    ) -> &mut Self {
        if len > 0 {
            let data = ExtentData::Source {
                source,
                offset: source_offset,
            };
            self.extents.push(Extent { offset, len, data });
        }
        self
    }

    /// Places a whole extent (used to move a filesystem into a partition).
    pub fn extent(&mut self, extent: Extent) -> &mut Self {
        if extent.len > 0 {
            self.extents.push(extent);
        }
        self
    }

    /// Places every extent of `disk` shifted by `offset` (a partition's start).
    pub fn disk(&mut self, offset: u64, disk: &VirtualDisk) -> &mut Self {
        for e in disk.extents() {
            self.extents.push(Extent {
                offset: offset + e.offset,
                ..e.clone()
            });
        }
        self
    }

    /// Sorts and checks: no overlap, everything inside the size.
    pub fn build(mut self) -> Result<VirtualDisk, Error> {
        self.extents.sort_by_key(|e| e.offset);
        let mut end = 0u64;
        for e in &self.extents {
            let e_end = e
                .offset
                .checked_add(e.len)
                .ok_or(Error::ExtentOutsideDisk {
                    offset: e.offset,
                    len: e.len,
                    size: self.size,
                })?;
            if e_end > self.size {
                return Err(Error::ExtentOutsideDisk {
                    offset: e.offset,
                    len: e.len,
                    size: self.size,
                });
            }
            if e.offset < end {
                return Err(Error::OverlappingExtents { offset: e.offset });
            }
            end = e_end;
        }
        Ok(VirtualDisk {
            size: self.size,
            extents: self.extents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_at_fills_gaps_with_zeros() {
        let mut b = VirtualDiskBuilder::new(16);
        b.bytes(2, vec![1u8, 2, 3]).bytes(10, vec![9u8]);
        let disk = b.build().unwrap();
        let mut buf = [0xffu8; 16];
        disk.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0]);
        let mut part = [0u8; 3];
        disk.read_at(3, &mut part).unwrap();
        assert_eq!(part, [2, 3, 0]);
    }

    #[test]
    fn builder_rejects_overlap_and_overflow() {
        let mut b = VirtualDiskBuilder::new(8);
        b.bytes(0, vec![1u8; 4]).bytes(3, vec![1u8; 2]);
        assert!(matches!(
            b.build(),
            Err(Error::OverlappingExtents { offset: 3 })
        ));
        let mut b = VirtualDiskBuilder::new(8);
        b.bytes(6, vec![1u8; 4]);
        assert!(matches!(b.build(), Err(Error::ExtentOutsideDisk { .. })));
    }

    #[test]
    fn allocated_merges_adjacent_extents() {
        let mut b = VirtualDiskBuilder::new(100);
        b.bytes(0, vec![1u8; 4])
            .bytes(4, vec![1u8; 4])
            .bytes(50, vec![1u8]);
        assert_eq!(b.build().unwrap().allocated(), vec![0..8, 50..51]);
    }
}
