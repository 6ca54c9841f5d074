//! `Tree`: the in-memory filesystem tree that sources fill, configuration
//! steps edit and filesystem writers read. It holds metadata and references
//! to file contents, never the contents of large files themselves.
//!
//! ```text
//! Tree ── inodes: Vec<Inode> ── [0] root Dir { "etc" -> 1, "usr" -> 7, ... }
//!                                [1] Dir { "hostname" -> 2, ... }
//!                                [2] File(Bytes "golden\n")
//! ```
//! Hard links are two directory entries naming one `InodeId`. Paths are byte
//! strings relative to the root; a leading `/` or `./` is ignored and `..`
//! is refused, so nothing can point outside the tree. A path is at most
//! [`PATH_MAX`] bytes once normalised, so at most `PATH_MAX / 2` components
//! deep: whatever builds full paths ([`Tree::walk`], error messages) costs
//! at most 4 KiB per name, never the square of a hostile depth, and
//! [`Tree::entries`] (what the ext4 writer numbers inodes by) builds none.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use imgbuild_formats::ReadAt;

pub mod acl;
pub mod boot;
pub mod config;
pub mod cpio;
pub mod drivers;
pub mod systemd;
#[cfg(test)]
pub(crate) mod testing;

/// Longest path inside the tree, in bytes, counted as the path reads once
/// normalised (components joined by single `/`, no leading `/`): Linux's
/// `PATH_MAX`. Deeper trees exist on Linux, but nothing reaches them by
/// path, and a tar that holds one is far likelier hostile than useful.
pub const PATH_MAX: usize = 4096;

/// Largest device major number: Linux keeps 12 bits of it (`MAJOR()` in
/// `include/linux/kdev_t.h`), and ext4's new-style encoding stores 12.
pub const MAX_DEV_MAJOR: u32 = (1 << 12) - 1;
/// Largest device minor number: 20 bits (`MINORBITS`).
pub const MAX_DEV_MINOR: u32 = (1 << 20) - 1;

/// Bytes of a too-long path shown in [`TreeError::PathTooLong`].
const SHOWN_PREFIX: usize = 64;

/// Index of an inode in a [`Tree`].
pub type InodeId = usize;

/// The root directory's inode.
pub const ROOT: InodeId = 0;

/// Seconds and nanoseconds since the Unix epoch (negative before 1970).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Whole seconds.
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

impl Timestamp {
    /// A whole-second timestamp.
    pub fn from_secs(secs: i64) -> Self {
        Self { secs, nsec: 0 }
    }
}

/// Ownership, permissions, time and extended attributes of an inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including set-uid, set-gid and sticky (`0o7777` mask).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (also used for ctime/atime/crtime by the writers).
    pub mtime: Timestamp,
    /// Extended attributes by full name (`user.x`, `security.capability`,
    /// `system.posix_acl_access` in the kernel's xattr format), sorted.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// File contents: small buffers in memory, everything else by reference.
#[derive(Clone)]
pub enum FileData {
    /// Bytes in memory (configuration files the build writes).
    Bytes(Arc<[u8]>),
    /// `len` bytes of `source` starting at `offset` (a file inside a tar).
    Source {
        /// Where the bytes live.
        source: Arc<dyn ReadAt>,
        /// Offset inside the source.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

impl FileData {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileData::Bytes(b) => <[u8]>::len(b) as u64,
            FileData::Source { len, .. } => *len,
        }
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the whole content into memory (for small files only).
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        match self {
            FileData::Bytes(b) => Ok(b.to_vec()),
            FileData::Source {
                source,
                offset,
                len,
            } => {
                let n = usize::try_from(*len)
                    .map_err(|_| std::io::Error::other("file too large for memory"))?;
                let mut buf = vec![0u8; n];
                source.read_exact_at(&mut buf, *offset)?;
                Ok(buf)
            }
        }
    }

    /// Reads `buf.len()` bytes from `at` bytes into the file.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        imgbuild_formats::io::check_range(at, buf.len(), self.len())?;
        match self {
            FileData::Bytes(b) => b.read_exact_at(buf, at),
            FileData::Source { source, offset, .. } => source.read_exact_at(buf, offset + at),
        }
    }
}

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileData::Bytes(b) => write!(f, "Bytes({})", b.len()),
            FileData::Source { offset, len, .. } => write!(f, "Source(@{offset}+{len})"),
        }
    }
}

