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

use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::{Error, Result};

/// Input bytes per independently compressed block.
pub const BLOCK: usize = 1 << 20;
/// zlib level: fixed, so the bytes never depend on a default.
pub const LEVEL: u32 = 6;
/// Blocks in flight per thread: bounds memory to about
/// `threads × IN_FLIGHT × 2 × BLOCK`.
const IN_FLIGHT: usize = 2;

/// RFC 1952 2.3: ID1 ID2, CM = 8 (deflate), FLG = 0 (no name, no extra),
/// MTIME = 0 (none), XFL = 0, OS = 3 (Unix).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A compressed block: deflate bytes, the CRC-32 of its input.
type Done = Result<(Vec<u8>, crc32fast::Hasher)>;

struct Job {
    input: Vec<u8>,
    last: bool,
    done: SyncSender<Done>,
}

/// A gzip stream into `out`, compressed on `threads` threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    /// Compressed bytes written to `out` so far.
    written: u64,
    /// The block being filled.
    pending: Vec<u8>,
    crc: crc32fast::Hasher,
    /// Uncompressed bytes so far (ISIZE is this modulo 2^32).
    total_in: u64,
    jobs: Option<SyncSender<Job>>,
    /// Results of the blocks in flight, oldest first.
    in_flight: VecDeque<Receiver<Done>>,
    max_in_flight: usize,
}

impl<W: Write> ParallelGzip<W> {
    /// Starts a stream (writes the header). With one thread everything is
    /// compressed on the caller's thread.
    pub fn new(mut out: W, threads: usize) -> Result<Self> {
        out.write_all(&HEADER)
            .map_err(|e| Error::io("writing the gzip header", e))?;
        let jobs = (threads > 1).then(|| spawn_workers(threads));
        Ok(Self {
            out,
            written: HEADER.len() as u64,
            pending: Vec::with_capacity(BLOCK),
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            jobs,
            in_flight: VecDeque::new(),
            max_in_flight: threads.max(1) * IN_FLIGHT,
        })
    }

    /// Compresses `data`.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            // A full block goes out only once more input shows it is not the last.
            if self.pending.len() == BLOCK {
                let input = std::mem::replace(&mut self.pending, Vec::with_capacity(BLOCK));
                self.submit(input, false)?;
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
        self.submit(input, true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // RFC 1952: ISIZE is the input size modulo 2^32.
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        self.put(&trailer)?;
        Ok((self.out, self.written))
    }

    fn submit(&mut self, input: Vec<u8>, last: bool) -> Result<()> {
        if self.jobs.is_none() {
            let done = compress_block(&input, last);
            return self.emit(done);
        }
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().expect("checked above");
        jobs.send(Job {
            input,
            last,
            done: tx,
        })
        .map_err(|_| worker_gone())?;
        self.in_flight.push_back(rx);
        Ok(())
    }

    fn write_oldest(&mut self) -> Result<()> {
        let rx = self
            .in_flight
            .pop_front()
            .expect("called with blocks in flight");
        let done = rx.recv().map_err(|_| worker_gone())?;
        self.emit(done)
    }

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

fn worker_gone() -> Error {
    Error::io(
        "compressing gzip blocks",
        std::io::Error::other("a compression thread stopped"),
    )
}

/// Workers that take jobs from one shared queue; they end when the sender
/// (the stream) is dropped.
fn spawn_workers(threads: usize) -> SyncSender<Job> {
    let (tx, rx) = mpsc::sync_channel::<Job>(threads);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..threads {
        let rx = rx.clone();
        std::thread::spawn(move || loop {
            let job = match rx.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            // The stream may have been dropped; then nobody wants the result.
            let _ = job.done.send(compress_block(&job.input, job.last));
        });
    }
    tx
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
