//! Deflate once: the disk cut into 64 KiB grains, each grain deflated once
//! for every output that stores the same disk data deflated, the
//! streamOptimized VMDK (inside an OVA) and GCE's tar.gz.
//!
//! ```text
//! disk data ─► GrainStage (per grain, per disk: shared if every piece is common)
//!                 └─► worker pool: zlib stream per grain ─► GrainBatch, in order
//!                         ├──► VMDK: the whole zlib stream is the grain
//!                         └──► gzip: the deflate stream inside it, one member per grain
//! ```
//!
//! Each grain is deflated on its own (no dictionary from the grain before)
//! by libdeflate into a zlib stream (RFC 1950):
//!
//! ```text
//! 78 xx | deflate stream of the grain's data (RFC 1951, last block final) | Adler-32
//! ```
//!
//! The whole stream is a VMDK grain (VMDK 1.1 "Stream-Optimized Compressed
//! Sparse Extents": each grain is a zlib stream of the grain's bytes). The
//! deflate stream inside it, framed by a gzip header and the grain's CRC-32
//! and length, is a gzip member; a gzip file is a series of members (RFC
//! 1952 2.2), which is how GCE's tar.gz is written (see
//! [`crate::package::gzip`]). A short last grain is the exception: the
//! VMDK's grain is the data padded with zeros to [`GRAIN`], the gzip's
//! member the data alone, so it is deflated twice.
//!
//! The bytes depend only on the grain's data and [`LEVEL`], never on the
//! threads, the jobs or which other outputs share the grains: an OVA built
//! alone is byte-identical to one built beside a tar.gz.

use std::collections::BTreeMap;
use std::ops::Range;

use libdeflater::{CompressionLvl, Compressor};

use crate::pool::OrderedPool;
use crate::{Error, Result};

/// Bytes per grain: the VMDK grain (128 sectors).
pub const GRAIN: u64 = 64 << 10;
/// libdeflate level of every grain; see docs/performance.md for the choice.
pub const LEVEL: i32 = 3;
/// Grains per job handed to a worker.
const GRAINS_PER_JOB: usize = 32;

/// A grain of zeros.
pub(crate) static ZEROS: [u8; GRAIN as usize] = [0; GRAIN as usize];

/// One grain deflated; its bytes are ranges of [`GrainBatch::packed`].
#[derive(Clone, Debug)]
pub struct Grain {
    /// The disks (bit `1 << i` for disk `i` of the write) whose grain this is.
    pub disks: u64,
    /// Grain index: the grain covers disk bytes `index * GRAIN ..`.
    pub index: u64,
    /// Bytes of disk data: [`GRAIN`], less for the last grain of a disk
    /// whose size is not a multiple of it.
    pub len: u32,
    /// Every byte is zero (a VMDK leaves the grain out).
    pub zero: bool,
    /// CRC-32 (gzip's) of the `len` bytes.
    pub crc32: u32,
    /// The zlib stream of the grain padded with zeros to [`GRAIN`].
    pub zlib: Range<usize>,
    /// The deflate stream of the `len` bytes: inside `zlib` for a whole
    /// grain, after it for a short last grain.
    pub deflate: Range<usize>,
}

/// Consecutive deflated grains, in disk order per disk.
#[derive(Debug, Default)]
pub struct GrainBatch {
    /// The grains.
    pub grains: Vec<Grain>,
    /// Their bytes.
    pub packed: Vec<u8>,
}

impl GrainBatch {
    /// The grains of disk bit `disk`.
    pub fn of(&self, disk: u64) -> impl Iterator<Item = &Grain> {
        self.grains.iter().filter(move |g| g.disks & disk != 0)
    }
}

/// A sink that takes its disk data as deflated grains (see
/// [`crate::ImageSink::grain_sink`]).
pub trait GrainSink {
    /// Worker threads the sink was asked to compress on.
    fn threads(&self) -> usize;

    /// The next grains of the disk whose bit is `disk`, in increasing index
    /// order. Every grain that overlaps the allocated ranges given to
    /// `begin` comes once, unless it was never written (then it is zeros).
    fn write_grains(&mut self, batch: &GrainBatch, disk: u64) -> Result<()>;
}

/// One disk's bytes of a grain being gathered.
struct Slot {
    data: Vec<u8>,
    /// Every piece so far was common to all the stage's disks.
    shared: bool,
}

