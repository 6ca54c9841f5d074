//! SHA-256 of an output file computed while it is written, so that a build
//! need not read its images back to hash them.
//!
//! A writer that produces its file strictly front to back (every write at or
//! after the end of the previous one) feeds each write here; the bytes it
//! skips are holes or unwritten space, which read as zeros, so they are hashed
//! as zeros from memory. A write that goes back (a header patched at the end)
//! disables the hash: [`StreamHash::finish`] then gives `None` and the caller
//! hashes the finished file instead.

use sha2::{Digest, Sha256};

/// Zeros hashed per `update` call when hashing a gap.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The running hash of a file written front to back.
#[derive(Clone, Debug)]
pub struct StreamHash {
    hasher: Sha256,
    /// Bytes hashed so far: the file's prefix `0..at`.
    at: u64,
    /// False once a write went back before `at`.
    ordered: bool,
}

impl Default for StreamHash {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamHash {
    /// An empty hash at offset 0.
    pub fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            at: 0,
            ordered: true,
        }
    }

    /// A hash that is not computed: `finish` gives `None` (the caller did not
    /// ask for one, see [`crate::WriteOptions::hash`]).
    pub fn disabled() -> Self {
        Self {
            ordered: false,
            ..Self::new()
        }
    }

    /// `new()` when `on`, else `disabled()`.
    pub fn enabled(on: bool) -> Self {
        if on {
            Self::new()
        } else {
            Self::disabled()
        }
    }

    /// Records `data` written at `offset`. A gap since the last write is
    /// hashed as zeros; a write before the end of the last one gives up.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) {
        if !self.ordered {
            return;
        }
        if offset < self.at {
            self.ordered = false;
            return;
        }
        self.zeros_to(offset);
        self.hasher.update(data);
        self.at = offset + data.len() as u64;
    }

    /// Whether every write so far came in file order.
    pub fn is_ordered(&self) -> bool {
        self.ordered
    }

    /// The digest of a file of `len` bytes (the tail after the last write is
    /// zeros), or `None` if the writes did not come in order or went past `len`.
    pub fn finish(mut self, len: u64) -> Option<[u8; 32]> {
        if !self.ordered || len < self.at {
            return None;
        }
        self.zeros_to(len);
        Some(self.hasher.finalize().into())
    }

    fn zeros_to(&mut self, end: u64) {
        while self.at < end {
            let n = usize::try_from((end - self.at).min(ZEROS.len() as u64))
                .expect("at most ZEROS.len()");
            self.hasher.update(&ZEROS[..n]);
            self.at += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn gaps_and_tail_hash_as_zeros() {
        let mut file = vec![0u8; 300_000];
        let mut h = StreamHash::new();
        for (at, byte, len) in [
            (0usize, 1u8, 10usize),
            (10, 2, 5),
            (70_000, 3, 100),
            (200_000, 4, 1),
        ] {
            file[at..at + len].fill(byte);
            h.write_at(at as u64, &file[at..at + len]);
        }
        assert_eq!(h.finish(file.len() as u64), Some(sha(&file)));
    }

    #[test]
    fn going_back_gives_up() {
        let mut h = StreamHash::new();
        h.write_at(100, b"abc");
        assert!(h.is_ordered());
        h.write_at(0, b"header");
        assert!(!h.is_ordered());
        assert_eq!(h.finish(1000), None);
    }

    #[test]
    fn a_length_short_of_the_writes_gives_up() {
        let mut h = StreamHash::new();
        h.write_at(0, b"abcdef");
        assert_eq!(h.clone().finish(6), Some(sha(b"abcdef")));
        assert_eq!(h.finish(5), None);
    }
}
