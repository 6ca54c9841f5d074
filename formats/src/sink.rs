//! The writer seam: `ImageSink`, and the tee that reads each extent once and
//! feeds every sink (ripgrep's push-model `Sink`).
//!
//! ```text
//!  VirtualDisk ──read once──► write_images ──► qcow2 sink
//!                                          ├──► vhdx sink
//!                                          └──► raw sink
//! ```
//! [`write_disks`] does the same for several disks that share most of their
//! extents (one recipe's disks differ in their boot partitions, not in their
//! root filesystem): an extent the disks have in common is read once and
//! handed to the sinks of every disk that has it. Sinks that store deflated
//! grains (VMDK, GCE's gzip) are fed by a second reader of the same extents,
//! so the fast sinks do not wait on deflate.

use std::ops::Range;
use std::sync::{mpsc, Arc};

use crate::disk::{Extent, ExtentData};
use crate::grain::{GrainBatch, GrainSink, GrainStage};
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
    /// For a package (OVA, OCI archive): where the disk image lies inside
    /// the file, stored uncompressed. `None` for plain images and GCE's gzip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<crate::package::Member>,
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

    /// The sink's [`GrainSink`] side, for a sink that stores its data as
    /// deflated 64 KiB grains (the streamOptimized VMDK, GCE's tar.gz): the
    /// tee of [`write_disks`] then deflates each grain once for all such
    /// sinks and hands them the grains instead of the data. An opt-in
    /// capability rather than a behaviour: a sink that does not offer it
    /// (the default, `None`) gets its data through `write_data`, which every
    /// sink must take anyway.
    fn grain_sink(&mut self) -> Option<&mut dyn GrainSink> {
        None
    }
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
    let tagged = sinks.into_iter().map(|s| (0, s)).collect();
    write_disks_with_progress(&[disk], tagged, progress)
}

/// Streams several disks into their sinks in one pass: `sinks` pairs each
/// sink with the index of its disk in `disks`. Extents are visited in disk
/// offset order across all disks; an extent that several disks have in
/// common (same place, same length, same bytes: the same source range, or
/// equal bytes in memory) is read once and handed to the sinks of all of
/// them (once more for the grain stage when there are sinks of both
/// kinds). Each sink sees exactly the calls [`write_images`] of its own
/// disk would make. At most 64 disks.
pub fn write_disks(
    disks: &[&VirtualDisk],
    sinks: Vec<(usize, Box<dyn ImageSink>)>,
) -> Result<Vec<ImageSummary>> {
    write_disks_with_progress(disks, sinks, &mut |_| {})
}

