//! Which 512-byte sectors of a file are all zero, measured by whoever reads
//! the whole file anyway (the input hasher, [`ZeroScan`]), so that the ext4
//! writer can leave holes for zero blocks without reading file data a second
//! time (mke2fs -d leaves the same holes). Tar members start on 512-byte
//! boundaries, so a 4 KiB file block is zero exactly when its sectors are.

use std::sync::{Arc, OnceLock};

/// Sector size of the map: the tar block size.
pub const SECTOR: u64 = 512;

/// The zero-sector map of one file, set once by the thread that reads it.
/// Readers wait for it: an answer must never depend on timing.
#[derive(Default)]
pub struct ZeroMap {
    cell: OnceLock<Option<Measured>>,
}

struct Measured {
    /// File length the map was measured on.
    len: u64,
    /// Bit `s` set = sector `s` is all zero.
    bits: Vec<u64>,
}

impl ZeroMap {
    /// An empty, unset map.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records the measurement (`None`: the file could not be read whole;
    /// every question then answers "unknown"). Later calls are ignored.
    fn set(&self, m: Option<Measured>) {
        let _ = self.cell.set(m);
    }

    /// Gives up measuring: every question answers "unknown" (no-op when set).
    pub fn abandon(&self) {
        self.set(None);
    }

    /// Whether `len` bytes at `offset` of a file of `file_len` bytes are all
    /// zero: `Some(true)` when every sector they touch is zero, `Some(false)`
    /// when a sector wholly inside the range is not, else `None`. Blocks
    /// until the map is set; `None` when it was measured on another length.
    pub fn known_zero(&self, file_len: u64, offset: u64, len: u64) -> Option<bool> {
        let m = self.cell.wait().as_ref()?;
        let end = offset.checked_add(len)?;
        if m.len != file_len || end > m.len || len == 0 {
            return None;
        }
        let (first, last) = (offset / SECTOR, (end - 1) / SECTOR);
        let mut all_zero = true;
        for s in first..=last {
            if m.bits[(s / 64) as usize] & (1 << (s % 64)) == 0 {
                all_zero = false;
                let whole = s * SECTOR >= offset && (s + 1) * SECTOR <= end;
                if whole {
                    return Some(false);
                }
            }
        }
        all_zero.then_some(true)
    }
}

impl std::fmt::Debug for ZeroMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cell.get() {
            None => f.write_str("ZeroMap(pending)"),
            Some(None) => f.write_str("ZeroMap(unknown)"),
            Some(Some(m)) => write!(f, "ZeroMap({} bytes)", m.len),
        }
    }
}

/// A cache beside the data it describes: never part of a plan's identity.
impl PartialEq for ZeroMap {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ZeroMap {}

/// Builds a [`ZeroMap`] from a file read front to back in pieces of any size.
pub struct ZeroScan {
    map: Arc<ZeroMap>,
    bits: Vec<u64>,
    /// Bytes seen.
    len: u64,
    /// Whole sectors recorded in `bits`.
    sectors: u64,
    /// A sector split across two pieces: its bytes so far, and whether they
    /// were all zero.
    partial: u64,
    partial_zero: bool,
}

impl ZeroScan {
    /// Starts measuring into `map`.
    pub fn new(map: Arc<ZeroMap>) -> Self {
        Self {
            map,
            bits: Vec::new(),
            len: 0,
            sectors: 0,
            partial: 0,
            partial_zero: true,
        }
    }

    /// The next piece of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        if self.partial > 0 {
            let take = ((SECTOR - self.partial) as usize).min(data.len());
            self.partial_zero &= is_zero(&data[..take]);
            self.partial += take as u64;
            self.len += take as u64;
            data = &data[take..];
            if self.partial == SECTOR {
                self.push(self.partial_zero);
                self.partial = 0;
                self.partial_zero = true;
            }
        }
        let mut chunks = data.chunks_exact(SECTOR as usize);
        for c in &mut chunks {
            self.push(is_zero(c));
            self.len += SECTOR;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.partial = rest.len() as u64;
            self.partial_zero = is_zero(rest);
            self.len += rest.len() as u64;
        }
    }

    fn push(&mut self, zero: bool) {
        let s = self.sectors as usize;
        if s / 64 >= self.bits.len() {
            self.bits.push(0);
        }
        if zero {
            self.bits[s / 64] |= 1 << (s % 64);
        }
        self.sectors += 1;
    }

    /// The file ended: publishes the map. A trailing partial sector counts
    /// as zero when its bytes are (what follows the end reads as nothing).
    pub fn finish(mut self) {
        if self.partial > 0 {
            let zero = self.partial_zero;
            self.push(zero);
        }
        self.map.set(Some(Measured {
            len: self.len,
            bits: std::mem::take(&mut self.bits),
        }));
    }

    /// Reading failed: every question about this file answers "unknown".
    pub fn fail(self) {
        self.map.set(None);
    }
}

/// A scan dropped unfinished (its thread panicked) answers "unknown" too:
/// whoever waits on the map must not wait forever.
impl Drop for ZeroScan {
    fn drop(&mut self) {
        self.map.abandon();
    }
}

fn is_zero(b: &[u8]) -> bool {
    const ZERO: [u8; SECTOR as usize] = [0; SECTOR as usize];
    b == &ZERO[..b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(data: &[u8], piece: usize) -> Arc<ZeroMap> {
        let map = ZeroMap::new();
        let mut s = ZeroScan::new(map.clone());
        for p in data.chunks(piece) {
            s.update(p);
        }
        s.finish();
        map
    }

    #[test]
    fn answers_match_the_bytes_whatever_the_piece_size() {
        let mut data = vec![0u8; 8 * 512 + 100];
        data[512 * 2 + 7] = 1; // sector 2
        data[512 * 5] = 9; // sector 5
        let len = data.len() as u64;
        for piece in [1, 7, 512, 513, 4096, 100_000] {
            let m = scan(&data, piece);
            for (off, n) in [
                (0, 1024),
                (0, 4096),
                (1024, 512),
                (3 * 512, 1024),
                (6 * 512, 2 * 512 + 100),
                (4096, 100),
            ] {
                let truth = data[off as usize..(off + n) as usize]
                    .iter()
                    .all(|&b| b == 0);
                let got = m.known_zero(len, off, n);
                assert!(
                    got.is_some(),
                    "whole sectors are always known: {off}+{n} piece {piece}"
                );
                assert_eq!(got, Some(truth), "{off}+{n} piece {piece}");
            }
        }
    }

    #[test]
    fn partial_sectors_never_claim_non_zero_and_lengths_must_match() {
        let mut data = vec![0u8; 1024];
        data[600] = 1;
        let m = scan(&data, 300);
        // Bytes 512..520 are zero, but their sector is not: unknown.
        assert_eq!(m.known_zero(1024, 512, 8), None);
        assert_eq!(m.known_zero(1024, 0, 512), Some(true));
        assert_eq!(m.known_zero(1024, 0, 1024), Some(false));
        assert_eq!(
            m.known_zero(2048, 0, 512),
            None,
            "measured on another length"
        );
        assert_eq!(m.known_zero(1024, 1000, 100), None, "past the end");
    }

    #[test]
    fn a_failed_scan_answers_unknown() {
        let map = ZeroMap::new();
        ZeroScan::new(map.clone()).fail();
        assert_eq!(map.known_zero(0, 0, 1), None);
    }
}
