//! `imgbuild verify DIR --rebuild RECIPE`: build the recipe again into a
//! temporary directory and compare every output with DIR's byte for byte.
//! For a differing image, the differences are shown twice: as byte ranges of
//! the file, and as ranges of the virtual disk named by what lies there
//! (protective MBR, GPT header/entries, a partition, the backup GPT), read
//! through the image's format so that a change in format metadata and a
//! change in the guest's data are told apart.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use imgbuild_formats::DiskImage;

use super::{diff_regions, read_sums, MANIFEST, SUMS};
use crate::layout::gpt;
use crate::pipeline::{build, BuildOptions};
use crate::plan::Plan;
use crate::progress::Progress;

/// Differing ranges listed per output, at most.
pub const MAX_REGIONS: usize = 16;
/// Differences closer than this are shown as one range.
const MERGE: u64 = 4096;
const CHUNK: usize = 1 << 20;
const LBA: u64 = 512;

/// A range of a virtual disk and what lies there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRange {
    /// Bytes of the virtual disk.
    pub range: Range<u64>,
    /// "protective MBR", "primary GPT header", "partition 2 root (root-x86-64) +0x…", ...
    pub what: String,
}

/// One output that differs between DIR and the rebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputDiff {
    /// File name.
    pub file: String,
    /// Why no byte comparison was made, or a remark on it.
    pub notes: Vec<String>,
    /// Differing byte ranges of the files (coalesced, at most [`MAX_REGIONS`]).
    pub file_ranges: Vec<Range<u64>>,
    /// Differing lines of a text output: (line number, DIR's, rebuild's).
    pub lines: Vec<(usize, String, String)>,
    /// Differing ranges of the virtual disk (images), named.
    pub disk_ranges: Vec<NamedRange>,
}

/// The result of a rebuild comparison.
#[derive(Debug, Default)]
pub struct RebuildReport {
    /// Outputs identical to the rebuild.
    pub identical: Vec<String>,
    /// Outputs that differ.
    pub differing: Vec<OutputDiff>,
}

/// Builds `plan` into a temporary directory (beside `dir`, else in the
/// system temp dir), compares, and removes the rebuild. `cache_dir` holds
/// the bootstraps (the build's own).
pub fn rebuild_and_compare(
    dir: &Path,
    plan: &Plan,
    cache_dir: &Path,
    progress: &dyn Progress,
) -> Result<RebuildReport> {
    let parent = dir
        .canonicalize()
        .with_context(|| format!("cannot read {}", dir.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix(".imgbuild-rebuild-")
        .tempdir_in(&parent)
        .or_else(|_| {
            tempfile::Builder::new()
                .prefix("imgbuild-rebuild-")
                .tempdir()
        })
        .context("cannot create a directory for the rebuild")?;
    // SIGINT/SIGTERM/SIGHUP remove it too (issue 14: it was left behind).
    crate::output::register_dir(tmp.path());
    let _unregister = Unregister(tmp.path().to_path_buf());
    let opts = BuildOptions {
        out_dir: tmp.path().join("out"),
        cache_dir: cache_dir.to_path_buf(),
        temp_dir: None,
        // The rebuild reads the same cached bootstrap as the build did.
        refresh: false,
    };
    build(plan, &opts, progress).context("the rebuild failed")?;
    compare_dirs(dir, &opts.out_dir)
}

/// Takes a directory off the signal handler's list when dropped.
struct Unregister(std::path::PathBuf);

impl Drop for Unregister {
    fn drop(&mut self) {
        crate::output::unregister_dir(&self.0);
    }
}

/// The outputs of a build directory: its images (from `SHA256SUMS`), then
/// `SHA256SUMS` and `manifest.json`.
fn outputs_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(dir.join(SUMS))
        .ok()
        .and_then(|t| read_sums(&t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    v.push(SUMS.to_string());
    v.push(MANIFEST.to_string());
    v
}

/// Compares the outputs of `rebuilt` (the reference) with those of `dir`.
pub fn compare_dirs(dir: &Path, rebuilt: &Path) -> Result<RebuildReport> {
    let names: BTreeSet<String> = outputs_of(rebuilt)
        .into_iter()
        .chain(outputs_of(dir))
        .collect();
    let mut report = RebuildReport::default();
    for name in names {
        let (a, b) = (dir.join(&name), rebuilt.join(&name));
        let mut d = OutputDiff {
            file: name.clone(),
            ..OutputDiff::default()
        };
        match (a.is_file(), b.is_file()) {
            (true, true) => {}
            (false, _) => {
                d.notes.push(format!("missing in {}", dir.display()));
                report.differing.push(d);
                continue;
            }
            (true, false) => {
                d.notes.push("not made by the rebuild".to_string());
                report.differing.push(d);
                continue;
            }
        }
        d.file_ranges = diff_regions(&a, &b, MERGE, MAX_REGIONS)?;
        if d.file_ranges.is_empty() {
            report.identical.push(name);
            continue;
        }
        if name == SUMS || name == MANIFEST {
            d.lines = diff_lines(&a, &b)?;
        } else {
            match disk_ranges(&a, &b) {
                Ok((ranges, notes)) => {
                    d.disk_ranges = ranges;
                    d.notes.extend(notes);
                }
                Err(e) => d.notes.push(format!("cannot compare as disks: {e:#}")),
            }
        }
        report.differing.push(d);
    }
    Ok(report)
}

/// The first differing lines of two text files.
fn diff_lines(a: &Path, b: &Path) -> Result<Vec<(usize, String, String)>> {
    let ta = String::from_utf8_lossy(&std::fs::read(a)?).into_owned();
    let tb = String::from_utf8_lossy(&std::fs::read(b)?).into_owned();
    let (la, lb): (Vec<&str>, Vec<&str>) = (ta.lines().collect(), tb.lines().collect());
    let mut out = Vec::new();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i).copied(), lb.get(i).copied());
        if x != y {
            out.push((
                i + 1,
                x.unwrap_or("(none)").to_string(),
                y.unwrap_or("(none)").to_string(),
            ));
            if out.len() == MAX_REGIONS {
                break;
            }
        }
    }
    Ok(out)
}

