//! Tar ingestion against independent oracles: Python's `tarfile` writes the
//! tricky archives and lists them (tests/support/tar_listing.py), GNU tar
//! writes ACL archives from a real directory whose ACLs the kernel reports,
//! gzip/zstd/xz compress, and the cached Debian rootfs (scripts/debian-rootfs.sh)
//! is compared entry by entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::source::{
    read_tar, Owners, SourceError, TarOptions, TarProblem, TarStats, UnpackLimit,
};
use imgbuild::tree::{FileData, Inode, Kind, Meta, Timestamp, Tree, TreeError, PATH_MAX, ROOT};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::tarbuild;
use crate::support::tarbuild::{Hdr, TarBuf};
use crate::support::{debian_tar, require_tool, run_ok, tempdir};

fn new_tree() -> Tree {
    Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    })
}

fn read(path: &Path) -> Result<(Tree, TarStats), SourceError> {
    let mut tree = new_tree();
    let stats = read_tar(path, &mut tree, &TarOptions::default())?;
    Ok((tree, stats))
}

fn support_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// Python's listing of `tar`, one JSON value per member in archive order.
fn python_listing(tar: &Path, hash: bool) -> Vec<Value> {
    let mut cmd = Command::new("python3");
    cmd.arg(support_script("tar_listing.py")).arg(tar);
    if hash {
        cmd.arg("--hash");
    }
    let out = run_ok(&mut cmd);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn make_tricky(dir: &Path, fmt: &str) -> PathBuf {
    let out = dir.join(format!("tricky-{fmt}.tar"));
    run_ok(
        Command::new("python3")
            .arg(support_script("make_tricky_tar.py"))
            .arg(&out)
            .arg(fmt),
    );
    out
}

fn sha256_hex(data: &FileData) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < data.len() {
        let n = (data.len() - at).min(buf.len() as u64) as usize;
        data.read_at(at, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts that `tree` holds exactly what the listing says (last entry for a
/// path wins, hard links share the target's inode and metadata), plus the
/// implicit parent directories and nothing else.
fn assert_tree_matches(tree: &Tree, listing: &[Value]) {
    let mut expected: BTreeMap<String, Value> = BTreeMap::new();
    for e in listing {
        let path = e["path"].as_str().unwrap().to_owned();
        if e["type"] == "hardlink" {
            let target = e["link"].as_str().unwrap();
            let mut t = expected
                .get(target)
                .unwrap_or_else(|| panic!("{path}: link target {target} not listed"))
                .clone();
            t["hardlink_of"] = Value::String(target.to_owned());
            expected.insert(path, t);
        } else {
            expected.insert(path, e.clone());
        }
    }
    for (path, e) in &expected {
        let id = tree
            .lookup(path.as_bytes())
            .unwrap_or_else(|| panic!("{path}: missing from the tree"));
        if let Some(target) = e["hardlink_of"].as_str() {
            assert_eq!(
                Some(id),
                tree.lookup(target.as_bytes()),
                "{path}: not the same inode as {target}"
            );
        }
        let inode = tree.inode(id);
        let m = &inode.meta;
        assert_eq!(
            u64::from(m.mode),
            e["mode"].as_u64().unwrap(),
            "{path}: mode"
        );
        assert_eq!(u64::from(m.uid), e["uid"].as_u64().unwrap(), "{path}: uid");
        assert_eq!(u64::from(m.gid), e["gid"].as_u64().unwrap(), "{path}: gid");
        let want_time = Timestamp {
            secs: e["secs"].as_i64().unwrap(),
            nsec: e["nsec"].as_u64().unwrap() as u32,
        };
        assert_eq!(m.mtime, want_time, "{path}: mtime");
        for (name, value) in e["xattrs"].as_object().unwrap() {
            let got = m
                .xattrs
                .get(name.as_bytes())
                .unwrap_or_else(|| panic!("{path}: xattr {name} missing"));
            assert_eq!(&hex(got), value.as_str().unwrap(), "{path}: xattr {name}");
        }
        for name in m.xattrs.keys() {
            let name = String::from_utf8_lossy(name);
            let from_text = (name == "system.posix_acl_access" && !e["acl_access"].is_null())
                || (name == "system.posix_acl_default" && !e["acl_default"].is_null());
            assert!(
                e["xattrs"].get(name.as_ref()).is_some() || from_text,
                "{path}: unexpected xattr {name}"
            );
        }
        match (e["type"].as_str().unwrap(), &inode.kind) {
            ("dir", Kind::Dir(_)) => {}
            ("file", Kind::File(data)) => {
                assert_eq!(data.len(), e["size"].as_u64().unwrap(), "{path}: size");
                assert!(
                    matches!(data, FileData::Source { .. }),
                    "{path}: data must reference the tar"
                );
                if let Some(h) = e["sha256"].as_str() {
                    assert_eq!(sha256_hex(data), h, "{path}: content");
                }
            }
            ("symlink", Kind::Symlink(t)) => assert_eq!(
                t.as_slice(),
                e["link"].as_str().unwrap().as_bytes(),
                "{path}: target"
            ),
            ("chr", Kind::CharDev { major, minor }) | ("blk", Kind::BlockDev { major, minor }) => {
                assert_eq!(
                    (u64::from(*major), u64::from(*minor)),
                    (e["major"].as_u64().unwrap(), e["minor"].as_u64().unwrap()),
                    "{path}: dev"
                );
            }
            ("fifo", Kind::Fifo) => {}
            (t, k) => panic!("{path}: listed as {t}, tree has {k:?}"),
        }
    }
    // Nothing else: every tree path is listed or is a parent of a listed path.
    let mut parents = std::collections::BTreeSet::from([String::new()]);
    for k in expected.keys() {
        let mut p = k.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            parents.insert(parent.to_owned());
            p = parent;
        }
    }
    for (p, _) in tree.walk() {
        let p = String::from_utf8(p).unwrap();
        assert!(
            expected.contains_key(&p) || parents.contains(&p),
            "{p}: in the tree but not in the tar"
        );
    }
}

#[test]
fn pax_tar_from_python_matches_python_listing() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempdir();
    let tar = make_tricky(dir.path(), "pax");
    let listing = python_listing(&tar, true);
    let (tree, stats) = read(&tar).unwrap();
    assert_tree_matches(&tree, &listing);
    assert_eq!(stats.entries, listing.len() as u64);
    assert_eq!(stats.hard_links, 2);
    assert!(listing.len() > 3000);
}

#[test]
fn gnu_tar_from_python_matches_python_listing() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempdir();
    let tar = make_tricky(dir.path(), "gnu");
    let listing = python_listing(&tar, true);
    let (tree, _) = read(&tar).unwrap();
    assert_tree_matches(&tree, &listing);
}

#[test]
fn tricky_tar_details() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempdir();
    let (tree, _) = read(&make_tricky(dir.path(), "pax")).unwrap();
    let meta = |p: &str| tree.inode(tree.lookup(p.as_bytes()).unwrap()).meta.clone();
    // The hard link entry said 0644, uid 1234, mtime 1: the target keeps 04755/0/1700000000.
    let suid = meta("usr/bin/suidlink");
    assert_eq!(
        (suid.mode, suid.uid, suid.mtime.secs),
        (0o4755, 0, 1_700_000_000)
    );
    assert_eq!(
        tree.lookup(b"usr/bin/suidlink"),
        tree.lookup(b"usr/bin/suidprog")
    );
    assert_eq!(
        tree.link_counts()[tree.lookup(b"usr/bin/suidprog").unwrap()],
        2
    );
    assert_eq!(
        meta("time/old").mtime,
        Timestamp {
            secs: -86401,
            nsec: 500_000_000
        }
    );
    assert_eq!(
        meta("time/future").mtime,
        Timestamp {
            secs: 4_102_444_800,
            nsec: 250_000_000
        }
    );
    let ids = meta("home/big-ids");
    assert_eq!((ids.uid, ids.gid), (70000, 4_000_000_000));
    let dup = tree.inode(tree.lookup(b"etc/dup").unwrap());
    match &dup.kind {
        Kind::File(d) => assert_eq!(d.read_all().unwrap(), b"second, longer\n"),
        k => panic!("{k:?}"),
    }
    assert_eq!(tree.children(tree.lookup(b"many").unwrap()).count(), 3000);
    // Missing parents come from the tree's parent metadata.
    assert_eq!(meta("missing/parents").mode, 0o755);
    // SCHILY.acl.default text became the kernel xattr (user_obj, group_obj, group 4, mask, other).
    let journal = meta("var/log/journal");
    let acl = journal
        .xattrs
        .get(&b"system.posix_acl_default"[..])
        .unwrap();
    assert_eq!(
        hex(acl),
        "02000000".to_owned()
            + "01000700ffffffff04000500ffffffff0800050004000000"
            + "10000500ffffffff20000500ffffffff"
    );
    let big = tree.inode(tree.lookup(b"big/forty-mb").unwrap());
    match &big.kind {
        Kind::File(d @ FileData::Source { offset, .. }) => {
            assert_eq!(d.len(), 40 * 1024 * 1024 + 4);
            assert_eq!(offset % 512, 0);
            let mut tail = [0u8; 5];
            d.read_at(d.len() - 5, &mut tail).unwrap();
            assert_eq!(&tail, b"\xfftail");
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(tree.inode(ROOT).kind, Kind::Dir(_)));
}

/// Every compressed variant (named without an extension: detection is by
/// magic bytes) gives the same tree as the plain tar.
#[test]
fn gzip_zstd_xz_give_the_same_tree() {
    if !require_tool("python3")
        || !require_tool("gzip")
        || !require_tool("zstd")
        || !require_tool("xz")
    {
        return;
    }
    let dir = tempdir();
    let tar = make_tricky(dir.path(), "pax");
    let listing = python_listing(&tar, false);
    let (plain, _) = read(&tar).unwrap();
    for (tool, args) in [
        ("gzip", &["-c", "-1"][..]),
        ("zstd", &["-c", "-q", "-1"][..]),
        ("xz", &["-c", "-0", "-T1"][..]),
    ] {
        let out = dir.path().join(format!("tricky-{tool}.bin"));
        let data = run_ok(Command::new(tool).args(args).arg(&tar)).stdout;
        std::fs::write(&out, data).unwrap();
        let opts = TarOptions {
            temp_dir: Some(dir.path().to_owned()),
            ..TarOptions::default()
        };
        let mut tree = new_tree();
        let stats = read_tar(&out, &mut tree, &opts).unwrap_or_else(|e| panic!("{tool}: {e:?}"));
        assert_eq!(stats.entries, listing.len() as u64, "{tool}");
        assert_tree_matches(&tree, &listing);
        assert_eq!(
            fingerprint(&tree),
            fingerprint(&plain),
            "{tool}: tree differs from the plain tar's"
        );
    }
    // The temp files are unlinked: nothing but our inputs is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

fn fingerprint(tree: &Tree) -> Vec<String> {
    tree.walk()
        .into_iter()
        .map(|(p, id)| {
            let i = tree.inode(id);
            let content = match &i.kind {
                Kind::File(d) => sha256_hex(d),
                Kind::Dir(_) => String::new(),
                k => format!("{k:?}"),
            };
            format!("{} {:?} {content}", String::from_utf8_lossy(&p), i.meta)
        })
        .collect()
}

/// GNU tar `--acls` stores ACLs as SCHILY.acl.* text; we turn the text into
/// the kernel's xattr value, which must equal what the kernel reports for the
/// real files (os.getxattr). With `--xattrs` GNU tar also stores the raw
/// xattrs; both archives must give the same values. Capabilities come through.
#[test]
fn gnu_tar_acls_match_kernel_xattrs() {
    if !require_tool("tar") || !require_tool("setfacl") || !require_tool("python3") {
        return;
    }
    let dir = tempdir();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), b"acl\n").unwrap();
    // GNU tar writes ACL qualifiers as names when the host knows them (even
    // with --numeric-owner): root (uid 0) and the group of gid 5 become
    // names, which we resolve with the image's own /etc/passwd and /etc/group.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let group5 = String::from_utf8(
        run_ok(Command::new("sh").args(["-c", "getent group 5 | cut -d: -f1"])).stdout,
    )
    .unwrap();
    let group5 = group5.trim();
    assert!(
        !group5.is_empty(),
        "this test needs a host group with gid 5"
    );
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(
        root.join("etc/group"),
        format!("root:x:0:\n{group5}:x:5:\n"),
    )
    .unwrap();
    run_ok(
        Command::new("setfacl")
            .args(["-m", "u:1234:rx,g:4321:r,u:70000:rw,u:0:r"])
            .arg(root.join("d/f")),
    );
    run_ok(
        Command::new("setfacl")
            .args(["-d", "-m", "u:1234:rwx,g:5:rx"])
            .arg(root.join("d")),
    );
    let kernel = |p: &str, name: &str| {
        let code = format!(
            "import os; print(os.getxattr({:?}, {name:?}).hex())",
            root.join(p).display().to_string()
        );
        String::from_utf8(run_ok(Command::new("python3").arg("-c").arg(code)).stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    let want_access = kernel("d/f", "system.posix_acl_access");
    let want_default = kernel("d", "system.posix_acl_default");
    for (name, extra) in [
        ("text-only", &["--acls"][..]),
        (
            "with-xattrs",
            &["--acls", "--xattrs", "--xattrs-include=*"][..],
        ),
    ] {
        let tar = dir.path().join(format!("{name}.tar"));
        run_ok(
            Command::new("tar")
                .args(extra)
                .arg("--numeric-owner")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(&root)
                .arg("."),
        );
        let (tree, _) = read(&tar).unwrap();
        let x = |p: &str, n: &str| {
            tree.inode(tree.lookup(p.as_bytes()).unwrap())
                .meta
                .xattrs
                .get(n.as_bytes())
                .map(|v| hex(v))
        };
        assert_eq!(
            x("d/f", "system.posix_acl_access"),
            Some(want_access.clone()),
            "{name}: access ACL"
        );
        assert_eq!(
            x("d", "system.posix_acl_default"),
            Some(want_default.clone()),
            "{name}: default ACL"
        );
        assert_eq!(
            x("d", "system.posix_acl_access"),
            None,
            "{name}: a minimal access ACL is the mode"
        );
        assert_tree_matches(&tree, &python_listing(&tar, true));
    }
}

fn expect_problem(tar: &[u8], check: impl Fn(u64, &str, &TarProblem) -> bool) -> String {
    let dir = tempdir();
    let path = dir.path().join("hostile.tar");
    std::fs::write(&path, tar).unwrap();
    let err = read(&path)
        .map(|_| ())
        .expect_err("hostile tar must be refused");
    let text = err.to_string();
    assert!(
        text.contains("hostile.tar"),
        "error does not name the tar: {text}"
    );
    match &err {
        SourceError::Tar {
            index,
            entry,
            problem,
            ..
        } => {
            assert!(check(*index, entry, problem), "unexpected error: {err:?}");
        }
        e => panic!("expected a tar entry error, got {e:?}"),
    }
    text
}

#[test]
fn dotdot_entry_is_refused_naming_it() {
    let tar = TarBuf::default()
        .entry(&Hdr::file("ok", 2), b"ok")
        .entry(&Hdr::file("a/../../evil", 1), b"x")
        .finish();
    let text = expect_problem(&tar, |i, e, p| {
        i == 1 && e == "a/../../evil" && matches!(p, TarProblem::Tree(TreeError::DotDot { .. }))
    });
    assert!(
        text.ends_with("hostile.tar: entry #1 \"a/../../evil\" (header at byte 1024)"),
        "{text}"
    );
}

/// The message a person sees (`{:#}` prints the chain, each cause once).
#[test]
fn error_chain_reads_as_one_sentence() {
    let dir = tempdir();
    let path = dir.path().join("big.tar");
    std::fs::write(
        &path,
        TarBuf::default()
            .entry(&Hdr::file("huge", 1 << 30), b"x")
            .finish(),
    )
    .unwrap();
    let err = read(&path).map(|_| ()).unwrap_err();
    let mut chain = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        chain.push_str(&format!(": {c}"));
        cause = c.source();
    }
    let want = format!(
        "{}: entry #0 \"huge\" (header at byte 0): size 1073741824 from data offset 512 runs past the end of the file (2048 bytes)",
        path.display()
    );
    assert_eq!(chain, want);
}