/// A grain of one or more disks, to deflate.
struct Item {
    disks: u64,
    index: u64,
    data: Vec<u8>,
}

/// What the stage knows of one disk's data.
struct DiskState {
    size: u64,
    allocated: Vec<Range<u64>>,
    /// First allocated range that may still receive data.
    next_range: usize,
    /// End of the last piece received.
    pos: u64,
    /// Grain of the last piece received (`u64::MAX` once finished).
    last_grain: Option<u64>,
}

impl DiskState {
    /// No more data can come for grain `g` of this disk: a later grain has
    /// been received, or the next allocated byte lies beyond the grain.
    fn done_with(&mut self, g: u64) -> bool {
        if self.last_grain.is_some_and(|l| l > g) {
            return true;
        }
        while self
            .allocated
            .get(self.next_range)
            .is_some_and(|r| r.end <= self.pos)
        {
            self.next_range += 1;
        }
        let next = self
            .allocated
            .get(self.next_range)
            .map_or(u64::MAX, |r| r.start.max(self.pos));
        next >= g.saturating_add(1).saturating_mul(GRAIN)
    }
}

/// Cuts the data of up to 64 disks into grains and deflates each distinct
/// grain once on the worker pool, handing the results over in grain order
/// (within a grain, by disk). A grain is deflated once for several disks
/// when every piece of it was handed over for all of them together (the
/// tee's mask), so their bytes are the same.
///
/// Each disk's pieces come in increasing order, but two disks' pieces may
/// interleave (the tee visits extents by their start, and one disk's extent
/// may span another's): a grain is deflated once no disk can add to it
/// any more. Memory is bounded by that lag (at most the longest extent one
/// disk has and another has not, in practice a file of the ESP) plus the
/// pool's jobs in flight.
pub struct GrainStage {
    pool: OrderedPool<Vec<Item>, Result<GrainBatch>>,
    /// The disks served (bits), and what is known of each (by bit index).
    members: u64,
    disks: Vec<Option<DiskState>>,
    /// Grains being gathered: each disk's bytes of it.
    pending: BTreeMap<u64, Vec<Option<Slot>>>,
    job: Vec<Item>,
}

impl GrainStage {
    /// A stage for `disks`: (bit index, size, allocated ranges) of each.
    pub fn new(disks: Vec<(usize, u64, Vec<Range<u64>>)>, threads: usize) -> Result<Self> {
        let pool = OrderedPool::start(
            "grain-deflate",
            "deflating grains",
            threads,
            || Ok(Deflater::new()),
            |d: &mut Deflater, items: Vec<Item>| d.job(items),
        )?;
        let count = disks.iter().map(|d| d.0 + 1).max().unwrap_or(0);
        if count > 64 {
            return Err(Error::InvalidOption {
                option: "disks",
                detail: format!("disk index {} (at most 63)", count - 1),
            });
        }
        let mut members = 0u64;
        let mut states: Vec<Option<DiskState>> = (0..count).map(|_| None).collect();
        for (i, size, allocated) in disks {
            members |= 1 << i;
            states[i] = Some(DiskState {
                size,
                allocated,
                next_range: 0,
                pos: 0,
                last_grain: None,
            });
        }
        Ok(Self {
            pool,
            members,
            disks: states,
            pending: BTreeMap::new(),
            job: Vec::with_capacity(GRAINS_PER_JOB),
        })
    }

