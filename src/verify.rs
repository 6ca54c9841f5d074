//! `imgbuild verify`: re-hash outputs against `SHA256SUMS`, and compare two
//! builds byte for byte, saying which output and which regions differ.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Name of the checksum file in an output directory.
pub const SUMS: &str = "SHA256SUMS";

/// The SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses `SHA256SUMS` (`<64 hex>  <name>` per line, as sha256sum writes).
pub fn read_sums(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (sum, name) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .with_context(|| format!("{SUMS}:{}: expected `<sha256>  <file>`", i + 1))?;
        if sum.len() != 64 || !sum.bytes().all(|c| c.is_ascii_hexdigit()) {
            bail!("{SUMS}:{}: {sum:?} is not a SHA-256", i + 1);
        }
        if name.contains('/') || name == ".." {
            bail!(
                "{SUMS}:{}: {name:?} is not a file name in this directory",
                i + 1
            );
        }
        out.push((sum.to_ascii_lowercase(), name.to_string()));
    }
    Ok(out)
}

/// Renders `SHA256SUMS` (sorted by name).
pub fn write_sums(entries: &[(String, String)]) -> String {
    let mut e = entries.to_vec();
    e.sort_by(|a, b| a.1.cmp(&b.1));
    e.iter().map(|(s, n)| format!("{s}  {n}\n")).collect()
}

/// One output whose hash does not match.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// File name.
    pub name: String,
    /// Hash recorded.
    pub expected: String,
    /// Hash now (or "missing").
    pub found: String,
}

/// Re-hashes every file listed in `dir/SHA256SUMS`.
pub fn verify_dir(dir: &Path) -> Result<(usize, Vec<Mismatch>)> {
    let sums_path = dir.join(SUMS);
    let text = std::fs::read_to_string(&sums_path)
        .with_context(|| format!("cannot read {}", sums_path.display()))?;
    let entries = read_sums(&text)?;
    let mut bad = Vec::new();
    for (expected, name) in &entries {
        let path = dir.join(name);
        let found = if path.exists() {
            sha256_file(&path)?
        } else {
            "missing".to_string()
        };
        if &found != expected {
            bad.push(Mismatch {
                name: name.clone(),
                expected: expected.clone(),
                found,
            });
        }
    }
    Ok((entries.len(), bad))
}

/// The byte ranges where two files differ (adjacent differences within
/// `merge` bytes joined), at most `limit` ranges; a length difference shows
/// as a range past the shorter file's end.
pub fn diff_regions(a: &Path, b: &Path, merge: u64, limit: usize) -> Result<Vec<Range<u64>>> {
    let mut fa = File::open(a).with_context(|| format!("cannot open {}", a.display()))?;
    let mut fb = File::open(b).with_context(|| format!("cannot open {}", b.display()))?;
    let (la, lb) = (fa.metadata()?.len(), fb.metadata()?.len());
    let mut out: Vec<Range<u64>> = Vec::new();
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    let common = la.min(lb);
    while at < common && out.len() <= limit {
        let n = usize::try_from((common - at).min(1 << 20)).expect("at most 1 MiB");
        fa.read_exact(&mut ba[..n])?;
        fb.read_exact(&mut bb[..n])?;
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
    fn sums_round_trip_and_reject_paths() {
        let s = "a".repeat(64);
        let text = write_sums(&[(s.clone(), "b.qcow2".into()), (s.clone(), "a.vhdx".into())]);
        assert_eq!(text, format!("{s}  a.vhdx\n{s}  b.qcow2\n"));
        assert_eq!(read_sums(&text).unwrap().len(), 2);
        assert!(read_sums(&format!("{s}  ../etc/passwd\n")).is_err());
        assert!(read_sums("xyz  a\n").is_err());
    }

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