#[test]
fn hard_link_outside_or_missing_is_refused() {
    let tar = TarBuf::default()
        .entry(&Hdr::typed("l", b'1', "../etc/shadow"), b"")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "l" && matches!(p, TarProblem::Tree(TreeError::DotDot { .. }))
    });
    let tar = TarBuf::default()
        .entry(&Hdr::typed("l", b'1', "nowhere"), b"")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "l" && matches!(p, TarProblem::Tree(TreeError::NotFound { .. }))
    });
}

#[test]
fn absolute_paths_are_confined() {
    let dir = tempdir();
    let path = dir.path().join("abs.tar");
    let tar = TarBuf::default()
        .entry(&Hdr::file("/etc/passwd", 5), b"root\n")
        .entry(&Hdr::typed("//x/./y", b'5', ""), b"")
        .finish();
    std::fs::write(&path, tar).unwrap();
    let (tree, _) = read(&path).unwrap();
    assert!(tree.lookup(b"etc/passwd").is_some());
    assert!(matches!(
        tree.inode(tree.lookup(b"x/y").unwrap()).kind,
        Kind::Dir(_)
    ));
}

#[test]
fn size_past_end_of_file_is_refused_without_allocating() {
    let tar = TarBuf::default()
        .entry(&Hdr::file("huge", 0o77777777777), b"tiny")
        .finish();
    expect_problem(&tar, |i, e, p| {
        i == 0
            && e == "huge"
            && matches!(
                p,
                TarProblem::SizePastEnd {
                    size: 0o77777777777,
                    ..
                }
            )
    });
    // A pax size past the end, and an enormous pax header.
    let tar = TarBuf::default()
        .pax(&[("size", b"999999999999")])
        .entry(&Hdr::file("paxhuge", 1), b"x")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "paxhuge"
            && matches!(
                p,
                TarProblem::SizePastEnd {
                    size: 999_999_999_999,
                    ..
                }
            )
    });
}

