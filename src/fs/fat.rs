//! FAT32 writer for the EFI System Partition: a [`Tree`] of directories and
//! regular files in, a partition-relative [`VirtualDisk`] out, with the
//! metadata in memory and file contents as references to their sources.
//!
//! ```text
//! Tree ─collect─► DirPlan[] + FilePlan[] ─allocate─► clusters ─encode─► extents
//!  0          reserved: boot, FSInfo, backups (Bytes)
//!  FAT #1, FAT #2  (Bytes, trailing free entries left as zero gaps)
//!  cluster 2…      every directory, root first (one Bytes extent)
//!  then            every file, contiguous, in tree order (Source or Bytes)
//! ```
//!
//! Why our own writer and not the `fatfs` crate: `fatfs` 0.3.6 (the latest
//! release) writes directories that `fsck.fat` rejects (long-name entries
//! before `.` and `..`, a `..` pointing at cluster 2 instead of 0 for
//! first-level directories), silently formats FAT16 below 512 MiB unless
//! forced, stamps the wall clock in local time by default, and works on a
//! full-size in-memory or on-disk device. An ESP holds a handful of files, so
//! a write-once FAT32 encoder is small: here it streams file contents by
//! reference, lays every file out contiguously, and depends on nothing but
//! its inputs (no clock, no random ids: same inputs, same bytes).
//!
//! Spec: Microsoft "FAT: General Overview of On-Disk Format" (fatgen103,
//! v1.03), cited by section.

mod dir;
mod geometry;
mod names;
mod time;

use imgbuild_formats::{VirtualDisk, VirtualDiskBuilder};

use self::dir::{push_child, Child, DirPlan, ShortEntry, Target, ENTRY, MAX_ENTRIES};
use self::geometry::{BootParams, Geometry, SECTOR};
use self::names::{store_names, NameProblem};
use self::time::FatTime;
use crate::tree::{FileData, Kind, Tree, ROOT};

pub use self::geometry::minimum_size;

/// The label mkfs.fat and most ESPs use when none is asked for.
pub const DEFAULT_LABEL: &str = "ESP";

/// FAT end-of-chain mark (fatgen103 §4: any value ≥ 0x0FFFFFF8).
const EOC: u32 = 0x0FFF_FFFF;

/// How to build the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatOptions {
    /// Volume size in bytes (a multiple of 512, at least [`minimum_size`]).
    pub size: u64,
    /// BS_VolID (derive it from the build seed).
    pub volume_id: u32,
    /// Volume label: at most 11 characters, upper case, digits, space or
    /// `$%'-_@~`!(){}^#&`; empty for none ([`DEFAULT_LABEL`] is usual).
    pub label: String,
    /// Every timestamp, as Unix seconds; written as UTC, clamped to 1980..=2107.
    pub epoch: i64,
    /// Sectors before the volume on its disk: the partition's start LBA
    /// (BPB_HiddSec, like `mkfs.fat --offset`).
    pub hidden_sectors: u32,
}

