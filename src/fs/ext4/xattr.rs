//! Extended attributes (kernel `Documentation/filesystems/ext4/attributes.rst`)
//! and the POSIX ACL conversion to ext4's compact on-disk format.
//!
//! ```text
//! in inode (0xA0..0x100): [magic EA020000][entries..][0u32] .. [values]   value_offs from first entry
//! block:                  [header 32][entries..][0u32] .. [values]        value_offs from block start
//! entry: name_len u8, name_index u8, value_offs u16, value_inum u32, value_size u32, hash u32, name (pad 4)
//! ```

use super::csum::crc32c;
use super::inode::XATTR_SPACE;
use super::superblock::BLOCK_SIZE;
use crate::tree::acl::{ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ};

/// `h_magic` / in-inode magic.
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// Size of the xattr block header.
const BLOCK_HEADER: usize = 32;

/// Name prefixes and their `e_name_index` (ext4 `xattr.h`). The ACL names are
/// whole names stored with an empty suffix.
const PREFIXES: &[(&[u8], u8)] = &[
    (b"system.posix_acl_access", 2),
    (b"system.posix_acl_default", 3),
    (b"user.", 1),
    (b"trusted.", 4),
    (b"security.", 6),
];

/// Why an attribute cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XattrProblem {
    /// The name is empty, or nothing follows its namespace prefix: the
    /// kernel refuses both (`setxattr` gives ERANGE for "", EINVAL for "user.").
    #[error("the name is empty (an attribute needs a name after its namespace)")]
    EmptyName,
    /// The name has no prefix ext4 stores.
    #[error("unknown namespace (ext4 stores user., trusted., security. and POSIX ACLs)")]
    UnknownPrefix,
    /// The name suffix is longer than 255 bytes.
    #[error("the name after its namespace is longer than 255 bytes")]
    NameTooLong,
    /// A POSIX ACL value is not in the kernel's xattr format.
    #[error("bad POSIX ACL value: {0}")]
    BadAcl(&'static str),
    /// All attributes together do not fit the inode plus one block.
    #[error("all attributes together do not fit the inode and one 4 KiB block")]
    TooLarge,
}

/// One attribute in on-disk form.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Attr {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Attr {
    fn entry_len(&self) -> usize {
        (16 + self.name.len()).next_multiple_of(4)
    }
    fn value_len(&self) -> usize {
        self.value.len().next_multiple_of(4)
    }
}

/// The attributes of one inode, split between the inode and a block.
#[derive(Debug, Default)]
pub struct Placed {
    /// The in-inode area (empty when nothing is stored there).
    pub in_inode: Vec<u8>,
    /// The block body (header with `h_refcount`/`h_checksum` still 0), if any.
    pub block: Option<Vec<u8>>,
}

/// Converts and places `xattrs` (full names → kernel-format values):
/// in the inode first, in sorted order, the rest in one block.
pub fn place<'a>(
    xattrs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Placed, (Vec<u8>, XattrProblem)> {
    let mut attrs = Vec::new();
    for (name, value) in xattrs {
        let err = |p| (name.to_vec(), p);
        if name.is_empty() {
            return Err(err(XattrProblem::EmptyName));
        }
        let (prefix, index) = PREFIXES
            .iter()
            .find(|(p, _)| name.starts_with(p))
            .ok_or_else(|| err(XattrProblem::UnknownPrefix))?;
        let suffix = &name[prefix.len()..];
        let is_acl = *index == 2 || *index == 3;
        if is_acl && !suffix.is_empty() {
            return Err(err(XattrProblem::UnknownPrefix));
        }
        if !is_acl && suffix.is_empty() {
            return Err(err(XattrProblem::EmptyName));
        }
        if suffix.len() > 255 {
            return Err(err(XattrProblem::NameTooLong));
        }
        let value = if is_acl {
            acl_to_disk(value).map_err(err)?
        } else {
            value.to_vec()
        };
        attrs.push(Attr {
            index: *index,
            name: suffix.to_vec(),
            value,
        });
    }
    // Kernel order for block lookups: index, name length, name.
    attrs.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    let (mut inode, mut block) = (Vec::new(), Vec::new());
    let mut used = 8; // magic + end marker
    for a in attrs {
        let need = a.entry_len() + a.value_len();
        if used + need <= XATTR_SPACE {
            used += need;
            inode.push(a);
        } else {
            block.push(a);
        }
    }
    let block_need: usize = block
        .iter()
        .map(|a| a.entry_len() + a.value_len())
        .sum::<usize>()
        + BLOCK_HEADER
        + 4;
    if block_need > BLOCK_SIZE as usize {
        return Err((Vec::new(), XattrProblem::TooLarge));
    }
    let in_inode = if inode.is_empty() {
        Vec::new()
    } else {
        encode(&inode, XATTR_SPACE, 4)
    };
    let block = if block.is_empty() {
        None
    } else {
        Some(encode(&block, BLOCK_SIZE as usize, BLOCK_HEADER))
    };
    Ok(Placed { in_inode, block })
}

