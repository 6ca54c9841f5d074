//! Configuration steps: edits applied to a [`Tree`] without running anything
//! inside it (no chroot, no `useradd`, no `systemctl`).
//!
//! ```text
//! Tree ─► set_hostname ─► set_timezone ─► set_locale ─► add_groups/add_users ─► apply_files
//!      ─► configure_dhcp ─► grow_root_on_boot ─► write_fstab ─► clean_for_golden_image ─► write_nocloud ─► Tree
//! ```
//! Each step is a plain function over `&mut Tree` taking its own small
//! options struct and the build `epoch` (the only time any step writes), and
//! returns the [`Changes`] it made so tests can assert them exactly (osbuild
//! style). Order matters in one place: [`apply_files`] resolves owner names
//! against the tree's `/etc/passwd` and `/etc/group`, so users come first.
//!
//! Paths are absolute strings (`/etc/hostname`). Every write goes through
//! [`Tree::resolve`] for the parent directories, so `/lib/systemd/...` lands
//! in `usr/lib/systemd/...` on a merged-/usr tree. An edited file becomes a
//! new inode (as `rename(2)` of a temp file would) keeping the old file's
//! owner, mode and xattrs, with the epoch as mtime.

mod dpkg;
mod files;
mod fstab;
mod grow;
mod home;
mod hygiene;
mod network;
mod system;
mod users;
mod usersdb;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{FileData, Inode, Kind, Meta, Timestamp, Tree, TreeError};

pub use dpkg::installed_packages;
pub use files::{apply_files, FileKind, FileSpec, Owner};
pub use fstab::{write_fstab, FstabEntry};
pub use grow::{grow_root_on_boot, REPART_FILE};
pub use hygiene::{clean_for_golden_image, write_nocloud, Hygiene, NoCloud, SSH_KEYGEN_UNIT};
pub use network::{configure_dhcp, DHCP_NETWORK_FILE};
pub use system::{set_hostname, set_locale, set_timezone};
pub use users::{add_groups, add_users, GroupSpec, UserSpec};

/// What a step did to the tree, by absolute path (after symlinks in the
/// parent directories are resolved). A path whose metadata or content
/// changed, or that was replaced by a new inode, is `modified`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Paths that did not exist before.
    pub added: BTreeSet<String>,
    /// Paths that existed and were rewritten or had their metadata changed.
    pub modified: BTreeSet<String>,
    /// Paths that existed and are gone (a removed directory is listed alone,
    /// not with everything below it).
    pub removed: BTreeSet<String>,
}

impl Changes {
    /// Merges `other` into `self` (a path added then modified stays added).
    pub fn merge(&mut self, other: Changes) {
        for p in other.added {
            self.removed.remove(&p);
            self.added.insert(p);
        }
        for p in other.modified {
            if !self.added.contains(&p) {
                self.modified.insert(p);
            }
        }
        for p in other.removed {
            if !self.added.remove(&p) {
                self.modified.remove(&p);
                self.removed.insert(p);
            }
        }
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn record(&mut self, path: String, existed: bool) {
        if existed {
            if !self.added.contains(&path) {
                self.modified.insert(path);
            }
        } else {
            self.removed.remove(&path);
            self.added.insert(path);
        }
    }
}

/// What went wrong in a configuration step.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A tree operation failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A file's content could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file that must be text is not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: String,
    },
    /// A path exists with the wrong kind.
    #[error("{path} is {found}, expected {expected}")]
    WrongKind {
        /// The path.
        path: String,
        /// What the step needs there.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// A file in the tree is malformed.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value given to a step is invalid.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// What kind of value (`hostname`, `user name`, `timezone`, ...).
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is refused.
        why: String,
    },
    /// Something the step needs is not in the tree.
    #[error("{what} {name:?} not found in the image (looked for {looked_for})")]
    Missing {
        /// What kind of thing (`timezone`, `group`, `user`, ...).
        what: &'static str,
        /// Its name.
        name: String,
        /// Where it was looked for.
        looked_for: String,
    },
    /// A program a step needs is not in the tree.
    #[error("{program} is not in the image (looked for {looked_for}): {fix}")]
    NeedsProgram {
        /// The program.
        program: &'static str,
        /// Where it was looked for.
        looked_for: String,
        /// What to do.
        fix: &'static str,
    },
    /// A user or group request conflicts with the tree's databases.
    #[error("{what} {name:?}: {why}")]
    Conflict {
        /// `user` or `group`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The conflict.
        why: String,
    },
    /// No id is left in the range.
    #[error("no free {what} id left in {min}..={max}")]
    IdsExhausted {
        /// `uid` or `gid`.
        what: &'static str,
        /// Range start.
        min: u32,
        /// Range end.
        max: u32,
    },
}

