//! The crate's error type. Variants name the structure, the offset, what was
//! expected and what was found, so a person can act on them.

use std::io;

/// Everything that can go wrong reading or writing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checksum did not match.
    #[error("{format}: bad checksum in {structure} at offset {offset}: expected {expected:#010x}, found {found:#010x}")]
    BadChecksum {
        /// Image format.
        format: &'static str,
        /// Which structure.
        structure: &'static str,
        /// File offset of the structure.
        offset: u64,
        /// Checksum stored in the file.
        expected: u32,
        /// Checksum computed.
        found: u32,
    },
    /// A structure is malformed.
    #[error("{format}: corrupt {structure} at offset {offset}: {detail}")]
    Corrupt {
        /// Image format.
        format: &'static str,
        /// Which structure.
        structure: &'static str,
        /// File offset of the structure (or of the bad field).
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// An extent ends past the disk's virtual size.
    #[error("extent at {offset} of {len} bytes ends past the disk size {size}")]
    ExtentOutsideDisk {
        /// Extent start.
        offset: u64,
        /// Extent length.
        len: u64,
        /// Disk size.
        size: u64,
    },
    /// An I/O operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An option is out of range.
    #[error("invalid {option}: {detail}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong and what would be valid.
        detail: String,
    },
    /// Two extents overlap.
    #[error("extents overlap at disk offset {offset}")]
    OverlappingExtents {
        /// Start of the second extent.
        offset: u64,
    },
    /// The file ends before a structure it must contain.
    #[error("{format}: truncated: {structure} at offset {offset} needs {need} bytes, file is {file_len} bytes")]
    Truncated {
        /// Image format.
        format: &'static str,
        /// Which structure.
        structure: &'static str,
        /// File offset of the structure.
        offset: u64,
        /// Bytes needed.
        need: u64,
        /// Actual file length.
        file_len: u64,
    },
    /// A valid feature this crate does not implement.
    #[error("{format}: unsupported: {feature}")]
    Unsupported {
        /// Image format.
        format: &'static str,
        /// The feature.
        feature: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Converts into an `io::Error` (for `ReadAt` implementations); the original
    /// stays reachable with `into_inner`.
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
