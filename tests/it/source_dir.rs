//! Host directory ingestion, with GNU tar as the independent walker: the same
//! directory archived by `tar --xattrs --acls` and read by our (separately
//! tested) tar reader must give the same tree as `read_dir`.

use std::path::Path;
use std::process::Command;

use imgbuild::source::{read_dir, read_tar, DirOptions, TarOptions};
use imgbuild::tree::{FileData, Kind, Meta, Timestamp, Tree};
use sha2::{Digest, Sha256};

use crate::support::{require_tool, run_ok, tempdir};

fn new_tree() -> Tree {
    Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    })
}

fn fingerprint(tree: &Tree) -> Vec<String> {
    let counts = tree.link_counts();
    tree.walk()
        .into_iter()
        .map(|(p, id)| {
            let i = tree.inode(id);
            let content = match &i.kind {
                Kind::File(d) => Sha256::digest(d.read_all().unwrap())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                Kind::Dir(_) => String::new(),
                k => format!("{k:?}"),
            };
            let links = if matches!(i.kind, Kind::Dir(_)) {
                0
            } else {
                counts[id]
            };
            format!(
                "{} {:?} links={links} {content}",
                String::from_utf8_lossy(&p),
                i.meta
            )
        })
        .collect()
}

fn populate(root: &Path) {
    std::fs::create_dir_all(root.join("etc/sub")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"golden\n").unwrap();
    std::fs::write(root.join("suid"), b"#!/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/sub/b"), vec![7u8; 100_000]).unwrap();
    std::fs::hard_link(root.join("suid"), root.join("etc/suid-link")).unwrap();
    std::os::unix::fs::symlink("../suid", root.join("etc/to-suid")).unwrap();
    for i in 0..300 {
        std::fs::write(root.join(format!("etc/sub/f{i:03}")), format!("{i}\n")).unwrap();
    }
    run_ok(Command::new("chmod").arg("4755").arg(root.join("suid")));
    run_ok(Command::new("mkfifo").arg(root.join("fifo")));
    run_ok(
        Command::new("chown")
            .args(["-h", "1000:2000"])
            .arg(root.join("etc/hostname")),
    );
    run_ok(
        Command::new("setfacl")
            .args(["-m", "u:1234:rx", "-d", "-m", "u:1234:rwx"])
            .arg(root.join("etc/sub")),
    );
    let code = format!(
        "import os; os.setxattr({:?}, 'user.note', b'\\x00hi\\xff')",
        root.join("etc/hostname").display().to_string()
    );
    run_ok(Command::new("python3").arg("-c").arg(code));
}

#[test]
fn dir_matches_gnu_tar_of_the_same_directory() {
    if !require_tool("tar")
        || !require_tool("setfacl")
        || !require_tool("python3")
        || !require_tool("mkfifo")
    {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().join("root");
    populate(&root);
    let tar = tmp.path().join("root.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "--numeric-owner",
                "--format=posix",
                "-cf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg("."),
    );
    let mut from_tar = new_tree();
    read_tar(&tar, &mut from_tar, &TarOptions::default()).unwrap();
    let mut from_dir = new_tree();
    let opts = DirOptions {
        keep_owner: true,
        xattrs: true,
        ..DirOptions::default()
    };
    let stats = read_dir(&root, &mut from_dir, &opts).unwrap();
    assert_eq!(stats.hard_links, 1);
    assert_eq!(stats.specials, 1);
    assert_eq!(fingerprint(&from_dir), fingerprint(&from_tar));
    let sub = &from_dir.inode(from_dir.lookup(b"etc/sub").unwrap()).meta;
    assert!(
        sub.xattrs.contains_key(&b"system.posix_acl_default"[..]),
        "{sub:?}"
    );
}

#[test]
fn dir_maps_owner_to_root_clamps_times_and_holds_no_descriptors() {
    if !require_tool("setfacl") || !require_tool("python3") || !require_tool("mkfifo") {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path().join("root");
    populate(&root);
    run_ok(
        Command::new("touch")
            .args(["-h", "-d", "@100"])
            .arg(root.join("etc/to-suid")),
    );
    // Descriptors open on files of the tree (other tests of this binary
    // run in parallel and open their own).
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&root)))
            .count()
    };
    let before = fds();
    let mut tree = new_tree();
    read_dir(
        &root,
        &mut tree,
        &DirOptions {
            clamp_mtime: Some(1_000),
            ..DirOptions::default()
        },
    )
    .unwrap();
    assert_eq!(fds(), before, "read_dir must not keep files open");
    for (p, id) in tree.walk() {
        let m = &tree.inode(id).meta;
        let p = String::from_utf8_lossy(&p);
        assert_eq!((m.uid, m.gid), (0, 0), "{p}: owner");
        assert!(
            m.mtime <= Timestamp::from_secs(1_000),
            "{p}: mtime {:?}",
            m.mtime
        );
        assert!(m.xattrs.is_empty(), "{p}: xattrs not asked for");
    }
    assert_eq!(
        tree.inode(tree.lookup(b"etc/to-suid").unwrap()).meta.mtime,
        Timestamp::from_secs(100)
    );
    // Contents are read on demand, through a fresh open each time.
    let Kind::File(data @ FileData::Source { .. }) =
        &tree.inode(tree.lookup(b"etc/sub/b").unwrap()).kind
    else {
        panic!("etc/sub/b is not a file by reference")
    };
    assert_eq!(data.read_all().unwrap(), vec![7u8; 100_000]);
    assert_eq!(fds(), before);
    // Names are visited in byte order.
    let names: Vec<_> = tree
        .children(tree.lookup(b"etc/sub").unwrap())
        .map(|(n, _)| n.to_vec())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}
