//! Bootstraps a Debian root filesystem with `mmdebstrap` into a tarball,
//! cached, and records where every package came from and how fresh the
//! archives were.
//!
//! ```text
//! DebootstrapSpec ─► archives (listed, or the host's: suite, -updates, -security)
//!   + mmdebstrap --version ─sha256─► key
//! cache_dir/mmdebstrap-<key>.json   the record: tar name, created/checked times,
//!                                   each archive's Release Date, each package's archive
//! cache_dir/mmdebstrap-<key>-<dates>.tar
//!   reused as is, unless
//!   · older than CachePolicy::max_age ─► bootstrapped again
//!   · CachePolicy::refresh ─► the archives' InRelease fetched: same Dates ─► reused
//!                                                             newer ─► bootstrapped again
//! bootstrap: mmdebstrap … .mmdebstrap-<key>.<pid>.partial.tar "deb …" "deb …"
//!   a customize hook copies the apt lists' Release and Packages files and
//!   dpkg's status out ─► Dates, package origins ─► record; rename into place
//! ```
//! A run that is killed leaves only a `.partial` file, never a cache entry.
//! The times in the record (wall clock) only decide when to refresh the
//! cache; nothing of them reaches an image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::archives::{self, Archive, HostChoice};
use super::SourceError;

/// Which archives to install from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sources {
    /// The host's apt sources for the suite ([`archives::from_host`]).
    Host(HostChoice),
    /// Exactly these.
    Listed(Vec<Archive>),
}

impl Default for Sources {
    fn default() -> Self {
        Sources::Host(HostChoice {
            updates: true,
            security: true,
        })
    }
}

/// Everything that decides the bootstrapped tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebootstrapSpec {
    /// Suite or codename (`bookworm`).
    pub suite: String,
    /// mmdebstrap variant (`minbase`, `important`, …).
    pub variant: String,
    /// The archives.
    pub sources: Sources,
    /// Archive components (`main`, …), for archives taken from the host.
    pub components: Vec<String>,
    /// Extra packages (`--include`).
    pub packages: Vec<String>,
    /// SOURCE_DATE_EPOCH for the run.
    pub epoch: Option<i64>,
}

/// When to bootstrap again although a cached tarball exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachePolicy {
    /// Fetch the archives' Release files; bootstrap again if any is newer
    /// than the cache's (`imgbuild build --refresh`).
    pub refresh: bool,
    /// Bootstrap again when the cache is older than this many seconds,
    /// whatever the Release files say (`max_age` in the recipe).
    pub max_age: Option<u64>,
}

/// One archive as the bootstrap saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// The archive.
    #[serde(flatten)]
    pub archive: Archive,
    /// The `Date` of its Release file when the tree was bootstrapped.
    pub date: Option<String>,
}

/// The cache's record of one bootstrap (`mmdebstrap-<key>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapInfo {
    /// The tarball's file name in the cache directory.
    pub tar: String,
    /// When it was bootstrapped (seconds since 1970, wall clock).
    pub created: u64,
    /// When its archives were last found unchanged (or `created`).
    pub checked: u64,
    /// The archives, in the order apt was given them.
    pub archives: Vec<ArchiveState>,
    /// `"<package> <version>"` of every installed package ─► the suite of
    /// the first archive that publishes that version (apt's choice).
    pub origins: BTreeMap<String, String>,
}

/// What [`bootstrap`] did with the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheAction {
    /// Reused, no question asked.
    Reused,
    /// Reused after the archives' Release files were found unchanged.
    ReusedUnchanged,
    /// Bootstrapped: nothing was cached.
    Built,
    /// Bootstrapped again: the cache was older than the maximum age.
    RebuiltTooOld,
    /// Bootstrapped again: an archive had a newer Release file.
    RebuiltNewer,
}

/// A bootstrapped tree.
#[derive(Clone, Debug)]
pub struct Bootstrapped {
    /// The tarball.
    pub tar: PathBuf,
    /// Its record.
    pub info: BootstrapInfo,
    /// What happened to the cache.
    pub action: CacheAction,
}

