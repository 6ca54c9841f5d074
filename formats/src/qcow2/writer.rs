//! The qcow2 writer (`ImageSink`).
//!
//! Uncompressed images are laid out completely in `begin`, from the
//! allocation map, so the data streams out once, in guest order:
//!
//! ```text
//! cluster 0 | L1 ... | refcount table ... | refcount blocks ... | L2 ... | data (guest order) ...
//! header      every used cluster has refcount 1, so every entry carries COPIED
//! ```
//!
//! Compressed images cannot be laid out up front (see [`super::compressed`]),
//! nor can images whose allocation map may hold zeros
//! (`WriteOptions::detect_zeros`): both go data first, tables after.

use std::fs::File;
use std::ops::Range;

use super::compressed::CompressedWriter;
use super::geometry::Geometry;
use super::header::CompressionType;
use super::refcount;
use super::seqwrite::SeqWriter;
use super::tables::{encode_l1, encode_standard};
use crate::{Compression, Error, Format, ImageSink, ImageSummary, Result, WriteOptions};

/// Default cluster size: 64 KiB, as qemu-img.
pub const DEFAULT_CLUSTER_SIZE: u32 = 65536;

/// Writes a qcow2 v3 image (compat 1.1, 16-bit refcounts, no backing file).
pub struct Qcow2Writer {
    state: State,
    cluster_bits: u32,
    compression: Option<Compression>,
    threads: usize,
    hash: bool,
    detect_zeros: bool,
}

enum State {
    New(File),
    Plain(Box<PlainWriter>),
    Compressed(Box<CompressedWriter>),
    Taken,
}

impl Qcow2Writer {
    /// A writer into `file` (which should be empty). Fails on a cluster size
    /// that is not a power of two in 512..=2 MiB.
    pub fn new(file: File, opts: &WriteOptions) -> Result<Self> {
        let cs = opts.cluster_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
        if !cs.is_power_of_two() || !(512..=(2 << 20)).contains(&cs) {
            return Err(Error::InvalidOption {
                option: "cluster_size",
                detail: format!("{cs} is not a power of two from 512 to 2097152"),
            });
        }
        let threads = match opts.threads {
            Some(0) => {
                return Err(Error::InvalidOption {
                    option: "threads",
                    detail: "0 threads cannot compress".into(),
                })
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Self {
            state: State::New(file),
            cluster_bits: cs.trailing_zeros(),
            compression: opts.compression,
            threads,
            hash: opts.hash,
            detect_zeros: opts.detect_zeros,
        })
    }
}

impl ImageSink for Qcow2Writer {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        let State::New(file) = std::mem::replace(&mut self.state, State::Taken) else {
            return Err(Error::InvalidOption {
                option: "begin",
                detail: "called twice".into(),
            });
        };
        let geo = Geometry::new(size, self.cluster_bits)?;
        self.state = match self.compression {
            // Zeros inside `allocated`: clusters are placed as they prove
            // non-zero, by the writer that places compressed ones.
            None if self.detect_zeros => State::Compressed(Box::new(CompressedWriter::begin(
                file,
                geo,
                None,
                self.threads,
            )?)),
            None => State::Plain(Box::new(PlainWriter::begin(
                file, geo, allocated, self.hash,
            )?)),
            Some(kind) => State::Compressed(Box::new(CompressedWriter::begin(
                file,
                geo,
                Some(kind),
                self.threads,
            )?)),
        };
        Ok(())
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        match &mut self.state {
            State::Plain(w) => w.write(offset, data),
            State::Compressed(w) => w.write(offset, data),
            _ => Err(Error::InvalidOption {
                option: "write_data",
                detail: "called before begin".into(),
            }),
        }
    }

