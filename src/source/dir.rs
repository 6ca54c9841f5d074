//! A host directory → [`Tree`]. Names are walked in byte order, symlinks are
//! never followed, hard links (same device and inode) become one inode.
//!
//! File contents stay on the host: each file is a [`FileData::Source`] over a
//! [`HostFile`], which opens the path for each read and closes it after. A
//! tree of 100k files therefore holds no descriptors at all; a writer reading
//! in large chunks pays one `open` per chunk, which is cheap next to the copy.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgbuild_formats::io::check_range;
use imgbuild_formats::ReadAt;

use super::SourceError;
use crate::tree::{FileData, Inode, Kind, Meta, Timestamp, Tree};

/// Linux XATTR_LIST_MAX and XATTR_SIZE_MAX (include/uapi/linux/limits.h).
const XATTR_MAX: usize = 65536;

/// Options for [`read_dir`].
#[derive(Clone, Debug, Default)]
pub struct DirOptions {
    /// Keep the host uid/gid; by default everything becomes root:root.
    pub keep_owner: bool,
    /// SOURCE_DATE_EPOCH semantics: times after this are set to it.
    pub clamp_mtime: Option<i64>,
    /// Read extended attributes (`user.*`, `security.*`, ACLs) with `llistxattr`.
    pub xattrs: bool,
}

/// What [`read_dir`] put into the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Entries below the root (the root itself not counted).
    pub entries: u64,
    /// Regular files (first names only).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Extra names of hard-linked files.
    pub hard_links: u64,
    /// Devices, FIFOs and sockets.
    pub specials: u64,
    /// Sum of regular file sizes.
    pub file_bytes: u64,
}

/// A host file read by path on demand (see the module doc).
#[derive(Debug)]
pub struct HostFile {
    path: PathBuf,
    len: u64,
}

impl ReadAt for HostFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        let file = File::open(&self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        std::os::unix::fs::FileExt::read_exact_at(&file, buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// Reads the directory `root` (not following symlinks below it) into `tree`.
pub fn read_dir(root: &Path, tree: &mut Tree, opts: &DirOptions) -> Result<DirStats, SourceError> {
    let mut w = Walker {
        tree,
        opts,
        stats: DirStats::default(),
        inodes: BTreeMap::new(),
    };
    let md = fs::metadata(root).map_err(|e| dir_err(root, "stat", e))?;
    if !md.is_dir() {
        return Err(dir_err(
            root,
            "read as a directory",
            io::Error::other("not a directory"),
        ));
    }
    let meta = w.meta(root, &md)?;
    w.tree
        .insert(
            b"",
            Inode {
                meta,
                kind: Kind::Dir(BTreeMap::new()),
            },
        )
        .map_err(|e| dir_err(root, "insert", e))?;
    let mut stack = vec![(root.to_path_buf(), Vec::new())];
    while let Some((host, rel)) = stack.pop() {
        let mut names = Vec::new();
        for e in fs::read_dir(&host).map_err(|e| dir_err(&host, "list", e))? {
            names.push(e.map_err(|e| dir_err(&host, "list", e))?.file_name());
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        // Pushed in reverse so directories are visited in name order.
        for name in names.into_iter().rev() {
            let host_child = host.join(&name);
            let mut rel_child = rel.clone();
            if !rel_child.is_empty() {
                rel_child.push(b'/');
            }
            rel_child.extend_from_slice(name.as_bytes());
            if w.add(&host_child, &rel_child)? {
                stack.push((host_child, rel_child));
            }
        }
    }
    Ok(w.stats)
}

fn dir_err(
    path: &Path,
    action: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SourceError {
    SourceError::Dir {
        path: path.to_owned(),
        action,
        source: Box::new(e),
    }
}

struct Walker<'a> {
    tree: &'a mut Tree,
    opts: &'a DirOptions,
    stats: DirStats,
    /// (device, inode) of multiply-linked non-directories → first tree path.
    inodes: BTreeMap<(u64, u64), Vec<u8>>,
}

impl Walker<'_> {
    /// Adds one entry; true when it is a directory to descend into.
    fn add(&mut self, host: &Path, rel: &[u8]) -> Result<bool, SourceError> {
        let md = fs::symlink_metadata(host).map_err(|e| dir_err(host, "stat", e))?;
        let ft = md.file_type();
        self.stats.entries += 1;
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = self.inodes.get(&(md.dev(), md.ino())) {
                self.tree
                    .link(rel, first)
                    .map_err(|e| dir_err(host, "link", e))?;
                self.stats.hard_links += 1;
                return Ok(false);
            }
            self.inodes.insert((md.dev(), md.ino()), rel.to_vec());
        }
        let kind = if ft.is_dir() {
            self.stats.dirs += 1;
            Kind::Dir(BTreeMap::new())
        } else if ft.is_file() {
            self.stats.files += 1;
            self.stats.file_bytes = self.stats.file_bytes.saturating_add(md.len());
            let source = Arc::new(HostFile {
                path: host.to_owned(),
                len: md.len(),
            });
            Kind::File(FileData::Source {
                source,
                offset: 0,
                len: md.len(),
            })
        } else if ft.is_symlink() {
            self.stats.symlinks += 1;
            let target = fs::read_link(host).map_err(|e| dir_err(host, "read the link", e))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else {
            self.stats.specials += 1;
            let (major, minor) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
            if ft.is_char_device() {
                Kind::CharDev { major, minor }
            } else if ft.is_block_device() {
                Kind::BlockDev { major, minor }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            }
        };
        let meta = self.meta(host, &md)?;
        let is_dir = matches!(kind, Kind::Dir(_));
        self.tree
            .insert(rel, Inode { meta, kind })
            .map_err(|e| dir_err(host, "insert", e))?;
        Ok(is_dir)
    }

    fn meta(&self, host: &Path, md: &fs::Metadata) -> Result<Meta, SourceError> {
        let mut mtime = Timestamp {
            secs: md.mtime(),
            nsec: u32::try_from(md.mtime_nsec()).unwrap_or(0),
        };
        if let Some(epoch) = self.opts.clamp_mtime {
            if mtime > Timestamp::from_secs(epoch) {
                mtime = Timestamp::from_secs(epoch);
            }
        }
        let (uid, gid) = if self.opts.keep_owner {
            (md.uid(), md.gid())
        } else {
            (0, 0)
        };
        let xattrs = if self.opts.xattrs {
            read_xattrs(host).map_err(|e| dir_err(host, "read xattrs", e))?
        } else {
            BTreeMap::new()
        };
        // st_mode & 0o7777 always fits u16.
        let mode = u16::try_from(md.mode() & 0o7777).unwrap_or(0);
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }
}

/// All extended attributes of `path` (not following a symlink), by name.
/// A filesystem without xattr support yields none.
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; XATTR_MAX];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let mut value = vec![0u8; XATTR_MAX];
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(len) => {
                out.insert(name.to_vec(), value[..len].to_vec());
            }
            // Removed meanwhile, or a namespace we may not read (trusted.* as a user).
            Err(
                rustix::io::Errno::NODATA | rustix::io::Errno::PERM | rustix::io::Errno::ACCESS,
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}
