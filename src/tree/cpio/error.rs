//! Errors of the initramfs reader and where they happened.

use std::fmt;
use std::io;

use super::Compression;

/// Where in the initramfs something is: the segment's start in the file, its
/// compression, and the offset inside the unpacked stream (for an
/// uncompressed segment, the offset in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Byte offset of the segment in the initramfs file.
    pub segment: u64,
    /// How the segment is stored.
    pub compression: Compression,
    /// Offset in the unpacked stream (the file offset when uncompressed).
    pub offset: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.compression {
            Compression::None => write!(f, "initramfs byte {}", self.offset),
            c => write!(
                f,
                "initramfs byte {} ({c} stream), unpacked byte {}",
                self.segment, self.offset
            ),
        }
    }
}

/// What went wrong reading an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A "070702" entry whose data does not sum to its header's checksum.
    #[error("{at}: {name:?}: data checksum is {found:#010x}, header says {expected:#010x}")]
    BadChecksum {
        /// Where the entry's header is.
        at: Location,
        /// The entry.
        name: String,
        /// The header's value.
        expected: u32,
        /// The sum of the data bytes.
        found: u32,
    },
    /// A header field that is not eight hex digits.
    #[error("{at}: cpio header field {field} is not 8 hex digits: {found:?}")]
    BadField {
        /// Where the header is.
        at: Location,
        /// The field's name in buffer-format.rst.
        field: &'static str,
        /// The bytes found.
        found: String,
    },
    /// Something other than a cpio header where one must start.
    #[error("{at}: expected cpio magic \"070701\" or \"070702\", found {found:?}")]
    BadMagic {
        /// Where the header should be.
        at: Location,
        /// The first six bytes found.
        found: String,
    },
    /// A name that is empty, longer than `PATH_MAX` or not NUL-terminated.
    #[error("{at}: cpio name of {len} bytes is empty, longer than 4096 (PATH_MAX) or not NUL-terminated")]
    BadName {
        /// Where the header is.
        at: Location,
        /// The header's namesize.
        len: u32,
    },
    /// An archive resumes after zero padding at an offset that is not a multiple of 4.
    #[error("{at}: next cpio archive after zero padding is not 4-byte aligned")]
    BrokenPadding {
        /// Where the archive starts.
        at: Location,
    },
    /// The decompressor failed (corrupt or truncated stream).
    #[error("{at}: {compression} stream is corrupt or truncated")]
    Decompress {
        /// How far the unpacked stream got.
        at: Location,
        /// The stream's compression.
        compression: Compression,
        /// The decompressor's error.
        #[source]
        source: io::Error,
    },
    /// Reading the initramfs file failed.
    #[error("reading the initramfs at byte {offset}")]
    Io {
        /// Where.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A bound from [`Limits`](super::Limits) was reached.
    #[error("{at}: more than {limit} {what}")]
    Limit {
        /// Where.
        at: Location,
        /// What was counted.
        what: &'static str,
        /// The bound.
        limit: u64,
    },
    /// The stream ends inside a structure.
    #[error("{at}: stream ends inside {structure}")]
    Truncated {
        /// Where the structure starts.
        at: Location,
        /// What was being read.
        structure: &'static str,
    },
    /// Neither a cpio archive nor a compressed stream the kernel knows.
    #[error("initramfs byte {offset}: {found:02x?} starts neither a cpio archive nor a known compressed stream")]
    UnknownMagic {
        /// Where.
        offset: u64,
        /// Up to 6 bytes found there.
        found: Vec<u8>,
    },
    /// A format the kernel knows and this reader does not.
    #[error("{at}: {feature} is not supported")]
    Unsupported {
        /// Where.
        at: Location,
        /// What.
        feature: &'static str,
    },
}
