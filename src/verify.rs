//! `imgbuild verify`: re-hash outputs against `SHA256SUMS`, cross-check
//! `manifest.json`, and ([`rebuild`]) compare a build with a rebuild byte
//! for byte, saying which output and which regions differ.

pub mod rebuild;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use std::path::PathBuf;

use crate::record::{FileError, SumsError};

pub use crate::record::manifest::not_regular;
pub use crate::record::{
    check_seal, hex, read_sums, seal, sha256_file, write_sums, Manifest, ManifestError, MANIFEST,
    SUMS, ZEROS,
};

/// One thing wrong in an output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// What [`verify_dir`] checked and found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Files checked (images, then `manifest.json` if present).
    pub checked: Vec<String>,
    /// Everything wrong; empty when the directory is intact.
    pub problems: Vec<Problem>,
}

/// Why a directory could not be verified at all (what is wrong inside an
/// intact read is a [`Problem`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `SHA256SUMS` or `manifest.json` is a link, a FIFO, a device.
    #[error("{} is {kind}, not a regular file; not read", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A file or the directory could not be read.
    #[error(transparent)]
    Read(#[from] FileError),
    /// `SHA256SUMS` is malformed.
    #[error(transparent)]
    Sums(#[from] SumsError),
    /// The manifest names an output outside the directory.
    #[error("{}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why it is refused.
        #[source]
        source: ManifestError,
    },
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Re-hashes every file listed in `dir/SHA256SUMS` and checks
/// `manifest.json`: its own digest ([`check_seal`]) and that its `outputs`
/// (file, sha256, file_size) agree with the files and with `SHA256SUMS`.
/// Also a problem (issue 14): a missing manifest, an output that is not a
/// regular file (never opened: a FIFO would hang the read), a file that
/// neither lists, and what an interrupted build left.
pub fn verify_dir(dir: &Path) -> Result<Verified, VerifyError> {
    let mut v = Verified::default();
    for left in crate::outdir::leftovers(dir) {
        v.problems.push(Problem {
            file: left.display().to_string(),
            message: "left by an interrupted build; the next build into this directory removes it"
                .to_string(),
        });
    }
    let sums_path = regular(dir.join(SUMS))?;
    let text = std::fs::read_to_string(&sums_path).map_err(read_error(&sums_path))?;
    let entries = read_sums(&text)?;
    // The manifest first: when it is intact, a file that matches it but not
    // SHA256SUMS means SHA256SUMS changed.
    let manifest_path = regular(dir.join(MANIFEST))?;
    let (manifest, mut manifest_problems) = if manifest_path.exists() {
        read_manifest_checked(dir)?
    } else {
        (None, Vec::new())
    };
    let intact = manifest.as_ref().filter(|_| manifest_problems.is_empty());
    let found = hash_listed(dir, &entries, intact, &mut v)?;
    if !manifest_path.exists() {
        v.problems.push(Problem {
            file: MANIFEST.to_string(),
            message: "missing: every build writes it beside SHA256SUMS".to_string(),
        });
    }
    v.problems.extend(unlisted(dir, &entries)?);
    if manifest_path.exists() {
        v.checked.push(MANIFEST.to_string());
        if let Some(m) = &manifest {
            // A changed SHA256SUMS is reported above, as itself.
            let sums_changed = v.problems.iter().any(|p| p.file == SUMS);
            if !sums_changed {
                manifest_problems.extend(cross_check(m, &entries, &found));
            }
        }
        v.problems
            .extend(manifest_problems.into_iter().map(|message| Problem {
                file: MANIFEST.to_string(),
                message,
            }));
    }
    Ok(v)
}

/// `path`, unless it is there but not a regular file (never read then).
fn regular(path: PathBuf) -> Result<PathBuf, VerifyError> {
    match not_regular(&path) {
        Some(kind) => Err(VerifyError::NotRegular { path, kind }),
        None => Ok(path),
    }
}

/// The manifest of `dir` and what is wrong with it (its seal, its form).
/// An output naming a path outside the directory is an error: refused
/// before any file is opened on its word. An output that is a link or a
/// FIFO is reported by [`hash_listed`] as itself, and never opened.
fn read_manifest_checked(dir: &Path) -> Result<(Option<Manifest>, Vec<String>), VerifyError> {
    let text = match crate::record::manifest::read_text(dir) {
        Ok(text) => text,
        Err(e) => return Ok((None, vec![chain(&e)])),
    };
    let mut problems = Vec::new();
    if let Err(e) = check_seal(&text) {
        problems.push(e);
    }
    match Manifest::parse(&text) {
        Err(source @ ManifestError::Unsafe { .. }) => Err(VerifyError::Manifest {
            path: dir.join(MANIFEST),
            source,
        }),
        Err(e) => {
            problems.push(chain(&e));
            Ok((None, problems))
        }
        Ok(m) => Ok((Some(m), problems)),
    }
}

/// Hashes every file `SHA256SUMS` lists (a link, FIFO or device is a
/// problem, not opened), comparing with the list and, to tell which of the
/// two changed, with the `intact` manifest. Returns each file's hash and
/// length.
fn hash_listed(
    dir: &Path,
    entries: &[(String, String)],
    intact: Option<&Manifest>,
    v: &mut Verified,
) -> Result<BTreeMap<String, (String, u64)>, VerifyError> {
    let mut found = BTreeMap::new();
    for (expected, name) in entries {
        let path = dir.join(name);
        v.checked.push(name.clone());
        let problem = |message: String| Problem {
            file: name.clone(),
            message,
        };
        if let Some(kind) = not_regular(&path) {
            v.problems.push(problem(format!(
                "is {kind}, not a regular file; not opened"
            )));
            continue;
        }
        if !path.exists() {
            v.problems
                .push(problem(format!("missing (listed in {SUMS})")));
            continue;
        }
        let sum = sha256_file(&path)?;
        let len = std::fs::metadata(&path).map_err(read_error(&path))?.len();
        if &sum != expected {
            let recorded = intact.and_then(|m| m.output(name)).map(|o| &o.sha256);
            v.problems.push(if recorded == Some(&sum) {
                Problem {
                    file: SUMS.to_string(),
                    message: format!(
                        "lists {expected} for {name}, but the file and {MANIFEST} have {sum}"
                    ),
                }
            } else {
                problem(format!("sha256 {sum}, {SUMS} says {expected}"))
            });
        }
        found.insert(name.clone(), (sum, len));
    }
    Ok(found)
}

/// Files in `dir` that `SHA256SUMS` does not list (besides the records,
/// the lock and what an interrupted build left).
fn unlisted(dir: &Path, entries: &[(String, String)]) -> Result<Vec<Problem>, VerifyError> {
    let leftovers = crate::outdir::leftovers(dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(read_error(dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != SUMS && n != MANIFEST && n != ".imgbuild.lock")
        .filter(|n| !entries.iter().any(|(_, e)| e == n))
        .filter(|n| !leftovers.iter().any(|l| l.ends_with(n)))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|file| Problem {
            file,
            message: format!("not listed in {SUMS}: not an output of this build"),
        })
        .collect())
}

/// Compares the manifest's `outputs` with `SHA256SUMS` and the files.
fn cross_check(
    m: &Manifest,
    sums: &[(String, String)],
    found: &BTreeMap<String, (String, u64)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for o in &m.outputs {
        let (file, sha, size) = (o.file.as_str(), o.sha256.as_str(), o.file_size);
        match sums.iter().find(|(_, n)| n == file) {
            None => out.push(format!("lists {file}, which {SUMS} does not")),
            Some((s, _)) if s != sha => {
                out.push(format!("records sha256 {sha} for {file}, {SUMS} says {s}"))
            }
            Some(_) => {}
        }
        // A file that differs from SHA256SUMS is reported as itself; here
        // only what the manifest alone gets wrong.
        let intact = sums
            .iter()
            .any(|(s, n)| n == file && found.get(file).is_some_and(|f| &f.0 == s));
        if let Some((_, len)) = found.get(file).filter(|_| intact) {
            if *len != size {
                out.push(format!(
                    "records file_size {size} for {file}, the file has {len} bytes"
                ));
            }
        }
    }
    for (_, n) in sums {
        if m.output(n).is_none() {
            out.push(format!("does not list {n}, which {SUMS} does"));
        }
    }
    out
}

/// The byte ranges where two files differ (adjacent differences within
/// `merge` bytes joined), at most `limit` ranges; a length difference shows
/// as a range past the shorter file's end.
pub fn diff_regions(
    a: &Path,
    b: &Path,
    merge: u64,
    limit: usize,
) -> Result<Vec<Range<u64>>, FileError> {
    let mut fa = File::open(a).map_err(read_error(a))?;
    let mut fb = File::open(b).map_err(read_error(b))?;
    let la = fa.metadata().map_err(read_error(a))?.len();
    let lb = fb.metadata().map_err(read_error(b))?.len();
    let mut out: Vec<Range<u64>> = Vec::new();
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    let common = la.min(lb);
    while at < common && out.len() <= limit {
        let n = usize::try_from((common - at).min(1 << 20)).expect("at most 1 MiB");
        fa.read_exact(&mut ba[..n]).map_err(read_error(a))?;
        fb.read_exact(&mut bb[..n]).map_err(read_error(b))?;
        if ba[..n] != bb[..n] {
            for i in 0..n {
                if ba[i] != bb[i] {
                    let off = at + i as u64;
                    match out.last_mut() {
                        Some(r) if off <= r.end + merge => r.end = off + 1,
                        _ => out.push(off..off + 1),
                    }
                }
            }
        }
        at += n as u64;
    }
    if la != lb {
        out.push(common..la.max(lb));
    }
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_regions_finds_each_changed_byte_run() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut data = vec![0u8; 3 << 20];
        std::fs::write(&a, &data).unwrap();
        data[10] = 1;
        data[11] = 1;
        data[(2 << 20) + 5] = 9;
        data.push(7);
        std::fs::write(&b, &data).unwrap();
        let r = diff_regions(&a, &b, 0, 10).unwrap();
        assert_eq!(
            r,
            vec![10..12, (2 << 20) + 5..(2 << 20) + 6, 3 << 20..(3 << 20) + 1]
        );
    }
}