/// The areas of a GPT disk, in order, covering `0..size`.
fn areas(disk: &dyn DiskImage) -> Vec<(Range<u64>, String)> {
    let size = disk.virtual_size();
    let mut v = vec![
        (0..LBA, "protective MBR".to_string()),
        (LBA..2 * LBA, "primary GPT header".to_string()),
        (2 * LBA..34 * LBA, "primary GPT entries".to_string()),
    ];
    let mut at = 34 * LBA;
    let parts = gpt::read_partitions(disk)
        .ok()
        .flatten()
        .unwrap_or_default();
    for (i, p) in parts.iter().enumerate() {
        if p.start > at {
            v.push((at..p.start, "unpartitioned".to_string()));
        }
        v.push((
            p.start..p.end,
            format!("partition {} {} ({})", i + 1, p.name, p.type_name),
        ));
        at = at.max(p.end);
    }
    let backup = size.saturating_sub(33 * LBA);
    if backup > at {
        v.push((at..backup, "unpartitioned".to_string()));
    }
    v.push((backup.max(at)..size, "backup GPT".to_string()));
    v
}

/// The differing ranges of two images' virtual disks, named by area.
fn disk_ranges(a: &Path, b: &Path) -> Result<(Vec<NamedRange>, Vec<String>)> {
    let da = imgbuild_formats::open(a, None).with_context(|| format!("{}", a.display()))?;
    let db = imgbuild_formats::open(b, None).with_context(|| format!("{}", b.display()))?;
    let mut notes = Vec::new();
    if da.virtual_size() != db.virtual_size() {
        notes.push(format!(
            "virtual size {} here, {} in the rebuild",
            da.virtual_size(),
            db.virtual_size()
        ));
    }
    let size = da.virtual_size().min(db.virtual_size());
    let mut spans: Vec<Range<u64>> = da.allocated()?;
    spans.extend(db.allocated()?);
    spans.sort_by_key(|r| r.start);
    let mut raw: Vec<Range<u64>> = Vec::new();
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut done = 0u64;
    'spans: for s in spans {
        let mut at = s.start.max(done);
        let end = s.end.min(size);
        while at < end {
            let n = usize::try_from((end - at).min(CHUNK as u64)).expect("at most CHUNK");
            da.read_exact_at(&mut ba[..n], at)?;
            db.read_exact_at(&mut bb[..n], at)?;
            if ba[..n] != bb[..n] {
                for i in (0..n).filter(|&i| ba[i] != bb[i]) {
                    let off = at + i as u64;
                    let full = raw.len() > MAX_REGIONS;
                    match raw.last_mut() {
                        Some(r) if off <= r.end + MERGE => r.end = off + 1,
                        _ if full => break 'spans,
                        _ => raw.push(off..off + 1),
                    }
                }
            }
            at += n as u64;
        }
        done = done.max(end);
    }
    if raw.len() > MAX_REGIONS {
        raw.truncate(MAX_REGIONS);
        notes.push(format!(
            "only the first {MAX_REGIONS} differing disk ranges are shown"
        ));
    }
    Ok((name_ranges(&raw, &areas(&*db)), notes))
}

/// Splits ranges at area boundaries and names each piece.
fn name_ranges(ranges: &[Range<u64>], areas: &[(Range<u64>, String)]) -> Vec<NamedRange> {
    let mut out = Vec::new();
    for r in ranges {
        for (area, name) in areas {
            let (s, e) = (r.start.max(area.start), r.end.min(area.end));
            if s < e {
                let what = if name.starts_with("partition") {
                    format!("{name} at +{:#x}", s - area.start)
                } else {
                    name.clone()
                };
                out.push(NamedRange { range: s..e, what });
            }
        }
    }
    out
}

/// Renders a report for the terminal.
pub fn render(report: &RebuildReport, dir: &Path) -> String {
    let mut s = String::new();
    for d in &report.differing {
        s += &format!("DIFFERS {}\n", PathBuf::from(dir).join(&d.file).display());
        for n in &d.notes {
            s += &format!("  {n}\n");
        }
        for r in &d.file_ranges {
            s += &format!(
                "  file bytes {:#x}..{:#x} ({})\n",
                r.start,
                r.end,
                bytes(r.end - r.start)
            );
        }
        for (n, x, y) in &d.lines {
            s += &format!("  line {n}: here    {x}\n  line {n}: rebuild {y}\n");
        }
        for r in &d.disk_ranges {
            s += &format!(
                "  disk bytes {:#x}..{:#x} ({}): {}\n",
                r.range.start,
                r.range.end,
                bytes(r.range.end - r.range.start),
                r.what
            );
        }
    }
    s
}

fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".to_string()
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_split_and_named_by_area() {
        let areas = vec![
            (0..512, "protective MBR".to_string()),
            (512..1024, "primary GPT header".to_string()),
            (1024..4096, "partition 1 esp (esp)".to_string()),
        ];
        let named = name_ranges(&[500..600, 2048..2049], &areas);
        assert_eq!(
            named,
            vec![
                NamedRange {
                    range: 500..512,
                    what: "protective MBR".into()
                },
                NamedRange {
                    range: 512..600,
                    what: "primary GPT header".into()
                },
                NamedRange {
                    range: 2048..2049,
                    what: "partition 1 esp (esp) at +0x400".into()
                },
            ]
        );
    }
}