/// The host's main Debian archive URI (the first `deb` entry with a suite
/// that is not `*-security`), from its apt sources.
pub fn default_mirror() -> Option<String> {
    archives::host_entries(Path::new("/"))
        .into_iter()
        .find(|e| e.suites.iter().any(|s| !s.ends_with("-security")))
        .and_then(|e| e.uris.into_iter().next())
}

/// The archives `spec` installs from.
pub fn archives_for(spec: &DebootstrapSpec) -> Result<Vec<Archive>, SourceError> {
    match &spec.sources {
        Sources::Listed(list) => Ok(list.clone()),
        Sources::Host(choice) => {
            let components = if spec.components.is_empty() {
                vec!["main".to_string()]
            } else {
                spec.components.clone()
            };
            archives::from_host(
                &archives::host_entries(Path::new("/")),
                &spec.suite,
                &components,
                *choice,
            )
            .map_err(SourceError::NoArchive)
        }
    }
}

/// The cache key: sha256 over the canonical inputs, one `key=value` per line
/// (packages sorted and deduplicated; archives in order, as apt reads them).
pub fn cache_key(spec: &DebootstrapSpec, archives: &[Archive], mmdebstrap_version: &str) -> String {
    let mut packages = spec.packages.clone();
    packages.sort();
    packages.dedup();
    let epoch = spec.epoch.map_or_else(String::new, |e| e.to_string());
    let mut canonical = format!(
        "imgbuild-mmdebstrap-v2\nsuite={}\nvariant={}\npackages={}\nepoch={epoch}\nmmdebstrap={}\n",
        spec.suite,
        spec.variant,
        packages.join(","),
        mmdebstrap_version.trim(),
    );
    for a in archives {
        canonical.push_str(&format!("archive={}\n", a.sources_line()));
    }
    hex(&Sha256::digest(canonical.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> SourceError + 'a {
    move |source| SourceError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// The cache's record for `spec`, when there is one and its tarball too.
pub fn cached(
    spec: &DebootstrapSpec,
    cache_dir: &Path,
) -> Result<Option<BootstrapInfo>, SourceError> {
    let archives = archives_for(spec)?;
    let version = run_capture(Command::new("mmdebstrap").arg("--version"))?;
    let key = cache_key(spec, &archives, &version);
    Ok(read_record(cache_dir, &key))
}

fn record_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("mmdebstrap-{key}.json"))
}

fn read_record(cache_dir: &Path, key: &str) -> Option<BootstrapInfo> {
    let text = fs::read_to_string(record_path(cache_dir, key)).ok()?;
    let info: BootstrapInfo = serde_json::from_str(&text).ok()?;
    cache_dir.join(&info.tar).is_file().then_some(info)
}

fn write_record(cache_dir: &Path, key: &str, info: &BootstrapInfo) -> Result<(), SourceError> {
    let path = record_path(cache_dir, key);
    let tmp = cache_dir.join(format!(".mmdebstrap-{key}.{}.json", std::process::id()));
    let text = serde_json::to_string_pretty(info).map_err(|e| SourceError::Io {
        path: path.clone(),
        action: "encode",
        source: std::io::Error::other(e),
    })?;
    fs::write(&tmp, text).map_err(io_err(&tmp, "write"))?;
    fs::rename(&tmp, &path).map_err(io_err(&path, "rename into place"))
}

/// Bootstraps (or reuses, per `policy`) the tarball for `spec` in
/// `cache_dir`. Uses `--mode=root` as root and `--mode=unshare` otherwise.
pub fn bootstrap(
    spec: &DebootstrapSpec,
    cache_dir: &Path,
    policy: CachePolicy,
) -> Result<Bootstrapped, SourceError> {
    let archives = archives_for(spec)?;
    let version = run_capture(Command::new("mmdebstrap").arg("--version"))?;
    let key = cache_key(spec, &archives, &version);
    let mut action = CacheAction::Built;
    if let Some(mut info) = read_record(cache_dir, &key) {
        let tar = cache_dir.join(&info.tar);
        let age = now().saturating_sub(info.created);
        if policy.max_age.is_some_and(|max| age > max) {
            action = CacheAction::RebuiltTooOld;
        } else if policy.refresh {
            let current = current_dates(&info.archives).map_err(SourceError::Refresh)?;
            let cached: Vec<Option<String>> =
                info.archives.iter().map(|a| a.date.clone()).collect();
            if current == cached {
                info.checked = now();
                write_record(cache_dir, &key, &info)?;
                return Ok(Bootstrapped {
                    tar,
                    info,
                    action: CacheAction::ReusedUnchanged,
                });
            }
            action = CacheAction::RebuiltNewer;
        } else {
            return Ok(Bootstrapped {
                tar,
                info,
                action: CacheAction::Reused,
            });
        }
    }
    let old = read_record(cache_dir, &key).map(|i| i.tar);
    let info = run_mmdebstrap(spec, &archives, cache_dir, &key)?;
    write_record(cache_dir, &key, &info)?;
    if let Some(old) = old.filter(|o| *o != info.tar) {
        let _ = fs::remove_file(cache_dir.join(old));
    }
    Ok(Bootstrapped {
        tar: cache_dir.join(&info.tar),
        info,
        action,
    })
}

/// Each archive's Release `Date` now, fetched.
pub fn current_dates(archives: &[ArchiveState]) -> Result<Vec<Option<String>>, String> {
    archives
        .iter()
        .map(|a| archives::fetch_release_date(&a.archive).map(Some))
        .collect()
}

/// A shell word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run_mmdebstrap(
    spec: &DebootstrapSpec,
    archives: &[Archive],
    cache_dir: &Path,
    key: &str,
) -> Result<BootstrapInfo, SourceError> {
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir, "create"))?;
    let pid = std::process::id();
    let partial = cache_dir.join(format!(".mmdebstrap-{key}.{pid}.partial.tar"));
    let lists = cache_dir.join(format!(".mmdebstrap-{key}.{pid}.lists"));
    let _ = fs::remove_dir_all(&lists);
    let mode = if rustix::process::geteuid().is_root() {
        "--mode=root"
    } else {
        "--mode=unshare"
    };
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(mode)
        .arg(format!("--variant={}", spec.variant))
        .arg("--format=tar");
    if !spec.packages.is_empty() {
        cmd.arg(format!("--include={}", spec.packages.join(",")));
    }
    if let Some(epoch) = spec.epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    // Before mmdebstrap's cleanup empties them: the lists' Release files
    // (Dates) and Packages indexes (origins), and dpkg's status.
    let out = sh_quote(&lists.to_string_lossy());
    cmd.arg(format!(
        "--customize-hook=mkdir -p {out} && cp \"$1\"/var/lib/apt/lists/*Release \"$1\"/var/lib/apt/lists/*_Packages \"$1\"/var/lib/dpkg/status {out}/"
    ));
    cmd.arg(&spec.suite).arg(&partial);
    for a in archives {
        cmd.arg(a.sources_line());
    }
    let result = run_capture(&mut cmd).and_then(|_| {
        let (states, origins) = read_lists(&lists, archives)?;
        let dates: Vec<String> = states
            .iter()
            .map(|s| s.date.clone().unwrap_or_default())
            .collect();
        let tar = format!(
            "mmdebstrap-{key}-{}.tar",
            &hex(&Sha256::digest(dates.join("\n").as_bytes()))[..16]
        );
        let path = cache_dir.join(&tar);
        fs::rename(&partial, &path).map_err(io_err(&path, "rename into place"))?;
        let t = now();
        Ok(BootstrapInfo {
            tar,
            created: t,
            checked: t,
            archives: states,
            origins,
        })
    });
    let _ = fs::remove_dir_all(&lists);
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

