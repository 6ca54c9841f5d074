//! The Debian archives a bootstrap installs from, and how fresh they are.
//!
//! ```text
//! recipe lists archives ──────────────────────────────► exactly those
//! recipe lists none ─► the host's apt sources, read the way apt reads them
//!   (/etc/apt/sources.list, sources.list.d/*.list one-line, *.sources deb822)
//!   ─► <suite> and <suite>-updates from the archive that serves them,
//!      <suite>-security from the security archive's own URI
//! each archive ─► dists/<suite>/InRelease ─► its `Date` (how fresh it is)
//! ```
//! A golden image is what every VM of a fleet starts from: by default it
//! carries the published security fixes (`<suite>-security`) and stable
//! updates (`<suite>-updates`), as a Debian system installed from the same
//! host would. Suites without those archives (sid, unstable, experimental)
//! get the suite alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One apt archive: `deb URI SUITE COMPONENTS…`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Archive {
    /// The archive's URI (`http://deb.debian.org/debian`).
    pub uri: String,
    /// The suite (`bookworm-security`).
    pub suite: String,
    /// Components (`main`).
    pub components: Vec<String>,
}

/// Which archives to use when the recipe names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostChoice {
    /// Add `<suite>-updates`.
    pub updates: bool,
    /// Add `<suite>-security`.
    pub security: bool,
}

/// Suites with no `-updates` or `-security` archive.
const ROLLING: [&str; 4] = ["sid", "unstable", "experimental", "rc-buggy"];

impl Archive {
    /// The sources.list line mmdebstrap and apt read.
    pub fn sources_line(&self) -> String {
        format!(
            "deb {} {} {}",
            self.uri,
            self.suite,
            self.components.join(" ")
        )
    }

    /// Where the archive's signed Release file is.
    pub fn in_release_url(&self) -> String {
        format!(
            "{}/dists/{}/InRelease",
            self.uri.trim_end_matches('/'),
            self.suite
        )
    }

    /// The start of the names apt gives this archive's files in
    /// `/var/lib/apt/lists` (apt's `URItoFileName`: the URI without its
    /// scheme, `_` and `:` escaped, `/` turned into `_`), e.g.
    /// `deb.debian.org_debian_dists_bookworm_`.
    pub fn list_prefix(&self) -> String {
        let rest = self
            .uri
            .split_once("://")
            .map_or(self.uri.as_str(), |(_, r)| r)
            .trim_end_matches('/');
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let escaped = rest
            .replace('_', "%5f")
            .replace(':', "%3a")
            .replace('/', "_");
        format!("{escaped}_dists_{}_", self.suite.replace('/', "_"))
    }
}

/// One enabled `deb` entry of the host's apt configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostEntry {
    /// Its URIs.
    pub uris: Vec<String>,
    /// Its suites.
    pub suites: Vec<String>,
    /// Its components.
    pub components: Vec<String>,
}

/// Every enabled `deb` entry of `root`'s apt configuration (`/` on the
/// host), in apt's order: `etc/apt/sources.list`, then the files of
/// `etc/apt/sources.list.d` by name (`*.list` one-line, `*.sources` deb822).
pub fn host_entries(root: &Path) -> Vec<HostEntry> {
    let mut out = Vec::new();
    let etc = root.join("etc/apt");
    if let Ok(text) = std::fs::read_to_string(etc.join("sources.list")) {
        out.extend(parse_one_line(&text));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(etc.join("sources.list.d"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => out.extend(parse_one_line(&text)),
            Some("sources") => out.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    out
}

/// `deb [options] URI SUITE COMPONENT…` lines (sources.list(5)).
pub fn parse_one_line(text: &str) -> Vec<HostEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?.1.trim_start(),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_string();
            let suite = words.next()?.to_string();
            Some(HostEntry {
                uris: vec![uri],
                suites: vec![suite],
                components: words.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// deb822 stanzas (sources.list(5), "DEB822-STYLE FORMAT") of type `deb`
/// that are not `Enabled: no`.
pub fn parse_deb822(text: &str) -> Vec<HostEntry> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            })
        };
        let enabled =
            field("Enabled").is_none_or(|v| !v.iter().any(|w| w.eq_ignore_ascii_case("no")));
        let is_deb = field("Types").is_some_and(|t| t.iter().any(|t| t == "deb"));
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if enabled && is_deb {
            out.push(HostEntry {
                uris,
                suites,
                components: field("Components").unwrap_or_default(),
            });
        }
    }
    out
}

