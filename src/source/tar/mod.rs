//! Tar archives → [`Tree`]. We parse the format ourselves instead of using
//! the `tar` crate: that crate applies pax `path`/`linkpath`/`size` but not
//! pax `uid`/`gid`/`mtime` (fractions, negative times) nor ACL text, cannot
//! read negative base-256 times, reports problems as untyped `io::Error`s
//! without the entry's offset, and treats a size running past the end of the
//! file as an ordinary end of archive when seeking. The format is small
//! (ustar header, GNU `L`/`K`, pax `x`/`g`); owning it lets every number be
//! checked and every error name the tar, the entry index, its header offset
//! and its path. It is fuzzed (`fuzz/fuzz_targets/tar_reader.rs`).
//!
//! File data is never copied: a regular file becomes
//! [`FileData::Source`] over the (decompressed) tar at its data offset.

mod acl;
mod error;
mod header;
mod pax;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imgbuild_formats::io::SizedFile;
use imgbuild_formats::ReadAt;

pub use self::error::TarProblem;
use self::header::{cstr, Header, BLOCK};
use self::pax::Extended;
use super::decompress::{open_decompressed, Compression, UnpackLimit};
use super::zeros::ZeroMap;
use super::SourceError;
use crate::tree::{
    FileData, Inode, InodeId, Kind, Meta, Timestamp, Tree, MAX_DEV_MAJOR, MAX_DEV_MINOR,
};

/// Upper bound for one pax or GNU long-name header's data held in memory
/// (Linux xattr values are at most 64 KiB, paths 4 KiB).
const MAX_EXTENDED: u64 = 16 << 20;

/// How to map the owners recorded in the tar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Owners {
    /// Keep the numeric uid/gid from the tar (names are ignored).
    #[default]
    Numeric,
    /// Make everything owned by root:root.
    Root,
}

/// Options for [`read_tar`].
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    /// Where compressed tars are decompressed (an unlinked file); default
    /// `std::env::temp_dir()`.
    pub temp_dir: Option<PathBuf>,
    /// Owner mapping.
    pub owners: Owners,
    /// SOURCE_DATE_EPOCH semantics: times after this are set to it.
    pub clamp_mtime: Option<i64>,
    /// Zero sectors of the tar file as read from disk (measured while it was
    /// hashed): lets writers leave holes. A compressed tar's are measured
    /// while it is unpacked; this one is then ignored.
    pub zeros: Option<Arc<ZeroMap>>,
    /// Bound on a compressed tar's uncompressed size, from the size of the
    /// disk its tree is for (see [`UnpackLimit`]); `None`: unbounded (only
    /// for trusted input). Plain tars are read in place and not bounded.
    pub max_unpacked: Option<UnpackLimit>,
}

/// What [`read_tar`] put into the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarStats {
    /// The compression detected from the magic bytes.
    pub compression: Option<Compression>,
    /// Entries read (extended headers not counted).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links.
    pub hard_links: u64,
    /// Character and block devices.
    pub devices: u64,
    /// FIFOs.
    pub fifos: u64,
    /// Sum of regular file sizes.
    pub file_bytes: u64,
    /// Size of the uncompressed tar.
    pub tar_bytes: u64,
}

/// Reads the tar at `path` (plain, gzip, zstd or xz, detected by magic bytes)
/// into `tree`. Later entries for a path replace earlier ones; missing parents
/// are created; hard links share the target's inode and leave its metadata
/// alone.
pub fn read_tar(path: &Path, tree: &mut Tree, opts: &TarOptions) -> Result<TarStats, SourceError> {
    let (file, compression, unpacked_zeros) =
        open_decompressed(path, opts.temp_dir.as_deref(), opts.max_unpacked)?;
    // A compressed tar's zeros were mapped while it was unpacked.
    let zeros = match compression {
        Compression::None => opts.zeros.clone(),
        _ => unpacked_zeros,
    };
    let source = Arc::new(TarData { file, zeros });
    let stats = TarStats {
        compression: Some(compression),
        tar_bytes: source.len(),
        ..TarStats::default()
    };
    let mut r = Reader {
        source,
        opts,
        tree,
        stats,
        index: 0,
        offset: 0,
        name: b"?".to_vec(),
        pending_acls: Vec::new(),
    };
    match r.run().and_then(|()| r.resolve_pending_acls()) {
        Ok(()) => Ok(r.stats),
        Err(problem) => Err(SourceError::Tar {
            tar: path.to_owned(),
            index: r.index,
            offset: r.offset,
            entry: show_entry(&r.name),
            problem,
        }),
    }
}

