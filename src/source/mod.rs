//! OS sources: they fill a [`Tree`](crate::tree::Tree) from a tar archive
//! (plain, gzip, zstd or xz), a host directory, or a fresh `mmdebstrap` run.
//!
//! ```text
//! rootfs.tar[.gz|.zst|.xz] ─decompress (once, to an unlinked temp file)─┐
//!                                                                       ├─ tar::read_tar ─► Tree
//! mmdebstrap::bootstrap ─► cached mmdebstrap-<key>-<dates>.tar ─────────┘
//! host directory ─ dir::read_dir ─► Tree
//! ```
//! File contents are never copied into memory: every regular file becomes a
//! [`FileData::Source`](crate::tree::FileData) pointing at a byte range of the
//! (decompressed) tar or at the host file.

pub mod archives;
pub mod decompress;
pub mod digest;
pub mod dir;
pub mod mmdebstrap;
pub mod tar;
pub mod zeros;

use std::io;
use std::path::PathBuf;

pub use decompress::{Compression, UnpackLimit};
pub use dir::{read_dir, DirOptions, DirStats};
pub use mmdebstrap::{bootstrap, default_mirror, CachePolicy, DebootstrapSpec, Sources};
pub use tar::{read_tar, Owners, TarOptions, TarProblem, TarStats};

/// What went wrong reading an OS source. Every variant names the file and,
/// for tar archives, the entry (index, byte offset of its header, path).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Opening, reading or decompressing a source file failed.
    #[error("{path}: cannot {action}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`open`, `decompress zstd`, …).
        action: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is compressed with a method we do not read.
    #[error("{path}: {method} compression is not supported (use gzip, zstd or xz)")]
    UnsupportedCompression {
        /// The file.
        path: PathBuf,
        /// What its magic bytes say.
        method: &'static str,
    },
    /// A compressed tar inflates to more than any tar whose tree fits the
    /// disk can hold (a decompression bomb, or a disk far too small):
    /// inflating stopped at the bound and the partial copy was removed.
    #[error(
        "{path}: its {method} stream inflates past {limit} bytes ({}), the bound for a disk of \
         {disk_size} bytes ({}): the disk size plus 1/8, at most plus 1 GiB; decompressing \
         stopped there and the partial copy was removed (a decompression bomb, or a disk too \
         small for this tar: raise the size, or give the tar uncompressed)",
        crate::size::human(*limit),
        crate::size::human(*disk_size)
    )]
    UnpackedTooLarge {
        /// The compressed tar.
        path: PathBuf,
        /// The compression (`gzip`, `zstd`, `xz`).
        method: &'static str,
        /// The bound in bytes ([`decompress::UnpackLimit::bytes`]).
        limit: u64,
        /// The disk size the bound derives from.
        disk_size: u64,
    },
    /// A tar entry is malformed, unsupported or hostile.
    #[error("{tar}: entry #{index} {entry:?} (header at byte {offset})")]
    Tar {
        /// The tar file as given (not the decompressed temp file).
        tar: PathBuf,
        /// 0-based index of the entry (extended headers count with their entry).
        index: u64,
        /// Byte offset of the entry's first header in the uncompressed tar.
        offset: u64,
        /// The entry's path as far as it is known (`?` before it is).
        entry: String,
        /// What is wrong.
        #[source]
        problem: TarProblem,
    },
    /// A host directory entry could not be read or placed in the tree.
    #[error("{path}: cannot {action}")]
    Dir {
        /// The host path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No archive given and none usable in the host's apt sources.
    #[error("{0}")]
    NoArchive(String),
    /// Refreshing the cache needed the archives' Release files and one
    /// could not be fetched.
    #[error("cannot check the archives for newer packages: {0}")]
    Refresh(String),
    /// An external tool failed.
    #[error("{tool} failed ({status}): {stderr_tail}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
}
