//! The installed-package list from dpkg's database (deb-status(5)).

use super::{read_text, Result};
use crate::tree::Tree;

/// `(package, version)` for every package whose `Status` is
/// `install ok installed` (or `hold ok installed`: held, still installed) in `/var/lib/dpkg/status`, sorted (a package
/// installed for two architectures appears twice). Empty without dpkg.
pub fn installed_packages(tree: &Tree) -> Result<Vec<(String, String)>> {
    let Some(text) = read_text(tree, "/var/lib/dpkg/status")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut installed) = (None, None, false);
        for line in stanza.lines() {
            // Continuation lines start with a space and never hold these fields.
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status:") {
                let words: Vec<&str> = v.split_whitespace().collect();
                installed = matches!(words[..], ["install" | "hold", "ok", "installed"]);
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            out.push((n.to_owned(), v.to_owned()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