/// Longest entry path quoted whole in an error; a longer (hostile) one is
/// shown by its start and length.
const SHOWN_ENTRY: usize = 256;

/// An entry's path for [`SourceError::Tar`].
fn show_entry(name: &[u8]) -> String {
    if name.len() <= SHOWN_ENTRY {
        String::from_utf8_lossy(name).into_owned()
    } else {
        let start = String::from_utf8_lossy(&name[..SHOWN_ENTRY]);
        format!("{start}... ({} bytes)", name.len())
    }
}

/// The (decompressed) tar's bytes, with what is known of its zeros.
struct TarData {
    file: SizedFile,
    zeros: Option<Arc<ZeroMap>>,
}

impl ReadAt for TarData {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.file.len()
    }

    fn known_zero(&self, offset: u64, len: u64) -> Option<bool> {
        self.zeros
            .as_ref()?
            .known_zero(self.file.len(), offset, len)
    }
}

struct Reader<'a> {
    source: Arc<TarData>,
    opts: &'a TarOptions,
    tree: &'a mut Tree,
    stats: TarStats,
    /// Index, first header offset and path of the entry being read (for errors).
    index: u64,
    offset: u64,
    name: Vec<u8>,
    /// ACL texts that name users or groups.
    pending_acls: Vec<PendingAcl>,
}

