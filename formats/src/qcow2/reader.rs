//! The qcow2 reader (`DiskImage`): the active layer of a v2 or v3 image
//! without backing file, encryption, external data file or extended L2.
//!
//! ```text
//! guest offset ─► L1[l1_index] ─► L2 table (cached) ─► entry
//!    Unallocated | Zero ─► zeros;  Standard ─► host cluster;  Compressed ─► inflate (cached)
//! ```
//! Every offset read from the file is checked against the file length before
//! use; caches are bounded (a few L2 tables and one decompressed cluster).

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::compress::decompress;
use super::header::{CompressionType, Header};
use super::tables::{decode_l1, decode_l2, L2Entry};
use super::{corrupt, truncated};
use crate::io::{be64, ReadAt};
use crate::{DiskImage, Error, Format, Result};

/// L2 tables kept in memory (each at most 2 MiB).
const L2_CACHE_TABLES: usize = 16;

/// An open qcow2 image.
pub struct Qcow2Reader {
    file: Arc<dyn ReadAt>,
    file_len: u64,
    header: Header,
    /// L1 entries, decoded: the L2 table offset or 0.
    l1: Vec<u64>,
    l2_cache: Mutex<Vec<(u64, Arc<[u64]>)>>,
    /// The last decompressed cluster, by its L2 entry's host offset.
    zcache: Mutex<Option<(u64, Arc<[u8]>)>>,
}

impl Qcow2Reader {
    /// Opens a qcow2 image file.
    pub fn from_file(file: std::fs::File) -> Result<Self> {
        let file = crate::io::SizedFile::new(file)
            .map_err(|e| Error::io("reading the qcow2 file size", e))?;
        Self::from_reader(Arc::new(file))
    }

