//! Offline `systemctl enable`, `disable` and `mask` on a [`Tree`].
//!
//! ```text
//! find_unit: /etc/systemd/system, /lib/systemd/system, /usr/lib/systemd/system (first wins)
//! enable  foo.service  [Install] WantedBy=multi-user.target
//!    ─► /etc/systemd/system/multi-user.target.wants/foo.service -> /lib/systemd/system/foo.service
//!         RequiredBy=x.target ─► x.target.requires/foo.service;  Alias=bar.service ─► bar.service -> …
//!         Also=baz.socket ─► enable baz.socket too
//! mask    foo.service ─► /etc/systemd/system/foo.service -> /dev/null
//! ```
//! Semantics compared with `systemctl enable` (systemd 252, `src/shared/install.c`):
//! - links point at the unit file's absolute path where it was found, as
//!   systemctl does; a link that already exists with that target is left
//!   alone, one with another target is an error (systemctl's "File exists").
//! - a unit without an [Install] section ("static", e.g. udev-activated
//!   `qemu-guest-agent.service`) changes nothing and is not an error.
//! - templates: `foo@bar.service` uses `foo@.service`'s file; enabling
//!   `foo@.service` uses `DefaultInstance=` (nothing without one).
//! - specifiers (`%i`, `%N`, …) in [Install] values are not expanded; a value
//!   containing `%` or `/` is refused. Drop-ins and presets are not read.
//! - `disable` removes the links `enable` would make plus every link named
//!   after the unit in `/etc/systemd/system/*.wants` and `*.requires`.
//! - `mask` refuses to replace a regular file, like systemctl.

use std::collections::BTreeSet;

use super::{Inode, Kind, Meta, Tree, TreeError};

/// Where enablement links live.
const ETC: &str = "etc/systemd/system";
/// Unit search path, in priority order (the /run directories are empty offline).
pub const UNIT_DIRS: [&str; 3] = [ETC, "lib/systemd/system", "usr/lib/systemd/system"];
/// Unit files are small; a larger one is not a unit file.
const MAX_UNIT_FILE: u64 = 1 << 20;

/// What went wrong editing units.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// A link we would create exists and points elsewhere, or is not a link.
    #[error("{path} exists ({existing}); not replacing it")]
    Exists {
        /// The path.
        path: String,
        /// What is there.
        existing: String,
    },
    /// The unit name or an [Install] value is not a plain unit name.
    #[error("{name:?} is not a unit name imgbuild can handle (empty, or has '/', '%' or NUL)")]
    BadName {
        /// The name.
        name: String,
    },
    /// The unit is masked.
    #[error("{unit} is masked (/etc/systemd/system/{unit} -> /dev/null)")]
    Masked {
        /// The unit.
        unit: String,
    },
    /// No unit file of that name.
    #[error("unit {unit} not found in /etc/systemd/system, /lib/systemd/system or /usr/lib/systemd/system")]
    NotFound {
        /// The unit.
        unit: String,
    },
    /// Reading the unit file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Editing the tree failed.
    #[error("editing the OS tree")]
    Tree(#[from] TreeError),
}

/// The [Install] section of a unit file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=`.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=`.
    pub required_by: Vec<String>,
    /// `Alias=`.
    pub alias: Vec<String>,
    /// `Also=`.
    pub also: Vec<String>,
    /// `DefaultInstance=` (templates only).
    pub default_instance: Option<String>,
}

impl Install {
    /// True when there is nothing to enable (a "static" unit).
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

/// Parses the [Install] section: space-separated lists accumulate, an empty
/// assignment resets the list (systemd.unit(5)), `#`/`;` lines are comments,
/// a trailing `\` continues a line.
pub fn parse_install(text: &str) -> Install {
    let mut out = Install::default();
    let mut in_install = false;
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_install {
            continue;
        }
        let list = match key.trim() {
            "WantedBy" => &mut out.wanted_by,
            "RequiredBy" => &mut out.required_by,
            "Alias" => &mut out.alias,
            "Also" => &mut out.also,
            "DefaultInstance" => {
                out.default_instance = Some(value.trim().to_string()).filter(|v| !v.is_empty());
                continue;
            }
            _ => continue,
        };
        if value.trim().is_empty() {
            list.clear();
        }
        list.extend(value.split_whitespace().map(str::to_string));
    }
    out
}