impl Reader<'_> {
    fn run(&mut self) -> Result<(), TarProblem> {
        let len = self.source.len();
        let mut ext = Extended::default();
        let mut pos = 0u64;
        while pos < len {
            if !ext.seen {
                self.offset = pos;
                self.name = b"?".to_vec();
            }
            let available = len - pos;
            if available < BLOCK {
                return Err(TarProblem::TruncatedHeader { available });
            }
            let mut raw = [0u8; BLOCK as usize];
            self.source
                .read_exact_at(&mut raw, pos)
                .map_err(TarProblem::Io)?;
            if Header::is_zero_block(&raw) {
                break;
            }
            self.name = cstr(&raw[..100]).to_vec();
            let h = Header::parse(raw)?;
            let is_extension = matches!(h.typeflag(), b'x' | b'X' | b'g' | b'L' | b'K');
            let header_size = h.size()?;
            let size = match ext.size {
                Some(s) if !is_extension => s,
                _ => u64::try_from(header_size).map_err(|_| TarProblem::OutOfRange {
                    field: "size",
                    value: header_size.to_string(),
                })?,
            };
            let data = pos + BLOCK;
            let past_end = TarProblem::SizePastEnd {
                size,
                data_offset: data,
                file_len: len,
            };
            match data.checked_add(size) {
                Some(end) if end <= len => {}
                _ => return Err(past_end),
            }
            match h.typeflag() {
                b'x' | b'X' => {
                    let d = self.read_extended("pax", data, size)?;
                    ext.apply_records(&d)?;
                }
                b'g' => {} // pax global headers: ignored.
                b'L' => {
                    ext.seen = true;
                    ext.long_name =
                        Some(cstr(&self.read_extended("GNU long name", data, size)?).to_vec());
                }
                b'K' => {
                    ext.seen = true;
                    ext.long_link =
                        Some(cstr(&self.read_extended("GNU long link", data, size)?).to_vec());
                }
                _ => {
                    self.entry(&h, &ext, data, size)?;
                    ext = Extended::default();
                    self.index += 1;
                }
            }
            // Data is padded to whole blocks; a last entry without padding ends the file.
            pos = size
                .div_ceil(BLOCK)
                .checked_mul(BLOCK)
                .and_then(|s| data.checked_add(s))
                .unwrap_or(u64::MAX);
        }
        if ext.seen {
            return Err(TarProblem::DanglingExtended);
        }
        Ok(())
    }

    fn read_extended(&self, kind: &'static str, at: u64, size: u64) -> Result<Vec<u8>, TarProblem> {
        if size > MAX_EXTENDED {
            return Err(TarProblem::ExtendedTooLarge {
                kind,
                size,
                limit: MAX_EXTENDED,
            });
        }
        let n = usize::try_from(size).map_err(|_| TarProblem::OutOfRange {
            field: "size",
            value: size.to_string(),
        })?;
        let mut buf = vec![0u8; n];
        self.source
            .read_exact_at(&mut buf, at)
            .map_err(TarProblem::Io)?;
        Ok(buf)
    }

    /// Places one (non-extension) entry in the tree.
    fn entry(
        &mut self,
        h: &Header,
        ext: &Extended,
        data: u64,
        size: u64,
    ) -> Result<(), TarProblem> {
        let path = ext
            .path
            .clone()
            .or_else(|| ext.long_name.clone())
            .unwrap_or_else(|| h.path());
        self.name.clone_from(&path);
        if ext.empty_xattr_name {
            return Err(TarProblem::EmptyXattrName);
        }
        let typeflag = h.typeflag();
        if ext.sparse || typeflag == b'S' {
            return Err(TarProblem::Unsupported {
                what: "GNU sparse file (re-create the tar without --sparse)".into(),
            });
        }
        let Some(kind) = self.kind(h, ext, &path, data, size)? else {
            return Ok(());
        };
        if matches!(kind, Kind::Dir(_)) {
            self.stats.dirs += 1;
        }
        let meta = self.meta(h, ext)?;
        let id = self
            .tree
            .insert(&path, Inode { meta, kind })
            .map_err(TarProblem::Tree)?;
        self.acls(id, ext)?;
        self.stats.entries += 1;
        Ok(())
    }

    /// The inode kind of an entry, or `None` for an entry that adds no
    /// inode (a hard link, placed here; a volume label).
    fn kind(
        &mut self,
        h: &Header,
        ext: &Extended,
        path: &[u8],
        data: u64,
        size: u64,
    ) -> Result<Option<Kind>, TarProblem> {
        let link = || {
            ext.linkpath
                .clone()
                .or_else(|| ext.long_link.clone())
                .unwrap_or_else(|| h.linkname())
        };
        let typeflag = h.typeflag();
        let kind = match typeflag {
            // V7 tars mark directories by a trailing slash on a regular entry.
            0 if path.ends_with(b"/") => Kind::Dir(BTreeMap::new()),
            b'0' | 0 | b'7' => {
                self.stats.files += 1;
                self.stats.file_bytes = self.stats.file_bytes.saturating_add(size);
                Kind::File(FileData::Source {
                    source: self.source.clone(),
                    offset: data,
                    len: size,
                })
            }
            b'1' => {
                // The link entry's own mode/owner/time are ignored: the
                // target's inode keeps its metadata (mke2fs -d overwrites it).
                let target = link();
                // Name a `..` target as such (a plain lookup would say "not found").
                crate::tree::components(&target).map_err(TarProblem::Tree)?;
                self.tree.link(path, &target).map_err(TarProblem::Tree)?;
                self.stats.entries += 1;
                self.stats.hard_links += 1;
                return Ok(None);
            }
            b'2' => {
                let target = link();
                if target.is_empty() {
                    return Err(TarProblem::EmptySymlink);
                }
                self.stats.symlinks += 1;
                Kind::Symlink(target)
            }
            b'3' | b'4' => {
                self.stats.devices += 1;
                device(h, typeflag)?
            }
            // 'D' is a GNU incremental dumpdir: a directory plus a listing we skip.
            b'5' | b'D' => Kind::Dir(BTreeMap::new()),
            b'6' => {
                self.stats.fifos += 1;
                Kind::Fifo
            }
            b'V' => return Ok(None), // GNU volume label: not a file.
            t => {
                let what = format!(
                    "entry type {:?} (only files, directories, links, devices and FIFOs)",
                    char::from(t)
                );
                return Err(TarProblem::Unsupported { what });
            }
        };
        Ok(Some(kind))
    }

    /// Turns `SCHILY.acl.*` text into `system.posix_acl_*` xattrs, now or,
    /// when it names users or groups, after the whole tree (and its
    /// /etc/passwd and /etc/group) is read.
    fn acls(&mut self, id: InodeId, ext: &Extended) -> Result<(), TarProblem> {
        for (key, text, is_default) in [
            ("SCHILY.acl.access", &ext.acl_access, false),
            ("SCHILY.acl.default", &ext.acl_default, true),
        ] {
            let Some(text) = text else { continue };
            let acl = PendingAcl {
                id,
                key,
                text: text.clone(),
                is_default,
                index: self.index,
                offset: self.offset,
                name: self.name.clone(),
            };
            // A raw SCHILY.xattr.system.posix_acl_* (GNU tar --xattrs, mmdebstrap) wins over the text.
            if self
                .tree
                .inode(id)
                .meta
                .xattrs
                .contains_key(acl.xattr_name())
            {
                continue;
            }
            if acl::needs_names(text) {
                self.pending_acls.push(acl);
            } else {
                self.apply_acl(&acl, &|_, _| None)?;
            }
        }
        Ok(())
    }

    fn apply_acl(&mut self, acl: &PendingAcl, resolve: acl::Resolve) -> Result<(), TarProblem> {
        if let Some(value) = acl::text_to_xattr(acl.key, &acl.text, acl.is_default, resolve)? {
            self.tree
                .inode_mut(acl.id)
                .meta
                .xattrs
                .insert(acl.xattr_name().to_vec(), value);
        }
        Ok(())
    }

    /// Converts the ACLs that name users or groups, with the tree's own
    /// user database.
    fn resolve_pending_acls(&mut self) -> Result<(), TarProblem> {
        if self.pending_acls.is_empty() {
            return Ok(());
        }
        let users = acl::id_map(self.tree, b"etc/passwd");
        let groups = acl::id_map(self.tree, b"etc/group");
        let resolve = |user: bool, name: &str| {
            if user {
                users.get(name)
            } else {
                groups.get(name)
            }
            .copied()
        };
        for acl in std::mem::take(&mut self.pending_acls) {
            (self.index, self.offset, self.name) = (acl.index, acl.offset, acl.name.clone());
            self.apply_acl(&acl, &resolve)?;
        }
        Ok(())
    }

    fn meta(&self, h: &Header, ext: &Extended) -> Result<Meta, TarProblem> {
        let (uid, gid) = match self.opts.owners {
            Owners::Root => (0, 0),
            Owners::Numeric => (id("uid", ext.uid, h.uid())?, id("gid", ext.gid, h.gid())?),
        };
        let mut mtime = match ext.mtime {
            Some(t) => t,
            None => Timestamp::from_secs(h.mtime()?),
        };
        if let Some(epoch) = self.opts.clamp_mtime {
            if mtime > Timestamp::from_secs(epoch) {
                mtime = Timestamp::from_secs(epoch);
            }
        }
        Ok(Meta {
            mode: h.mode()?,
            uid,
            gid,
            mtime,
            xattrs: ext.xattrs.clone(),
        })
    }
}

