//! Bootstraps a Debian root filesystem with `mmdebstrap` into a tarball,
//! cached by the sha256 of every input that shapes it.
//!
//! ```text
//! DebootstrapSpec + mmdebstrap --version ─sha256─► cache_dir/mmdebstrap-<hex>.tar
//!                 (missing) ─► mmdebstrap ... .mmdebstrap-<hex>.<pid>.partial.tar ─rename─┘
//! ```
//! A run that is killed leaves only a `.partial` file, never a cache entry.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::SourceError;

/// Everything that decides the bootstrapped tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebootstrapSpec {
    /// Suite or codename (`bookworm`).
    pub suite: String,
    /// mmdebstrap variant (`minbase`, `important`, …).
    pub variant: String,
    /// Mirror URI; `None` reads it from the host's apt sources ([`default_mirror`]).
    pub mirror: Option<String>,
    /// Archive components (`main`, …); empty means mmdebstrap's default.
    pub components: Vec<String>,
    /// Extra packages (`--include`).
    pub packages: Vec<String>,
    /// SOURCE_DATE_EPOCH for the run.
    pub epoch: Option<i64>,
}

/// The first Debian archive URI in `/etc/apt/sources.list.d/debian.sources`
/// (deb822) or else `/etc/apt/sources.list`, skipping security archives.
pub fn default_mirror() -> Option<String> {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").ok();
    deb822.as_deref().and_then(mirror_from_deb822).or_else(|| {
        let list = fs::read_to_string("/etc/apt/sources.list").ok()?;
        mirror_from_sources_list(&list)
    })
}

fn is_main_archive(uri: &str, suites: &str) -> bool {
    !uri.contains("security") && !suites.split_whitespace().all(|s| s.ends_with("-security"))
}

/// The first `URIs:` of a `Types: deb` stanza that is not a security archive.
pub fn mirror_from_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let (Some(types), Some(uris)) = (field("Types"), field("URIs")) else {
            continue;
        };
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no"))
            || !types.split_whitespace().any(|t| t == "deb")
        {
            continue;
        }
        let suites = field("Suites").unwrap_or_default();
        if let Some(uri) = uris
            .split_whitespace()
            .find(|u| is_main_archive(u, &suites))
        {
            return Some(uri.to_owned());
        }
    }
    None
}

/// The URI of the first `deb` line (options in `[...]` skipped) that is not a
/// security archive.
pub fn mirror_from_sources_list(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1.trim_start(),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        let suite = words.next().unwrap_or("");
        is_main_archive(uri, suite).then(|| uri.to_owned())
    })
}

/// The cache key: sha256 over the canonical inputs, one `key=value` per line
/// (packages and components sorted and deduplicated).
pub fn cache_key(spec: &DebootstrapSpec, mirror: &str, mmdebstrap_version: &str) -> String {
    let mut packages = spec.packages.clone();
    packages.sort();
    packages.dedup();
    let mut components = spec.components.clone();
    components.sort();
    components.dedup();
    let epoch = spec.epoch.map_or_else(String::new, |e| e.to_string());
    let canonical = format!(
        "imgbuild-mmdebstrap-v1\nsuite={}\nvariant={}\nmirror={mirror}\ncomponents={}\npackages={}\nepoch={epoch}\nmmdebstrap={}\n",
        spec.suite,
        spec.variant,
        components.join(","),
        packages.join(","),
        mmdebstrap_version.trim(),
    );
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bootstraps (or reuses) the tarball for `spec` in `cache_dir` and returns
/// its path. Uses `--mode=root` as root and `--mode=unshare` otherwise.
pub fn bootstrap(spec: &DebootstrapSpec, cache_dir: &Path) -> Result<PathBuf, SourceError> {
    let mirror = match &spec.mirror {
        Some(m) => m.clone(),
        None => default_mirror().ok_or(SourceError::NoMirror)?,
    };
    let version = run_capture(Command::new("mmdebstrap").arg("--version"))?;
    let key = cache_key(spec, &mirror, &version);
    let out = cache_dir.join(format!("mmdebstrap-{key}.tar"));
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(cache_dir).map_err(|source| SourceError::Io {
        path: cache_dir.to_owned(),
        action: "create",
        source,
    })?;
    let partial = cache_dir.join(format!(
        ".mmdebstrap-{key}.{}.partial.tar",
        std::process::id()
    ));
    let mode = if rustix::process::geteuid().is_root() {
        "--mode=root"
    } else {
        "--mode=unshare"
    };
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(mode)
        .arg(format!("--variant={}", spec.variant))
        .arg("--format=tar");
    if !spec.components.is_empty() {
        cmd.arg(format!("--components={}", spec.components.join(",")));
    }
    if !spec.packages.is_empty() {
        cmd.arg(format!("--include={}", spec.packages.join(",")));
    }
    if let Some(epoch) = spec.epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    cmd.arg(&spec.suite).arg(&partial).arg(&mirror);
    let result = run_capture(&mut cmd).and_then(|_| {
        fs::rename(&partial, &out).map_err(|source| SourceError::Io {
            path: out.clone(),
            action: "rename into place",
            source,
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result.map(|()| out)
}

fn run_capture(cmd: &mut Command) -> Result<String, SourceError> {
    let tool = "mmdebstrap";
    let output = cmd.output().map_err(|source| SourceError::Io {
        path: PathBuf::from(tool),
        action: "run",
        source,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let stderr_tail = lines[lines.len().saturating_sub(10)..].join("\n");
        return Err(SourceError::Tool {
            tool,
            status: output.status.to_string(),
            stderr_tail,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_security_and_disabled_stanzas() {
        let text = "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n\
                    Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                    Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn sources_list_with_options_and_comments() {
        let text = "# deb http://old.example/debian bookworm main\n\
                    deb http://security.example/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_sources_list(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn cache_key_ignores_package_order_but_not_content() {
        let a = DebootstrapSpec {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            packages: vec!["b".into(), "a".into()],
            epoch: Some(1),
            ..Default::default()
        };
        let mut b = a.clone();
        b.packages = vec!["a".into(), "b".into(), "a".into()];
        assert_eq!(
            cache_key(&a, "m", "mmdebstrap 1.3.5"),
            cache_key(&b, "m", "mmdebstrap 1.3.5\n")
        );
        b.epoch = Some(2);
        assert_ne!(cache_key(&a, "m", "v"), cache_key(&b, "m", "v"));
        assert_ne!(cache_key(&a, "m", "v"), cache_key(&a, "m2", "v"));
        assert_ne!(cache_key(&a, "m", "v1"), cache_key(&a, "m", "v2"));
        assert_eq!(cache_key(&a, "m", "v").len(), 64);
    }
}