#[test]
fn truncated_header_is_refused() {
    let mut tar = TarBuf::default()
        .entry(&Hdr::file("first", 3), b"abc")
        .0
        .clone();
    tar.extend_from_slice(&Hdr::file("second", 0).encode()[..300]);
    expect_problem(&tar, |i, _, p| {
        i == 1 && matches!(p, TarProblem::TruncatedHeader { available: 300 })
    });
}

#[test]
fn garbage_and_bad_checksums_are_refused() {
    let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 13) as u8).collect();
    expect_problem(&garbage, |i, _, p| {
        i == 0
            && matches!(
                p,
                TarProblem::BadNumber { .. } | TarProblem::BadChecksum { .. }
            )
    });
    let mut h = Hdr::file("flipped", 0).encode();
    h[0] = b'F';
    let mut tar = h.to_vec();
    tar.extend_from_slice(&[0; 1024]);
    expect_problem(&tar, |_, e, p| {
        e == "Flipped" && matches!(p, TarProblem::BadChecksum { .. })
    });
}

#[test]
fn bad_pax_records_and_dangling_headers_are_refused() {
    let mut t = TarBuf::default();
    let body = b"99 path=x\n";
    t.entry(
        &Hdr {
            typeflag: b'x',
            ..Hdr::file("PaxHeader", body.len() as u64)
        },
        body,
    )
    .entry(&Hdr::file("f", 0), b"");
    expect_problem(&t.finish(), |_, _, p| {
        matches!(p, TarProblem::BadPax { .. })
    });
    let tar = TarBuf::default()
        .entry(&Hdr::file("f", 0), b"")
        .pax(&[("path", b"g")])
        .finish();
    expect_problem(&tar, |i, _, p| {
        i == 1 && matches!(p, TarProblem::DanglingExtended)
    });
    let tar = TarBuf::default()
        .pax(&[("uid", b"99999999999")])
        .entry(&Hdr::file("bigid", 0), b"")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "bigid" && matches!(p, TarProblem::OutOfRange { field: "uid", .. })
    });
}

