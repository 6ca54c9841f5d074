//! The writer seam: `ImageSink`, and the tee that reads each extent once and
//! feeds every sink (ripgrep's push-model `Sink`).
//!
//! ```text
//!  VirtualDisk ──read once──► write_images ──► qcow2 sink
//!                                          ├──► vhdx sink
//!                                          └──► raw sink
//! ```

use std::ops::Range;

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

/// Streams `disk` into every sink: each extent is read once, in order, in
/// chunks of at most [`CHUNK`] bytes, and handed to each sink in turn.
pub fn write_images(
    disk: &VirtualDisk,
    mut sinks: Vec<Box<dyn ImageSink>>,
) -> Result<Vec<ImageSummary>> {
    let allocated = disk.allocated();
    for sink in &mut sinks {
        sink.begin(disk.size(), &allocated)?;
    }
    let mut buf = vec![0u8; CHUNK];
    for extent in disk.extents() {
        let mut at = 0u64;
        while at < extent.len {
            let n = usize::try_from((extent.len - at).min(CHUNK as u64)).expect("at most CHUNK");
            extent.read(at, &mut buf[..n]).map_err(|e| {
                Error::io(
                    format!("reading disk data at offset {}", extent.offset + at),
                    e,
                )
            })?;
            for sink in &mut sinks {
                sink.write_data(extent.offset + at, &buf[..n])?;
            }
            at += n as u64;
        }
    }
    sinks.into_iter().map(|s| s.finish()).collect()
}