/// A unit file found on the search path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitFile {
    /// Absolute path where it was found (`/lib/systemd/system/foo.service`).
    pub path: String,
    /// Its [Install] section.
    pub install: Install,
}

fn check_name(name: &str) -> Result<(), SystemdError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%', '\0']) {
        return Err(SystemdError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// `foo@bar.service` -> `foo@.service`; other names unchanged.
fn template_of(name: &str) -> Option<String> {
    let (prefix, rest) = name.split_once('@')?;
    let (instance, suffix) = rest.rsplit_once('.')?;
    (!instance.is_empty()).then(|| format!("{prefix}@.{suffix}"))
}

/// Finds the unit file for `unit` (or its template) on the search path.
pub fn find_unit(tree: &Tree, unit: &str) -> Result<Option<UnitFile>, SystemdError> {
    check_name(unit)?;
    let names: Vec<String> = std::iter::once(unit.to_string())
        .chain(template_of(unit))
        .collect();
    for name in &names {
        for dir in UNIT_DIRS {
            let path = format!("{dir}/{name}");
            let Some(id) = tree
                .resolve(path.as_bytes(), true)
                .ok()
                .and_then(|p| tree.lookup(&p))
            else {
                continue;
            };
            let Kind::File(data) = &tree.inode(id).kind else {
                continue;
            };
            let shown = format!("/{path}");
            if data.len() > MAX_UNIT_FILE {
                let source =
                    std::io::Error::other(format!("{} bytes is not a unit file", data.len()));
                return Err(SystemdError::Read {
                    path: shown,
                    source,
                });
            }
            let bytes = data.read_all().map_err(|source| SystemdError::Read {
                path: shown.clone(),
                source,
            })?;
            let install = parse_install(&String::from_utf8_lossy(&bytes));
            return Ok(Some(UnitFile {
                path: shown,
                install,
            }));
        }
    }
    Ok(None)
}

/// The links `enable` makes for `unit`: (link path relative to the root, target).
fn links_for(
    tree: &Tree,
    unit: &str,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<(String, String)>, SystemdError> {
    if !seen.insert(unit.to_string()) {
        return Ok(Vec::new());
    }
    let file = find_unit(tree, unit)?.ok_or_else(|| SystemdError::NotFound {
        unit: unit.to_string(),
    })?;
    let i = &file.install;
    // Enabling a bare template enables its DefaultInstance, if any.
    let instance = match (unit.contains("@."), &i.default_instance) {
        (true, Some(inst)) => Some(unit.replacen("@.", &format!("@{inst}."), 1)),
        (true, None) => None,
        (false, _) => Some(unit.to_string()),
    };
    let mut out = Vec::new();
    if let Some(inst) = &instance {
        for (targets, dir) in [(&i.wanted_by, "wants"), (&i.required_by, "requires")] {
            for t in targets {
                check_name(t)?;
                out.push((format!("{ETC}/{t}.{dir}/{inst}"), file.path.clone()));
            }
        }
    }
    for a in &i.alias {
        check_name(a)?;
        out.push((format!("{ETC}/{a}"), file.path.clone()));
    }
    for also in &i.also {
        check_name(also)?;
        out.extend(links_for(tree, also, seen)?);
    }
    Ok(out)
}

fn masked(tree: &Tree, unit: &str) -> bool {
    let id = tree.lookup(format!("{ETC}/{unit}").as_bytes());
    id.is_some_and(|id| matches!(&tree.inode(id).kind, Kind::Symlink(t) if t == b"/dev/null"))
}

/// Creates the links `systemctl enable unit` would (see the module doc).
/// Returns the paths created, absolute, sorted; empty for a static unit or
/// one already enabled.
pub fn enable_unit(tree: &mut Tree, unit: &str, meta: &Meta) -> Result<Vec<String>, SystemdError> {
    if masked(tree, unit) {
        return Err(SystemdError::Masked {
            unit: unit.to_string(),
        });
    }
    let mut changed = Vec::new();
    for (link, target) in links_for(tree, unit, &mut BTreeSet::new())? {
        if symlink(tree, &link, &target, meta)? {
            changed.push(format!("/{link}"));
        }
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
}

/// Makes `link` a symlink to `target`; `false` if it already is one, or a
/// link to another spelling of the same file (`/usr/lib/…` for `/lib/…` on
/// a merged-/usr tree, as Debian 13's packages enable their units), which
/// systemctl accepts too (install.c compares the files, not the strings).
fn symlink(tree: &mut Tree, link: &str, target: &str, meta: &Meta) -> Result<bool, SystemdError> {
    let same_file = |t: &[u8]| {
        let resolve = |p: &[u8]| tree.resolve(p, true).ok();
        resolve(t).is_some_and(|a| Some(a) == resolve(target.as_bytes()))
    };
    if let Some(id) = tree.lookup(link.as_bytes()) {
        return match &tree.inode(id).kind {
            Kind::Symlink(t) if t == target.as_bytes() || same_file(t) => Ok(false),
            Kind::Symlink(t) => Err(SystemdError::Exists {
                path: format!("/{link}"),
                existing: format!("a link to {}", String::from_utf8_lossy(t)),
            }),
            _ => Err(SystemdError::Exists {
                path: format!("/{link}"),
                existing: "not a symlink".to_string(),
            }),
        };
    }
    let inode = Inode {
        meta: Meta {
            mode: 0o777,
            ..meta.clone()
        },
        kind: Kind::Symlink(target.as_bytes().to_vec()),
    };
    tree.insert(link.as_bytes(), inode)?;
    Ok(true)
}

/// Removes what `enable` made, and any `*.wants/unit` or `*.requires/unit`
/// link under /etc/systemd/system. Returns the paths removed, sorted.
pub fn disable_unit(tree: &mut Tree, unit: &str) -> Result<Vec<String>, SystemdError> {
    check_name(unit)?;
    let mut candidates: BTreeSet<String> = match find_unit(tree, unit)? {
        Some(_) => links_for(tree, unit, &mut BTreeSet::new())?
            .into_iter()
            .map(|(l, _)| l)
            .collect(),
        None => BTreeSet::new(),
    };
    if let Some(etc) = tree.lookup(ETC.as_bytes()) {
        for (name, id) in tree.children(etc) {
            let name = String::from_utf8_lossy(name);
            if (name.ends_with(".wants") || name.ends_with(".requires"))
                && tree.children(id).any(|(n, _)| n == unit.as_bytes())
            {
                candidates.insert(format!("{ETC}/{name}/{unit}"));
            }
        }
    }
    let mut removed = Vec::new();
    for link in candidates {
        let is_link = tree
            .lookup(link.as_bytes())
            .is_some_and(|id| matches!(tree.inode(id).kind, Kind::Symlink(_)));
        if is_link {
            tree.remove(link.as_bytes())?;
            removed.push(format!("/{link}"));
        }
    }
    Ok(removed)
}

/// `systemctl mask`: `/etc/systemd/system/unit -> /dev/null`, replacing a
/// symlink there but never a file. Returns the path if it changed.
pub fn mask_unit(tree: &mut Tree, unit: &str, meta: &Meta) -> Result<Vec<String>, SystemdError> {
    check_name(unit)?;
    let link = format!("{ETC}/{unit}");
    if let Some(id) = tree.lookup(link.as_bytes()) {
        match &tree.inode(id).kind {
            Kind::Symlink(t) if t == b"/dev/null" => return Ok(Vec::new()),
            Kind::Symlink(_) => tree.remove(link.as_bytes())?,
            _ => {
                return Err(SystemdError::Exists {
                    path: format!("/{link}"),
                    existing: "a unit file".to_string(),
                })
            }
        }
    }
    symlink(tree, &link, "/dev/null", meta)?;
    Ok(vec![format!("/{link}")])
}

#[cfg(test)]
mod tests;