/// Result of a configuration step.
pub type Result<T> = std::result::Result<T, ConfigError>;

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir(_) => "a directory",
        Kind::File(_) => "a regular file",
        Kind::Symlink(_) => "a symbolic link",
        Kind::CharDev { .. } => "a character device",
        Kind::BlockDev { .. } => "a block device",
        Kind::Fifo => "a fifo",
        Kind::Socket => "a socket",
    }
}

/// `/` + the tree-relative path `rel`.
fn abs(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

/// The metadata for something the build creates.
pub(crate) fn meta(mode: u16, uid: u32, gid: u32, epoch: i64) -> Meta {
    Meta {
        mode,
        uid,
        gid,
        mtime: Timestamp::from_secs(epoch),
        xattrs: Default::default(),
    }
}

/// Resolves symlinks in `path`'s parents (and in the last component when
/// `follow_last`), returning the tree-relative path and its inode if any.
fn locate(tree: &Tree, path: &str, follow_last: bool) -> Result<(Vec<u8>, Option<usize>)> {
    let rel = tree.resolve(path.as_bytes(), follow_last)?;
    let id = tree.lookup(&rel);
    Ok((rel, id))
}

/// Reads a regular file (following symlinks); `None` if it does not exist.
pub(crate) fn read_file(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>> {
    let (rel, id) = locate(tree, path, true)?;
    let Some(id) = id else { return Ok(None) };
    match &tree.inode(id).kind {
        Kind::File(data) => data
            .read_all()
            .map(Some)
            .map_err(|source| ConfigError::Read {
                path: abs(&rel),
                source,
            }),
        k => Err(ConfigError::WrongKind {
            path: abs(&rel),
            expected: "a regular file",
            found: kind_name(k),
        }),
    }
}

/// Reads a text file (following symlinks); `None` if it does not exist.
pub(crate) fn read_text(tree: &Tree, path: &str) -> Result<Option<String>> {
    match read_file(tree, path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ConfigError::NotText {
                path: path.to_owned(),
            }),
    }
}

/// True when `path` (symlinks followed) is a regular file.
pub(crate) fn is_file(tree: &Tree, path: &str) -> bool {
    matches!(locate(tree, path, true), Ok((_, Some(id))) if matches!(tree.inode(id).kind, Kind::File(_)))
}

/// True when `path` (symlinks followed) exists.
pub(crate) fn exists(tree: &Tree, path: &str) -> bool {
    matches!(locate(tree, path, true), Ok((_, Some(_))))
}

/// Creates `path` and its missing parents as directories (symlinks to
/// directories followed); new ones get `new_meta`. Returns the resolved path.
pub(crate) fn mkdir_p(
    tree: &mut Tree,
    path: &str,
    new_meta: &Meta,
    changes: &mut Changes,
) -> Result<Vec<u8>> {
    let rel = tree.resolve(path.as_bytes(), true)?;
    let mut prefix: Vec<u8> = Vec::new();
    for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(part);
        match tree.lookup(&prefix) {
            Some(id) if matches!(tree.inode(id).kind, Kind::Dir(_)) => {}
            Some(id) => {
                let found = kind_name(&tree.inode(id).kind);
                return Err(ConfigError::WrongKind {
                    path: abs(&prefix),
                    expected: "a directory",
                    found,
                });
            }
            None => {
                let inode = Inode {
                    meta: new_meta.clone(),
                    kind: Kind::Dir(Default::default()),
                };
                tree.insert(&prefix, inode)?;
                changes.record(abs(&prefix), false);
            }
        }
    }
    Ok(rel)
}

