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

/// Granule of [`ContentId`].
const GRANULE: u64 = 64 << 10;

/// Names a disk by its content, cheaply: the hardware CRC-32C of every
/// 64 KiB granule of data, with the granule's index, feeds a SHA-256. Used to
/// derive the GUIDs of a VHDX/VHD written without a seed; SHA-256 over all
/// the data cost as much CPU as writing it. Independent of how the data is
/// split into calls.
#[derive(Clone, Debug)]
pub struct ContentId {
    sha: Sha256,
    granule: u64,
    crc: u32,
    open: bool,
}

impl ContentId {
    /// A new id, domain-separated by `tag`.
    pub fn new(tag: &[u8]) -> Self {
        let mut sha = Sha256::new();
        sha.update(tag);
        Self {
            sha,
            granule: 0,
            crc: 0,
            open: false,
        }
    }

    /// Hashes facts that are not data (sizes, the allocation map).
    pub fn meta(&mut self, bytes: &[u8]) {
        self.flush();
        self.sha.update(bytes);
    }

    /// Data at disk `offset` (calls in increasing offset order).
    pub fn data(&mut self, offset: u64, data: &[u8]) {
        let (mut at, mut rest) = (offset, data);
        while !rest.is_empty() {
            let g = at / GRANULE;
            if !self.open || g != self.granule {
                self.flush();
                (self.granule, self.crc, self.open) = (g, 0, true);
            }
            let room = usize::try_from((g + 1) * GRANULE - at).unwrap_or(usize::MAX);
            let n = room.min(rest.len());
            self.crc = crc32c::crc32c_append(self.crc, &rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
    }

    fn flush(&mut self) {
        if self.open {
            self.sha.update(self.granule.to_le_bytes());
            self.sha.update(self.crc.to_le_bytes());
            self.open = false;
        }
    }

    /// The 32-byte id.
    pub fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.sha.finalize().into()
    }
}

#[cfg(test)]
mod content_id_tests {
    use super::ContentId;

    fn id(calls: &[(u64, &[u8])]) -> [u8; 32] {
        let mut c = ContentId::new(b"t");
        for (at, d) in calls {
            c.data(*at, d);
        }
        c.finish()
    }

    #[test]
    fn same_content_split_differently_gives_the_same_id() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let whole = id(&[(1000, &data)]);
        let split = id(&[(1000, &data[..70_000]), (71_000, &data[70_000..])]);
        assert_eq!(whole, split);
    }

    #[test]
    fn any_changed_byte_or_place_changes_the_id() {
        let data = vec![5u8; 100_000];
        let mut other = data.clone();
        other[99_999] = 6;
        assert_ne!(id(&[(0, &data)]), id(&[(0, &other)]));
        assert_ne!(id(&[(0, &data)]), id(&[(65536, &data)]));
    }
}
