//! One gzip member (RFC 1952) assembled from runs of deflate blocks made
//! elsewhere, in the manner of pigz: each run is a sequence of non-final
//! deflate blocks ending on a byte boundary (a sync flush), compressed
//! without the data before it, and the member ends with one final block.
//!
//! ```text
//! header (10 bytes: mtime 0, no name, OS 3) | run | run | … | final run | CRC-32 | ISIZE
//! ```
//!
//! The runs are the deflated grains of [`crate::grain`] (deflated once for
//! the VMDK and the gzip alike) and small pieces compressed here (tar
//! headers, the archive's end). The CRC-32 of each run's input is combined
//! in order (crc32fast).

use std::io::Write;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::{Error, Result};

/// RFC 1952 2.3: ID1 ID2, CM = 8 (deflate), FLG = 0 (no name, no extra),
/// MTIME = 0 (none), XFL = 0, OS = 3 (Unix).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// A gzip member being written into `out`.
pub struct GzipStream<W: Write> {
    out: W,
    /// Compressed bytes written to `out` so far.
    written: u64,
    crc: crc32fast::Hasher,
    /// Uncompressed bytes so far (ISIZE is this modulo 2^32).
    total_in: u64,
    /// For the pieces compressed here.
    z: Compress,
}

impl<W: Write> GzipStream<W> {
    /// Starts a member (writes the header).
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(&HEADER)
            .map_err(|e| Error::io("writing the gzip header", e))?;
        Ok(Self {
            out,
            written: HEADER.len() as u64,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            z: Compress::new(Compression::new(crate::grain::LEVEL), false),
        })
    }

    /// Appends `run`: non-final deflate blocks ending on a byte boundary,
    /// that decode to `len` bytes whose CRC-32 is `crc`.
    pub fn put_deflated(&mut self, run: &[u8], crc: u32, len: u64) -> Result<()> {
        self.crc
            .combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
        self.total_in += len;
        self.put(run)
    }

    /// Compresses `data` here as one run (for small pieces).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let run = self.deflate(data, FlushCompress::Sync)?;
        self.put_deflated(&run, crc32fast::hash(data), data.len() as u64)
    }

    /// Compresses `data` as the final run, writes the trailer; gives back
    /// the writer and the member's length.
    pub fn finish(mut self, data: &[u8]) -> Result<(W, u64)> {
        let run = self.deflate(data, FlushCompress::Finish)?;
        self.put_deflated(&run, crc32fast::hash(data), data.len() as u64)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // RFC 1952: ISIZE is the input size modulo 2^32.
        trailer[4..].copy_from_slice(&(self.total_in as u32).to_le_bytes());
        self.put(&trailer)?;
        Ok((self.out, self.written))
    }

    /// Raw deflate of `data` on its own: sync-flushed, or final.
    fn deflate(&mut self, data: &[u8], flush: FlushCompress) -> Result<Vec<u8>> {
        self.z.reset();
        // Room for the worst case (stored blocks), so one call completes.
        let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 256);
        let status = self
            .z
            .compress_vec(data, &mut out, flush)
            .map_err(|e| Error::io("deflating a gzip piece", std::io::Error::other(e)))?;
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => self.z.total_in() == data.len() as u64 && out.len() < out.capacity(),
        };
        if !done {
            return Err(Error::io(
                "deflating a gzip piece",
                std::io::Error::other(format!("deflate stopped early ({status:?})")),
            ));
        }
        Ok(out)
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
    use crate::grain::Deflater;

    fn gunzip(z: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(z)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn pieces_and_deflated_grains_make_one_member() {
        let head: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        let grain: Vec<u8> = (0..65536u32).map(|i| (i / 5 % 251) as u8).collect();
        let short = &grain[..4096];
        let mut d = Deflater::new();
        let mut g = GzipStream::new(Vec::new()).unwrap();
        g.write(&head).unwrap();
        for data in [&grain[..], short] {
            let mut packed = Vec::new();
            let gr = d.grain(data, &mut packed).unwrap();
            g.put_deflated(&packed[gr.body.clone()], gr.crc32, u64::from(gr.len))
                .unwrap();
        }
        let (z, len) = g.finish(&[0u8; 1024]).unwrap();
        assert_eq!(len, z.len() as u64);
        assert_eq!(&z[..10], &HEADER);
        let mut want = head.clone();
        want.extend_from_slice(&grain);
        want.extend_from_slice(short);
        want.extend_from_slice(&[0u8; 1024]);
        // GzDecoder checks the CRC-32 and ISIZE, and that one member ends it.
        assert!(gunzip(&z) == want, "round trip differs");
    }
}