    fn finish(self: Box<Self>) -> Result<ImageSummary> {
        let (virtual_size, file_size, sha256) = match self.state {
            State::Plain(w) => w.finish()?,
            State::Compressed(w) => {
                // The header is written last: the caller hashes the file.
                let (v, f) = w.finish()?;
                (v, f, None)
            }
            _ => {
                return Err(Error::InvalidOption {
                    option: "finish",
                    detail: "called before begin".into(),
                })
            }
        };
        Ok(ImageSummary {
            member: None,
            format: Format::Qcow2,
            virtual_size,
            file_size,
            sha256,
        })
    }
}

/// A run of allocated guest clusters stored back to back.
#[derive(Clone, Debug)]
struct Run {
    /// Guest cluster indices.
    guest: Range<u64>,
    /// Host byte offset of the run's first cluster.
    host: u64,
}

/// Writer for uncompressed images: everything but data is written in `begin`.
struct PlainWriter {
    out: SeqWriter,
    geo: Geometry,
    runs: Vec<Run>,
    cursor: usize,
    file_size: u64,
}

impl PlainWriter {
    fn begin(file: File, geo: Geometry, allocated: &[Range<u64>], hash: bool) -> Result<Self> {
        let cs = geo.cs;
        let guest_runs = cluster_runs(allocated, cs, geo.size)?;
        let data_clusters: u64 = guest_runs.iter().map(|r| r.end - r.start).sum();
        let l2_tables = l1_indices(&guest_runs, geo.l2_entries);
        let l2_count = l2_tables.len() as u64;
        let rc = refcount::plan(1 + geo.l1_clusters + l2_count + data_clusters, cs)?;
        let l1_offset = cs;
        let rt_offset = l1_offset + geo.l1_clusters * cs;
        let rb_offset = rt_offset + rc.table_clusters * cs;
        let l2_offset = rb_offset + rc.blocks * cs;
        let data_offset = l2_offset + l2_count * cs;
        let total = data_offset / cs + data_clusters;

        let mut runs = Vec::with_capacity(guest_runs.len());
        let mut host = data_offset;
        for g in guest_runs {
            let n = g.end - g.start;
            runs.push(Run { guest: g, host });
            host += n * cs;
        }

        let mut out = SeqWriter::with_hash(file, hash);
        out.write_at(
            0,
            &geo.header(l1_offset, rt_offset, rc, CompressionType::Deflate)
                .encode(),
        )?;
        out.write_at(l1_offset, &encode_l1_table(&geo, &l2_tables, l2_offset))?;
        out.write_at(rt_offset, &refcount::encode_table(rc, rb_offset, cs))?;
        for i in 0..rc.blocks {
            out.write_at(
                rb_offset + i * cs,
                &refcount::encode_block(i, cs, |c| u16::from(c < total)),
            )?;
        }
        write_l2_tables(&mut out, &geo, &runs, l2_offset)?;
        Ok(Self {
            out,
            geo,
            runs,
            cursor: 0,
            file_size: total * cs,
        })
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let cs = self.geo.cs;
        let g = offset / cs;
        while self.runs.get(self.cursor).is_some_and(|r| r.guest.end <= g) {
            self.cursor += 1;
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| outside(offset, data.len()))?;
        let run = self
            .runs
            .get(self.cursor)
            .ok_or_else(|| outside(offset, data.len()))?;
        if g < run.guest.start || end.div_ceil(cs) > run.guest.end {
            return Err(outside(offset, data.len()));
        }
        let host = run.host + (offset - run.guest.start * cs);
        self.out.write_at(host, data)
    }

    fn finish(self) -> Result<(u64, u64, Option<[u8; 32]>)> {
        let (_, sha256) = self.out.finish_hashed(self.file_size)?;
        Ok((self.geo.size, self.file_size, sha256))
    }
}

fn outside(offset: u64, len: usize) -> Error {
    Error::InvalidOption {
        option: "write_data",
        detail: format!(
            "{len} bytes at disk offset {offset} lie outside the ranges given to begin"
        ),
    }
}