/// What an inode is.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A directory: names (no `/`, not `.` or `..`) to inodes, sorted.
    Dir(BTreeMap<Vec<u8>, InodeId>),
    /// A regular file.
    File(FileData),
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(&self) -> u16 {
        match self {
            Kind::Dir(_) => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }
}

/// One inode: metadata plus kind.
#[derive(Clone, Debug)]
pub struct Inode {
    /// Ownership, mode, time, xattrs.
    pub meta: Meta,
    /// What it is (and its contents).
    pub kind: Kind,
}

/// What went wrong editing a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// The path has a `..` component.
    #[error("path {path:?} has a '..' component; paths must stay inside the image")]
    DotDot {
        /// The path, as given.
        path: String,
    },
    /// The path names the root where that makes no sense.
    #[error("path {path:?} names the root directory")]
    IsRoot {
        /// The path, as given.
        path: String,
    },
    /// A parent component exists and is not a directory.
    #[error("{path:?}: {parent:?} is not a directory")]
    NotADirectory {
        /// The path, as given.
        path: String,
        /// The component that is not a directory.
        parent: String,
    },
    /// The path does not exist.
    #[error("{path:?} does not exist")]
    NotFound {
        /// The path, as given.
        path: String,
    },
    /// A hard link names a directory.
    #[error("hard link {path:?} -> {target:?}: the target is a directory")]
    LinkToDirectory {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// The path is longer than [`PATH_MAX`].
    #[error("path starting {start:?} is {len} bytes long; paths in the image are limited to {max} bytes (PATH_MAX)", max = PATH_MAX)]
    PathTooLong {
        /// Its first bytes (normalised).
        start: String,
        /// Its length in bytes, normalised.
        len: usize,
    },
    /// Symlinks nest too deep or loop.
    #[error("{path:?}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path, as given.
        path: String,
    },
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Splits a path into its components: `/`, empty and `.` parts dropped,
/// `..` refused, and the whole refused when it is longer than [`PATH_MAX`]
/// (normalised), so that no caller ever holds more than [`PATH_MAX`] / 2
/// components.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>, TreeError> {
    let mut out: Vec<&[u8]> = Vec::new();
    // Normalised length so far: the components plus one `/` between each two.
    let mut len = 0usize;
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(TreeError::DotDot {
                    path: show_start(path),
                })
            }
            p => {
                len += p.len() + usize::from(!out.is_empty());
                out.push(p);
                if len > PATH_MAX {
                    return Err(path_too_long(&out, path));
                }
            }
        }
    }
    Ok(out)
}

/// The error for `path`, whose normalised length passed [`PATH_MAX`] at the
/// components `parts`.
fn path_too_long(parts: &[&[u8]], path: &[u8]) -> TreeError {
    let mut start = Vec::with_capacity(SHOWN_PREFIX + 4);
    for p in parts {
        if start.len() >= SHOWN_PREFIX {
            break;
        }
        if !start.is_empty() {
            start.push(b'/');
        }
        start.extend_from_slice(p);
    }
    start.truncate(SHOWN_PREFIX);
    let len = path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .map(|p| p.len() + 1)
        .sum::<usize>()
        .saturating_sub(1);
    TreeError::PathTooLong {
        start: format!("{}...", String::from_utf8_lossy(&start)),
        len,
    }
}

/// A path for an error message: whole when short, else its start and length.
fn show_start(path: &[u8]) -> String {
    if path.len() <= PATH_MAX {
        show(path)
    } else {
        let start = String::from_utf8_lossy(&path[..SHOWN_PREFIX]);
        format!("{start}... ({} bytes)", path.len())
    }
}

/// A filesystem tree. Every path operation is confined to the tree.
#[derive(Clone, Debug)]
pub struct Tree {
    inodes: Vec<Inode>,
    /// Metadata given to directories created implicitly as parents.
    parent_meta: Meta,
}

impl Tree {
    /// An empty tree whose root and implicit parent directories get `dir_meta`
    /// (mode is usually 0o755, owner root, the build epoch as time).
    pub fn new(dir_meta: Meta) -> Self {
        let root = Inode {
            meta: dir_meta.clone(),
            kind: Kind::Dir(BTreeMap::new()),
        };
        Self {
            inodes: vec![root],
            parent_meta: dir_meta,
        }
    }