    /// `data` at `offset` of every disk in `mask` (each disk's offsets
    /// increase); finished batches go to `each`, in order.
    pub fn push(
        &mut self,
        offset: u64,
        data: &[u8],
        mask: u64,
        each: &mut dyn FnMut(GrainBatch) -> Result<()>,
    ) -> Result<()> {
        let mask = mask & self.members;
        if mask == 0 || data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        for bit in bits(mask) {
            let d = self.disk(bit);
            if offset < d.pos || end > d.size {
                return Err(Error::InvalidOption {
                    option: "write order",
                    detail: format!(
                        "{} bytes at disk offset {offset} arrived after offset {} or past the end ({})",
                        data.len(),
                        d.pos,
                        d.size
                    ),
                });
            }
        }
        let shared = mask == self.members;
        let width = self.disks.len();
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / GRAIN;
            let within = usize::try_from(at % GRAIN).expect("below GRAIN");
            let n = rest.len().min(GRAIN as usize - within);
            let slots = self
                .pending
                .entry(index)
                .or_insert_with(|| (0..width).map(|_| None).collect());
            for bit in bits(mask) {
                let i = bit.trailing_zeros() as usize;
                let size = self.disks[i].as_ref().expect("a member").size;
                let len =
                    usize::try_from((size - index * GRAIN).min(GRAIN)).expect("at most GRAIN");
                let slot = slots[i].get_or_insert_with(|| Slot {
                    data: vec![0; len],
                    shared: true,
                });
                slot.shared &= shared;
                slot.data[within..within + n].copy_from_slice(&rest[..n]);
            }
            at += n as u64;
            rest = &rest[n..];
        }
        for bit in bits(mask) {
            let d = self.disk(bit);
            d.pos = end;
            d.last_grain = Some((end - 1) / GRAIN);
        }
        self.ready(each)
    }

    /// Deflates what is left and hands over the last batches.
    pub fn finish(mut self, each: &mut dyn FnMut(GrainBatch) -> Result<()>) -> Result<()> {
        for d in self.disks.iter_mut().flatten() {
            d.last_grain = Some(u64::MAX);
        }
        self.ready(each)?;
        self.submit(each)?;
        self.pool.finish(&mut |b| each(b?))
    }

    fn disk(&mut self, bit: u64) -> &mut DiskState {
        self.disks[bit.trailing_zeros() as usize]
            .as_mut()
            .expect("bits of members only")
    }

    /// Turns every grain no disk can add to into items: one for the disks
    /// that share it, one for each other disk.
    fn ready(&mut self, each: &mut dyn FnMut(GrainBatch) -> Result<()>) -> Result<()> {
        while let Some(entry) = self.pending.first_entry() {
            let index = *entry.key();
            if !self.disks.iter_mut().flatten().all(|d| d.done_with(index)) {
                return Ok(());
            }
            let slots = entry.remove();
            let mut shared: Option<Item> = None;
            for (i, slot) in slots.into_iter().enumerate() {
                let Some(slot) = slot else { continue };
                let bit = 1u64 << i;
                match &mut shared {
                    Some(item) if slot.shared && item.data.len() == slot.data.len() => {
                        item.disks |= bit;
                    }
                    None if slot.shared => {
                        shared = Some(Item {
                            disks: bit,
                            index,
                            data: slot.data,
                        });
                    }
                    _ => self.job.push(Item {
                        disks: bit,
                        index,
                        data: slot.data,
                    }),
                }
            }
            self.job.extend(shared);
            if self.job.len() >= GRAINS_PER_JOB {
                self.submit(each)?;
            }
        }
        Ok(())
    }

    fn submit(&mut self, each: &mut dyn FnMut(GrainBatch) -> Result<()>) -> Result<()> {
        if self.job.is_empty() {
            return Ok(());
        }
        let job = std::mem::replace(&mut self.job, Vec::with_capacity(GRAINS_PER_JOB));
        self.pool.submit(job, &mut |b| each(b?))
    }
}

/// The set bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let bit = mask & mask.wrapping_neg();
            mask &= !bit;
            bit
        })
    })
}

/// A worker's compressor, and the deflated zero grain it reuses (zlib
/// stream, and the deflate stream inside it).
pub struct Deflater {
    z: Compressor,
    zero: Option<(Vec<u8>, Range<usize>)>,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    /// A compressor at [`LEVEL`].
    pub fn new() -> Self {
        Self {
            z: Compressor::new(CompressionLvl::new(LEVEL).expect("a level libdeflate has")),
            zero: None,
        }
    }

    fn job(&mut self, items: Vec<Item>) -> Result<GrainBatch> {
        let mut batch = GrainBatch {
            grains: Vec::with_capacity(items.len()),
            packed: Vec::with_capacity(items.len() * GRAIN as usize / 2),
        };
        for item in items {
            let g = self.grain(&item.data, &mut batch.packed)?;
            batch.grains.push(Grain {
                disks: item.disks,
                index: item.index,
                ..g
            });
        }
        Ok(batch)
    }

