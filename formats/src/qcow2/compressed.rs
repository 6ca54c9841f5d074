//! The compressed qcow2 writer: data first, tables after, header last.
//!
//! ```text
//! cluster 0 | compressed streams packed byte by byte (qemu's layout) ... | L1 | L2 ... | refcount table | blocks
//! header     an incompressible cluster is stored whole, cluster aligned
//! ```
//!
//! Whole clusters are gathered in jobs and compressed on the worker pool
//! ([`crate::pool`]); results are placed strictly in job order, so the bytes never
//! depend on the number of threads or on timing. All-zero clusters are left
//! unallocated (they read as zeros), as `qemu-img convert` does.
//!
//! Without a compression kind the same writer stores every non-zero
//! cluster whole: what `WriteOptions::detect_zeros` asks for, where the
//! allocation map given to `begin` may hold zeros (a converted image's).
//!
//! Refcounts (qcow2.rst + formats-facts §1.3): each host cluster a
//! compressed stream touches gets +1 per stream; a stream never starts in a
//! cluster whose count would overflow 16 bits.

use std::collections::BTreeMap;
use std::fs::File;

use super::compress::Compressor;
use super::geometry::Geometry;
use super::header::CompressionType;
use super::refcount::{self, MAX_REFCOUNT};
use super::seqwrite::SeqWriter;
use super::tables::{encode_compressed, encode_l1, encode_standard};
use crate::io::WriteAt;
use crate::pool::OrderedPool;
use crate::{Compression, Error, Result};

/// Bytes of guest data per job.
const JOB_BYTES: u64 = 2 << 20;

/// A batch of whole guest clusters to compress.
struct Job {
    clusters: Vec<u64>,
    data: Vec<u8>,
}

/// What became of one cluster.
enum Item {
    /// All zeros: left unallocated.
    Zero,
    /// Compressed bytes at this range of `Done::packed`.
    Compressed(std::ops::Range<usize>),
    /// Did not shrink: stored as is.
    Raw,
}

struct Done {
    clusters: Vec<u64>,
    data: Vec<u8>,
    packed: Vec<u8>,
    items: Vec<Item>,
}

/// Streams compressed clusters; see the module doc.
pub struct CompressedWriter {
    /// Clusters being gathered, and their bytes.
    clusters: Vec<u64>,
    data: Vec<u8>,
    per_job: usize,
    pool: OrderedPool<Job, Result<Done>>,
    placer: Placer,
}

/// The file and its tables, filled as jobs come back in order.
struct Placer {
    out: SeqWriter,
    geo: Geometry,
    kind: Option<Compression>,
    /// Job buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Next free host byte.
    pos: u64,
    /// Refcount of each host cluster below `pos`.
    counts: Vec<u16>,
    /// L2 tables by L1 index.
    l2: BTreeMap<u64, Vec<u64>>,
}

impl CompressedWriter {
    /// Starts the worker pool; data starts at cluster 1.
    pub fn begin(
        file: File,
        geo: Geometry,
        kind: Option<Compression>,
        threads: usize,
    ) -> Result<Self> {
        let cs = usize::try_from(geo.cs).expect("cluster is at most 2 MiB");
        let per_job = usize::try_from((JOB_BYTES / geo.cs).max(1)).expect("small");
        let pool = OrderedPool::start(
            "qcow2-compress",
            "compressing qcow2 clusters",
            threads,
            || kind.map(|k| Compressor::new(k, cs)).transpose(),
            move |compressor: &mut Option<Compressor>, job: Job| {
                Ok(compress_job(compressor.as_mut(), job, cs))
            },
        )?;
        Ok(Self {
            clusters: Vec::with_capacity(per_job),
            data: Vec::with_capacity(per_job * cs),
            per_job,
            pool,
            placer: Placer {
                out: SeqWriter::new(file),
                geo,
                kind,
                spare: Vec::new(),
                pos: geo.cs,
                counts: vec![1],
                l2: BTreeMap::new(),
            },
        })
    }