#[test]
fn unsupported_entries_are_named() {
    let tar = TarBuf::default()
        .entry(&Hdr::typed("sparse", b'S', ""), b"")
        .finish();
    let text = expect_problem(&tar, |_, e, p| {
        e == "sparse" && matches!(p, TarProblem::Unsupported { .. })
    });
    assert!(text.contains("sparse"), "{text}");
    let tar = TarBuf::default()
        .pax(&[("GNU.sparse.major", b"1")])
        .entry(&Hdr::file("paxsparse", 0), b"")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "paxsparse" && matches!(p, TarProblem::Unsupported { .. })
    });
    let tar = TarBuf::default()
        .entry(&Hdr::typed("weird", b'Z', ""), b"")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "weird" && matches!(p, TarProblem::Unsupported { .. })
    });
    let tar = TarBuf::default()
        .entry(&Hdr::file("f", 0), b"")
        .entry(&Hdr::file("f/child", 0), b"")
        .finish();
    expect_problem(&tar, |_, e, p| {
        e == "f/child" && matches!(p, TarProblem::Tree(TreeError::NotADirectory { .. }))
    });
}

#[test]
fn pax_global_headers_are_ignored_and_root_owner_mapping_works() {
    let dir = tempdir();
    let path = dir.path().join("g.tar");
    let mut t = TarBuf::default();
    let body = b"16 path=ignored\n";
    t.entry(
        &Hdr {
            typeflag: b'g',
            ..Hdr::file("global", body.len() as u64)
        },
        body,
    );
    t.entry(
        &Hdr {
            uid: 1000,
            gid: 1000,
            ..Hdr::file("mine", 0)
        },
        b"",
    );
    std::fs::write(&path, t.finish()).unwrap();
    let mut tree = new_tree();
    let stats = read_tar(
        &path,
        &mut tree,
        &TarOptions {
            owners: Owners::Root,
            clamp_mtime: Some(1_000),
            ..TarOptions::default()
        },
    )
    .unwrap();
    assert_eq!(stats.entries, 1);
    let m = &tree.inode(tree.lookup(b"mine").unwrap()).meta;
    assert_eq!((m.uid, m.gid, m.mtime), (0, 0, Timestamp::from_secs(1_000)));
    assert!(tree.lookup(b"ignored").is_none());
}