    /// Opens a qcow2 image from any positional reader (a file, a `Vec<u8>`).
    pub fn from_reader(file: Arc<dyn ReadAt>) -> Result<Self> {
        let file_len = file.len();
        let head_len = usize::try_from(file_len.min(1 << 21)).expect("at most 2 MiB");
        // The header fits in 112 bytes plus extensions; 4 KiB is plenty.
        let mut head = vec![0u8; head_len.min(4096)];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("reading the qcow2 header", e))?;
        let header = Header::decode(&head, file_len)?;
        let l1 = read_l1(&*file, &header, file_len)?;
        Ok(Self {
            file,
            file_len,
            header,
            l1,
            l2_cache: Mutex::new(Vec::new()),
            zcache: Mutex::new(None),
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The L2 entry for guest cluster `g` (`g` below the virtual size).
    fn entry(&self, g: u64) -> Result<L2Entry> {
        let l2e = self.header.cluster_size() / 8;
        let l1i = usize::try_from(g / l2e).expect("L1 index below l1_size");
        let Some(&l2_offset) = self.l1.get(l1i) else {
            return Ok(L2Entry::Unallocated);
        };
        if l2_offset == 0 {
            return Ok(L2Entry::Unallocated);
        }
        let table = self.l2_table(l2_offset)?;
        let k = usize::try_from(g % l2e).expect("below l2 entries");
        let at = l2_offset + k as u64 * 8;
        decode_l2(
            table[k],
            self.header.cluster_bits,
            self.header.version == 3,
            at,
        )
    }

    fn l2_table(&self, offset: u64) -> Result<Arc<[u64]>> {
        let mut cache = self.l2_cache.lock().map_err(|_| poisoned())?;
        if let Some(i) = cache.iter().position(|(o, _)| *o == offset) {
            let hit = cache.remove(i);
            let table = hit.1.clone();
            cache.insert(0, hit);
            return Ok(table);
        }
        let cs = self.header.cluster_size();
        let mut raw = vec![0u8; usize::try_from(cs).expect("cluster is at most 2 MiB")];
        self.file
            .read_exact_at(&mut raw, offset)
            .map_err(|e| Error::io(format!("reading L2 table at {offset}"), e))?;
        let table: Arc<[u64]> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        cache.insert(0, (offset, table.clone()));
        cache.truncate(L2_CACHE_TABLES);
        Ok(table)
    }

    /// Fills `buf` from guest offset `offset`, which lies in one cluster.
    fn read_in_cluster(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let cs = self.header.cluster_size();
        let within = offset % cs;
        match self.entry(offset / cs)? {
            L2Entry::Unallocated | L2Entry::Zero => buf.fill(0),
            L2Entry::Standard(host) => {
                let at = host + within;
                if at
                    .checked_add(buf.len() as u64)
                    .is_none_or(|end| end > self.file_len)
                {
                    return Err(truncated("data cluster", host, cs, self.file_len));
                }
                self.file
                    .read_exact_at(buf, at)
                    .map_err(|e| Error::io(format!("reading data at {at}"), e))?;
            }
            L2Entry::Compressed { offset: host, len } => {
                let cluster = self.decompressed(host, len)?;
                let w = usize::try_from(within).expect("below cluster size");
                buf.copy_from_slice(&cluster[w..w + buf.len()]);
            }
        }
        Ok(())
    }

    fn decompressed(&self, host: u64, len: u64) -> Result<Arc<[u8]>> {
        let mut cache = self.zcache.lock().map_err(|_| poisoned())?;
        if let Some((o, data)) = cache.as_ref() {
            if *o == host {
                return Ok(data.clone());
            }
        }
        if host >= self.file_len {
            return Err(truncated("compressed cluster", host, len, self.file_len));
        }
        // The descriptor's length runs to the end of the last sector, which
        // may lie past the end of a file that stops right after the stream.
        let avail = len.min(self.file_len - host);
        let mut input = vec![0u8; usize::try_from(avail).expect("at most a cluster plus a sector")];
        self.file
            .read_exact_at(&mut input, host)
            .map_err(|e| Error::io(format!("reading compressed cluster at {host}"), e))?;
        let mut out = vec![
            0u8;
            usize::try_from(self.header.cluster_size())
                .expect("cluster is at most 2 MiB")
        ];
        decompress(self.header.compression, &input, &mut out)
            .map_err(|detail| corrupt("compressed cluster", host, detail))?;
        let data: Arc<[u8]> = out.into();
        *cache = Some((host, data.clone()));
        Ok(data)
    }

    /// Calls `f(guest_cluster, entry)` for every allocated L2 entry, in order.
    fn for_each_entry(&self, mut f: impl FnMut(u64, L2Entry)) -> Result<()> {
        let l2e = self.header.cluster_size() / 8;
        let clusters = self.header.size.div_ceil(self.header.cluster_size());
        for (l1i, &l2_offset) in self.l1.iter().enumerate() {
            let first = l1i as u64 * l2e;
            if l2_offset == 0 || first >= clusters {
                continue;
            }
            let table = self.l2_table(l2_offset)?;
            for (k, &raw) in table
                .iter()
                .enumerate()
                .take(usize::try_from(clusters - first).unwrap_or(usize::MAX))
            {
                if raw == 0 {
                    continue;
                }
                let at = l2_offset + k as u64 * 8;
                let e = decode_l2(raw, self.header.cluster_bits, self.header.version == 3, at)?;
                // The map must point inside the file (a truncated image is
                // reported when it is opened for inspection, not at first read).
                match e {
                    L2Entry::Standard(host) => {
                        let cs = self.header.cluster_size();
                        if host.checked_add(cs).is_none_or(|end| end > self.file_len) {
                            return Err(truncated("data cluster", host, cs, self.file_len));
                        }
                    }
                    L2Entry::Compressed { offset, len } if offset >= self.file_len => {
                        return Err(truncated("compressed cluster", offset, len, self.file_len));
                    }
                    _ => {}
                }
                f(first + k as u64, e);
            }
        }
        Ok(())
    }

    /// Counts of (standard, compressed, zero) clusters.
    fn census(&self) -> Result<(u64, u64, u64)> {
        let (mut std, mut comp, mut zero) = (0, 0, 0);
        self.for_each_entry(|_, e| match e {
            L2Entry::Standard(_) => std += 1,
            L2Entry::Compressed { .. } => comp += 1,
            L2Entry::Zero => zero += 1,
            L2Entry::Unallocated => {}
        })?;
        Ok((std, comp, zero))
    }
}

/// Reads and decodes the L1 table (its bounds were checked with the header).
fn read_l1(file: &dyn ReadAt, h: &Header, file_len: u64) -> Result<Vec<u64>> {
    let bytes = usize::try_from(u64::from(h.l1_size) * 8).expect("L1 checked against 32 MiB");
    let mut raw = vec![0u8; bytes];
    file.read_exact_at(&mut raw, h.l1_table_offset)
        .map_err(|e| Error::io(format!("reading the L1 table at {}", h.l1_table_offset), e))?;
    let cs = h.cluster_size();
    let mut l1 = Vec::with_capacity(raw.len() / 8);
    for (i, c) in raw.chunks_exact(8).enumerate() {
        let at = h.l1_table_offset + i as u64 * 8;
        let off = decode_l1(be64(c, 0), at)?.unwrap_or(0);
        if !off.is_multiple_of(cs) {
            return Err(corrupt(
                "L1 entry",
                at,
                format!("L2 table offset {off:#x} is not cluster aligned"),
            ));
        }
        if off != 0 && off.checked_add(cs).is_none_or(|end| end > file_len) {
            return Err(truncated("L2 table", off, cs, file_len));
        }
        l1.push(off);
    }
    // No two active L1 entries share an L2 table (each has refcount 1
    // without snapshots); refusing this bounds every walk by the file size.
    let mut seen: Vec<u64> = l1.iter().copied().filter(|&o| o != 0).collect();
    seen.sort_unstable();
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(corrupt(
            "L1 table",
            h.l1_table_offset,
            format!("two entries point at L2 table {:#x}", w[0]),
        ));
    }
    Ok(l1)
}

fn poisoned() -> Error {
    Error::io(
        "qcow2 reader cache",
        io::Error::other("a reader thread panicked"),
    )
}

impl ReadAt for Qcow2Reader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        crate::io::check_range(offset, buf.len(), self.header.size)?;
        let cs = self.header.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let n = usize::try_from((cs - at % cs).min((buf.len() - done) as u64))
                .expect("below cluster size");
            self.read_in_cluster(&mut buf[done..done + n], at)
                .map_err(Error::into_io)?;
            done += n;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.header.size
    }
}