    /// The inode `id`.
    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id]
    }

    /// The inode `id`, to edit.
    pub fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id]
    }

    /// Number of inode slots (including ones no longer reachable).
    pub fn inode_slots(&self) -> usize {
        self.inodes.len()
    }

    /// The children of a directory inode (empty for other kinds).
    pub fn children(&self, dir: InodeId) -> impl Iterator<Item = (&[u8], InodeId)> {
        let map = match &self.inodes[dir].kind {
            Kind::Dir(m) => Some(m),
            _ => None,
        };
        map.into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_slice(), *v)))
    }

    /// Looks a path up without following symlinks.
    pub fn lookup(&self, path: &[u8]) -> Option<InodeId> {
        let mut cur = ROOT;
        for part in components(path).ok()? {
            match &self.inodes[cur].kind {
                Kind::Dir(m) => cur = *m.get(part)?,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Resolves symlinks in every component (and in the last one when
    /// `follow_last`), confined to the tree: an absolute target starts at the
    /// tree's root and `..` stops at it. Returns the path without symlinks.
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<Vec<u8>, TreeError> {
        let mut todo: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .map(|p| p.to_vec())
            .rev()
            .collect();
        let mut stack: Vec<(Vec<u8>, InodeId)> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            if part == b".." {
                stack.pop();
                continue;
            }
            let cur = stack.last().map_or(ROOT, |s| s.1);
            let child = match &self.inodes[cur].kind {
                Kind::Dir(m) => m.get(&part).copied(),
                _ => {
                    return Err(TreeError::NotADirectory {
                        path: show(path),
                        parent: show(&part),
                    })
                }
            };
            let Some(child) = child else {
                stack.push((part, usize::MAX));
                // Nothing below a missing component can exist; keep the rest literal.
                while let Some(rest) = todo.pop() {
                    stack.push((rest, usize::MAX));
                }
                break;
            };
            let is_last = todo.is_empty();
            if let Kind::Symlink(target) = &self.inodes[child].kind {
                if !is_last || follow_last {
                    hops += 1;
                    if hops > 40 {
                        return Err(TreeError::SymlinkLoop { path: show(path) });
                    }
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    for p in target
                        .split(|&b| b == b'/')
                        .filter(|p| !p.is_empty() && *p != b".")
                        .rev()
                    {
                        todo.push(p.to_vec());
                    }
                    continue;
                }
            }
            stack.push((part, child));
        }
        Ok(stack
            .into_iter()
            .map(|s| s.0)
            .collect::<Vec<_>>()
            .join(&b'/'))
    }

    /// Creates missing parent directories of `path` and returns the parent's
    /// inode and the last component.
    fn parent_of<'p>(&mut self, path: &'p [u8]) -> Result<(InodeId, &'p [u8]), TreeError> {
        let parts = components(path)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(TreeError::IsRoot { path: show(path) });
        };
        let mut cur = ROOT;
        for part in dirs {
            let next = match &self.inodes[cur].kind {
                Kind::Dir(m) => m.get(*part).copied(),
                _ => unreachable!("cur is always a directory"),
            };
            cur = match next {
                Some(id) if matches!(self.inodes[id].kind, Kind::Dir(_)) => id,
                Some(_) => {
                    return Err(TreeError::NotADirectory {
                        path: show(path),
                        parent: show(part),
                    })
                }
                None => {
                    let id = self.push(Inode {
                        meta: self.parent_meta.clone(),
                        kind: Kind::Dir(BTreeMap::new()),
                    });
                    self.dir_mut(cur).insert(part.to_vec(), id);
                    id
                }
            };
        }
        Ok((cur, last))
    }

    fn push(&mut self, inode: Inode) -> InodeId {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    fn dir_mut(&mut self, id: InodeId) -> &mut BTreeMap<Vec<u8>, InodeId> {
        match &mut self.inodes[id].kind {
            Kind::Dir(m) => m,
            _ => unreachable!("dir_mut on a directory"),
        }
    }

    /// Puts `inode` at `path`, creating missing parents. A later entry for the
    /// same path wins, as in tar extraction; a directory replacing a directory
    /// keeps its children and takes the new metadata. `path` may be the root
    /// only for a directory (its metadata is replaced).
    pub fn insert(&mut self, path: &[u8], inode: Inode) -> Result<InodeId, TreeError> {
        if components(path)?.is_empty() {
            return match inode.kind {
                Kind::Dir(_) => {
                    self.inodes[ROOT].meta = inode.meta;
                    Ok(ROOT)
                }
                _ => Err(TreeError::IsRoot { path: show(path) }),
            };
        }
        let (parent, name) = self.parent_of(path)?;
        let existing = match &self.inodes[parent].kind {
            Kind::Dir(m) => m.get(name).copied(),
            _ => None,
        };
        if let (Some(old), Kind::Dir(_)) = (existing, &inode.kind) {
            if matches!(self.inodes[old].kind, Kind::Dir(_)) {
                self.inodes[old].meta = inode.meta;
                return Ok(old);
            }
        }
        let id = self.push(inode);
        self.dir_mut(parent).insert(name.to_vec(), id);
        Ok(id)
    }

    /// Makes `path` a hard link to the inode at `target` (neither followed
    /// through a final symlink). The target's metadata is left as it is.
    pub fn link(&mut self, path: &[u8], target: &[u8]) -> Result<InodeId, TreeError> {
        // A target `lookup` cannot take is named for what it is.
        components(target)?;
        let id = self
            .lookup(target)
            .ok_or_else(|| TreeError::NotFound { path: show(target) })?;
        if matches!(self.inodes[id].kind, Kind::Dir(_)) {
            return Err(TreeError::LinkToDirectory {
                path: show(path),
                target: show(target),
            });
        }
        let (parent, name) = self.parent_of(path)?;
        self.dir_mut(parent).insert(name.to_vec(), id);
        Ok(id)
    }

    /// Removes the entry at `path` (and, for a directory, everything below).
    pub fn remove(&mut self, path: &[u8]) -> Result<(), TreeError> {
        let parts = components(path)?;
        let Some((last, _)) = parts.split_last() else {
            return Err(TreeError::IsRoot { path: show(path) });
        };
        let parent_path = parts[..parts.len() - 1].join(&b'/');
        let parent = self
            .lookup(&parent_path)
            .ok_or_else(|| TreeError::NotFound { path: show(path) })?;
        match &mut self.inodes[parent].kind {
            Kind::Dir(m) => m
                .remove(*last)
                .map(|_| ())
                .ok_or_else(|| TreeError::NotFound { path: show(path) }),
            _ => Err(TreeError::NotFound { path: show(path) }),
        }
    }

    /// Every reachable path in depth-first, name-sorted order, starting with
    /// the root (`b""`), each with its inode. Hard-linked inodes appear once
    /// per name.
    pub fn walk(&self) -> Vec<(Vec<u8>, InodeId)> {
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), ROOT)];
        while let Some((path, id)) = stack.pop() {
            let children: Vec<_> = self.children(id).map(|(n, c)| (n.to_vec(), c)).collect();
            for (name, child) in children.into_iter().rev() {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&name);
                stack.push((p, child));
            }
            out.push((path, id));
        }
        out
    }

    /// What [`Tree::walk`] visits, in the same order, without building
    /// paths: `(parent, name, inode)` per name, the root first as
    /// `(ROOT, b"", ROOT)`. It costs one small tuple per name whatever the
    /// depth, where `walk` costs the sum of all path lengths; a path is
    /// rebuilt from the parents when one is needed (an error message).
    pub fn entries(&self) -> Vec<(InodeId, &[u8], InodeId)> {
        let mut out = Vec::new();
        let mut stack: Vec<(InodeId, &[u8], InodeId)> = vec![(ROOT, &[], ROOT)];
        while let Some(entry) = stack.pop() {
            let id = entry.2;
            let first_child = stack.len();
            stack.extend(self.children(id).map(|(name, child)| (id, name, child)));
            stack[first_child..].reverse();
            out.push(entry);
        }
        out
    }

    /// Number of directory entries naming each inode (hard-link counts for
    /// non-directories), indexed by `InodeId`; unreachable inodes count 0.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.inodes.len()];
        counts[ROOT] = 1;
        let mut seen = vec![false; self.inodes.len()];
        let mut stack = vec![ROOT];
        seen[ROOT] = true;
        while let Some(id) = stack.pop() {
            for (_, child) in self.children(id) {
                counts[child] += 1;
                if !seen[child] {
                    seen[child] = true;
                    stack.push(child);
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests;