/// Lays entries from `start` and values from the end of a `size`-byte area.
/// In-inode value offsets count from the first entry (`start` = 4), block
/// offsets from the block start.
fn encode(attrs: &[Attr], size: usize, start: usize) -> Vec<u8> {
    let mut b = vec![0u8; size];
    b[0..4].copy_from_slice(&XATTR_MAGIC.to_le_bytes());
    let base = if start == 4 { 4 } else { 0 };
    let (mut at, mut end) = (start, size);
    let mut hashes = Vec::new();
    for a in attrs {
        let offs = if a.value.is_empty() {
            0
        } else {
            end -= a.value_len();
            b[end..end + a.value.len()].copy_from_slice(&a.value);
            end - base
        };
        let h = entry_hash(&a.name, &b[end..end + a.value_len()], a.value.is_empty());
        hashes.push(h);
        b[at] = a.name.len() as u8;
        b[at + 1] = a.index;
        b[at + 2..at + 4].copy_from_slice(&(offs as u16).to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(&h.to_le_bytes());
        b[at + 16..at + 16 + a.name.len()].copy_from_slice(&a.name);
        at += a.entry_len();
    }
    if start == BLOCK_HEADER {
        b[4..8].copy_from_slice(&1u32.to_le_bytes()); // h_refcount, patched by the caller
        b[8..12].copy_from_slice(&1u32.to_le_bytes()); // h_blocks
                                                       // ext4_xattr_rehash: any zero entry hash makes the block hash 0.
        let h = if hashes.contains(&0) {
            0
        } else {
            hashes.iter().fold(0u32, |h, &e| (h << 16) ^ (h >> 16) ^ e)
        };
        b[12..16].copy_from_slice(&h.to_le_bytes());
    }
    b
}

/// `ext4_xattr_hash_entry`: name bytes (unsigned), then the value's
/// little-endian words (padded to 4 bytes with zeros).
fn entry_hash(name: &[u8], padded_value: &[u8], empty: bool) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    if !empty {
        for w in padded_value.chunks_exact(4) {
            h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
    }
    h
}

/// Finishes an xattr block at `block`: `h_refcount` and
/// `h_checksum = crc32c(fs_seed, le64 block ++ block with h_checksum = 0)`.
pub fn finish_block(body: &[u8], refcount: u32, block: u64, fs_seed: u32) -> Vec<u8> {
    let mut b = body.to_vec();
    b[4..8].copy_from_slice(&refcount.to_le_bytes());
    b[16..20].fill(0);
    let c = crc32c(crc32c(fs_seed, &block.to_le_bytes()), &b);
    b[16..20].copy_from_slice(&c.to_le_bytes());
    b
}

/// Converts the kernel's xattr ACL (`posix_acl_xattr_header` version 2, then
/// 8-byte tag/perm/id entries) to ext4's (version 1, 4-byte entries for the
/// owner, owning group, mask and other, 8-byte ones for named users and
/// groups; `fs/ext4/acl.c`).
pub fn acl_to_disk(value: &[u8]) -> Result<Vec<u8>, XattrProblem> {
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
        return Err(XattrProblem::BadAcl("length is not 4 + 8 * entries"));
    }
    if value[0..4] != 2u32.to_le_bytes() {
        return Err(XattrProblem::BadAcl("header version is not 2"));
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[0..4]);
        match tag {
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {}
            ACL_USER | ACL_GROUP => out.extend_from_slice(&e[4..8]),
            _ => return Err(XattrProblem::BadAcl("unknown entry tag")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_short_and_long_entries() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [(1u16, 6u16, u32::MAX), (2, 4, 1000), (0x20, 4, u32::MAX)] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_to_disk(&v).unwrap();
        assert_eq!(
            d,
            vec![1, 0, 0, 0, 1, 0, 6, 0, 2, 0, 4, 0, 0xe8, 3, 0, 0, 0x20, 0, 4, 0]
        );
        assert!(acl_to_disk(&[1, 0, 0, 0]).is_err());
    }

    #[test]
    fn small_attrs_stay_in_the_inode() {
        let attrs = [(&b"user.a"[..], &b"1"[..])];
        let p = place(attrs.into_iter()).unwrap();
        assert!(p.block.is_none());
        assert_eq!(&p.in_inode[0..4], &XATTR_MAGIC.to_le_bytes());
        assert_eq!(p.in_inode[4], 1); // name_len of "a"
        assert_eq!(p.in_inode[5], 1); // user.
    }

    /// Issue 14, finding 7: an empty name was stored (or refused as an
    /// unknown prefix); the kernel refuses both spellings.
    #[test]
    fn empty_names_are_refused_as_empty() {
        for name in [&b""[..], b"user.", b"trusted.", b"security."] {
            let attrs = [(name, &b"1"[..])];
            assert_eq!(
                place(attrs.into_iter()).unwrap_err(),
                (name.to_vec(), XattrProblem::EmptyName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn unknown_prefix_is_refused() {
        let attrs = [(&b"foo.a"[..], &b"1"[..])];
        assert_eq!(
            place(attrs.into_iter()).unwrap_err().1,
            XattrProblem::UnknownPrefix
        );
    }
}