    /// Gathers `data` into whole clusters; full jobs go to the workers.
    pub fn write(&mut self, mut offset: u64, mut data: &[u8]) -> Result<()> {
        let geo = self.placer.geo;
        let cs = geo.cs;
        let cs_usize = usize::try_from(cs).expect("cluster is at most 2 MiB");
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > geo.size)
        {
            return Err(Error::ExtentOutsideDisk {
                offset,
                len: data.len() as u64,
                size: geo.size,
            });
        }
        while !data.is_empty() {
            let g = offset / cs;
            let within = usize::try_from(offset % cs).expect("below cluster size");
            let n = (cs_usize - within).min(data.len());
            match self.clusters.last() {
                Some(&last) if last == g => {}
                Some(&last) if last > g => {
                    return Err(Error::InvalidOption {
                        option: "write order",
                        detail: format!(
                            "data at disk offset {offset} arrived after cluster {last}"
                        ),
                    });
                }
                _ => {
                    if self.clusters.len() == self.per_job {
                        self.submit()?;
                    }
                    self.clusters.push(g);
                    self.data.resize(self.data.len() + cs_usize, 0);
                }
            }
            let base = (self.clusters.len() - 1) * cs_usize + within;
            self.data[base..base + n].copy_from_slice(&data[..n]);
            offset += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Hands the gathered clusters to the pool, placing finished jobs.
    fn submit(&mut self) -> Result<()> {
        if self.clusters.is_empty() {
            return Ok(());
        }
        let mut data = self.placer.spare.pop().unwrap_or_default();
        data.clear();
        std::mem::swap(&mut data, &mut self.data);
        let job = Job {
            clusters: std::mem::take(&mut self.clusters),
            data,
        };
        let placer = &mut self.placer;
        self.pool.submit(job, &mut |done| placer.place(done?))
    }

    /// Drains the pool, then writes L1, L2s, refcounts and the header.
    pub fn finish(mut self) -> Result<(u64, u64)> {
        self.submit()?;
        let mut placer = self.placer;
        self.pool.finish(&mut |done| placer.place(done?))?;
        placer.finish()
    }
}

impl Placer {
    /// Writes one job's clusters at `pos` and records their L2 entries.
    fn place(&mut self, done: Done) -> Result<()> {
        let cs = self.geo.cs;
        let cs_usize = usize::try_from(cs).expect("cluster is at most 2 MiB");
        for (k, (&g, item)) in done.clusters.iter().zip(&done.items).enumerate() {
            let entry = match item {
                Item::Zero => continue,
                Item::Compressed(r) => {
                    let len = r.len() as u64;
                    let first =
                        usize::try_from(self.pos / cs).expect("host cluster index fits memory");
                    if self.counts.get(first).is_some_and(|&c| c == MAX_REFCOUNT) {
                        self.pos = self.pos.next_multiple_of(cs);
                    }
                    let at = self.pos;
                    self.out.write_at(at, &done.packed[r.clone()])?;
                    self.count(at, len);
                    self.pos += len;
                    encode_compressed(at, len, self.geo.cluster_bits)
                }
                Item::Raw => {
                    let at = self.pos.next_multiple_of(cs);
                    self.out
                        .write_at(at, &done.data[k * cs_usize..(k + 1) * cs_usize])?;
                    self.count(at, cs);
                    self.pos = at + cs;
                    encode_standard(at)
                }
            };
            let table = self.l2.entry(g / self.geo.l2_entries).or_insert_with(|| {
                vec![0u64; usize::try_from(self.geo.l2_entries).expect("small")]
            });
            table[usize::try_from(g % self.geo.l2_entries).expect("below l2_entries")] = entry;
        }
        let mut data = done.data;
        data.clear();
        self.spare.push(data);
        Ok(())
    }

    /// +1 on every host cluster `len` bytes at `at` touch.
    fn count(&mut self, at: u64, len: u64) {
        let cs = self.geo.cs;
        let (first, last) = (at / cs, (at + len - 1) / cs);
        let need = usize::try_from(last + 1).expect("host cluster index fits memory");
        if self.counts.len() < need {
            self.counts.resize(need, 0);
        }
        for c in first..=last {
            let slot = &mut self.counts[usize::try_from(c).expect("checked above")];
            *slot = slot.saturating_add(1);
        }
    }

    /// Writes L1, the L2s, the refcounts and the header.
    fn finish(mut self) -> Result<(u64, u64)> {
        let geo = self.geo;
        let cs = geo.cs;
        let data_end = self.pos.next_multiple_of(cs);
        let l1_offset = data_end;
        let l2_offset = l1_offset + geo.l1_clusters * cs;
        let l2_count = self.l2.len() as u64;
        let rt_offset = l2_offset + l2_count * cs;
        let rc = refcount::plan(rt_offset / cs, cs)?;
        let rb_offset = rt_offset + rc.table_clusters * cs;
        let total = rb_offset / cs + rc.blocks;

        let mut l1 =
            vec![0u8; usize::try_from(geo.l1_clusters * cs).expect("L1 checked against 32 MiB")];
        for (k, &i) in self.l2.keys().enumerate() {
            let at = usize::try_from(i * 8).expect("inside L1");
            l1[at..at + 8].copy_from_slice(&encode_l1(l2_offset + k as u64 * cs).to_be_bytes());
        }
        self.out.write_at(l1_offset, &l1)?;
        for (k, table) in std::mem::take(&mut self.l2).into_values().enumerate() {
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.out.write_at(l2_offset + k as u64 * cs, &bytes)?;
        }
        let counts = std::mem::take(&mut self.counts);
        let data_clusters = data_end / cs;
        let count = |c: u64| match c {
            c if c < data_clusters => usize::try_from(c)
                .ok()
                .and_then(|i| counts.get(i).copied())
                .unwrap_or(0),
            c if c < total => 1,
            _ => 0,
        };
        self.out
            .write_at(rt_offset, &refcount::encode_table(rc, rb_offset, cs))?;
        for i in 0..rc.blocks {
            self.out
                .write_at(rb_offset + i * cs, &refcount::encode_block(i, cs, count))?;
        }
        let ctype = match self.kind {
            None | Some(Compression::Zlib) => CompressionType::Deflate,
            Some(Compression::Zstd) => CompressionType::Zstd,
        };
        let mut file = self.out.finish(total * cs)?;
        let header = geo.header(l1_offset, rt_offset, rc, ctype).encode();
        file.write_all_at(&header, 0)
            .map_err(|e| Error::io("writing the qcow2 header", e))?;
        Ok((geo.size, total * cs))
    }
}

/// Compresses one job's clusters (stores them whole without a compressor).
fn compress_job(mut compressor: Option<&mut Compressor>, job: Job, cs: usize) -> Done {
    let mut packed = Vec::with_capacity(job.data.len() / 2);
    let mut items = Vec::with_capacity(job.clusters.len());
    for cluster in job.data.chunks_exact(cs) {
        items.push(if cluster.iter().all(|&b| b == 0) {
            Item::Zero
        } else if let Some(c) = compressor.as_mut().and_then(|c| c.compress(cluster)) {
            let start = packed.len();
            packed.extend_from_slice(c);
            Item::Compressed(start..packed.len())
        } else {
            Item::Raw
        });
    }
    Done {
        clusters: job.clusters,
        data: job.data,
        packed,
        items,
    }
}