/// The real mmdebstrap output, entry by entry against Python's reading of it.
#[test]
fn debian_rootfs_matches_python_listing() {
    let Some(tar) = debian_tar() else { return };
    if !require_tool("python3") {
        return;
    }
    let t0 = std::time::Instant::now();
    let (tree, stats) = read(&tar).unwrap();
    eprintln!(
        "read {} entries ({} bytes of files) in {:?}",
        stats.entries,
        stats.file_bytes,
        t0.elapsed()
    );
    assert!((10_000..15_000).contains(&stats.entries), "{stats:?}");
    let listing = python_listing(&tar, true);
    assert_eq!(stats.entries, listing.len() as u64);
    assert_tree_matches(&tree, &listing);
    let passwd = &tree.inode(tree.lookup(b"usr/bin/passwd").unwrap()).meta;
    assert_eq!(passwd.mode & 0o4000, 0o4000, "passwd is set-uid");
    let journal = &tree.inode(tree.lookup(b"var/log/journal").unwrap()).meta;
    for name in ["system.posix_acl_access", "system.posix_acl_default"] {
        let v = journal
            .xattrs
            .get(name.as_bytes())
            .unwrap_or_else(|| panic!("/var/log/journal lacks {name}"));
        assert_eq!(&v[..4], &[2, 0, 0, 0], "{name}: posix_acl_xattr version 2");
    }
}