/// Puts `kind` at `path` as a new inode, creating parents (0755 root, epoch).
/// If something non-directory already exists there, its metadata is kept when
/// `meta` is `None`; a new entry then gets `default_meta`. Refuses to replace
/// a directory with a non-directory. Returns the resolved path.
pub(crate) fn put(
    tree: &mut Tree,
    path: &str,
    kind: Kind,
    meta: Option<Meta>,
    epoch: i64,
    changes: &mut Changes,
) -> Result<Vec<u8>> {
    let rel = tree.resolve(path.as_bytes(), false)?;
    let (parent, _) = rel.rsplit_once_slash();
    mkdir_p(tree, &abs(parent), &self::meta(0o755, 0, 0, epoch), changes)?;
    let existing = tree.lookup(&rel);
    let mut new_meta = match (meta, existing) {
        (Some(m), _) => m,
        (None, Some(id)) => tree.inode(id).meta.clone(),
        (None, None) => self::meta(0o644, 0, 0, epoch),
    };
    new_meta.mtime = Timestamp::from_secs(epoch);
    if let Some(id) = existing {
        let old = tree.inode(id);
        let is_dir = matches!(old.kind, Kind::Dir(_));
        if is_dir && !matches!(kind, Kind::Dir(_)) {
            return Err(ConfigError::WrongKind {
                path: abs(&rel),
                expected: kind_name(&kind),
                found: "a directory",
            });
        }
    }
    tree.insert(
        &rel,
        Inode {
            meta: new_meta,
            kind,
        },
    )?;
    changes.record(abs(&rel), existing.is_some());
    Ok(rel)
}

/// Writes a regular file with `content`; see [`put`] for metadata.
pub(crate) fn write_file(
    tree: &mut Tree,
    path: &str,
    content: &[u8],
    meta: Option<Meta>,
    epoch: i64,
    changes: &mut Changes,
) -> Result<Vec<u8>> {
    let data = FileData::Bytes(Arc::from(content));
    put(tree, path, Kind::File(data), meta, epoch, changes)
}

/// Writes a text file only if its content differs (keeping metadata).
pub(crate) fn update_text(
    tree: &mut Tree,
    path: &str,
    content: &str,
    default_meta: Meta,
    epoch: i64,
    changes: &mut Changes,
) -> Result<()> {
    match read_file(tree, path)? {
        Some(old) if old == content.as_bytes() => Ok(()),
        Some(_) => write_file(tree, path, content.as_bytes(), None, epoch, changes).map(|_| ()),
        None => write_file(
            tree,
            path,
            content.as_bytes(),
            Some(default_meta),
            epoch,
            changes,
        )
        .map(|_| ()),
    }
}

/// Removes `path` (not following a final symlink) if it exists.
pub(crate) fn remove(tree: &mut Tree, path: &str, changes: &mut Changes) -> Result<bool> {
    let (rel, id) = locate(tree, path, false)?;
    if id.is_none() {
        return Ok(false);
    }
    tree.remove(&rel)?;
    changes.added.remove(&abs(&rel));
    changes.modified.remove(&abs(&rel));
    changes.removed.insert(abs(&rel));
    Ok(true)
}

/// Splitting a tree-relative path into parent and name.
trait SplitSlash {
    fn rsplit_once_slash(&self) -> (&[u8], &[u8]);
}

impl SplitSlash for Vec<u8> {
    fn rsplit_once_slash(&self) -> (&[u8], &[u8]) {
        match self.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self[..i], &self[i + 1..]),
            None => (&[], self),
        }
    }
}
