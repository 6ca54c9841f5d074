//! The record a build leaves beside its images and `verify` reads back:
//! `SHA256SUMS` (one `<sha256>  <file>` line per image, as sha256sum writes)
//! and the sealing of `manifest.json` (its own digest inside it). Both the
//! pipeline (writing) and `verify` (reading) use this module, neither the
//! other.

use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub use crate::ids::hex;

/// Name of the checksum file in an output directory.
pub const SUMS: &str = "SHA256SUMS";

/// The SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let want = crate::source::digest::Want {
        sha256: true,
        content_id: false,
    };
    crate::source::digest::digest_file(path, want, None)
        .map(|d| d.sha256)
        .with_context(|| format!("cannot read {}", path.display()))
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

/// Name of the manifest in an output directory.
pub const MANIFEST: &str = "manifest.json";

/// What a manifest says of one output: the part `imgbuild test` and
/// `imgbuild boot` read back.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct OutputRecord {
    /// Target name.
    pub target: String,
    /// Its hypervisor profile (absent in manifests written before 0.2).
    #[serde(default)]
    pub hypervisor: String,
    /// File name in the output directory.
    pub file: String,
    /// Format (of the disk inside, for a package).
    pub format: String,
    /// The package (`ova`, `tar.gz`, `oci-archive`), if any.
    #[serde(default)]
    pub package: Option<String>,
    /// Where the disk lies inside the package file, if stored uncompressed.
    #[serde(default)]
    pub member: Option<imgbuild_formats::package::Member>,
    /// Firmware modes it boots in.
    #[serde(default)]
    pub firmware: Vec<String>,
}

/// The parts of `manifest.json` read back.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ManifestRecord {
    /// Every image written.
    pub outputs: Vec<OutputRecord>,
    /// `imgbuild test`'s checks, if the recipe set any.
    #[serde(default)]
    pub test: Option<crate::plan::TestPlan>,
}

/// Reads the manifest of the output directory `dir`.
pub fn read_manifest(dir: &Path) -> Result<ManifestRecord> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not an imgbuild manifest", path.display()))
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
