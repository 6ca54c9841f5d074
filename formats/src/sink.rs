//! The writer seam: `ImageSink`, and the tee that reads each extent once and
//! feeds every sink (ripgrep's push-model `Sink`).
//!
//! ```text
//!  VirtualDisk ──read once──► write_images ──► qcow2 sink
//!                                          ├──► vhdx sink
//!                                          └──► raw sink
//! ```

use std::ops::Range;
use std::sync::{mpsc, Arc};

use crate::{Error, Format, Result, VirtualDisk};

/// Largest slice handed to `write_data` at once.
pub const CHUNK: usize = 1 << 20;

/// What a writer reports when it is done.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageSummary {
    /// Format written.
    pub format: Format,
    /// Virtual size of the disk.
    pub virtual_size: u64,
    /// Size of the file written.
    pub file_size: u64,
    /// SHA-256 of the file, when the writer could compute it while writing
    /// (see [`crate::hash`]); `None` means: hash the finished file.
    #[serde(skip)]
    pub sha256: Option<[u8; 32]>,
}

/// One output image being written. The allocation map is known before the
/// first byte, so a writer lays out all metadata in `begin`, takes the data
/// once in increasing order, and completes tables and headers in `finish`.
pub trait ImageSink: Send {
    /// Starts the image: `allocated` lists the disk ranges that will receive
    /// data (sorted, non-overlapping); everything else is zero.
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()>;

    /// Data at `offset`. Calls come in increasing offset order, never
    /// overlapping, always inside the ranges given to `begin`. Bytes of an
    /// allocated range that no call covers are zero.
    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()>;

    /// Writes the remaining tables and headers and flushes the file.
    fn finish(self: Box<Self>) -> Result<ImageSummary>;
}

/// Batches read ahead of the slowest sink, per sink: bounds the memory in
/// flight to about `(QUEUE + 2) * BATCH` per sink.
const QUEUE: usize = 4;

/// Streams `disk` into every sink: each extent is read once, in order, in
/// chunks of at most [`CHUNK`] bytes, and handed to each sink. With more than
/// one sink, each runs on its own thread (the outputs are independent files)
/// while this thread reads ahead, so reading, writing and hashing overlap;
/// every sink still sees the same calls in the same order, so the bytes do
/// not depend on the threads.
pub fn write_images(
    disk: &VirtualDisk,
    sinks: Vec<Box<dyn ImageSink>>,
) -> Result<Vec<ImageSummary>> {
    write_images_with_progress(disk, sinks, &mut |_| {})
}

/// [`write_images`], calling `progress` with the number of data bytes done
/// after each chunk (out of [`VirtualDisk::data_len`]).
pub fn write_images_with_progress(
    disk: &VirtualDisk,
    sinks: Vec<Box<dyn ImageSink>>,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<ImageSummary>> {
    if sinks.len() < 2 {
        return write_serial(disk, sinks, progress);
    }
    let allocated = disk.allocated();
    let size = disk.size();
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for mut sink in sinks {
            let (tx, rx) = mpsc::sync_channel::<Arc<Batch>>(QUEUE);
            senders.push(tx);
            let allocated = &allocated;
            workers.push(scope.spawn(move || -> Result<ImageSummary> {
                sink.begin(size, allocated)?;
                // Ends when the reader hangs up: after the last chunk, or
                // early on a read error (then the summary is discarded).
                for batch in rx {
                    for &(offset, start, len) in &batch.pieces {
                        sink.write_data(offset, &batch.data[start..start + len])?;
                    }
                }
                sink.finish()
            }));
        }
        // Pieces go out in batches: a root filesystem is thousands of small
        // files, and a channel message per file costs more in wake-ups than
        // the copy. The calls each sink sees are the same as unbatched.
        let mut batch = Batch::default();
        // A sink that failed hung up: stop reading, its error is reported below.
        let read = for_each_piece(disk, progress, &mut |offset, n, read| {
            if batch.data.len() + n > BATCH && !batch.pieces.is_empty() {
                let full = Arc::new(std::mem::take(&mut batch));
                if !senders.iter().all(|tx| tx.send(full.clone()).is_ok()) {
                    return Ok(false);
                }
            }
            if batch.data.capacity() == 0 {
                batch.data.reserve_exact(BATCH);
            }
            let start = batch.data.len();
            batch.data.resize(start + n, 0);
            read(&mut batch.data[start..])?;
            batch.pieces.push((offset, start, n));
            Ok(true)
        })
        .map(|()| {
            if !batch.pieces.is_empty() {
                let last = Arc::new(std::mem::take(&mut batch));
                for tx in &senders {
                    // A hung-up sink reports its own error below.
                    let _ = tx.send(last.clone());
                }
            }
        });
        drop(senders);
        let results: Vec<Result<ImageSummary>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        read?;
        results.into_iter().collect()
    })
}

/// Bytes of data per message to the sink threads.
const BATCH: usize = 2 * CHUNK;

/// Consecutive pieces of disk data, gathered for the sink threads.
#[derive(Default)]
struct Batch {
    /// (disk offset, start in `data`, length) per piece, in disk order.
    pieces: Vec<(u64, usize, usize)>,
    data: Vec<u8>,
}

/// One sink (or none): no thread needed.
fn write_serial(
    disk: &VirtualDisk,
    mut sinks: Vec<Box<dyn ImageSink>>,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<ImageSummary>> {
    let allocated = disk.allocated();
    for sink in &mut sinks {
        sink.begin(disk.size(), &allocated)?;
    }
    read_chunks(disk, progress, &mut |offset, data| {
        for sink in &mut sinks {
            sink.write_data(offset, data)?;
        }
        Ok(true)
    })?;
    sinks.into_iter().map(|s| s.finish()).collect()
}

/// Reads every extent in order, in chunks of at most [`CHUNK`], and hands each
/// to `each` as a vector of exactly the chunk's length (which `each` may take)
/// and returns false to stop early.
fn read_chunks(
    disk: &VirtualDisk,
    progress: &mut dyn FnMut(u64),
    each: &mut dyn FnMut(u64, &mut Vec<u8>) -> Result<bool>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(CHUNK);
    for_each_piece(disk, progress, &mut |offset, n, read| {
        buf.resize(n, 0);
        read(&mut buf)?;
        each(offset, &mut buf)
    })
}

/// Walks every extent in order, in pieces of at most [`CHUNK`]: calls `each`
/// with the piece's disk offset, its length and a function reading it into
/// a buffer of that length; `each` returns false to stop early.
#[allow(clippy::type_complexity)]
fn for_each_piece(
    disk: &VirtualDisk,
    progress: &mut dyn FnMut(u64),
    each: &mut dyn FnMut(u64, usize, &mut dyn FnMut(&mut [u8]) -> Result<()>) -> Result<bool>,
) -> Result<()> {
    let mut done = 0u64;
    for extent in disk.extents() {
        let mut at = 0u64;
        while at < extent.len {
            let n = usize::try_from((extent.len - at).min(CHUNK as u64)).expect("at most CHUNK");
            let mut read = |buf: &mut [u8]| {
                extent.read(at, buf).map_err(|e| {
                    Error::io(
                        format!("reading disk data at offset {}", extent.offset + at),
                        e,
                    )
                })
            };
            if !each(extent.offset + at, n, &mut read)? {
                return Ok(());
            }
            at += n as u64;
            done += n as u64;
            progress(done);
        }
    }
    Ok(())
}