/// A `.tar.gz` holding one file of `mib` MiB of zeros, built in
/// milliseconds whatever its size: the tar header is one gzip member; the
/// zeros (the file and the end-of-archive blocks) are a second member made
/// of one compressed 1 MiB chunk repeated. The chunk ends in a sync flush
/// (byte-aligned, non-final blocks) and only refers back to zeros, so its
/// copies concatenate into one valid deflate stream; a final empty block
/// and the CRC-32 and length of the zeros close it. About 1 KiB per MiB.
fn gzip_zeros_tar(mib: u64) -> Vec<u8> {
    use std::io::Write;

    use flate2::{Compress, Compression, Crc, FlushCompress};
    const CHUNK: usize = 1 << 20;
    let mut header = flate2::write::GzEncoder::new(Vec::new(), Compression::best());
    header
        .write_all(&Hdr::file("zeros", mib * CHUNK as u64).encode())
        .unwrap();
    let mut out = header.finish().unwrap();

    let zeros = vec![0u8; CHUNK];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut chunk = Vec::with_capacity(CHUNK);
    deflate
        .compress_vec(&zeros, &mut chunk, FlushCompress::Sync)
        .unwrap();
    assert_eq!(deflate.total_in(), CHUNK as u64, "one call takes the chunk");
    let mut crc_chunk = Crc::new();
    crc_chunk.update(&zeros);
    let mut crc = Crc::new();
    // RFC 1952 member header: ID1 ID2, CM=deflate, no flags, no mtime, XFL, OS=unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    // The file's data, then 1 MiB more of which the first 1024 bytes end the archive.
    for _ in 0..=mib {
        out.extend_from_slice(&chunk);
        crc.combine(&crc_chunk);
    }
    out.extend_from_slice(&[0x03, 0x00]); // final fixed-Huffman block, end-of-block only
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes()); // ISIZE: length mod 2^32
    out
}

fn bounded(spill: &Path, disk_size: u64) -> TarOptions {
    TarOptions {
        temp_dir: Some(spill.to_owned()),
        max_unpacked: Some(UnpackLimit::for_disk(disk_size)),
        ..TarOptions::default()
    }
}