/// [`write_disks`], calling `progress` with the number of bytes read so far
/// (out of [`shared_data_len`]).
pub fn write_disks_with_progress(
    disks: &[&VirtualDisk],
    sinks: Vec<(usize, Box<dyn ImageSink>)>,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<ImageSummary>> {
    if disks.len() > 64 || sinks.iter().any(|(d, _)| *d >= disks.len()) {
        return Err(Error::InvalidOption {
            option: "disks",
            detail: format!(
                "{} disks (at most 64), sinks for disks {:?}",
                disks.len(),
                sinks.iter().map(|(d, _)| *d).collect::<Vec<_>>()
            ),
        });
    }
    let allocated: Vec<Vec<Range<u64>>> = disks.iter().map(|d| d.allocated()).collect();
    // Sinks that store deflated grains get them from one stage that
    // deflates each grain once for all of them (see `grain_stage`).
    let mut sinks = sinks;
    let mut grain_threads = 0;
    let fed: Vec<bool> = sinks
        .iter_mut()
        .map(|(_, s)| {
            s.grain_sink()
                .map(|g| grain_threads = grain_threads.max(g.threads()))
                .is_some()
        })
        .collect();
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(sinks.len() + 1);
        let mut grain_senders = Vec::new();
        let mut grain_disks = Vec::new();
        let mut workers = Vec::with_capacity(sinks.len());
        for ((disk, mut sink), fed) in sinks.into_iter().zip(fed) {
            let allocated = &allocated[disk];
            let size = disks[disk].size();
            let bit = 1u64 << disk;
            if fed {
                let (tx, rx) = mpsc::sync_channel::<Arc<GrainBatch>>(QUEUE);
                grain_senders.push(tx);
                if !grain_disks.iter().any(|(d, _, _)| *d == disk) {
                    grain_disks.push((disk, size, allocated.clone()));
                }
                workers.push(scope.spawn(move || -> Result<ImageSummary> {
                    sink.begin(size, allocated)?;
                    for batch in rx {
                        sink.grain_sink()
                            .expect("offered above")
                            .write_grains(&batch, bit)?;
                    }
                    sink.finish()
                }));
                continue;
            }
            let (tx, rx) = mpsc::sync_channel::<Arc<Batch>>(QUEUE);
            senders.push(tx);
            workers.push(scope.spawn(move || -> Result<ImageSummary> {
                sink.begin(size, allocated)?;
                // Ends when the reader hangs up: after the last chunk, or
                // early on a read error (then the summary is discarded).
                for batch in rx {
                    for &(offset, start, len, mask) in &batch.pieces {
                        if mask & bit != 0 {
                            sink.write_data(offset, &batch.data[start..start + len])?;
                        }
                    }
                }
                sink.finish()
            }));
        }
        let stage = (!grain_senders.is_empty()).then(|| {
            let (tx, rx) = mpsc::sync_channel::<Arc<Batch>>(QUEUE);
            senders.push(tx);
            scope.spawn(move || grain_stage(grain_disks, grain_threads, &rx, &grain_senders))
        });
        // The grain stage (deflate) is the slowest consumer by far: it gets
        // a reader of its own, so the other sinks (hashing a fixed VHD's
        // zeros, copying a layer) finish while it deflates instead of
        // waiting on its queue and working after it. Shared extents are
        // then read twice, once per reader; memory stays bounded by each
        // reader's queues.
        let stage_tx = stage.as_ref().and_then(|_| senders.pop());
        let (read, stage_read) = match stage_tx {
            Some(stage_tx) if !senders.is_empty() => {
                let plain = std::mem::take(&mut senders);
                let other = scope.spawn(move || read_into(disks, &plain, &mut |_| {}));
                let staged = read_into(disks, &[stage_tx], progress);
                (
                    other
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    staged,
                )
            }
            stage_tx => {
                senders.extend(stage_tx);
                (read_into(disks, &senders, progress), Ok(()))
            }
        };
        drop(senders);
        let results: Vec<Result<ImageSummary>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        let staged = stage.map_or(Ok(()), |s| {
            s.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        read?;
        stage_read?;
        // A sink's own error first: the stage fails too when a sink hangs up.
        let summaries = results.into_iter().collect::<Result<Vec<_>>>()?;
        staged?;
        Ok(summaries)
    })
}

/// Reads every extent of `disks` once ([`for_each_shared_extent`]) and
/// sends it, in batches, to each of `senders`; calls `progress` with the
/// bytes read so far. Stops early, without error, when a receiver hung up
/// (it reports its own error).
fn read_into(
    disks: &[&VirtualDisk],
    senders: &[mpsc::SyncSender<Arc<Batch>>],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    // Pieces go out in batches: a root filesystem is thousands of small
    // files, and a channel message per file costs more in wake-ups than
    // the copy. The calls each sink sees are the same as unbatched.
    let mut batch = Batch::default();
    let mut done = 0u64;
    for_each_shared_extent(disks, &mut |extent, mask| {
        let mut at = 0u64;
        while at < extent.len {
            let n = usize::try_from((extent.len - at).min(CHUNK as u64)).expect("at most CHUNK");
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
            extent.read(at, &mut batch.data[start..]).map_err(|e| {
                Error::io(
                    format!("reading disk data at offset {}", extent.offset + at),
                    e,
                )
            })?;
            batch.pieces.push((extent.offset + at, start, n, mask));
            at += n as u64;
            done += n as u64;
            progress(done);
        }
        Ok(true)
    })?;
    if !batch.pieces.is_empty() {
        let last = Arc::new(batch);
        for tx in senders {
            // A hung-up sink reports its own error.
            let _ = tx.send(last.clone());
        }
    }
    Ok(())
}

/// The tee's grain stage: takes the data batches of `disks` (index, size,
/// allocated ranges) and sends the deflated grains to every grain sink.
/// With the queues bounded on both sides, memory stays bounded; a sink
/// that stops makes this stop with an error.
fn grain_stage(
    disks: Vec<(usize, u64, Vec<Range<u64>>)>,
    threads: usize,
    rx: &mpsc::Receiver<Arc<Batch>>,
    sinks: &[mpsc::SyncSender<Arc<GrainBatch>>],
) -> Result<()> {
    let mut stage = GrainStage::new(disks, threads.max(1))?;
    let mut send = |batch: GrainBatch| -> Result<()> {
        let batch = Arc::new(batch);
        for tx in sinks {
            tx.send(batch.clone()).map_err(|_| {
                Error::io(
                    "handing deflated grains to a sink",
                    std::io::Error::other("the sink stopped"),
                )
            })?;
        }
        Ok(())
    };
    for batch in rx {
        for &(offset, start, len, mask) in &batch.pieces {
            stage.push(offset, &batch.data[start..start + len], mask, &mut send)?;
        }
    }
    stage.finish(&mut send)
}

/// Two extents of different disks hold the same bytes at the same place:
/// the same range of the same source, or equal bytes in memory.
fn same_extent(a: &Extent, b: &Extent) -> bool {
    a.offset == b.offset
        && a.len == b.len
        && match (&a.data, &b.data) {
            (ExtentData::Bytes(x), ExtentData::Bytes(y)) => Arc::ptr_eq(x, y) || x[..] == y[..],
            (
                ExtentData::Source {
                    source: s,
                    offset: o,
                },
                ExtentData::Source {
                    source: t,
                    offset: p,
                },
            ) => o == p && Arc::ptr_eq(s, t),
            _ => false,
        }
}

/// Visits every extent of every disk in disk offset order, once per group
/// of identical extents ([`same_extent`]) at the same place: `each` gets the
/// extent and the bit mask of the disks (bit i: `disks[i]`) that have it,
/// and returns false to stop early.
fn for_each_shared_extent(
    disks: &[&VirtualDisk],
    each: &mut dyn FnMut(&Extent, u64) -> Result<bool>,
) -> Result<()> {
    let mut heads = vec![0usize; disks.len()];
    loop {
        let head = |d: usize, heads: &[usize]| disks[d].extents().get(heads[d]);
        let Some(min) = (0..disks.len())
            .filter_map(|d| head(d, &heads).map(|e| e.offset))
            .min()
        else {
            return Ok(());
        };
        let mut pending: Vec<usize> = (0..disks.len())
            .filter(|&d| head(d, &heads).is_some_and(|e| e.offset == min))
            .collect();
        while let Some(&first) = pending.first() {
            let extent = head(first, &heads)
                .expect("pending disks have a head")
                .clone();
            let mut mask = 0u64;
            let mut rest = Vec::new();
            for d in pending {
                if same_extent(&extent, head(d, &heads).expect("pending disks have a head")) {
                    mask |= 1 << d;
                    heads[d] += 1;
                } else {
                    rest.push(d);
                }
            }
            if !each(&extent, mask)? {
                return Ok(());
            }
            pending = rest;
        }
    }
}

/// Bytes [`write_disks`] reads for `disks`: their data, extents they share
/// counted once.
pub fn shared_data_len(disks: &[&VirtualDisk]) -> u64 {
    let mut n = 0;
    let _ = for_each_shared_extent(disks, &mut |e, _| {
        n += e.len;
        Ok(true)
    });
    n
}

/// Bytes of data per message to the sink threads.
const BATCH: usize = 2 * CHUNK;

/// Consecutive pieces of disk data, gathered for the sink threads.
#[derive(Default)]
struct Batch {
    /// (disk offset, start in `data`, length, mask of the disks it belongs
    /// to) per piece, in disk order.
    pieces: Vec<(u64, usize, usize, u64)>,
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