type Origins = BTreeMap<String, String>;

/// The Dates and package origins from the files the hook copied out.
fn read_lists(
    dir: &Path,
    archives: &[Archive],
) -> Result<(Vec<ArchiveState>, Origins), SourceError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io_err(dir, "read"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let read = |name: &str| {
        let p = dir.join(name);
        fs::read_to_string(&p).map_err(io_err(&p, "read"))
    };
    let status = read("status")?;
    let installed: BTreeSet<String> = status
        .split("\n\n")
        .filter(|s| s.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|s| {
            let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
            Some(format!("{} {}", field("Package: ")?, field("Version: ")?))
        })
        .collect();
    let mut states = Vec::new();
    let mut origins = Origins::new();
    for a in archives {
        let prefix = a.list_prefix();
        let mine: Vec<&String> = names.iter().filter(|n| n.starts_with(&prefix)).collect();
        let mut date = None;
        for n in mine.iter().filter(|n| n.ends_with("Release")) {
            date = date.or(archives::release_date(&read(n)?));
        }
        for n in mine.iter().filter(|n| n.ends_with("_Packages")) {
            for (name, version) in archives::package_versions(&read(n)?) {
                let id = format!("{name} {version}");
                if installed.contains(&id) && !origins.contains_key(&id) {
                    origins.insert(id, a.suite.clone());
                }
            }
        }
        states.push(ArchiveState {
            archive: a.clone(),
            date,
        });
    }
    Ok((states, origins))
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

    fn archive(suite: &str) -> Archive {
        Archive {
            uri: "http://m.example/debian".into(),
            suite: suite.into(),
            components: vec!["main".into()],
        }
    }

    #[test]
    fn cache_key_ignores_package_order_but_not_content_or_archives() {
        let a = DebootstrapSpec {
            suite: "bookworm".into(),
            variant: "minbase".into(),
            packages: vec!["b".into(), "a".into()],
            epoch: Some(1),
            ..Default::default()
        };
        let arch = [archive("bookworm")];
        let mut b = a.clone();
        b.packages = vec!["a".into(), "b".into(), "a".into()];
        assert_eq!(
            cache_key(&a, &arch, "mmdebstrap 1.3.5"),
            cache_key(&b, &arch, "mmdebstrap 1.3.5\n")
        );
        b.epoch = Some(2);
        assert_ne!(cache_key(&a, &arch, "v"), cache_key(&b, &arch, "v"));
        assert_ne!(
            cache_key(&a, &arch, "v"),
            cache_key(
                &a,
                &[archive("bookworm"), archive("bookworm-security")],
                "v"
            )
        );
        assert_ne!(cache_key(&a, &arch, "v1"), cache_key(&a, &arch, "v2"));
        assert_eq!(cache_key(&a, &arch, "v").len(), 64);
    }

    #[test]
    fn lists_give_dates_and_the_first_archive_publishing_each_installed_version() {
        let d = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| fs::write(d.path().join(n), t).unwrap();
        w("status", "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: install ok installed\nVersion: 2+sec\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 9\n");
        w(
            "m.example_debian_dists_bookworm_InRelease",
            "Suite: stable\nDate: Sat, 01 Jun 2024 10:00:00 UTC\n",
        );
        w(
            "m.example_debian_dists_bookworm_main_binary-amd64_Packages",
            "Package: a\nVersion: 1\n\nPackage: b\nVersion: 2\n\nPackage: gone\nVersion: 9\n",
        );
        w(
            "m.example_debian_dists_bookworm-security_InRelease",
            "Date: Mon, 03 Jun 2024 10:00:00 UTC\n",
        );
        w(
            "m.example_debian_dists_bookworm-security_main_binary-amd64_Packages",
            "Package: b\nVersion: 2+sec\n\nPackage: a\nVersion: 1\n",
        );
        let (states, origins) = read_lists(
            d.path(),
            &[archive("bookworm"), archive("bookworm-security")],
        )
        .unwrap();
        assert_eq!(
            states[0].date.as_deref(),
            Some("Sat, 01 Jun 2024 10:00:00 UTC")
        );
        assert_eq!(
            states[1].date.as_deref(),
            Some("Mon, 03 Jun 2024 10:00:00 UTC")
        );
        assert_eq!(
            origins.into_iter().collect::<Vec<_>>(),
            [
                ("a 1".to_string(), "bookworm".to_string()),
                ("b 2+sec".to_string(), "bookworm-security".to_string()),
            ]
        );
    }

    #[test]
    fn hook_paths_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