/// The archives the host's apt would use for `suite` (module docs): for
/// each of `suite`, `suite-updates`, `suite-security` (as `choice` says and
/// the suite has them), the first URI of the first entry listing exactly
/// that suite; else, for the first two, the host's main archive (the first
/// entry with a suite that is not `*-security`), for the last the host's
/// security archive (the first entry with a `*-security` suite). An error
/// says what is missing.
pub fn from_host(
    entries: &[HostEntry],
    suite: &str,
    components: &[String],
    choice: HostChoice,
) -> Result<Vec<Archive>, String> {
    let rolling = ROLLING.contains(&suite);
    let mut wanted = vec![suite.to_string()];
    if choice.updates && !rolling {
        wanted.push(format!("{suite}-updates"));
    }
    if choice.security && !rolling {
        wanted.push(format!("{suite}-security"));
    }
    let first_uri = |e: &HostEntry| e.uris.first().cloned();
    let listing = |s: &str| {
        entries
            .iter()
            .find(|e| e.suites.iter().any(|x| x == s))
            .and_then(first_uri)
    };
    let main = entries
        .iter()
        .find(|e| e.suites.iter().any(|s| !s.ends_with("-security")))
        .and_then(first_uri);
    let security = entries
        .iter()
        .find(|e| e.suites.iter().any(|s| s.ends_with("-security")))
        .and_then(first_uri);
    wanted
        .into_iter()
        .map(|s| {
            let uri = listing(&s).or_else(|| {
                if s.ends_with("-security") {
                    security.clone()
                } else {
                    main.clone()
                }
            });
            let uri = uri.ok_or_else(|| {
                if s.ends_with("-security") {
                    format!(
                        "the host's apt sources name no security archive for {s}: list the archives in [os] source (archives = [...]), or set security = false"
                    )
                } else {
                    "the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d) name no Debian archive: list the archives in [os] source (archives = [...])".to_string()
                }
            })?;
            Ok(Archive {
                uri,
                suite: s,
                components: components.to_vec(),
            })
        })
        .collect()
}

/// The `Date:` field of a Release or InRelease file (clearsigned or not).
pub fn release_date(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Date:"))
        .map(|d| d.trim().to_string())
}