    /// Deflates one grain (`data`: at most [`GRAIN`] bytes) onto `packed`;
    /// the result's `disks` and `index` are left 0.
    pub fn grain(&mut self, data: &[u8], packed: &mut Vec<u8>) -> Result<Grain> {
        let zero = data.iter().all(|&b| b == 0);
        let start = packed.len();
        let (zlib, deflate) = if data.len() == GRAIN as usize {
            let inner = if zero {
                if self.zero.is_none() {
                    let mut z = Vec::new();
                    let inner = self.zlib(&ZEROS, &mut z)?;
                    self.zero = Some((z, inner));
                }
                let (z, inner) = self.zero.as_ref().expect("made above");
                packed.extend_from_slice(z);
                inner.clone()
            } else {
                self.zlib(data, packed)?
            };
            let deflate = start + inner.start..start + inner.end;
            (start..packed.len(), deflate)
        } else {
            // A short last grain: the VMDK's grain is the data padded with
            // zeros, the gzip's member the data alone.
            let mut padded = data.to_vec();
            padded.resize(GRAIN as usize, 0);
            self.zlib(&padded, packed)?;
            let zlib = start..packed.len();
            (zlib, self.deflate(data, packed)?)
        };
        Ok(Grain {
            disks: 0,
            index: 0,
            len: u32::try_from(data.len()).expect("at most GRAIN"),
            zero,
            crc32: if zero && data.len() == GRAIN as usize {
                zero_crc()
            } else {
                crc32fast::hash(data)
            },
            zlib,
            deflate,
        })
    }

    /// Appends the zlib stream of `data` (RFC 1950: 2-byte header, deflate
    /// stream, Adler-32); returns where its deflate stream lies, relative
    /// to the stream's start.
    fn zlib(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Range<usize>> {
        let bound = self.z.zlib_compress_bound(data.len());
        let r = append(out, bound, |o| self.z.zlib_compress(data, o))?;
        Ok(2..r.len() - 4)
    }

    /// Appends the raw deflate stream of `data` (RFC 1951, its last block
    /// final); returns its range in `out`.
    pub fn deflate(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Range<usize>> {
        let bound = self.z.deflate_compress_bound(data.len());
        append(out, bound, |o| self.z.deflate_compress(data, o))
    }
}

/// Appends what `compress` writes into room for `bound` bytes at the end
/// of `out`; returns its range.
fn append(
    out: &mut Vec<u8>,
    bound: usize,
    compress: impl FnOnce(&mut [u8]) -> std::result::Result<usize, libdeflater::CompressionError>,
) -> Result<Range<usize>> {
    let start = out.len();
    out.resize(start + bound, 0);
    let n = compress(&mut out[start..]).map_err(|e| err(format!("{e:?}")))?;
    out.truncate(start + n);
    Ok(start..start + n)
}

/// CRC-32 of a whole zero grain.
fn zero_crc() -> u32 {
    static CRC: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CRC.get_or_init(|| crc32fast::hash(&ZEROS))
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::io("deflating a grain", std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i / 11 % 251) as u8 ^ seed.wrapping_mul((i % 7) as u8))
            .collect()
    }

    /// Each disk's grains, inflated from their zlib streams, keyed by index.
    type Grains = Vec<BTreeMap<u64, Vec<u8>>>;

    /// The disks' grains, how many grains were deflated in all, and all
    /// their zlib streams in order.
    fn run(
        disks: &[(usize, u64, Vec<Range<u64>>)],
        pieces: &[(u64, Vec<u8>, u64)],
        threads: usize,
    ) -> (Grains, usize, Vec<u8>) {
        let mut stage = GrainStage::new(disks.to_vec(), threads).unwrap();
        let mut out: Vec<BTreeMap<u64, Vec<u8>>> = vec![BTreeMap::new(); disks.len()];
        let mut count = 0;
        let mut all = Vec::new();
        let mut each = |b: GrainBatch| {
            count += b.grains.len();
            for g in &b.grains {
                all.extend_from_slice(&b.packed[g.zlib.clone()]);
                for (k, (i, _, _)) in disks.iter().enumerate() {
                    if g.disks & (1 << i) != 0 {
                        let mut back = Vec::new();
                        flate2::read::ZlibDecoder::new(&b.packed[g.zlib.clone()])
                            .read_to_end(&mut back)
                            .unwrap();
                        assert_eq!(back.len(), GRAIN as usize, "padded to a grain");
                        back.truncate(g.len as usize);
                        assert_eq!(g.crc32, crc32fast::hash(&back));
                        let last = out[k].keys().next_back().copied();
                        assert!(last < Some(g.index), "disk {i}: grains in order");
                        out[k].insert(g.index, back);
                    }
                }
            }
            Ok(())
        };
        for (offset, data, mask) in pieces {
            stage.push(*offset, data, *mask, &mut each).unwrap();
        }
        stage.finish(&mut each).unwrap();
        (out, count, all)
    }

