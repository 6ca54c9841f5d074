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

/// Chunks read ahead of the slowest sink, per sink: bounds the memory in
/// flight to about `(QUEUE + 2) * CHUNK` per sink.
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
            let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE);
            senders.push(tx);
            let allocated = &allocated;
            workers.push(scope.spawn(move || -> Result<ImageSummary> {
                sink.begin(size, allocated)?;
                // Ends when the reader hangs up: after the last chunk, or
                // early on a read error (then the summary is discarded).
                for chunk in rx {
                    sink.write_data(chunk.offset, &chunk.data)?;
                }
                sink.finish()
            }));
        }
        // A sink that failed hung up: stop reading, its error is reported below.
        let read = read_chunks(disk, progress, &mut |offset, data| {
            // The buffer moves into the chunk; read_chunks allocates the next.
            let chunk = Chunk {
                offset,
                data: Arc::new(std::mem::take(data)),
            };
            Ok(senders.iter().all(|tx| tx.send(chunk.clone()).is_ok()))
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

/// One chunk of disk data shared by every sink thread.
#[derive(Clone)]
struct Chunk {
    offset: u64,
    data: Arc<Vec<u8>>,
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
    let mut done = 0u64;
    let mut buf = Vec::new();
    for extent in disk.extents() {
        let mut at = 0u64;
        while at < extent.len {
            let n = usize::try_from((extent.len - at).min(CHUNK as u64)).expect("at most CHUNK");
            if buf.capacity() < CHUNK {
                buf = Vec::with_capacity(CHUNK);
            }
            buf.resize(n, 0);
            extent.read(at, &mut buf).map_err(|e| {
                Error::io(
                    format!("reading disk data at offset {}", extent.offset + at),
                    e,
                )
            })?;
            if !each(extent.offset + at, &mut buf)? {
                return Ok(());
            }
            at += n as u64;
            done += n as u64;
            progress(done);
        }
    }
    Ok(())
}