/// The guest clusters touched by `allocated`, as merged runs of indices.
fn cluster_runs(allocated: &[Range<u64>], cs: u64, size: u64) -> Result<Vec<Range<u64>>> {
    let mut runs: Vec<Range<u64>> = Vec::new();
    for r in allocated.iter().filter(|r| r.start < r.end) {
        if r.end > size {
            return Err(Error::ExtentOutsideDisk {
                offset: r.start,
                len: r.end - r.start,
                size,
            });
        }
        let (first, last) = (r.start / cs, r.end.div_ceil(cs));
        match runs.last_mut() {
            Some(prev) if first < prev.start => {
                return Err(Error::OverlappingExtents { offset: r.start });
            }
            Some(prev) if first <= prev.end => prev.end = prev.end.max(last),
            _ => runs.push(first..last),
        }
    }
    Ok(runs)
}

/// Sorted L1 indices of the L2 tables the runs need.
fn l1_indices(runs: &[Range<u64>], l2_entries: u64) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for r in runs {
        for i in r.start / l2_entries..=(r.end - 1) / l2_entries {
            if out.last() != Some(&i) {
                out.push(i);
            }
        }
    }
    out
}

/// The L1 table: entry `l2_tables[k]` points at `l2_offset + k * cs`.
fn encode_l1_table(geo: &Geometry, l2_tables: &[u64], l2_offset: u64) -> Vec<u8> {
    let mut b =
        vec![0u8; usize::try_from(geo.l1_clusters * geo.cs).expect("L1 checked against 32 MiB")];
    for (k, &i) in l2_tables.iter().enumerate() {
        let at = usize::try_from(i * 8).expect("inside L1");
        b[at..at + 8].copy_from_slice(&encode_l1(l2_offset + k as u64 * geo.cs).to_be_bytes());
    }
    b
}

/// Writes the L2 tables in L1-index order, one cluster each.
fn write_l2_tables(
    out: &mut SeqWriter,
    geo: &Geometry,
    runs: &[Run],
    l2_offset: u64,
) -> Result<()> {
    let cs_usize = usize::try_from(geo.cs).expect("cluster is at most 2 MiB");
    let mut table = vec![0u8; cs_usize];
    let mut current: Option<u64> = None;
    let mut at = l2_offset;
    for run in runs {
        for (k, g) in run.guest.clone().enumerate() {
            let l1i = g / geo.l2_entries;
            if current != Some(l1i) {
                if current.is_some() {
                    out.write_at(at, &table)?;
                    at += geo.cs;
                    table.fill(0);
                }
                current = Some(l1i);
            }
            let slot = usize::try_from((g % geo.l2_entries) * 8).expect("inside the table");
            let host = run.host + k as u64 * geo.cs;
            table[slot..slot + 8].copy_from_slice(&encode_standard(host).to_be_bytes());
        }
    }
    if current.is_some() {
        out.write_at(at, &table)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_runs_merge_shared_clusters() {
        let runs = cluster_runs(&[0..10, 100..200, 70000..70001], 65536, 1 << 20).unwrap();
        assert_eq!(runs, vec![0..2]);
        let runs = cluster_runs(&[0..1, 200000..200001], 65536, 1 << 20).unwrap();
        assert_eq!(runs, vec![0..1, 3..4]);
    }

    #[test]
    fn cluster_runs_reject_ranges_past_the_size() {
        assert!(cluster_runs(&[0..11, 20..21], 512, 10).is_err());
    }

    #[test]
    fn l1_indices_cover_each_touched_table_once() {
        assert_eq!(
            l1_indices(&[0..2, 8191..8193, 20000..20001], 8192),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn new_rejects_bad_cluster_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for cs in [0u32, 256, 1000, 4 << 20] {
            let f = File::create(dir.path().join("x")).unwrap();
            let opts = WriteOptions {
                cluster_size: Some(cs),
                ..Default::default()
            };
            assert!(
                matches!(Qcow2Writer::new(f, &opts), Err(Error::InvalidOption { .. })),
                "{cs}"
            );
        }
    }
}