/// Why a tree cannot become a FAT32 volume.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// A directory has more entries than FAT allows.
    #[error(
        "{path}: {entries} directory entries (long names count several); FAT allows {MAX_ENTRIES}"
    )]
    DirectoryTooLarge {
        /// The directory.
        path: String,
        /// Entries it would need.
        entries: u64,
    },
    /// The assembled extents are inconsistent (a bug in this writer).
    #[error("assembling the FAT volume")]
    Disk(#[source] imgbuild_formats::Error),
    /// Two names in one directory differ only in case.
    #[error("{dir}: {first:?} and {second:?} differ only in case, and FAT names ignore case")]
    DuplicateName {
        /// The directory.
        dir: String,
        /// The earlier name.
        first: String,
        /// The later name.
        second: String,
    },
    /// A file is 4 GiB or larger.
    #[error("{path}: {len} bytes; FAT32 files are at most 4294967295 bytes")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// The volume label breaks a rule.
    #[error("volume label {label:?}: {reason}")]
    InvalidLabel {
        /// The label as given.
        label: String,
        /// Which rule.
        reason: &'static str,
    },
    /// A name breaks a FAT naming rule.
    #[error("{path}: invalid FAT name: {reason}")]
    InvalidName {
        /// The entry.
        path: String,
        /// Which rule.
        reason: &'static str,
    },
    /// The contents do not fit.
    #[error("the tree needs {needed} clusters of {cluster_size} bytes, but a {size}-byte FAT32 volume has {available}")]
    NoSpace {
        /// Volume size.
        size: u64,
        /// Cluster size chosen for it.
        cluster_size: u64,
        /// Clusters the tree needs.
        needed: u64,
        /// Clusters the volume has.
        available: u64,
    },
    /// Every numeric tail is taken for some long name.
    #[error("{path}: no free short name (~1 to ~999999 all taken)")]
    ShortNamesExhausted {
        /// The entry.
        path: String,
    },
    /// The size is not whole sectors.
    #[error("FAT volume size {size} is not a multiple of 512 bytes")]
    SizeNotSectorMultiple {
        /// Size asked for.
        size: u64,
    },
    /// Too big for 32-bit sector counts.
    #[error("FAT volume size {size} is larger than FAT32's maximum of {maximum} bytes with 512-byte sectors")]
    TooLarge {
        /// Size asked for.
        size: u64,
        /// The largest size possible.
        maximum: u64,
    },
    /// Too small for 65525 clusters.
    #[error("FAT volume size {size} is too small for FAT32 (65525 clusters); the minimum is {minimum} bytes, and 64 MiB or more is usual for an ESP")]
    TooSmall {
        /// Size asked for.
        size: u64,
        /// The smallest FAT32 size.
        minimum: u64,
    },
    /// Something other than a directory or regular file.
    #[error("{path}: a FAT volume holds only directories and regular files, not a {kind}")]
    UnsupportedKind {
        /// The entry.
        path: String,
        /// What it is.
        kind: &'static str,
    },
}

/// A file to place: its contents.
struct FilePlan {
    data: FileData,
}

/// Writes `tree` as a FAT32 volume of `opts.size` bytes.
pub fn write(tree: &Tree, opts: &FatOptions) -> Result<VirtualDisk, FatError> {
    let label = volume_label(&opts.label)?;
    let geo = Geometry::for_size(opts.size)?;
    let (dirs, files) = collect(tree)?;
    let alloc = allocate(&geo, opts.size, &dirs, &files, label.is_some())?;
    let t = FatTime::from_unix(opts.epoch);

    let mut disk = VirtualDiskBuilder::new(opts.size);
    let used = alloc.next - 2;
    let next_free = if used < geo.clusters {
        alloc.next
    } else {
        u64::MAX
    };
    let params = BootParams {
        volume_id: opts.volume_id,
        label: label.as_ref().unwrap_or(b"NO NAME    "),
        hidden_sectors: opts.hidden_sectors,
    };
    disk.bytes(
        0,
        geometry::reserved_area(&geo, &params, geo.clusters - used, next_free),
    );
    let fat: std::sync::Arc<[u8]> = fat_table(&alloc).into();
    for index in 0..geometry::FATS {
        disk.bytes(geo.fat_offset(index), fat.clone());
    }
    disk.bytes(
        geo.cluster_offset(2),
        encode_dirs(&geo, &dirs, &files, &alloc, label.as_ref(), t),
    );
    for (f, &first) in files.iter().zip(&alloc.file_first) {
        let at = geo.cluster_offset(first.max(2));
        match &f.data {
            FileData::Bytes(b) => disk.bytes(at, b.clone()),
            FileData::Source {
                source,
                offset,
                len,
            } => disk.source(at, *len, source.clone(), *offset),
        };
    }
    disk.build().map_err(FatError::Disk)
}

