//! [`TarProblem`]: what is wrong with one tar entry.

use std::io;

use crate::tree::TreeError;

/// What is wrong with one tar entry (wrapped in [`SourceError::Tar`](crate::source::SourceError::Tar), which
/// names the file and the entry).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarProblem {
    /// Reading the archive failed.
    #[error("cannot read the archive")]
    Io(#[source] io::Error),
    /// The header checksum does not match.
    #[error("header checksum field says {expected}, the header sums to {found}")]
    BadChecksum {
        /// From the checksum field.
        expected: i64,
        /// Computed.
        found: i64,
    },
    /// A numeric field is not a number.
    #[error("field {field} holds {raw:?}, not a number")]
    BadNumber {
        /// Field name.
        field: &'static str,
        /// Its bytes, escaped.
        raw: String,
    },
    /// A number does not fit where it goes.
    #[error("field {field} value {value} is out of range")]
    OutOfRange {
        /// Field name.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// The file ends inside a header block.
    #[error("header truncated: {available} of 512 bytes before the end of the file")]
    TruncatedHeader {
        /// Bytes left in the file.
        available: u64,
    },
    /// The entry's data runs past the end of the file.
    #[error("size {size} from data offset {data_offset} runs past the end of the file ({file_len} bytes)")]
    SizePastEnd {
        /// The entry's size.
        size: u64,
        /// Where its data starts.
        data_offset: u64,
        /// The (uncompressed) file length.
        file_len: u64,
    },
    /// An extended header is larger than we hold in memory.
    #[error("{kind} header of {size} bytes exceeds the {limit}-byte limit")]
    ExtendedTooLarge {
        /// `pax` or `GNU long name`.
        kind: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A pax record is malformed.
    #[error("malformed pax extended header: {reason}")]
    BadPax {
        /// What is wrong.
        reason: String,
    },
    /// An ACL text record cannot be converted.
    #[error("bad ACL in {key}: {reason}")]
    BadAcl {
        /// The pax keyword.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Extended headers at the end with no entry after them.
    #[error("extended header is not followed by an entry")]
    DanglingExtended,
    /// A valid entry we do not support.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What it is.
        what: String,
    },
    /// A device number does not fit Linux's `dev_t` (and ext4's encoding).
    #[error(
        "device number {major}:{minor} is out of range: major at most {}, minor at most {}",
        crate::tree::MAX_DEV_MAJOR,
        crate::tree::MAX_DEV_MINOR
    )]
    DeviceNumberTooLarge {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A `SCHILY.xattr.` pax record without an attribute name.
    #[error("pax record SCHILY.xattr. names an extended attribute with an empty name")]
    EmptyXattrName,
    /// A symlink without a target.
    #[error("symbolic link with an empty target")]
    EmptySymlink,
    /// The tree refused the entry (`..`, a parent that is a file, a hard
    /// link to a missing path or a directory).
    #[error("cannot place the entry in the tree")]
    Tree(#[source] TreeError),
}
