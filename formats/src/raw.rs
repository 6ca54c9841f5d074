//! Raw images: the disk's bytes, with holes where it is zero.

use std::fs::File;
use std::io;
use std::ops::Range;

use crate::hash::StreamHash;
use crate::io::{ReadAt, SizedFile};
use crate::{DiskImage, Error, Format, ImageSink, ImageSummary, Result, ZERO_SCAN};

/// Writes a sparse raw file: the length is set first, data is written where it
/// lies, gaps stay holes.
pub struct RawWriter {
    file: File,
    size: u64,
    hash: StreamHash,
}

impl RawWriter {
    /// A writer into `file` (which should be empty).
    pub fn new(file: File) -> Self {
        Self::with_hash(file, false)
    }

    /// A writer into `file` that also hashes what it writes when `hash`.
    pub fn with_hash(file: File, hash: bool) -> Self {
        Self {
            file,
            size: 0,
            hash: StreamHash::enabled(hash),
        }
    }
}

impl ImageSink for RawWriter {
    fn begin(&mut self, size: u64, _allocated: &[Range<u64>]) -> Result<()> {
        self.size = size;
        self.file
            .set_len(size)
            .map_err(|e| Error::io("sizing the raw image", e))
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.hash.write_at(offset, data);
        // The file was sized in begin: all-zero blocks stay holes. Blocks
        // follow disk offsets, so a hole is whole filesystem blocks.
        let mut at = 0usize;
        while at < data.len() {
            let disk_at = offset + at as u64;
            let to_boundary =
                ZERO_SCAN - usize::try_from(disk_at % ZERO_SCAN as u64).expect("small");
            let n = to_boundary.min(data.len() - at);
            // Runs of non-zero blocks go out in one write.
            let mut end = at;
            let mut step = n;
            while end < data.len() && data[end..end + step].iter().any(|&b| b != 0) {
                end += step;
                step = ZERO_SCAN.min(data.len() - end);
            }
            if end > at {
                let chunk = &data[at..end];
                let pos = offset + at as u64;
                std::os::unix::fs::FileExt::write_all_at(&self.file, chunk, pos)
                    .map_err(|e| Error::io(format!("writing raw data at offset {pos}"), e))?;
                at = end;
            } else {
                at += n;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<ImageSummary> {
        Ok(ImageSummary {
            member: None,
            format: Format::Raw,
            virtual_size: self.size,
            file_size: self.size,
            sha256: self.hash.finish(self.size),
        })
    }
}

/// Reads a raw file; its holes (SEEK_DATA/SEEK_HOLE) are reported unallocated.
pub struct RawReader {
    file: SizedFile,
}

impl RawReader {
    /// Opens `file` as a raw image.
    pub fn new(file: File) -> Result<Self> {
        Ok(Self {
            file: SizedFile::new(file).map_err(|e| Error::io("reading raw image size", e))?,
        })
    }
}

impl ReadAt for RawReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn len(&self) -> u64 {
        self.file.len()
    }
}

impl DiskImage for RawReader {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn allocated(&self) -> Result<Vec<Range<u64>>> {
        data_ranges(self.file.file(), self.file.len())
    }

    fn facts(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The data (non-hole) ranges of a file, by SEEK_DATA/SEEK_HOLE. Filesystems
/// without hole support report the whole file as data.
pub fn data_ranges(file: &File, len: u64) -> Result<Vec<Range<u64>>> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < len {
        let start = match seek(file, SeekFrom::Data(at)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(Error::io("seeking to data (SEEK_DATA)", e.into())),
        };
        let end = match seek(file, SeekFrom::Hole(start)) {
            Ok(p) => p.min(len),
            Err(e) => return Err(Error::io("seeking to a hole (SEEK_HOLE)", e.into())),
        };
        if end <= start {
            break;
        }
        out.push(start..end);
        at = end;
    }
    Ok(out)
}