/// Issue 14 (compressed-tar bomb): a 2 MB .tar.gz wrote 2.4 GB to $TMPDIR
/// before any size was checked. Now inflating stops one byte past the
/// bound derived from the disk size, and the error names the tar, the bound
/// and the disk size.
#[test]
fn gzip_bomb_stops_at_the_disk_bound() {
    const DISK: u64 = 8 << 20;
    let dir = tempdir();
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    // 4 GiB of zeros from about 4 MB; unbounded, inflating would take seconds and 4 GiB of disk.
    let bomb = dir.path().join("bomb.tar.gz");
    std::fs::write(&bomb, gzip_zeros_tar(4 << 10)).unwrap();
    let t0 = std::time::Instant::now();
    let err = read_tar(&bomb, &mut new_tree(), &bounded(&spill, DISK)).unwrap_err();
    let SourceError::UnpackedTooLarge {
        path,
        method,
        limit,
        disk_size,
    } = &err
    else {
        panic!("expected UnpackedTooLarge, got {err:?}")
    };
    assert_eq!(
        (path, *method, *limit, *disk_size),
        (&bomb, "gzip", DISK + DISK / 8, DISK)
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "inflating did not stop at the bound: {:?}",
        t0.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: its gzip stream inflates past 9437184 bytes (9 MiB), the bound for a disk of \
             8388608 bytes (8 MiB)",
            bomb.display()
        )),
        "{text}"
    );
    // The spill was an unlinked file, gone with its handle: nothing is left.
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
}

/// Issue 14 (compressed-tar bomb): zstd and xz streams are bounded alike.
#[test]
fn zstd_and_xz_bombs_stop_at_the_disk_bound() {
    use std::io::Read;
    const DISK: u64 = 4 << 20;
    let dir = tempdir();
    let zeros = || std::io::repeat(0).take(64 << 20);
    let zst = zstd::stream::encode_all(zeros(), 3).unwrap();
    let mut xz = Vec::new();
    liblzma::read::XzEncoder::new(zeros(), 0)
        .read_to_end(&mut xz)
        .unwrap();
    for (name, data) in [("bomb.tar.zst", zst), ("bomb.tar.xz", xz)] {
        let bomb = dir.path().join(name);
        std::fs::write(&bomb, data).unwrap();
        let err = read_tar(&bomb, &mut new_tree(), &bounded(dir.path(), DISK)).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::UnpackedTooLarge {
                    limit: 4_718_592,
                    disk_size: DISK,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
    }
}

/// Issue 14 (compressed-tar bomb): a compressed tar within the bound reads
/// as before, its zeros mapped as it inflates.
#[test]
fn compressed_tar_within_the_disk_bound_is_read() {
    let dir = tempdir();
    let tar = dir.path().join("four.tar.gz");
    std::fs::write(&tar, gzip_zeros_tar(4)).unwrap();
    let mut tree = new_tree();
    let stats = read_tar(&tar, &mut tree, &bounded(dir.path(), 8 << 20)).unwrap();
    assert_eq!((stats.files, stats.file_bytes), (1, 4 << 20));
    // header + data + the rest of the last 1 MiB of zeros
    assert_eq!(stats.tar_bytes, 512 + (5 << 20));
}

/// Issue 14 (directory depth): one file 50,000 directories deep (a 112 KB
/// tar) took 5.3 GB and 23 s, since every path of the chain was
/// materialised. Paths longer than PATH_MAX are refused when the entry is
/// placed, naming the entry (shortened) and the length.
#[test]
fn path_deeper_than_path_max_is_refused_naming_the_entry() {
    let deep = "d/".repeat(50_000) + "f";
    let tar = TarBuf::default()
        .entry(&Hdr::file("ok", 0), b"")
        .pax(&[("path", deep.as_bytes())])
        .entry(&Hdr::file("short-name", 0), b"")
        .finish();
    let t0 = std::time::Instant::now();
    let text = expect_problem(&tar, |i, e, p| {
        i == 1
            && e.starts_with("d/d/d/")
            && e.ends_with("... (100001 bytes)")
            && e.len() < 300
            && matches!(
                p,
                TarProblem::Tree(TreeError::PathTooLong { len: 100_001, start })
                    if start.starts_with("d/d/") && start.len() < 80
            )
    });
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t0.elapsed()
    );
    assert!(text.ends_with("bytes)\" (header at byte 512)"), "{text}");
}

