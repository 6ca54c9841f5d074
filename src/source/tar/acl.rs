//! POSIX ACL text (as GNU tar `--acls`, star and bsdtar store it in
//! `SCHILY.acl.access` / `SCHILY.acl.default`) to the kernel's xattr value
//! for `system.posix_acl_access` / `system.posix_acl_default`
//! (linux/include/uapi/linux/posix_acl_xattr.h: a little-endian u32 version 2,
//! then `{ u16 tag, u16 perm, u32 id }` per entry, sorted by tag then id).

use std::collections::BTreeMap;

use super::TarProblem;
use crate::tree::acl::{ACL_GROUP, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER, ACL_USER, ACL_USER_OBJ};
use crate::tree::{Kind, Tree};

const POSIX_ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
/// Enough for any real ACL; bounds the work on hostile text.
const MAX_ENTRIES: usize = 4096;

/// Maps a user (`true`) or group (`false`) name to its id.
pub type Resolve<'a> = &'a dyn Fn(bool, &str) -> Option<u32>;

/// True when some entry names a user or group without a numeric id, so the
/// text can only be converted once the image's user database is known.
pub fn needs_names(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    text.split([',', '\n']).any(|raw| {
        let f: Vec<&str> = raw
            .split('#')
            .next()
            .unwrap_or("")
            .trim()
            .split(':')
            .collect();
        f.len() == 3 && !f[1].is_empty() && f[1].parse::<u32>().is_err()
    })
}

/// Converts ACL text (entries separated by `,` or newlines, `#` comments
/// ignored; `tag:qualifier:perms[:id]`, tags `user|u`, `group|g`, `mask|m`,
/// `other|o`) to the kernel xattr value. Returns `None` for an access ACL
/// that only repeats the mode (three base entries), which the kernel does not
/// store either. Names without a numeric id go through `resolve`.
pub fn text_to_xattr(
    key: &'static str,
    text: &[u8],
    is_default: bool,
    resolve: Resolve,
) -> Result<Option<Vec<u8>>, TarProblem> {
    let bad = |reason: String| TarProblem::BadAcl { key, reason };
    let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8".into()))?;
    let mut entries: Vec<(u16, u32, u16)> = Vec::new();
    for raw in text.split([',', '\n']) {
        let entry = raw.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        entries
            .push(parse_entry(entry, resolve).map_err(|r| bad(format!("entry {entry:?}: {r}")))?);
    }
    entries.sort_unstable();
    check(&entries).map_err(bad)?;
    if entries.is_empty() || (!is_default && entries.len() == 3) {
        return Ok(None);
    }
    let mut out = POSIX_ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(Some(out))
}

/// One entry as (tag, id, perm).
fn parse_entry(entry: &str, resolve: Resolve) -> Result<(u16, u32, u16), String> {
    let f: Vec<&str> = entry.split(':').collect();
    let (tag, qualifier, perms, extra_id) = match f.as_slice() {
        [t, p] => (*t, "", *p, None),
        [t, q, p] => (*t, *q, *p, None),
        [t, q, p, id] => (*t, *q, *p, Some(*id)),
        _ => return Err("expected tag:qualifier:perms".into()),
    };
    let perm = parse_perms(perms)?;
    let (obj_tag, named_tag) = match tag {
        "user" | "u" => (ACL_USER_OBJ, Some(ACL_USER)),
        "group" | "g" => (ACL_GROUP_OBJ, Some(ACL_GROUP)),
        "mask" | "m" => (ACL_MASK, None),
        "other" | "o" => (ACL_OTHER, None),
        t => return Err(format!("unknown tag {t:?}")),
    };
    if qualifier.is_empty() {
        return Ok((obj_tag, ACL_UNDEFINED_ID, perm));
    }
    let named = named_tag.ok_or_else(|| format!("{tag} takes no qualifier"))?;
    // star and bsdtar append the numeric id after a name; GNU tar writes the
    // name alone (even with --numeric-owner), resolved in the image's
    // /etc/passwd and /etc/group as an extraction inside the image would.
    let id = match (extra_id, qualifier.parse::<u32>()) {
        (Some(id), _) => id
            .parse::<u32>()
            .map_err(|_| format!("id {id:?} is not a number"))?,
        (None, Ok(id)) => id,
        (None, Err(_)) => {
            let db = if named == ACL_USER {
                "/etc/passwd"
            } else {
                "/etc/group"
            };
            resolve(named == ACL_USER, qualifier)
                .ok_or_else(|| format!("{qualifier:?} is not in the image's {db}"))?
        }
    };
    if id == ACL_UNDEFINED_ID {
        return Err("id 4294967295 is reserved".into());
    }
    Ok((named, id, perm))
}

fn parse_perms(p: &str) -> Result<u16, String> {
    let mut bits = 0;
    for c in p.chars() {
        bits |= match c {
            'r' => 4,
            'w' => 2,
            'x' => 1,
            '-' => 0,
            c => return Err(format!("unknown permission {c:?}")),
        };
    }
    Ok(bits)
}

