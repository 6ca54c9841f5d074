//! Tar ingestion against independent oracles: Python's `tarfile` writes the
//! tricky archives and lists them (tests/support/tar_listing.py), GNU tar
//! writes ACL archives from a real directory whose ACLs the kernel reports,
//! gzip/zstd/xz compress, and the cached Debian rootfs (scripts/debian-rootfs.sh)
//! is compared entry by entry.

mod support;
#[path = "support/tarbuild.rs"]
mod tarbuild;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::source::{read_tar, Owners, SourceError, TarOptions, TarProblem, TarStats};
use imgbuild::tree::{FileData, Kind, Meta, Timestamp, Tree, TreeError, ROOT};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{debian_tar, require_tool, run_ok, tempdir};
use tarbuild::{Hdr, TarBuf};

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
