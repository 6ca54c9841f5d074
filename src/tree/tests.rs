use super::*;

fn dir_meta() -> Meta {
    Meta {
        mode: 0o755,
        ..Meta::default()
    }
}

fn file(content: &[u8], mode: u16) -> Inode {
    Inode {
        meta: Meta {
            mode,
            ..Meta::default()
        },
        kind: Kind::File(FileData::Bytes(content.into())),
    }
}

fn dir(mode: u16) -> Inode {
    Inode {
        meta: Meta {
            mode,
            ..Meta::default()
        },
        kind: Kind::Dir(BTreeMap::new()),
    }
}

#[test]
fn insert_creates_missing_parents() {
    let mut t = Tree::new(dir_meta());
    t.insert(b"/usr/bin/ls", file(b"x", 0o755)).unwrap();
    let usr = t.lookup(b"usr").unwrap();
    assert!(matches!(t.inode(usr).kind, Kind::Dir(_)));
    assert_eq!(t.inode(usr).meta.mode, 0o755);
    assert!(t.lookup(b"./usr/bin/ls").is_some());
}

#[test]
fn later_entry_for_same_path_wins() {
    let mut t = Tree::new(dir_meta());
    t.insert(b"etc/a", file(b"first", 0o644)).unwrap();
    t.insert(b"etc/a", file(b"second", 0o600)).unwrap();
    let id = t.lookup(b"etc/a").unwrap();
    assert_eq!(t.inode(id).meta.mode, 0o600);
    match &t.inode(id).kind {
        Kind::File(d) => assert_eq!(d.read_all().unwrap(), b"second"),
        k => panic!("expected a file, got {k:?}"),
    }
}

#[test]
fn directory_entry_after_children_keeps_them_and_takes_metadata() {
    let mut t = Tree::new(dir_meta());
    t.insert(b"var/log/x", file(b"", 0o644)).unwrap();
    t.insert(b"var/log", dir(0o2750)).unwrap();
    let log = t.lookup(b"var/log").unwrap();
    assert_eq!(t.inode(log).meta.mode, 0o2750);
    assert!(t.lookup(b"var/log/x").is_some());
}

#[test]
fn dotdot_is_refused() {
    let mut t = Tree::new(dir_meta());
    let err = t.insert(b"../etc/passwd", file(b"", 0o644)).unwrap_err();
    assert!(matches!(err, TreeError::DotDot { .. }));
}

#[test]
fn hard_link_shares_inode_and_keeps_target_mode() {
    let mut t = Tree::new(dir_meta());
    let id = t.insert(b"usr/bin/su", file(b"su", 0o4755)).unwrap();
    assert_eq!(t.link(b"usr/bin/su2", b"/usr/bin/su").unwrap(), id);
    assert_eq!(t.inode(id).meta.mode, 0o4755);
    assert_eq!(t.link_counts()[id], 2);
}

#[test]
fn resolve_follows_symlinks_inside_the_tree() {
    let mut t = Tree::new(dir_meta());
    t.insert(b"usr/lib/systemd/system/a.service", file(b"", 0o644))
        .unwrap();
    let link = Inode {
        meta: Meta::default(),
        kind: Kind::Symlink(b"usr/lib".to_vec()),
    };
    t.insert(b"lib", link).unwrap();
    assert_eq!(
        t.resolve(b"/lib/systemd/system/a.service", true).unwrap(),
        b"usr/lib/systemd/system/a.service"
    );
    let escape = Inode {
        meta: Meta::default(),
        kind: Kind::Symlink(b"../../../../etc".to_vec()),
    };
    t.insert(b"usr/evil", escape).unwrap();
    assert_eq!(t.resolve(b"usr/evil/passwd", true).unwrap(), b"etc/passwd");
}

#[test]
fn walk_is_depth_first_and_sorted() {
    let mut t = Tree::new(dir_meta());
    t.insert(b"b/x", file(b"", 0o644)).unwrap();
    t.insert(b"a", file(b"", 0o644)).unwrap();
    t.insert(b"b/a", file(b"", 0o644)).unwrap();
    let paths: Vec<_> = t
        .walk()
        .into_iter()
        .map(|(p, _)| String::from_utf8(p).unwrap())
        .collect();
    assert_eq!(paths, ["", "a", "b", "b/a", "b/x"]);
}