/// posix_acl_valid: one of each base entry, a mask when named entries
/// exist, no duplicate named ids (entries are sorted).
fn check(entries: &[(u16, u32, u16)]) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    let count = |t: u16| entries.iter().filter(|e| e.0 == t).count();
    for (t, name) in [
        (ACL_USER_OBJ, "user::"),
        (ACL_GROUP_OBJ, "group::"),
        (ACL_OTHER, "other::"),
    ] {
        if count(t) != 1 {
            return Err(format!("needs exactly one {name} entry"));
        }
    }
    if count(ACL_MASK) > 1
        || (count(ACL_MASK) == 0 && (count(ACL_USER) > 0 || count(ACL_GROUP) > 0))
    {
        return Err("needs one mask:: entry with named entries".into());
    }
    if entries
        .windows(2)
        .any(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
    {
        return Err("duplicate entry".into());
    }
    Ok(())
}

/// Largest /etc/passwd or /etc/group we read for ACL names.
const MAX_ID_DB: u64 = 16 << 20;

/// `name -> id` from a passwd/group-format file in the tree (third field);
/// empty when missing, too large or unreadable.
pub fn id_map(tree: &Tree, path: &[u8]) -> BTreeMap<String, u32> {
    let data = tree
        .resolve(path, true)
        .ok()
        .and_then(|p| tree.lookup(&p))
        .and_then(|id| match &tree.inode(id).kind {
            Kind::File(d) if d.len() <= MAX_ID_DB => d.read_all().ok(),
            _ => None,
        })
        .unwrap_or_default();
    String::from_utf8_lossy(&data)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_owned(), id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: bool, _: &str) -> Option<u32> {
        None
    }

    /// GNU tar 1.34's text for `setfacl -m u:1234:rx,g:4321:r` on a 0644 file,
    /// and the xattr the kernel returned for it (both read on this machine).
    #[test]
    fn gnu_tar_text_matches_kernel_xattr() {
        let text = b"user::rw-\nuser:1234:r-x\ngroup::r--\ngroup:4321:r--\nmask::r-x\nother::r--\n";
        let mut want = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 5, 1234),
            (4, 4, u32::MAX),
            (8, 4, 4321),
            (0x10, 5, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            want.extend_from_slice(&tag.to_le_bytes());
            want.extend_from_slice(&perm.to_le_bytes());
            want.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            text_to_xattr("SCHILY.acl.access", text, false, &none).unwrap(),
            Some(want)
        );
    }

    #[test]
    fn star_style_names_with_ids_and_commas() {
        let a = text_to_xattr(
            "k",
            b"user::rwx,user:bob:r-x:1000,group::r-x,mask::r-x,other::---",
            false,
            &none,
        )
        .unwrap();
        let b =
            text_to_xattr("k", b"u::rwx,u:1000:r-x,g::r-x,m::r-x,o::---", false, &none).unwrap();
        assert_eq!(a, b);
        assert!(a.is_some());
    }

    #[test]
    fn minimal_access_acl_is_folded_into_the_mode() {
        assert_eq!(
            text_to_xattr("k", b"user::rwx\ngroup::r-x\nother::r-x\n", false, &none).unwrap(),
            None
        );
        assert!(
            text_to_xattr("k", b"user::rwx\ngroup::r-x\nother::r-x\n", true, &none)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn names_are_resolved_and_detected() {
        let text = b"user::rwx\nuser:bob:r-x\ngroup::r-x\ngroup:tty:r--\nmask::r-x\nother::---\n";
        assert!(needs_names(text));
        assert!(!needs_names(b"user::rwx,user:bob:r-x:1000,user:17:r--"));
        let resolve = |user: bool, name: &str| match (user, name) {
            (true, "bob") => Some(1000),
            (false, "tty") => Some(5),
            _ => None,
        };
        let by_name = text_to_xattr("k", text, false, &resolve).unwrap();
        let by_id = text_to_xattr(
            "k",
            b"u::rwx,u:1000:r-x,g::r-x,g:5:r--,m::r-x,o::---",
            false,
            &none,
        )
        .unwrap();
        assert_eq!(by_name, by_id);
    }

    #[test]
    fn rejects_names_without_ids_missing_mask_and_junk() {
        assert!(text_to_xattr(
            "k",
            b"user::rwx,user:bob:r-x,group::r-x,mask::r-x,other::---",
            false,
            &none
        )
        .is_err());
        assert!(text_to_xattr(
            "k",
            b"user::rwx,user:7:r-x,group::r-x,other::---",
            false,
            &none
        )
        .is_err());
        assert!(text_to_xattr("k", b"user::rwz,group::r-x,other::---", false, &none).is_err());
        assert!(text_to_xattr("k", b"user::rwx,group::r-x", false, &none).is_err());
    }
}
