//! A new user's home: created from `/etc/skel`, and `~/.ssh/authorized_keys`.

use super::{exists, meta, mkdir_p, read_text, write_file, Changes, ConfigError, Result};
use crate::tree::{Inode, Kind, Tree};

/// What to do with a user's home once the databases are settled.
pub(crate) struct HomePlan {
    /// Absolute path.
    pub home: String,
    /// Owner of what is created.
    pub uid: u32,
    /// Group of what is created.
    pub gid: u32,
    /// Create it (with `mode`, from `/etc/skel` when `skel`) if missing.
    pub create: bool,
    /// Mode of a created home.
    pub mode: u16,
    /// Fill a created home from `/etc/skel`.
    pub skel: bool,
    /// Lines to have in `~/.ssh/authorized_keys`.
    pub keys: Vec<String>,
}

/// Creates the home if planned and missing, then adds the keys.
pub(crate) fn make_home(
    tree: &mut Tree,
    p: &HomePlan,
    epoch: i64,
    changes: &mut Changes,
) -> Result<()> {
    if p.create && !exists(tree, &p.home) {
        let parent = p.home.rsplit_once('/').map_or("/", |(a, _)| a);
        mkdir_p(tree, parent, &meta(0o755, 0, 0, epoch), changes)?;
        mkdir_p(tree, &p.home, &meta(p.mode, p.uid, p.gid, epoch), changes)?;
        if p.skel {
            copy_skel(tree, &p.home, p.uid, p.gid, changes)?;
        }
    }
    if p.keys.is_empty() {
        return Ok(());
    }
    if !exists(tree, &p.home) {
        return Err(ConfigError::Missing {
            what: "home directory",
            name: p.home.clone(),
            looked_for: "the image, for ~/.ssh/authorized_keys".into(),
        });
    }
    let ssh = format!("{}/.ssh", p.home);
    mkdir_p(tree, &ssh, &meta(0o700, p.uid, p.gid, epoch), changes)?;
    let path = format!("{ssh}/authorized_keys");
    let mut text = read_text(tree, &path)?.unwrap_or_default();
    let before = text.clone();
    for key in &p.keys {
        if !text.lines().any(|l| l.trim() == key.trim()) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(key.trim());
            text.push('\n');
        }
    }
    if text != before || !exists(tree, &path) {
        write_file(
            tree,
            &path,
            text.as_bytes(),
            Some(meta(0o600, p.uid, p.gid, epoch)),
            epoch,
            changes,
        )?;
    }
    Ok(())
}

/// Copies `/etc/skel`'s contents into `home` with the user as owner (modes and
/// mtimes kept, as useradd's copy_tree does). Devices and the like are skipped.
fn copy_skel(tree: &mut Tree, home: &str, uid: u32, gid: u32, changes: &mut Changes) -> Result<()> {
    let Ok(skel) = tree.resolve(b"/etc/skel", true) else {
        return Ok(());
    };
    let Some(skel_id) = tree.lookup(&skel) else {
        return Ok(());
    };
    let dest = tree.resolve(home.as_bytes(), true)?;
    let mut stack = vec![(skel_id, dest)];
    while let Some((src, dst)) = stack.pop() {
        let children: Vec<(Vec<u8>, usize)> =
            tree.children(src).map(|(n, id)| (n.to_vec(), id)).collect();
        for (name, id) in children {
            let mut inode = tree.inode(id).clone();
            let path = [dst.as_slice(), b"/", &name].concat();
            match inode.kind {
                Kind::Dir(_) => {
                    inode.kind = Kind::Dir(Default::default());
                    stack.push((id, path.clone()));
                }
                Kind::File(_) | Kind::Symlink(_) => {}
                _ => continue,
            }
            inode.meta.uid = uid;
            inode.meta.gid = gid;
            tree.insert(
                &path,
                Inode {
                    meta: inode.meta,
                    kind: inode.kind,
                },
            )?;
            changes.added.insert(super::abs(&path));
        }
    }
    Ok(())
}
