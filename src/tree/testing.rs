//! Tree builders shared by the unit tests of the tree steps.

use super::{FileData, Inode, Kind, Meta, Tree};

/// Metadata with `mode`, everything else default (root, time 0).
pub fn meta(mode: u16) -> Meta {
    Meta {
        mode,
        ..Meta::default()
    }
}

/// A 0644 file holding `content`.
pub fn put(tree: &mut Tree, path: &str, content: &str) {
    let inode = Inode {
        meta: meta(0o644),
        kind: Kind::File(FileData::Bytes(content.as_bytes().into())),
    };
    tree.insert(path.as_bytes(), inode).expect("insert file");
}

/// A symlink to `target`.
pub fn link(tree: &mut Tree, path: &str, target: &str) {
    let inode = Inode {
        meta: meta(0o777),
        kind: Kind::Symlink(target.as_bytes().to_vec()),
    };
    tree.insert(path.as_bytes(), inode).expect("insert symlink");
}