/// Issue 14 (directory depth): the limit is Linux's PATH_MAX, 4096 bytes of
/// the path as it reads inside the tree (no leading `/`, `.` or doubled
/// `/` counted); the component count follows (at most 2048).
#[test]
fn path_max_counts_the_normalised_path() {
    let at_max = "a/".repeat(2047) + "bb"; // 4096 bytes, 2048 components
    assert_eq!(at_max.len(), PATH_MAX);
    let mut tree = new_tree();
    let file = || Inode {
        meta: Meta::default(),
        kind: Kind::File(FileData::Bytes(b"x".to_vec().into())),
    };
    let spelled = format!("/./{}", at_max.replacen("a/", "a//./", 3));
    tree.insert(spelled.as_bytes(), file()).unwrap();
    assert!(tree.lookup(at_max.as_bytes()).is_some());

    let over = at_max.clone() + "c";
    let err = tree.insert(over.as_bytes(), file()).unwrap_err();
    assert!(
        matches!(&err, TreeError::PathTooLong { len: 4097, start } if start.starts_with("a/a/")),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "path starting {:?} is 4097 bytes long; paths in the image are limited to 4096 bytes (PATH_MAX)",
            format!("{}...", &at_max[..64])
        )
    );
    assert_eq!(tree.lookup(over.as_bytes()), None);
    assert!(matches!(
        tree.link(b"l", over.as_bytes()),
        Err(TreeError::PathTooLong { len: 4097, .. })
    ));
}

/// Issue 14 (directory depth): `Tree::entries`, which the ext4 writer now
/// numbers inodes by instead of `walk`'s full paths, visits the same names
/// in the same order.
#[test]
fn entries_visit_what_walk_visits_without_paths() {
    let dir = tempdir();
    let (tree, _) = read(&make_tricky(dir.path(), "pax")).unwrap();
    let walked: Vec<_> = tree.walk().into_iter().map(|(_, id)| id).collect();
    let entries = tree.entries();
    assert_eq!(entries.iter().map(|e| e.2).collect::<Vec<_>>(), walked);
    assert_eq!(entries[0], (ROOT, &b""[..], ROOT));
    for ((path, _), (parent, name, id)) in tree.walk().iter().zip(&entries).skip(1) {
        assert!(path.ends_with(name), "{path:?} {name:?}");
        assert_eq!(
            tree.children(*parent).find(|c| c.0 == *name).map(|c| c.1),
            Some(*id)
        );
    }
}

/// A character device header with these numbers (ustar devmajor/devminor).
fn device_header(name: &str, major: u64, minor: u64) -> [u8; 512] {
    let mut h = Hdr::typed(name, b'3', "").encode();
    h[329..337].copy_from_slice(format!("{major:07o}\0").as_bytes());
    h[337..345].copy_from_slice(format!("{minor:07o}\0").as_bytes());
    tarbuild::fix_checksum(&mut h);
    h
}

/// Issue 14, finding 7: device numbers past 12 bits of major or 20 of minor
/// were accepted and then masked into another device by the ext4 writer.
#[test]
fn device_numbers_past_linux_dev_t_are_refused_naming_the_entry() {
    let mut ok = TarBuf::default();
    ok.0.extend_from_slice(&device_header("dev/largest", 4095, 1_048_575));
    let dir = tempdir();
    let path = dir.path().join("ok.tar");
    std::fs::write(&path, ok.finish()).unwrap();
    let (tree, _) = read(&path).unwrap();
    assert!(matches!(
        tree.inode(tree.lookup(b"dev/largest").unwrap()).kind,
        Kind::CharDev {
            major: 4095,
            minor: 1_048_575
        }
    ));
    for (major, minor) in [(4096, 0), (0, 1_048_576), (0o7777777, 0o7777777)] {
        let mut t = TarBuf::default();
        t.0.extend_from_slice(&device_header("dev/big", major, minor));
        let text = expect_problem(&t.finish(), |i, e, p| {
            i == 0
                && e == "dev/big"
                && matches!(p, TarProblem::DeviceNumberTooLarge { major: a, minor: b }
                    if u64::from(*a) == major && u64::from(*b) == minor)
        });
        assert!(text.contains("\"dev/big\""), "{text}");
    }
}

/// Issue 14, finding 7: a `SCHILY.xattr.` record with no attribute name is
/// refused naming the entry it belongs to (it named the pax header before).
#[test]
fn pax_xattr_with_an_empty_name_is_refused_naming_the_entry() {
    let tar = TarBuf::default()
        .pax(&[("SCHILY.xattr.", b"v")])
        .entry(&Hdr::file("etc/f", 0), b"")
        .finish();
    let text = expect_problem(&tar, |i, e, p| {
        i == 0 && e == "etc/f" && matches!(p, TarProblem::EmptyXattrName)
    });
    assert!(
        text.ends_with("entry #0 \"etc/f\" (header at byte 0)"),
        "{text}"
    );
}
