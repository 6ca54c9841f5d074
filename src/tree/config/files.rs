//! Files, directories and symlinks the recipe puts into the image.
//!
//! Owner and group names are looked up in the tree's `/etc/passwd` and
//! `/etc/group`, so apply this step after [`super::add_users`]. Missing parent
//! directories are created 0755 root. An existing file, symlink or other
//! non-directory at the path is replaced by a new inode carrying only what the
//! spec says; an existing directory given as `Dir` keeps its contents and
//! takes the spec's metadata; replacing a directory by anything else is
//! refused (it would silently drop a subtree).

use super::usersdb::Db;
use super::{meta, put, Changes, ConfigError, Result};
use crate::tree::{FileData, Kind, Tree};

/// A user or group, by name or number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A name looked up in `/etc/passwd` or `/etc/group`.
    Name(String),
    /// A numeric id, used as is.
    Id(u32),
}

/// What to create.
#[derive(Clone, Debug)]
pub enum FileKind {
    /// A regular file with this content.
    File(FileData),
    /// A directory.
    Dir,
    /// A symbolic link to `target` (stored as given, not checked).
    Symlink(String),
}

/// One file, directory or symlink.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Absolute path in the image.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits (`0o7777` mask); default 0644 files, 0755 directories,
    /// 0777 symlinks.
    pub mode: Option<u16>,
    /// Owner; default root (0).
    pub owner: Option<Owner>,
    /// Group; default root (0).
    pub group: Option<Owner>,
}

/// Resolves an owner against a database (`what` names it in errors).
fn resolve_id(owner: &Option<Owner>, db: &Db, what: &'static str) -> Result<u32> {
    match owner {
        None => Ok(0),
        Some(Owner::Id(id)) => Ok(*id),
        Some(Owner::Name(name)) => {
            let rec = db.get(name).ok_or_else(|| ConfigError::Missing {
                what,
                name: name.clone(),
                looked_for: format!("{} (add users before files)", db.path),
            })?;
            rec[2].parse().map_err(|_| ConfigError::Malformed {
                path: db.path.into(),
                line: 0,
                message: format!("{what} {name:?} has id {:?}", rec[2]),
            })
        }
    }
}

/// Creates every spec in order (a later spec for the same path wins).
/// Returns the changed paths.
pub fn apply_files(tree: &mut Tree, specs: &[FileSpec], epoch: i64) -> Result<Changes> {
    let passwd = Db::load(tree, "/etc/passwd", 7)?;
    let group = Db::load(tree, "/etc/group", 4)?;
    let mut changes = Changes::default();
    for spec in specs {
        if !spec.path.starts_with('/') {
            return Err(ConfigError::Invalid {
                what: "file path",
                value: spec.path.clone(),
                why: "must be absolute".into(),
            });
        }
        if spec.mode.is_some_and(|m| m > 0o7777) {
            let value = format!("{:o}", spec.mode.unwrap_or_default());
            return Err(ConfigError::Invalid {
                what: "mode",
                value,
                why: format!(
                    "for {}: only permission bits (at most 7777) are allowed",
                    spec.path
                ),
            });
        }
        let uid = resolve_id(&spec.owner, &passwd, "user")?;
        let gid = resolve_id(&spec.group, &group, "group")?;
        let (kind, default_mode) = match &spec.kind {
            FileKind::File(data) => (Kind::File(data.clone()), 0o644),
            FileKind::Dir => (Kind::Dir(Default::default()), 0o755),
            FileKind::Symlink(target) => (Kind::Symlink(target.clone().into_bytes()), 0o777),
        };
        let m = meta(spec.mode.unwrap_or(default_mode), uid, gid, epoch);
        put(tree, &spec.path, kind, Some(m), epoch, &mut changes)?;
    }
    Ok(changes)
}