/// The 11-byte label, or `None` for an empty one.
fn volume_label(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    let bad = |reason| FatError::InvalidLabel {
        label: label.to_string(),
        reason,
    };
    if label.is_empty() {
        return Ok(None);
    }
    if label.len() > 11 {
        return Err(bad("longer than 11 characters"));
    }
    let ok = |b: u8| {
        b == b' '
            || b.is_ascii_uppercase()
            || b.is_ascii_digit()
            || b"$%'-_@~`!(){}^#&".contains(&b)
    };
    if !label.bytes().all(ok) || label.starts_with(' ') {
        return Err(bad(
            "only A-Z, 0-9, space (not first) and $%'-_@~`!(){}^#& are allowed",
        ));
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(out))
}

/// Walks the tree: directories in depth-first order, root first; files in
/// the order they are met. Names are stored and checked per directory.
fn collect(tree: &Tree) -> Result<(Vec<DirPlan>, Vec<FilePlan>), FatError> {
    let mut dirs = vec![DirPlan {
        path: "/".into(),
        parent: None,
        children: Vec::new(),
    }];
    let mut files = Vec::new();
    let mut stack = vec![(0usize, ROOT)];
    while let Some((index, inode)) = stack.pop() {
        let entries: Vec<(&[u8], usize)> = tree.children(inode).collect();
        let raw: Vec<&[u8]> = entries.iter().map(|e| e.0).collect();
        let stored =
            store_names(&raw).map_err(|(i, p)| name_error(&dirs[index].path, &raw, i, p))?;
        let mut children = Vec::with_capacity(entries.len());
        let mut subdirs = Vec::new();
        for ((name, id), name_stored) in entries.into_iter().zip(stored) {
            let path = join(&dirs[index].path, name);
            let target = match &tree.inode(id).kind {
                Kind::Dir(_) => {
                    dirs.push(DirPlan {
                        path,
                        parent: Some(index),
                        children: Vec::new(),
                    });
                    subdirs.push((dirs.len() - 1, id));
                    Target::Dir(dirs.len() - 1)
                }
                Kind::File(data) => {
                    if data.len() > u64::from(u32::MAX) {
                        return Err(FatError::FileTooLarge {
                            path,
                            len: data.len(),
                        });
                    }
                    files.push(FilePlan { data: data.clone() });
                    Target::File(files.len() - 1)
                }
                other => {
                    return Err(FatError::UnsupportedKind {
                        path,
                        kind: kind_name(other),
                    })
                }
            };
            children.push(Child {
                name: name_stored,
                target,
            });
        }
        dirs[index].children = children;
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((dirs, files))
}

fn join(dir: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn name_error(dir: &str, names: &[&[u8]], i: usize, problem: NameProblem) -> FatError {
    let path = join(dir, names[i]);
    match problem {
        NameProblem::NotUtf8 => FatError::InvalidName {
            path,
            reason: "not valid UTF-8",
        },
        NameProblem::Invalid(reason) => FatError::InvalidName { path, reason },
        NameProblem::SameIgnoringCase(first) => FatError::DuplicateName {
            dir: dir.to_string(),
            first: String::from_utf8_lossy(names[first]).into_owned(),
            second: String::from_utf8_lossy(names[i]).into_owned(),
        },
        NameProblem::TailsExhausted => FatError::ShortNamesExhausted { path },
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Dir(_) => "directory",
        Kind::File(_) => "regular file",
        Kind::Symlink(_) => "symbolic link",
        Kind::CharDev { .. } => "character device",
        Kind::BlockDev { .. } => "block device",
        Kind::Fifo => "named pipe",
        Kind::Socket => "socket",
    }
}

/// Cluster runs: every directory, then every non-empty file, each contiguous.
struct Allocation {
    dir_first: Vec<u64>,
    dir_clusters: Vec<u64>,
    /// First cluster of each file; 0 for empty files.
    file_first: Vec<u64>,
    file_clusters: Vec<u64>,
    /// First cluster after everything allocated.
    next: u64,
}

fn allocate(
    geo: &Geometry,
    size: u64,
    dirs: &[DirPlan],
    files: &[FilePlan],
    has_label: bool,
) -> Result<Allocation, FatError> {
    let cs = geo.cluster_size();
    let mut a = Allocation {
        dir_first: vec![],
        dir_clusters: vec![],
        file_first: vec![],
        file_clusters: vec![],
        next: 2,
    };
    for d in dirs {
        let slots = d.slots(has_label);
        if slots > MAX_ENTRIES {
            return Err(FatError::DirectoryTooLarge {
                path: d.path.clone(),
                entries: slots,
            });
        }
        let n = (slots * ENTRY).div_ceil(cs).max(1);
        a.dir_first.push(a.next);
        a.dir_clusters.push(n);
        a.next += n;
    }
    for f in files {
        let n = f.data.len().div_ceil(cs);
        a.file_first.push(if n == 0 { 0 } else { a.next });
        a.file_clusters.push(n);
        a.next = a.next.saturating_add(n);
    }
    let needed = a.next - 2;
    if needed > geo.clusters {
        return Err(FatError::NoSpace {
            size,
            cluster_size: cs,
            needed,
            available: geo.clusters,
        });
    }
    Ok(a)
}

/// One FAT: media entry, end-of-chain entry 1 with the clean-shutdown bits,
/// then the chains; free entries after the last chain are left out (zero).
fn fat_table(a: &Allocation) -> Vec<u8> {
    let mut entries =
        vec![0u32; usize::try_from(a.next).expect("allocation fits the FAT in memory")];
    entries[0] = 0x0FFF_FF00 | 0xF8; // media byte in the low 8 bits (fatgen103 §4)
    entries[1] = EOC; // bits 27 and 26 set: clean, no I/O errors
    let runs = a
        .dir_first
        .iter()
        .zip(&a.dir_clusters)
        .chain(a.file_first.iter().zip(&a.file_clusters));
    for (&first, &n) in runs.filter(|r| *r.1 > 0) {
        for c in first..first + n - 1 {
            entries[to_index(c)] = u32::try_from(c + 1).expect("cluster numbers fit 28 bits");
        }
        entries[to_index(first + n - 1)] = EOC;
    }
    let mut bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    bytes.resize(bytes.len().next_multiple_of(SECTOR as usize), 0);
    bytes
}

fn to_index(cluster: u64) -> usize {
    usize::try_from(cluster).expect("cluster numbers fit usize")
}

fn cluster_u32(c: u64) -> u32 {
    u32::try_from(c).expect("cluster numbers fit 28 bits")
}

/// Every directory's clusters, in allocation order (they are contiguous).
fn encode_dirs(
    geo: &Geometry,
    dirs: &[DirPlan],
    files: &[FilePlan],
    a: &Allocation,
    label: Option<&[u8; 11]>,
    t: FatTime,
) -> Vec<u8> {
    let cs = usize::try_from(geo.cluster_size()).expect("cluster size is at most 32 KiB");
    let mut out = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let start = out.len();
        match (d.parent, label) {
            // fatgen103 §6.5: `..` of a directory whose parent is the root is 0.
            (Some(p), _) => {
                let parent_cluster = if p == 0 { 0 } else { a.dir_first[p] };
                out.extend_from_slice(
                    &ShortEntry::dot(false, cluster_u32(a.dir_first[i])).encode(t),
                );
                out.extend_from_slice(
                    &ShortEntry::dot(true, cluster_u32(parent_cluster)).encode(t),
                );
            }
            (None, Some(l)) => out.extend_from_slice(&ShortEntry::label(l).encode(t)),
            (None, None) => {}
        }
        for c in &d.children {
            let entry = match c.target {
                Target::Dir(j) => ShortEntry::child(&c.name, true, cluster_u32(a.dir_first[j]), 0),
                Target::File(j) => {
                    let size = u32::try_from(files[j].data.len()).expect("checked in collect");
                    ShortEntry::child(&c.name, false, cluster_u32(a.file_first[j]), size)
                }
            };
            push_child(&mut out, &c.name, &entry, t);
        }
        out.resize(start + to_index(a.dir_clusters[i]) * cs, 0);
    }
    out
}

#[cfg(test)]
mod tests;
