//! Directories: which entries each holds, how many 32-byte slots they take,
//! and their encoding (fatgen103 §6 "Directory Structure").
//!
//! ```text
//! subdirectory cluster: "." | ".." | [LFN n..1] SHORT | [LFN] SHORT | ... | zeros
//! root cluster:         volume label | [LFN] SHORT | ...
//! ```

use super::names::{long_entries, StoredName};
use super::time::FatTime;

/// DIR_Attr: directory.
const ATTR_DIRECTORY: u8 = 0x10;
/// DIR_Attr: archive (set on new files, as every FAT driver does).
const ATTR_ARCHIVE: u8 = 0x20;
/// DIR_Attr: volume label (only in the root).
const ATTR_VOLUME_ID: u8 = 0x08;
/// Size of a directory entry.
pub const ENTRY: u64 = 32;
/// Most entries a directory may hold (fatgen103 §6: 65536 × 32 bytes).
pub const MAX_ENTRIES: u64 = 65_536;

/// What a directory entry points at.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// Index of a directory in the plan.
    Dir(usize),
    /// Index of a file in the plan.
    File(usize),
}

/// One named entry of a directory.
#[derive(Clone, Debug)]
pub struct Child {
    /// How the name is stored.
    pub name: StoredName,
    /// What it names.
    pub target: Target,
}

/// A directory to write.
#[derive(Clone, Debug)]
pub struct DirPlan {
    /// Path for messages (`/` for the root).
    pub path: String,
    /// Parent directory's index; `None` for the root.
    pub parent: Option<usize>,
    /// Entries, in name order.
    pub children: Vec<Child>,
}

impl DirPlan {
    /// 32-byte slots used: dot entries or the label, then long and short
    /// entries of every child.
    pub fn slots(&self, has_label: bool) -> u64 {
        let head = match (self.parent, has_label) {
            (Some(_), _) => 2,
            (None, true) => 1,
            (None, false) => 0,
        };
        let lfn = |c: &Child| {
            c.name
                .long
                .as_ref()
                .map_or(0, |l| l.len().div_ceil(13) as u64)
        };
        head + self.children.iter().map(|c| 1 + lfn(c)).sum::<u64>()
    }
}

/// A short (8.3) directory entry's fields.
pub struct ShortEntry {
    /// DIR_Name.
    pub name: [u8; 11],
    /// DIR_Attr.
    pub attr: u8,
    /// DIR_NTRes case bits.
    pub case: u8,
    /// First cluster (0 for empty files, the label, and `..` to the root).
    pub cluster: u32,
    /// DIR_FileSize (0 for directories).
    pub size: u32,
}

impl ShortEntry {
    /// The entry for a stored child name.
    pub fn child(name: &StoredName, is_dir: bool, cluster: u32, size: u32) -> Self {
        let attr = if is_dir { ATTR_DIRECTORY } else { ATTR_ARCHIVE };
        ShortEntry {
            name: name.short,
            attr,
            case: name.case,
            cluster,
            size,
        }
    }

    /// `.` (`dotdot` false) or `..` of a subdirectory.
    pub fn dot(dotdot: bool, cluster: u32) -> Self {
        let name = if dotdot {
            *b"..         "
        } else {
            *b".          "
        };
        ShortEntry {
            name,
            attr: ATTR_DIRECTORY,
            case: 0,
            cluster,
            size: 0,
        }
    }

    /// The root's volume label entry.
    pub fn label(label: &[u8; 11]) -> Self {
        ShortEntry {
            name: *label,
            attr: ATTR_VOLUME_ID,
            case: 0,
            cluster: 0,
            size: 0,
        }
    }

    /// Encodes the entry with every time field set to `t`.
    pub fn encode(&self, t: FatTime) -> [u8; 32] {
        let mut e = [0u8; 32];
        let [lo0, lo1, hi0, hi1] = self.cluster.to_le_bytes();
        e[0..11].copy_from_slice(&self.name); // DIR_Name
        e[11] = self.attr; // DIR_Attr
        e[12] = self.case; // DIR_NTRes
        e[13] = t.tenths; // DIR_CrtTimeTenth
        e[14..16].copy_from_slice(&t.time.to_le_bytes()); // DIR_CrtTime
        e[16..18].copy_from_slice(&t.date.to_le_bytes()); // DIR_CrtDate
        e[18..20].copy_from_slice(&t.date.to_le_bytes()); // DIR_LstAccDate
        e[20..22].copy_from_slice(&[hi0, hi1]); // DIR_FstClusHI
        e[22..24].copy_from_slice(&t.time.to_le_bytes()); // DIR_WrtTime
        e[24..26].copy_from_slice(&t.date.to_le_bytes()); // DIR_WrtDate
        e[26..28].copy_from_slice(&[lo0, lo1]); // DIR_FstClusLO
        e[28..32].copy_from_slice(&self.size.to_le_bytes()); // DIR_FileSize
        e
    }
}

/// Appends a child's long-name entries (if any) and its short entry.
pub fn push_child(out: &mut Vec<u8>, name: &StoredName, short: &ShortEntry, t: FatTime) {
    if let Some(long) = &name.long {
        for e in long_entries(long, &name.short) {
            out.extend_from_slice(&e);
        }
    }
    out.extend_from_slice(&short.encode(t));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_entry_fields() {
        let t = FatTime {
            date: 0x5771,
            time: 0xB1AA,
            tenths: 100,
        };
        let e = ShortEntry {
            name: *b"LINUX      ",
            attr: ATTR_ARCHIVE,
            case: 0x08,
            cluster: 0x0012_3456,
            size: 99,
        }
        .encode(t);
        assert_eq!(&e[0..11], b"LINUX      ");
        assert_eq!(e[11], 0x20);
        assert_eq!(e[12], 0x08);
        assert_eq!(e[13], 100);
        assert_eq!(&e[14..16], &[0xAA, 0xB1]);
        assert_eq!(&e[16..18], &[0x71, 0x57]);
        assert_eq!(&e[20..22], &[0x12, 0x00], "high word of the cluster");
        assert_eq!(&e[26..28], &[0x56, 0x34], "low word of the cluster");
        assert_eq!(u32::from_le_bytes(e[28..32].try_into().unwrap()), 99);
    }
}
