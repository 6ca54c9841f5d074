//! qcow2 (QEMU copy-on-write v2/v3): a writer for v3 images from a sparse
//! disk, plain or compressed, and a reader for the active layer.
//!
//! ```text
//! header ─► L1 table ─► L2 tables ─► data clusters (standard or compressed)
//!    └────► refcount table ─► refcount blocks (one count per host cluster)
//! ```
//!
//! Spec: qemu `docs/interop/qcow2.rst`; facts checked against qemu-img in
//! `shared/notes/formats-facts.md` §1.

mod compress;
mod compressed;
mod geometry;
pub mod header;
mod reader;
pub mod refcount;
mod seqwrite;
pub mod tables;
mod writer;

pub use reader::Qcow2Reader;
pub use writer::{Qcow2Writer, DEFAULT_CLUSTER_SIZE};

use crate::Error;

/// The format name used in errors.
const FORMAT: &str = "qcow2";

fn corrupt(structure: &'static str, offset: u64, detail: String) -> Error {
    Error::Corrupt {
        format: FORMAT,
        structure,
        offset,
        detail,
    }
}

fn truncated(structure: &'static str, offset: u64, need: u64, file_len: u64) -> Error {
    Error::Truncated {
        format: FORMAT,
        structure,
        offset,
        need,
        file_len,
    }
}

fn unsupported(feature: String) -> Error {
    Error::Unsupported {
        format: FORMAT,
        feature,
    }
}

#[cfg(test)]
mod tests;