impl DiskImage for Qcow2Reader {
    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn allocated(&self) -> Result<Vec<Range<u64>>> {
        let cs = self.header.cluster_size();
        let size = self.header.size;
        let mut out: Vec<Range<u64>> = Vec::new();
        self.for_each_entry(|g, e| {
            if matches!(e, L2Entry::Standard(_) | L2Entry::Compressed { .. }) {
                let (start, end) = (g * cs, ((g + 1) * cs).min(size));
                match out.last_mut() {
                    Some(last) if last.end == start => last.end = end,
                    _ => out.push(start..end),
                }
            }
        })?;
        Ok(out)
    }

    fn facts(&self) -> Vec<(String, String)> {
        let h = &self.header;
        let mut f = vec![
            ("version".to_string(), h.version.to_string()),
            ("cluster size".to_string(), h.cluster_size().to_string()),
            (
                "refcount bits".to_string(),
                (1u64 << h.refcount_order).to_string(),
            ),
            (
                "compression type".to_string(),
                match h.compression {
                    CompressionType::Deflate => "zlib (raw deflate)".to_string(),
                    CompressionType::Zstd => "zstd".to_string(),
                },
            ),
            ("l1 size".to_string(), h.l1_size.to_string()),
            (
                "l1 table offset".to_string(),
                format!("{:#x}", h.l1_table_offset),
            ),
            (
                "refcount table offset".to_string(),
                format!("{:#x}", h.refcount_table_offset),
            ),
            (
                "refcount table clusters".to_string(),
                h.refcount_table_clusters.to_string(),
            ),
            ("snapshots".to_string(), h.nb_snapshots.to_string()),
            (
                "incompatible features".to_string(),
                format!("{:#x}", h.incompatible_features),
            ),
            (
                "compatible features".to_string(),
                format!("{:#x}", h.compatible_features),
            ),
            (
                "autoclear features".to_string(),
                format!("{:#x}", h.autoclear_features),
            ),
            ("header length".to_string(), h.header_length.to_string()),
        ];
        match self.census() {
            Ok((std, comp, zero)) => {
                f.push(("allocated clusters".to_string(), (std + comp).to_string()));
                f.push(("compressed clusters".to_string(), comp.to_string()));
                f.push(("zero clusters".to_string(), zero.to_string()));
            }
            Err(e) => f.push(("cluster map".to_string(), format!("unreadable: {e}"))),
        }
        f
    }
}