/// Seconds since 1970 of an RFC 2822 date as apt writes it in Release
/// files (`Sat, 30 Nov 2024 09:14:25 UTC`).
pub fn parse_release_date(date: &str) -> Option<i64> {
    let words: Vec<&str> = date.split_whitespace().collect();
    let w = if words.first()?.ends_with(',') {
        &words[1..]
    } else {
        &words[..]
    };
    let (day, month, year, time) = (w.first()?, w.get(1)?, w.get(2)?, w.get(3)?);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    let days = crate::date::days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// `2026-12-04 09:14 UTC` for seconds since 1970.
pub fn format_utc(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::date::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `(Package, Version)` of every stanza of a Packages index.
pub fn package_versions(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split("\n\n").filter_map(|stanza| {
        let mut name = None;
        let mut version = None;
        for l in stanza.lines() {
            if let Some(v) = l.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = l.strip_prefix("Version: ") {
                version = Some(v.trim());
            }
        }
        Some((name?, version?))
    })
}

/// apt's own downloader: http and https with the host's proxy settings.
const APT_HELPER: &str = "/usr/lib/apt/apt-helper";

/// Downloads the archive's InRelease now and returns its `Date`.
pub fn fetch_release_date(archive: &Archive) -> Result<String, String> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| format!("temporary file: {e}"))?;
    let url = archive.in_release_url();
    let out = Command::new(APT_HELPER)
        .args(["-o", "Debug::NoLocking=1", "download-file", &url])
        .arg(tmp.path())
        .output()
        .map_err(|e| format!("cannot run {APT_HELPER} (package apt): {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("cannot download {url}: {}", err.trim()));
    }
    let text = std::fs::read_to_string(tmp.path()).map_err(|e| format!("{url}: {e}"))?;
    release_date(&text).ok_or_else(|| format!("{url} has no Date field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
        Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
        Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main\n";

    fn main() -> Vec<String> {
        vec!["main".into()]
    }

    #[test]
    fn host_gives_the_suite_updates_and_security_from_its_own_uri() {
        let all = HostChoice {
            updates: true,
            security: true,
        };
        let got = from_host(&parse_deb822(HOST), "bookworm", &main(), all).unwrap();
        let lines: Vec<String> = got.iter().map(Archive::sources_line).collect();
        assert_eq!(
            lines,
            [
                "deb http://mirror.example/debian bookworm main",
                "deb http://mirror.example/debian bookworm-updates main",
                "deb http://sec.example/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn another_suite_takes_the_host_s_archives_and_switches_leave_parts_out() {
        let got = from_host(
            &parse_deb822(HOST),
            "trixie",
            &main(),
            HostChoice {
                updates: false,
                security: true,
            },
        )
        .unwrap();
        let lines: Vec<String> = got.iter().map(Archive::sources_line).collect();
        assert_eq!(
            lines,
            [
                "deb http://mirror.example/debian trixie main",
                "deb http://sec.example/debian-security trixie-security main",
            ]
        );
        let sid = from_host(
            &parse_deb822(HOST),
            "sid",
            &main(),
            HostChoice {
                updates: true,
                security: true,
            },
        )
        .unwrap();
        assert_eq!(sid.len(), 1);
    }

    #[test]
    fn a_host_without_a_security_archive_is_an_error_unless_security_is_off() {
        let only = parse_one_line("deb [arch=amd64] http://mirror.example/debian bookworm main\n");
        let err = from_host(
            &only,
            "bookworm",
            &main(),
            HostChoice {
                updates: true,
                security: true,
            },
        )
        .unwrap_err();
        assert!(
            err.contains("no security archive for bookworm-security"),
            "{err}"
        );
        assert!(from_host(
            &only,
            "bookworm",
            &main(),
            HostChoice {
                updates: true,
                security: false
            }
        )
        .is_ok());
    }

    #[test]
    fn disabled_and_source_stanzas_are_skipped() {
        let text = "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n\
                    Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n";
        assert!(parse_deb822(text).is_empty());
    }

    #[test]
    fn list_prefix_is_apt_s_file_name() {
        let a = Archive {
            uri: "http://deb.debian.org/debian/".into(),
            suite: "bookworm-security".into(),
            components: main(),
        };
        assert_eq!(
            a.list_prefix(),
            "deb.debian.org_debian_dists_bookworm-security_"
        );
        let b = Archive {
            uri: "http://user@mirror.example:8080/my_debian".into(),
            ..a
        };
        assert_eq!(
            b.list_prefix(),
            "mirror.example%3a8080_my%5fdebian_dists_bookworm-security_"
        );
    }

    #[test]
    fn release_dates_read_and_parse() {
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\nSuite: stable-security\nDate: Sat, 30 Nov 2024 09:14:25 UTC\nValid-Until: Sat, 07 Dec 2024 09:14:25 UTC\n";
        let d = release_date(text).unwrap();
        assert_eq!(d, "Sat, 30 Nov 2024 09:14:25 UTC");
        // date -d 'Sat, 30 Nov 2024 09:14:25 UTC' +%s
        assert_eq!(parse_release_date(&d), Some(1_732_958_065));
        assert_eq!(parse_release_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_release_date("garbage"), None);
        assert_eq!(format_utc(1_732_958_065), "2024-11-30 09:14 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
    }

    #[test]
    fn packages_index_versions() {
        let text = "Package: a\nVersion: 1.0\nArchitecture: amd64\n\nPackage: b\nSource: x\nVersion: 2:3-4\n\n";
        let v: Vec<_> = package_versions(text).collect();
        assert_eq!(v, [("a", "1.0"), ("b", "2:3-4")]);
    }
}
