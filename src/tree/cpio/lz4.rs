//! The lz4 legacy stream the kernel's `unlz4` reads.

use std::io::{self, BufRead, Read};

/// lz4 legacy frame magic (`lib/decompress_unlz4.c`, `ARCHIVE_MAGICNUMBER`).
pub(super) const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of one lz4 legacy block (`LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE`).
const LZ4_CHUNK: usize = 8 << 20;

/// lz4 legacy stream (`lib/decompress_unlz4.c`): the magic, then blocks of
/// `le32 compressed length` + data, each unpacking to at most 8 MiB, up to
/// the end of the input. A repeated magic is skipped; a zero length (or the
/// end of the input) ends the stream, leaving trailing zeros to the caller.
pub(super) struct Lz4Legacy<R> {
    r: R,
    started: bool,
    done: bool,
    compressed: Vec<u8>,
    /// Unpacked block buffer, allocated once (8 MiB) and reused.
    out: Vec<u8>,
    out_len: usize,
    out_pos: usize,
}

impl<R: BufRead> Lz4Legacy<R> {
    pub(super) fn new(r: R) -> Self {
        Self {
            r,
            started: false,
            done: false,
            compressed: Vec::new(),
            out: Vec::new(),
            out_len: 0,
            out_pos: 0,
        }
    }

    /// `LZ4_compressBound(8 MiB)`: the largest valid compressed block.
    fn max_block() -> usize {
        LZ4_CHUNK + LZ4_CHUNK / 255 + 16
    }

    /// Reads a little-endian u32, or `None` at a clean end of input.
    fn word(&mut self) -> io::Result<Option<u32>> {
        if self.r.fill_buf()?.is_empty() {
            return Ok(None);
        }
        let mut w = [0u8; 4];
        self.r.read_exact(&mut w)?;
        Ok(Some(u32::from_le_bytes(w)))
    }

    fn next_block(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            if self.word()? != Some(LZ4_LEGACY_MAGIC) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad lz4 legacy magic",
                ));
            }
        }
        loop {
            let Some(len) = self.word()? else {
                self.done = true;
                return Ok(());
            };
            if len == LZ4_LEGACY_MAGIC {
                continue;
            }
            if len == 0 {
                self.done = true;
                return Ok(());
            }
            let len = usize::try_from(len).map_err(io::Error::other)?;
            if len > Self::max_block() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("lz4 block of {len} bytes"),
                ));
            }
            self.compressed.resize(len, 0);
            self.r.read_exact(&mut self.compressed)?;
            if self.out.len() < LZ4_CHUNK {
                self.out.resize(LZ4_CHUNK, 0);
            }
            let n = lz4_flex::block::decompress_into(&self.compressed, &mut self.out)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.out_len = n;
            self.out_pos = 0;
            return Ok(());
        }
    }
}

impl<R: BufRead> Read for Lz4Legacy<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.out_len {
            if self.done {
                return Ok(0);
            }
            self.next_block()?;
        }
        let n = (self.out_len - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}