/// An ACL in text form waiting for the user database.
struct PendingAcl {
    id: InodeId,
    key: &'static str,
    text: Vec<u8>,
    is_default: bool,
    index: u64,
    offset: u64,
    name: Vec<u8>,
}

impl PendingAcl {
    fn xattr_name(&self) -> &'static [u8] {
        if self.is_default {
            b"system.posix_acl_default"
        } else {
            b"system.posix_acl_access"
        }
    }
}

fn id(
    field: &'static str,
    pax: Option<u64>,
    header: Result<i64, TarProblem>,
) -> Result<u32, TarProblem> {
    match pax {
        Some(v) => u32::try_from(v).map_err(|_| TarProblem::OutOfRange {
            field,
            value: v.to_string(),
        }),
        None => to_u32(field, header?),
    }
}

fn to_u32(field: &'static str, v: i64) -> Result<u32, TarProblem> {
    u32::try_from(v).map_err(|_| TarProblem::OutOfRange {
        field,
        value: v.to_string(),
    })
}

/// A character or block device entry (typeflag `3` or `4`), its numbers
/// within what the kernel's `dev_t` holds.
fn device(h: &Header, typeflag: u8) -> Result<Kind, TarProblem> {
    let major = to_u32("devmajor", h.devmajor()?)?;
    let minor = to_u32("devminor", h.devminor()?)?;
    if major > MAX_DEV_MAJOR || minor > MAX_DEV_MINOR {
        return Err(TarProblem::DeviceNumberTooLarge { major, minor });
    }
    Ok(if typeflag == b'3' {
        Kind::CharDev { major, minor }
    } else {
        Kind::BlockDev { major, minor }
    })
}
