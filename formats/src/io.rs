//! Positional I/O: the one capability every data source and image reader offers.

use std::fs::File;
use std::io;
use std::sync::Arc;

/// Something that can fill a buffer from a byte offset, from any thread.
///
/// Implemented for files (positional reads, no shared cursor), byte vectors and
/// the image readers, so a [`crate::VirtualDisk`] can point at any of them.
pub trait ReadAt: Send + Sync {
    /// Fills all of `buf` from `offset`. Reading past the end is an error
    /// (`UnexpectedEof`), never a short read.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Length in bytes.
    fn len(&self) -> u64;

    /// True when the length is zero.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Some(true)` when `len` bytes from `offset` are known to be all zero
    /// without reading them (a source that scanned itself, like an OS tar
    /// hashed on a background thread), `Some(false)` when known not to be,
    /// `None` when unknown. Writers use it to leave holes; a wrong `Some`
    /// would lose data, so only answer what was measured.
    fn known_zero(&self, offset: u64, len: u64) -> Option<bool> {
        let _ = (offset, len);
        None
    }
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// A file whose length is read once, at open.
#[derive(Debug)]
pub struct SizedFile {
    file: File,
    len: u64,
}

impl SizedFile {
    /// Wraps `file`, reading its length now.
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ReadAt for SizedFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len() as u64)?;
        // check_range proved offset + buf.len() <= self.len(), so both fit usize.
        let start = usize::try_from(offset).map_err(|_| eof())?;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        (**self).len()
    }

    fn known_zero(&self, offset: u64, len: u64) -> Option<bool> {
        (**self).known_zero(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        (**self).len()
    }

    fn known_zero(&self, offset: u64, len: u64) -> Option<bool> {
        (**self).known_zero(offset, len)
    }
}

/// Fails with `UnexpectedEof` unless `offset..offset+len` lies inside `total`.
pub fn check_range(offset: u64, len: usize, total: u64) -> io::Result<()> {
    let end = offset.checked_add(len as u64).ok_or_else(eof)?;
    if end > total {
        return Err(eof());
    }
    Ok(())
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")
}

/// Positional writes, for writers that lay out metadata first and patch it later.
pub trait WriteAt {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
}

impl WriteAt for File {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
}

/// Reads a big-endian u16 at `at` (the caller guarantees the bounds).
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
/// Reads a big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
/// Reads a big-endian u64 at `at`.
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}
/// Reads a little-endian u16 at `at`.
pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
/// Reads a little-endian u32 at `at`.
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
/// Reads a little-endian u64 at `at`.
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}
