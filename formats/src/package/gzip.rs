//! A gzip file written as a series of members (RFC 1952 2.2: "A gzip file
//! consists of a series of "members" (compressed data sets)"), one per
//! deflate stream made elsewhere, as Google's own Compute Engine exporter
//! writes its tar.gz (chunks gzipped apart and concatenated,
//! GoogleCloudPlatform/compute-image-import#213):
//!
//! ```text
//! member = header (10 bytes: mtime 0, no name, OS 3) | deflate stream (final) | CRC-32 | ISIZE
//! file   = member | member | …
//! ```
//!
//! The deflate streams are the grains of [`crate::grain`] (deflated once for
//! the VMDK and the gzip alike) and small pieces compressed here (tar
//! headers, the archive's end). Every gzip reader reads on to the end of
//! the file (gzip, GNU tar, zlib's `gzread`, Go's `compress/gzip`,
//! Python's `gzip`, flate2's `MultiGzDecoder`).

use std::io::Write;

use crate::grain::Deflater;
use crate::{Error, Result};

/// RFC 1952 2.3: ID1 ID2, CM = 8 (deflate), FLG = 0 (no name, no extra),
/// MTIME = 0 (none), XFL = 0, OS = 3 (Unix).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A gzip file being written into `out`, a member at a time.
pub struct GzipMembers<W: Write> {
    out: W,
    /// Compressed bytes written to `out` so far.
    written: u64,
    /// For the pieces compressed here.
    z: Deflater,
}

impl<W: Write> GzipMembers<W> {
    /// A file with no member yet.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            z: Deflater::new(),
        }
    }

    /// Appends a member of `deflate`, a whole deflate stream that decodes
    /// to `len` bytes whose CRC-32 is `crc`.
    pub fn put_deflated(&mut self, deflate: &[u8], crc: u32, len: u64) -> Result<()> {
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        // RFC 1952: ISIZE is the input size modulo 2^32.
        trailer[4..].copy_from_slice(&(len as u32).to_le_bytes());
        self.put(&HEADER)?;
        self.put(deflate)?;
        self.put(&trailer)
    }

    /// Compresses `data` here as one member (for small pieces).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let mut deflate = Vec::new();
        self.z.deflate(data, &mut deflate)?;
        self.put_deflated(&deflate, crc32fast::hash(data), data.len() as u64)
    }

    /// Writes `data` as the last member; gives back the writer and the
    /// file's length.
    pub fn finish(mut self, data: &[u8]) -> Result<(W, u64)> {
        self.write(data)?;
        Ok((self.out, self.written))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing gzip at byte {}", self.written), e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(z: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(z)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn pieces_and_deflated_grains_make_members_that_read_as_one_file() {
        let head: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        let grain: Vec<u8> = (0..65536u32).map(|i| (i / 5 % 251) as u8).collect();
        let short = &grain[..4096];
        let mut d = Deflater::new();
        let mut g = GzipMembers::new(Vec::new());
        g.write(&head).unwrap();
        for data in [&grain[..], short] {
            let mut packed = Vec::new();
            let gr = d.grain(data, &mut packed).unwrap();
            g.put_deflated(&packed[gr.deflate.clone()], gr.crc32, u64::from(gr.len))
                .unwrap();
        }
        let (z, len) = g.finish(&[0u8; 1024]).unwrap();
        assert_eq!(len, z.len() as u64);
        assert_eq!(&z[..10], &HEADER);
        let mut want = head.clone();
        want.extend_from_slice(&grain);
        want.extend_from_slice(short);
        want.extend_from_slice(&[0u8; 1024]);
        // MultiGzDecoder checks each member's CRC-32 and ISIZE.
        assert!(gunzip(&z) == want, "round trip differs");
        // A corrupted CRC-32 is caught: the trailers are real.
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        let mut back = Vec::new();
        assert!(flate2::read::MultiGzDecoder::new(&bad[..])
            .read_to_end(&mut back)
            .is_err());
    }
}
