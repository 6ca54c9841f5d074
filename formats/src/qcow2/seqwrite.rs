//! A positional writer that turns many small, increasing writes into few
//! large `pwrite`s. Small gaps are filled with zeros; large gaps are left as
//! holes (they read as zeros, and the file length is set at the end).

use std::fs::File;

use crate::hash::StreamHash;
use crate::io::WriteAt;
use crate::{Error, Result};

/// Bytes gathered before one `pwrite`; a write this large into an empty
/// buffer goes straight to the file. 1 MiB (the chunk `write_images` hands
/// out) keeps the copy in cache: an 8 MiB buffer made the kernel's copy from
/// it cost more than the rest of the write.
const FLUSH_AT: usize = 1 << 20;
/// Gaps up to this size are written as zeros rather than left as holes.
const MAX_PAD: u64 = 1 << 20;

/// Sequential writer with a buffer.
pub struct SeqWriter {
    file: File,
    /// File offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    /// Hash of the file so far: every write comes at or after the end.
    hash: StreamHash,
}

impl SeqWriter {
    /// A writer into `file`, starting at offset 0.
    pub fn new(file: File) -> Self {
        Self::with_hash(file, false)
    }

    /// A writer into `file` that also hashes what it writes when `hash`.
    pub fn with_hash(file: File, hash: bool) -> Self {
        Self {
            file,
            start: 0,
            buf: Vec::with_capacity(FLUSH_AT + (2 << 20)),
            hash: StreamHash::enabled(hash),
        }
    }

    /// The offset just past the last byte written.
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Writes `data` at `offset`, which must not be before [`Self::end`].
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = self.end();
        if offset < end {
            return Err(Error::InvalidOption {
                option: "write order",
                detail: format!(
                    "qcow2 data at file offset {offset} comes before offset {end} already written"
                ),
            });
        }
        self.hash.write_at(offset, data);
        if offset - end > MAX_PAD {
            self.flush()?;
            self.start = offset;
        } else {
            let pad = usize::try_from(offset - end).expect("at most MAX_PAD");
            self.buf.resize(self.buf.len() + pad, 0);
        }
        if self.buf.is_empty() && data.len() >= FLUSH_AT {
            self.file
                .write_all_at(data, offset)
                .map_err(|e| Error::io(format!("writing qcow2 at offset {offset}"), e))?;
            self.start = offset + data.len() as u64;
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out the buffer.
    pub fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let at = self.start;
            self.file
                .write_all_at(&self.buf, at)
                .map_err(|e| Error::io(format!("writing qcow2 at offset {at}"), e))?;
            self.start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes and sets the file length to `len`.
    pub fn finish(self, len: u64) -> Result<File> {
        Ok(self.finish_hashed(len)?.0)
    }

    /// [`Self::finish`], also giving the SHA-256 of the file (`None` if `len`
    /// is short of the bytes written).
    pub fn finish_hashed(mut self, len: u64) -> Result<(File, Option<[u8; 32]>)> {
        self.flush()?;
        self.file
            .set_len(len)
            .map_err(|e| Error::io("setting the qcow2 file length", e))?;
        Ok((self.file, self.hash.finish(len)))
    }
}
