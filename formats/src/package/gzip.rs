//! Parallel, deterministic gzip (RFC 1952), in the manner of pigz without a
//! shared dictionary: the input is cut into fixed [`BLOCK`]s, each block is
//! compressed on its own as raw deflate (RFC 1951) ending in a sync flush
//! (an empty stored block, so the next block starts on a byte boundary),
//! the last one with the final bit; the pieces are concatenated in order.
//!
//! ```text
//! header (10 bytes: mtime 0, no name, OS 3) | deflate(block 0) sync | … | deflate(last) final | CRC-32 | ISIZE
//! ```
//!
//! The blocks are cut the same way whatever the number of threads and each
//! one is compressed the same way, so the output never depends on the
//! threads. The CRC-32 of each block is combined in order (crc32fast).

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::pool::OrderedPool;
use crate::{Error, Result};

/// Input bytes per independently compressed block.
pub const BLOCK: usize = 1 << 20;
/// zlib level: fixed, so the bytes never depend on a default.
pub const LEVEL: u32 = 6;

/// RFC 1952 2.3: ID1 ID2, CM = 8 (deflate), FLG = 0 (no name, no extra),
/// MTIME = 0 (none), XFL = 0, OS = 3 (Unix).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A compressed block: deflate bytes, the CRC-32 of its input.
type Done = Result<(Vec<u8>, crc32fast::Hasher)>;

/// A gzip stream into `out`, compressed on `threads` threads of a
/// [`crate::pool`] (memory: about `(2 × threads + 1) × 2 × BLOCK`).
pub struct ParallelGzip<W: Write> {
    out: Out<W>,
    /// The block being filled.
    pending: Vec<u8>,
    /// Uncompressed bytes so far (ISIZE is this modulo 2^32).
    total_in: u64,
    pool: OrderedPool<(Vec<u8>, bool), Done>,
}

/// The output and what has gone into it.
struct Out<W: Write> {
    out: W,
    /// Compressed bytes written to `out` so far.
    written: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a stream (writes the header); the blocks are compressed on
    /// `threads` workers.
    pub fn new(mut out: W, threads: usize) -> Result<Self> {
        out.write_all(&HEADER)
            .map_err(|e| Error::io("writing the gzip header", e))?;
        let pool = OrderedPool::start(
            "gzip",
            "compressing gzip blocks",
            threads,
            || Ok(()),
            |(), (input, last): (Vec<u8>, bool)| compress_block(&input, last),
        )?;
        Ok(Self {
            out: Out {
                out,
                written: HEADER.len() as u64,
                crc: crc32fast::Hasher::new(),
            },
            pending: Vec::with_capacity(BLOCK),
            total_in: 0,
            pool,
        })
    }

    /// Compresses `data`.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            // A full block goes out only once more input shows it is not the last.
            if self.pending.len() == BLOCK {
                let input = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK));
                let out = &mut self.out;
                self.pool
                    .submit((input, false), &mut |done| out.emit(done))?;
            }
            let n = data.len().min(BLOCK - self.pending.len());
            self.pending.extend_from_slice(&data[..n]);
            self.total_in += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Compresses the last block, writes the trailer; gives back the writer
    /// and the compressed length.
    pub fn finish(mut self) -> Result<(W, u64)> {
        let input = std::mem::take(&mut self.pending);
        let out = &mut self.out;
        self.pool
            .submit((input, true), &mut |done| out.emit(done))?;
        self.pool.finish(&mut |done| out.emit(done))?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.out.crc.clone().finalize().to_le_bytes());
        // RFC 1952: ISIZE is the input size modulo 2^32.
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        self.out.put(&trailer)?;
        Ok((self.out.out, self.out.written))
    }
}

impl<W: Write> Out<W> {
    fn emit(&mut self, done: Done) -> Result<()> {
        let (bytes, crc) = done?;
        self.crc.combine(&crc);
        self.put(&bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing gzip at byte {}", self.written), e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Raw deflate of one block: sync-flushed, or finished when `last`.
pub fn compress_block(input: &[u8], last: bool) -> Done {
    let mut crc = crc32fast::Hasher::new();
    crc.update(input);
    let mut c = Compress::new(Compression::new(LEVEL), false);
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(c.total_in()).expect("at most the block's length");
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(|e| Error::io("deflating a gzip block", std::io::Error::other(e)))?;
        let all_in = consumed_all(&c, input);
        // zlib: a flush is complete when it returns with output space left.
        let flushed = all_in && out.len() < out.capacity();
        match (last, status) {
            (true, Status::StreamEnd) => return Ok((out, crc)),
            (false, _) if flushed => return Ok((out, crc)),
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
}

fn consumed_all(c: &Compress, input: &[u8]) -> bool {
    c.total_in() == input.len() as u64
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gzip(data: &[u8], threads: usize, pieces: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), threads).unwrap();
        for part in data.chunks(data.len().div_ceil(pieces).max(1)) {
            g.write(part).unwrap();
        }
        let (out, len) = g.finish().unwrap();
        assert_eq!(len, out.len() as u64);
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i / 7 % 251) as u8 ^ (i % 13) as u8)
            .collect()
    }

    #[test]
    fn the_stream_gunzips_to_the_input_across_block_boundaries() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK] {
            let data = sample(len);
            let z = gzip(&data, 3, 5);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "len {len}: round trip differs");
        }
    }

    #[test]
    fn the_bytes_do_not_depend_on_threads_or_write_sizes() {
        let data = sample(2 * BLOCK + 12345);
        let one = gzip(&data, 1, 1);
        assert!(one == gzip(&data, 3, 7), "3 threads, 7 writes");
        assert!(one == gzip(&data, 2, 1000), "2 threads, 1000 writes");
        assert_eq!(&one[..10], &HEADER);
    }
}