    /// Two disks: a common start, then disk 0 has one long extent while disk
    /// 1 has a short one that starts inside it (the tee sends disk 0's
    /// whole extent first), then common data again, and a short last grain.
    #[test]
    fn shared_grains_are_deflated_once_and_interleaved_disks_stay_apart() {
        let g = GRAIN;
        let size = 10 * g + 4096;
        let common = pattern(1, 2 * g as usize + 100);
        let long = pattern(2, 3 * g as usize);
        let short = pattern(3, 1000);
        let tail = pattern(4, (g + 4096) as usize);
        let pieces = vec![
            (0, common.clone(), 0b11),
            (3 * g, long.clone(), 0b01),
            (4 * g + 10, short.clone(), 0b10),
            (9 * g, tail.clone(), 0b11),
        ];
        let disks = vec![
            (0, size, vec![0..2 * g + 100, 3 * g..6 * g, 9 * g..size]),
            (
                1,
                size,
                vec![0..2 * g + 100, 4 * g + 10..4 * g + 1010, 9 * g..size],
            ),
        ];
        let (out, count, bytes) = run(&disks, &pieces, 3);
        // Grains 0, 1, 2 (partly), 9, 10 are common; 3, 4, 5 are disk 0's, 4 disk 1's.
        assert_eq!(count, 5 + 3 + 1);
        let mut want = vec![0u8; size as usize];
        want[..common.len()].copy_from_slice(&common);
        want[9 * g as usize..].copy_from_slice(&tail);
        let mut want0 = want.clone();
        want0[3 * g as usize..6 * g as usize].copy_from_slice(&long);
        let mut want1 = want;
        want1[(4 * g + 10) as usize..(4 * g + 1010) as usize].copy_from_slice(&short);
        for (k, want) in [want0, want1].iter().enumerate() {
            for (&i, grain) in &out[k] {
                let at = (i * g) as usize;
                assert!(&want[at..at + grain.len()] == grain, "disk {k} grain {i}");
            }
        }
        let idx = |k: usize| out[k].keys().copied().collect::<Vec<_>>();
        assert_eq!(idx(0), [0, 1, 2, 3, 4, 5, 9, 10]);
        assert_eq!(idx(1), [0, 1, 2, 4, 9, 10]);
        assert_eq!(out[0][&10].len(), 4096, "the short last grain");
        // The same bytes with one thread.
        assert!(run(&disks, &pieces, 1).2 == bytes);
    }

    #[test]
    fn a_grains_deflate_stream_is_the_inside_of_its_zlib_stream() {
        let mut d = Deflater::new();
        let mut packed = Vec::new();
        let data = pattern(9, GRAIN as usize);
        let gr = d.grain(&data, &mut packed).unwrap();
        assert_eq!(gr.deflate, gr.zlib.start + 2..gr.zlib.end - 4);
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&packed[gr.deflate.clone()])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        // A short grain: the zlib stream holds it padded, the deflate stream alone.
        let short = pattern(7, 5000);
        let gr = d.grain(&short, &mut packed).unwrap();
        assert_eq!(gr.deflate.start, gr.zlib.end);
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&packed[gr.deflate.clone()])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == short);
        let mut padded = Vec::new();
        flate2::read::ZlibDecoder::new(&packed[gr.zlib.clone()])
            .read_to_end(&mut padded)
            .unwrap();
        assert_eq!(padded.len(), GRAIN as usize);
        assert!(padded[..5000] == short[..] && padded[5000..].iter().all(|&b| b == 0));
        let z = d.grain(&ZEROS, &mut packed).unwrap();
        assert!(z.zero && z.crc32 == crc32fast::hash(&ZEROS));
    }
}
