//! The record a build leaves beside its images and `verify` reads back:
//! `SHA256SUMS` (one `<sha256>  <file>` line per image, as sha256sum writes)
//! and the sealing of `manifest.json` (its own digest inside it). Both the
//! pipeline (writing) and `verify`, `test` and `boot` (reading) use this
//! module, none of them the other. The manifest itself is [`manifest`].

pub mod manifest;

pub use manifest::{
    plain_name, read_manifest, BiosRecord, BootRecord, Manifest, ManifestError, OutputRecord,
    Package, ReadError, MANIFEST,
};

use std::path::Path;

use sha2::{Digest, Sha256};

pub use crate::ids::hex;

/// Name of the checksum file in an output directory.
pub const SUMS: &str = "SHA256SUMS";

/// The SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let want = crate::source::digest::Want {
        sha256: true,
        content_id: false,
    };
    crate::source::digest::digest_file(path, want, None)
        .map(|d| d.sha256)
        .map_err(|source| FileError {
            path: path.to_path_buf(),
            source,
        })
}

/// A file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct FileError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A line of `SHA256SUMS` that is not `<sha256>  <file>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{SUMS}:{line}: {problem}")]
pub struct SumsError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Parses `SHA256SUMS` (`<64 hex>  <name>` per line, as sha256sum writes).
pub fn read_sums(text: &str) -> Result<Vec<(String, String)>, SumsError> {
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |problem: String| SumsError {
            line: i + 1,
            problem,
        };
        let (sum, name) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .ok_or_else(|| bad("expected `<sha256>  <file>`".into()))?;
        if sum.len() != 64 || !sum.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!("{sum:?} is not a SHA-256")));
        }
        if let Err(why) = plain_name(name) {
            return Err(bad(format!(
                "{name:?} is not a file name in this directory ({why})"
            )));
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

/// The manifest's key holding its own digest (see [`seal`]).
const SELF_KEY: &str = "\"self_sha256\": \"";
/// The value [`seal`] replaces: 64 zeros.
pub const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Fills in a JSON text's last `"self_sha256": "000…0"` with the SHA-256 of
/// the text as it is with the zeros, so that any changed byte of the file
/// shows (the value is the file's digest with the value itself zeroed).
pub fn seal(text: &str) -> String {
    match text.rfind(SELF_KEY) {
        Some(at) if text[at + SELF_KEY.len()..].starts_with(ZEROS) => {
            let digest = hex(&Sha256::digest(text.as_bytes()));
            let v = at + SELF_KEY.len();
            format!("{}{digest}{}", &text[..v], &text[v + ZEROS.len()..])
        }
        _ => text.to_string(),
    }
}

/// Checks a text sealed by [`seal`]: `Err` says what is wrong.
pub fn check_seal(text: &str) -> std::result::Result<(), String> {
    let at = text
        .rfind(SELF_KEY)
        .ok_or_else(|| "has no \"self_sha256\"".to_string())?;
    let v = at + SELF_KEY.len();
    let recorded = text
        .get(v..v + 64)
        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| "its \"self_sha256\" is not a SHA-256".to_string())?;
    let zeroed = format!("{}{ZEROS}{}", &text[..v], &text[v + 64..]);
    let found = hex(&Sha256::digest(zeroed.as_bytes()));
    if found == recorded {
        Ok(())
    } else {
        Err(format!(
            "its content does not match its self_sha256 (recorded {recorded}, content hashes to {found}): it changed after the build"
        ))
    }
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
    fn a_sealed_text_detects_every_changed_byte() {
        let text = format!("{{\n  \"a\": \"bc\",\n  \"self_sha256\": \"{ZEROS}\"\n}}\n");
        let sealed = seal(&text);
        assert_ne!(sealed, text);
        assert_eq!(check_seal(&sealed), Ok(()));
        let bytes = sealed.as_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x01;
            if let Ok(t) = String::from_utf8(b) {
                assert!(check_seal(&t).is_err(), "byte {i} changed unnoticed");
            }
        }
    }
}
