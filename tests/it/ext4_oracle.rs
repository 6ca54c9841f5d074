//! The ext4 writer against e2fsprogs: every image must pass `e2fsck -fn`
//! without a single message, and `debugfs` must read back every entry's
//! type, mode, owner, size, target, device, xattrs, times and contents.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbuild::fs::ext4::{self, Ext4Error, Ext4Options};
use imgbuild::tree::{FileData, Inode, Kind, Meta, Timestamp, Tree};
use imgbuild_formats::io::SizedFile;
use imgbuild_formats::raw::RawWriter;
use imgbuild_formats::{write_images, ImageSink, ReadAt};

use crate::support;
use crate::support::ext4::{debugfs, e2fsck_clean};
use crate::support::{require_tool, run_ok};

const EPOCH: i64 = 1_700_000_000;
/// 2^32 + 5 s: Sun Feb 7 06:28:21 UTC 2106 (`date -u -d @4294967301`).
const AFTER_2038: i64 = (1 << 32) + 5;
/// Sun Apr 24 22:13:20 UTC 1938 (`date -u -d @-1000000000`).
const BEFORE_1970: i64 = -1_000_000_000;

fn meta(mode: u16) -> Meta {
    Meta {
        mode,
        mtime: Timestamp {
            secs: EPOCH,
            nsec: 250_000_000,
        },
        ..Meta::default()
    }
}

fn file(tree: &mut Tree, path: &str, m: Meta, data: &[u8]) {
    let data: Arc<[u8]> = data.to_vec().into();
    tree.insert(
        path.as_bytes(),
        Inode {
            meta: m,
            kind: Kind::File(FileData::Bytes(data)),
        },
    )
    .unwrap();
}

fn node(tree: &mut Tree, path: &str, m: Meta, kind: Kind) {
    tree.insert(path.as_bytes(), Inode { meta: m, kind })
        .unwrap();
}

/// A kernel-format (version 2) POSIX ACL value.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Deterministic pseudo-random bytes (xorshift), so contents are not zeros.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every feature in one tree. `big` is a 40 MB file on disk (by reference).
fn feature_tree(big: &Path) -> Tree {
    let mut t = Tree::new(meta(0o755));
    file(&mut t, "etc/hostname", meta(0o644), b"golden\n");
    file(&mut t, "empty", meta(0o600), b"");
    file(&mut t, "exact-block", meta(0o644), &noise(4096, 1));
    file(&mut t, "bin/su", meta(0o4755), &noise(9000, 2));
    file(&mut t, "bin/sg", meta(0o2711), b"#!/bin/sh\n");
    node(&mut t, "tmp", meta(0o1777), Kind::Dir(BTreeMap::new()));
    let owner = Meta {
        uid: 100_000,
        gid: 200_000,
        ..meta(0o640)
    };
    file(&mut t, "home/big-ids", owner, b"owned\n");
    node(
        &mut t,
        "link-fast",
        meta(0o777),
        Kind::Symlink(b"etc/hostname".to_vec()),
    );
    node(
        &mut t,
        "link-59",
        meta(0o777),
        Kind::Symlink(vec![b'x'; 59]),
    );
    node(
        &mut t,
        "link-60",
        meta(0o777),
        Kind::Symlink(vec![b'y'; 60]),
    );
    node(
        &mut t,
        "link-slow",
        meta(0o777),
        Kind::Symlink([&b"/usr/"[..], &[b'z'; 200]].concat()),
    );
    file(&mut t, "a/file", meta(0o644), b"linked\n");
    t.link(b"b/hard", b"a/file").unwrap();
    t.link(b"a/hard2", b"a/file").unwrap();
    node(
        &mut t,
        "dev/null",
        meta(0o666),
        Kind::CharDev { major: 1, minor: 3 },
    );
    node(
        &mut t,
        "dev/big",
        meta(0o600),
        Kind::CharDev {
            major: 259,
            minor: 0x12345,
        },
    );
    node(
        &mut t,
        "dev/sda",
        meta(0o660),
        Kind::BlockDev { major: 8, minor: 0 },
    );
    node(&mut t, "run/fifo", meta(0o644), Kind::Fifo);
    node(&mut t, "run/sock", meta(0o755), Kind::Socket);
    let mut x = meta(0o755);
    x.xattrs
        .insert(b"security.capability".to_vec(), cap_value());
    x.xattrs.insert(b"user.comment".to_vec(), b"small".to_vec());
    file(&mut t, "bin/ping", x, b"ping");
    let mut d = meta(0o750);
    d.xattrs
        .insert(b"system.posix_acl_access".to_vec(), acl_access());
    d.xattrs
        .insert(b"system.posix_acl_default".to_vec(), acl_access());
    node(&mut t, "srv/shared", d, Kind::Dir(BTreeMap::new()));
    for name in ["x1", "x2"] {
        let mut m = meta(0o644);
        m.xattrs.insert(b"user.big".to_vec(), noise(1500, 3));
        m.xattrs.insert(b"trusted.t".to_vec(), b"v".to_vec());
        file(&mut t, &format!("xattr/{name}"), m, name.as_bytes());
    }
    file(
        &mut t,
        "time/future",
        Meta {
            mtime: Timestamp {
                secs: AFTER_2038,
                nsec: 123_456_789,
            },
            ..meta(0o644)
        },
        b"f",
    );
    file(
        &mut t,
        "time/past",
        Meta {
            mtime: Timestamp {
                secs: BEFORE_1970,
                nsec: 5,
            },
            ..meta(0o644)
        },
        b"p",
    );
    for i in 0..3000 {
        file(
            &mut t,
            &format!("many/entry-with-a-longish-name-{i:05}"),
            meta(0o644),
            format!("{i}\n").as_bytes(),
        );
    }
    let src: Arc<dyn ReadAt> = Arc::new(SizedFile::new(File::open(big).unwrap()).unwrap());
    let len = src.len();
    node(
        &mut t,
        "data/forty",
        meta(0o644),
        Kind::File(FileData::Source {
            source: src,
            offset: 0,
            len,
        }),
    );
    t
}

/// security.capability v2: cap_net_raw permitted+effective.
fn cap_value() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v
}

fn acl_access() -> Vec<u8> {
    acl(&[
        (0x01, 7, u32::MAX),
        (0x02, 5, 1000),
        (0x04, 5, u32::MAX),
        (0x08, 7, 70_000),
        (0x10, 7, u32::MAX),
        (0x20, 0, u32::MAX),
    ])
}

fn opts(size: u64) -> Ext4Options {
    let mut o = Ext4Options::new(size, *b"0123456789abcdef", *b"fedcba9876543210", EPOCH);
    o.label = "rootfs".into();
    o
}

/// Writes the filesystem to `dir/name` through the raw sink.
fn write_raw(tree: &Tree, o: &Ext4Options, dir: &Path, name: &str) -> PathBuf {
    let disk = ext4::write(tree, o).unwrap();
    let path = dir.join(name);
    let sink: Box<dyn ImageSink> = Box::new(RawWriter::new(File::create(&path).unwrap()));
    write_images(&disk, vec![sink]).unwrap();
    path
}

fn stat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("stat {path}"))
}

fn dump(img: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("dumped");
    debugfs(img, &format!("dump {path} {}", out.display()));
    std::fs::read(&out).unwrap()
}

fn ea_get(img: &Path, path: &str, name: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("ea");
    let _ = std::fs::remove_file(&out);
    debugfs(img, &format!("ea_get -f {} {path} {name}", out.display()));
    std::fs::read(&out).unwrap_or_default()
}

fn inode_number(stat: &str) -> u64 {
    let rest = stat.split("Inode: ").nth(1).expect("stat has Inode:");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

fn has_tools() -> bool {
    require_tool("e2fsck") && require_tool("debugfs")
}

fn big_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let data = noise(40_000_000 + 123, 9);
    let path = dir.join("forty.bin");
    File::create(&path).unwrap().write_all(&data).unwrap();
    (path, data)
}

#[test]
fn every_feature_passes_e2fsck_and_reads_back() {
    if !has_tools() {
        return;
    }
    let dir = support::tempdir();
    let (big, big_data) = big_file(dir.path());
    let tree = feature_tree(&big);
    let img = write_raw(&tree, &opts(256 << 20), dir.path(), "fs.img");
    e2fsck_clean(&img);

    let s = stat(&img, "/bin/su");
    assert!(
        s.contains("Type: regular") && s.contains("Mode:  04755"),
        "{s}"
    );
    assert_eq!(dump(&img, "/bin/su", dir.path()), noise(9000, 2));
    assert!(stat(&img, "/bin/sg").contains("Mode:  02711"));
    let s = stat(&img, "/tmp");
    assert!(
        s.contains("Type: directory") && s.contains("Mode:  01777"),
        "{s}"
    );
    let s = stat(&img, "/home/big-ids");
    assert!(s.contains("User: 100000   Group: 200000"), "{s}");
    assert!(stat(&img, "/link-fast").contains("Fast link dest: \"etc/hostname\""));
    assert!(stat(&img, "/link-59").contains("Fast link dest: \"xxxxxxxxxx"));
    assert_eq!(dump(&img, "/link-60", dir.path()), vec![b'y'; 60]);
    let s = stat(&img, "/link-slow");
    assert!(
        s.contains("Type: symlink") && s.contains("Size: 205"),
        "{s}"
    );
    assert_eq!(
        dump(&img, "/link-slow", dir.path()),
        [&b"/usr/"[..], &[b'z'; 200]].concat()
    );

    let a = stat(&img, "/a/file");
    assert!(a.contains("Links: 3"), "{a}");
    assert_eq!(inode_number(&a), inode_number(&stat(&img, "/b/hard")));
    assert_eq!(inode_number(&a), inode_number(&stat(&img, "/a/hard2")));
    assert_eq!(dump(&img, "/b/hard", dir.path()), b"linked\n");

    let s = stat(&img, "/dev/null");
    assert!(
        s.contains("Type: character special") && s.contains("Device major/minor number: 01:03"),
        "{s}"
    );
    let s = stat(&img, "/dev/big");
    assert!(s.contains("Device major/minor number: 259:74565"), "{s}");
    let s = stat(&img, "/dev/sda");
    assert!(
        s.contains("Type: block special") && s.contains("Device major/minor number: 08:00"),
        "{s}"
    );
    assert!(stat(&img, "/run/fifo").contains("Type: FIFO"));
    assert!(stat(&img, "/run/sock").contains("Type: socket"));

    assert_eq!(
        ea_get(&img, "/bin/ping", "security.capability", dir.path()),
        cap_value()
    );
    assert_eq!(
        ea_get(&img, "/bin/ping", "user.comment", dir.path()),
        b"small"
    );
    let acl_back = ea_get(&img, "/srv/shared", "system.posix_acl_access", dir.path());
    assert_eq!(normalize_acl(&acl_back), normalize_acl(&acl_access()));
    let acl_back = ea_get(&img, "/srv/shared", "system.posix_acl_default", dir.path());
    assert_eq!(normalize_acl(&acl_back), normalize_acl(&acl_access()));
    for f in ["/xattr/x1", "/xattr/x2"] {
        assert_eq!(
            ea_get(&img, f, "user.big", dir.path()),
            noise(1500, 3),
            "{f}"
        );
        assert_eq!(ea_get(&img, f, "trusted.t", dir.path()), b"v", "{f}");
    }
    let acl1 = stat(&img, "/xattr/x1");
    let block = acl1
        .split("File ACL: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_ne!(block, "0", "{acl1}");
    assert!(
        stat(&img, "/xattr/x2").contains(&format!("File ACL: {block}")),
        "xattr block is shared"
    );

    let s = stat(&img, "/time/future");
    assert!(
        s.contains("mtime: 0x00000005:1d6f3455 -- Sun Feb  7 06:28:21 2106"),
        "{s}"
    );
    // Pre-1970: low word -1e9 (0xc4653600), epoch bits 00, nsec 5 << 2
    // (inodes.rst: epoch 00 with the sign bit set is 1901..1969; the kernel
    // reads the low word signed). debugfs 1.47.2 prints this as 2074: it
    // reads the low word unsigned, so only the raw fields are compared.
    let s = stat(&img, "/time/past");
    assert!(s.contains("mtime: 0xc4653600:00000014"), "{s}");

    let listing = debugfs(&img, "ls -l /many");
    assert_eq!(listing.matches("entry-with-a-longish-name-").count(), 3000);
    assert!(
        stat(&img, "/many").contains("Flags: 0x81000"),
        "htree directory (INDEX_FL)"
    );
    assert_eq!(
        dump(&img, "/many/entry-with-a-longish-name-02999", dir.path()),
        b"2999\n"
    );
    assert_eq!(dump(&img, "/data/forty", dir.path()), big_data);
    assert_eq!(dump(&img, "/empty", dir.path()), b"");
    assert_eq!(dump(&img, "/exact-block", dir.path()), noise(4096, 1));
    let s = stat(&img, "/lost+found");
    assert!(
        s.contains("Mode:  0700") && s.contains("Size: 16384"),
        "{s}"
    );
}

/// debugfs returns short ACL entries (owner, group, mask, other) with id 0,
/// the kernel with id -1: compare tag and perm, and ids of named entries.
fn normalize_acl(v: &[u8]) -> Vec<(u16, u16, u32)> {
    assert_eq!(&v[..4], &2u32.to_le_bytes(), "version 2 header");
    v[4..]
        .chunks_exact(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            (
                tag,
                u16::from_le_bytes([e[2], e[3]]),
                if tag == 2 || tag == 8 { id } else { 0 },
            )
        })
        .collect()
}

#[test]
fn deep_extent_trees_pass_e2fsck() {
    if !has_tools() {
        return;
    }
    let dir = support::tempdir();
    let (big, big_data) = big_file(dir.path());
    let tree = feature_tree(&big);
    // 16-block extents: the 40 MB file needs 611 extents, two leaf blocks.
    let mut o = opts(256 << 20);
    o.max_extent_blocks = 16;
    let img = write_raw(&tree, &o, dir.path(), "deep.img");
    e2fsck_clean(&img);
    let ex = debugfs(&img, "ex /data/forty");
    assert!(
        ex.contains("Level Entries") && ex.lines().any(|l| l.trim_start().starts_with("1/ 1")),
        "{ex}"
    );
    assert_eq!(dump(&img, "/data/forty", dir.path()), big_data);
}

/// e2fsck recomputes every name's hash in an htree directory: clean with
/// our seed, and complaining once the seed is changed behind our back
/// (which proves the check looks at our hashes at all).
#[test]
fn htree_hashes_agree_with_e2fsck() {
    if !has_tools() {
        return;
    }
    let dir = support::tempdir();
    let mut t = Tree::new(meta(0o755));
    for i in 0..2000 {
        // Names with bytes >= 0x80 exercise the signed-char hash variant.
        let name = format!("d/n\u{e9}-{i}");
        file(&mut t, &name, meta(0o644), b"");
    }
    let img = write_raw(&t, &opts(64 << 20), dir.path(), "h.img");
    e2fsck_clean(&img);
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg("ssv hash_seed 11111111-2222-3333-4444-555555555555")
            .arg(&img),
    );
    let out = support::run(Command::new("e2fsck").arg("-fn").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("HTREE"), "{text}");
}

#[test]
fn writes_are_deterministic_and_too_small_is_reported() {
    let dir = support::tempdir();
    let (big, _) = big_file(dir.path());
    let tree = feature_tree(&big);
    let a = write_raw(&tree, &opts(128 << 20), dir.path(), "a.img");
    let b = write_raw(&tree, &opts(128 << 20), dir.path(), "b.img");
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two writes differ"
    );
    let err = ext4::write(&tree, &opts(16 << 20)).unwrap_err();
    let Ext4Error::TooSmall { needed, size } = err else {
        panic!("{err:?}")
    };
    assert_eq!(size, 16 << 20);
    assert!(needed > 40_000_000 && needed < 128 << 20, "needed {needed}");
    assert_eq!(ext4::min_size(&tree, &opts(0)).unwrap(), needed);
    let img = write_raw(&tree, &opts(needed), dir.path(), "min.img");
    if has_tools() {
        e2fsck_clean(&img);
    }
}

/// Adds the host directory `src` to `tree` under `prefix`: directories,
/// files (by reference, read through `SizedFile`), symlinks and hard links.
fn add_host_dir(tree: &mut Tree, src: &Path, prefix: &str) {
    use std::os::unix::fs::MetadataExt;
    let mut links: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![(src.to_path_buf(), prefix.to_string())];
    while let Some((dir, at)) = stack.pop() {
        let md = std::fs::symlink_metadata(&dir).unwrap();
        node(tree, &at, host_meta(&md), Kind::Dir(BTreeMap::new()));
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let path = format!("{at}/{}", p.file_name().unwrap().to_str().unwrap());
            if md.is_dir() {
                stack.push((p, path));
            } else if md.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                node(
                    tree,
                    &path,
                    host_meta(&md),
                    Kind::Symlink(target.to_str().unwrap().as_bytes().to_vec()),
                );
            } else if md.is_file() {
                if md.nlink() > 1 {
                    if let Some(first) = links.get(&(md.dev(), md.ino())) {
                        tree.link(path.as_bytes(), first.as_bytes()).unwrap();
                        continue;
                    }
                    links.insert((md.dev(), md.ino()), path.clone());
                }
                let len = md.len();
                let f: Arc<dyn ReadAt> = Arc::new(LazyFile {
                    path: p.clone(),
                    len,
                });
                node(
                    tree,
                    &path,
                    host_meta(&md),
                    Kind::File(FileData::Source {
                        source: f,
                        offset: 0,
                        len,
                    }),
                );
            }
        }
    }
}

/// A host file opened on each read, so a tree of 50k files does not hold
/// 50k descriptors (the hard limit here is 20k).
struct LazyFile {
    path: PathBuf,
    len: u64,
}

impl ReadAt for LazyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        SizedFile::new(File::open(&self.path)?)?.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

fn host_meta(md: &std::fs::Metadata) -> Meta {
    use std::os::unix::fs::MetadataExt;
    Meta {
        mode: (md.mode() & 0o7777) as u16,
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timestamp {
            secs: md.mtime(),
            nsec: md.mtime_nsec() as u32,
        },
        xattrs: BTreeMap::new(),
    }
}

/// A real tree (the host's /usr/include and /usr/share/doc, ~15k entries):
/// e2fsck clean, and `debugfs rdump` gives back a tree `diff -r` finds
/// identical to the source. Prints the time against `mke2fs -d`.
#[test]
fn host_directory_round_trips() {
    if !has_tools() || !require_tool("mke2fs") || !require_tool("diff") {
        return;
    }
    let sources = [("/usr/include", "include"), ("/usr/share/doc", "doc")];
    let mut t = Tree::new(meta(0o755));
    for (src, prefix) in sources {
        add_host_dir(&mut t, Path::new(src), prefix);
    }
    let dir = support::tempdir();
    let start = std::time::Instant::now();
    let size = (ext4::min_size(&t, &opts(0)).unwrap() * 5 / 4).next_multiple_of(1 << 20);
    let sized = start.elapsed();
    let img = write_raw(&t, &opts(size), dir.path(), "host.img");
    let ours = start.elapsed() - sized;
    e2fsck_clean(&img);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for (src, prefix) in sources {
        debugfs(&img, &format!("rdump /{prefix} {}", out.display()));
        let d = support::run(
            Command::new("diff")
                .arg("-r")
                .arg("--no-dereference")
                .arg(src)
                .arg(out.join(prefix)),
        );
        assert!(
            d.status.success(),
            "{src} differs:\n{}",
            String::from_utf8_lossy(&d.stdout)
        );
    }
    let theirs_img = dir.path().join("mke2fs.img");
    let start = std::time::Instant::now();
    let mut mk = Command::new("mke2fs");
    mk.args(["-q", "-F", "-t", "ext4", "-d", "/usr/include"])
        .arg(&theirs_img)
        .arg(format!("{}k", size / 1024));
    run_ok(&mut mk);
    let theirs = start.elapsed();
    eprintln!(
        "{} entries: imgbuild min_size {sized:?}, write {ours:?} (both trees); mke2fs -d /usr/include alone {theirs:?}",
        t.walk().len()
    );
}

/// Timing against `mke2fs -t ext4 -d DIR` on the same directory and size:
/// `IMGBUILD_BENCH_DIR=/usr/share cargo test --release --test ext4_oracle
/// bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; needs IMGBUILD_BENCH_DIR"]
fn bench_against_mke2fs() {
    let Ok(src) = std::env::var("IMGBUILD_BENCH_DIR") else {
        return;
    };
    let dir = support::tempdir();
    let start = std::time::Instant::now();
    let mut t = Tree::new(meta(0o755));
    add_host_dir(&mut t, Path::new(&src), "/");
    let scanned = start.elapsed();
    let size = (ext4::min_size(&t, &opts(0)).unwrap() * 5 / 4).next_multiple_of(1 << 20);
    let sized = start.elapsed() - scanned;
    let t0 = std::time::Instant::now();
    let img = write_raw(&t, &opts(size), dir.path(), "ours.img");
    let ours = t0.elapsed();
    e2fsck_clean(&img);
    let theirs_img = dir.path().join("mke2fs.img");
    let t0 = std::time::Instant::now();
    let mut mk = Command::new("mke2fs");
    mk.args(["-q", "-F", "-t", "ext4", "-d", &src])
        .arg(&theirs_img)
        .arg(format!("{}k", size / 1024));
    run_ok(&mut mk);
    let theirs = t0.elapsed();
    eprintln!(
        "{src}: {} entries, image {} MiB; scan {scanned:?}, min_size {sized:?}, imgbuild write {ours:?}, mke2fs -d {theirs:?}",
        t.walk().len(),
        size >> 20
    );
}

fn dumpe2fs(img: &Path) -> String {
    let out = run_ok(Command::new("dumpe2fs").arg(img));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dumpe2fs` field `name:` of the header.
fn field<'a>(dump: &'a str, name: &str) -> &'a str {
    dump.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in dumpe2fs:\n{dump}"))
        .trim()
}

/// sparse_super, as mke2fs writes it without resize_inode (`-O
/// ^resize_inode`): the same feature flags for the backups, superblock
/// copies in the same groups (0, 1 and the powers of 3, 5, 7), no reserved
/// GDT blocks. Not sparse_super2, which the kernel refuses to grow online
/// (issue 10).
#[test]
fn backup_superblocks_like_mke2fs_sparse_super() {
    if !has_tools() || !require_tool("dumpe2fs") || !require_tool("mke2fs") {
        return;
    }
    let dir = support::tempdir();
    let mut t = Tree::new(meta(0o755));
    file(&mut t, "f", meta(0o644), b"x");
    for (size, copies) in [(64u64 << 20, 1usize), (3 << 30, 6), (16 << 30, 11)] {
        let img = write_raw(&t, &opts(size), dir.path(), "ss.img");
        e2fsck_clean(&img);
        let ours = dumpe2fs(&img);
        let theirs_img = dir.path().join("mke2fs.img");
        let _ = std::fs::remove_file(&theirs_img);
        run_ok(
            Command::new("mke2fs")
                .args(["-q", "-F", "-b", "4096", "-t", "ext4"])
                .args(["-O", "^resize_inode"])
                .arg(&theirs_img)
                .arg(format!("{}k", size / 1024)),
        );
        let theirs = dumpe2fs(&theirs_img);
        let features = |d: &str| {
            let f = field(d, "Filesystem features");
            ["sparse_super2", "sparse_super", "resize_inode", "meta_bg"]
                .map(|x| f.split(' ').any(|w| w == x))
        };
        assert_eq!(features(&ours), [false, true, false, false], "{ours}");
        assert_eq!(features(&ours), features(&theirs));
        assert!(!ours.contains("Reserved GDT blocks"), "{ours}");
        let supers = |d: &str| -> Vec<String> {
            d.lines()
                .filter(|l| l.contains("uperblock at "))
                .map(|l| l.trim().split(',').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(supers(&ours).len(), copies, "{size}: {:?}", supers(&ours));
        assert_eq!(supers(&ours), supers(&theirs), "{size}");
    }
}

fn is_power_of(mut g: u64, base: u64) -> bool {
    while g > 1 && g.is_multiple_of(base) {
        g /= base;
    }
    g == 1
}

/// The 1 MiB blocks of `img` that hold data (SEEK_DATA/SEEK_HOLE: the raw
/// sink leaves unwritten ranges as holes), each block once.
fn data_mib(img: &Path) -> Vec<u64> {
    let f = File::open(img).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out: Vec<u64> = Vec::new();
    for r in imgbuild_formats::raw::data_ranges(&f, len).unwrap() {
        for m in r.start >> 20..=(r.end - 1) >> 20 {
            if out.last() != Some(&m) {
                out.push(m);
            }
        }
    }
    out
}

/// `(logical first, logical last, physical first, physical last)` of every
/// leaf extent in `debugfs ex` output (leaf rows have 9 numbers: level,
/// depth, entry, entries, logical first-last, physical first-last, length;
/// index rows have 8).
fn extent_leaves(ex: &str) -> Vec<(u64, u64, u64, u64)> {
    ex.lines()
        .filter_map(|l| {
            let nums: Vec<u64> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| !w.is_empty())
                .map(|w| w.parse().unwrap())
                .collect();
            (nums.len() == 9).then(|| (nums[4], nums[5], nums[6], nums[7]))
        })
        .collect()
}

/// One flex group: dumpe2fs shows every group's bitmaps and inode table in
/// one packed run after the primary GDT (in the order alloc.rs documents),
/// e2fsck accepts it at 64 MiB, 3 GiB and 64 GiB, and a small tree's image
/// touches only a handful of 1 MiB blocks (the start, group 1's backup,
/// low groups' bitmaps + data + journal) besides one per superblock copy
/// in groups 3^n, 5^n, 7^n.
#[test]
fn metadata_is_packed_in_one_flex_group() {
    if !has_tools() || !require_tool("dumpe2fs") {
        return;
    }
    let dir = support::tempdir();
    let mut t = Tree::new(meta(0o755));
    file(&mut t, "etc/hostname", meta(0o644), b"dense\n");
    file(&mut t, "bin/x", meta(0o755), &noise(300_000, 4));
    for (size, groups) in [(64u64 << 20, 1u64), (3 << 30, 24), (64 << 30, 512)] {
        let img = write_raw(&t, &opts(size), dir.path(), "flex.img");
        e2fsck_clean(&img);
        let d = dumpe2fs(&img);
        let flex: u64 = field(&d, "Flex block group size").parse().unwrap();
        assert!(
            flex >= groups && flex >= 16 && flex / 2 < groups.max(16),
            "{flex}"
        );
        // "Block bitmap at B (...)", "Inode bitmap at I", "Inode table at A-Z".
        let at = |key: &str| -> Vec<u64> {
            d.lines()
                .filter_map(|l| {
                    let rest = l.split(key).nth(1)?;
                    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    n.parse().ok()
                })
                .collect()
        };
        let (bb, ib, it) = (
            at("Block bitmap at "),
            at("Inode bitmap at "),
            at("Inode table at "),
        );
        assert_eq!(bb.len() as u64, groups, "{d}");
        let per: u64 = field(&d, "Inode blocks per group").parse().unwrap();
        let gdt = (groups * 64).div_ceil(4096);
        let n = groups as usize;
        // The last group's bitmaps right after the GDT, then the tables.
        assert_eq!((bb[n - 1], ib[n - 1]), (1 + gdt, 2 + gdt), "{d}");
        assert_eq!(it[0], 3 + gdt, "{d}");
        assert!(it.windows(2).all(|w| w[0] + per <= w[1]), "tables in order");
        // Then, within 1 MiB, the other groups' bitmaps, group 0's last
        // (next to the data); the written ones (here group 0's: the data
        // stays in group 0) start on a 1 MiB boundary.
        let tables_end = it[n - 1] + per;
        let pairs = if n > 1 { bb[n - 2] } else { tables_end };
        assert!(
            (tables_end..tables_end + 256).contains(&pairs),
            "bitmaps {pairs} within 1 MiB after the tables ending at {tables_end}"
        );
        for g in 0..n - 1 {
            let at = pairs + 2 * (n - 2 - g) as u64;
            assert_eq!((bb[g], ib[g]), (at, at + 1), "group {g}");
        }
        if n > 1 {
            // Written bitmaps: groups dumpe2fs does not flag both
            // BLOCK_UNINIT and INODE_UNINIT. The highest such group below
            // the last has the lowest address of the written ones.
            let written: Vec<usize> = d
                .lines()
                .filter(|l| l.starts_with("Group ") && l.contains(": (Blocks "))
                .enumerate()
                .filter(|(_, l)| !(l.contains("BLOCK_UNINIT") && l.contains("INODE_UNINIT")))
                .map(|(g, _)| g)
                .filter(|&g| g < n - 1)
                .collect();
            let k = *written.iter().max().expect("group 0 is written");
            assert!(written.iter().all(|&g| g <= k));
            assert_eq!(
                bb[k] % 256,
                0,
                "group {k}'s bitmaps start a 1 MiB block\n{d}"
            );
        }
        // Nothing metadata beyond that: the flex group ends there.
        assert!(bb.iter().chain(&ib).all(|&b| b < pairs + 2 * groups));
        let mib = data_mib(&img);
        // sparse_super's copies in groups 3^n, 5^n, 7^n each stand alone.
        let lone_copies = (3..groups)
            .filter(|&g| [3u64, 5, 7].iter().any(|&b| is_power_of(g, b)))
            .count();
        assert!(
            mib.len() <= 4 + lone_copies,
            "{size}: data in 1 MiB blocks {mib:?}"
        );
        // The journal comes after the data, in one extent, its superblock
        // in the 1 MiB block where the data ends.
        let ex = debugfs(&img, "ex <8>");
        let leaves = extent_leaves(&ex);
        assert!(!leaves.is_empty(), "{ex}");
        assert!(
            leaves.windows(2).all(|w| w[0].3 + 1 == w[1].2),
            "journal contiguous:\n{ex}"
        );
        let jstart = leaves[0].2;
        let x = stat(&img, "/bin/x");
        let data_end: u64 = x
            .lines()
            .skip_while(|l| !l.starts_with("EXTENTS:"))
            .nth(1)
            .and_then(|l| l.rsplit('-').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{x}"));
        assert!(jstart > data_end, "journal {jstart} after data {data_end}");
        // In the 1 MiB block where the data ends; unless the journal did not
        // fit before the next superblock copy: then right after that copy.
        let copy = (1..groups)
            .map(|g| g * 32768)
            .find(|&b| b > data_end && b < jstart);
        match copy {
            None => assert_eq!(jstart >> 8, data_end >> 8, "same 1 MiB block"),
            Some(b) => {
                let jlen = leaves.last().unwrap().3 + 1 - jstart;
                assert!(b - data_end < jlen, "the journal fits before {b}");
                assert_eq!(jstart, b + 1 + gdt, "right after the copy at {b}");
            }
        }
    }
}

/// Bytes that answer `known_zero` by looking, as the lead's tar source does
/// from the bitmap it computes while hashing.
struct ZeroAware(Vec<u8>);

impl ReadAt for ZeroAware {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn known_zero(&self, offset: u64, len: u64) -> Option<bool> {
        let (a, b) = (offset as usize, (offset + len) as usize);
        Some(self.0.get(a..b)?.iter().all(|&x| x == 0))
    }
}

/// `(name, content, data blocks, extent tree blocks, extents as logical
/// (first, last))`.
type HoleCase = (&'static str, Vec<u8>, u64, u64, Vec<(u64, u64)>);

/// Blocks a source knows are zero become holes, as with `mke2fs -d`: e2fsck
/// is clean, `debugfs ex` shows extents with logical gaps, `dump` gives the
/// bytes back, `i_size` is the length and `i_blocks` counts only the blocks
/// with data (plus extent tree blocks).
#[test]
fn known_zero_blocks_become_holes() {
    if !has_tools() {
        return;
    }
    const B: usize = 4096;
    let block = |k: usize, zero: bool| {
        if zero {
            vec![0u8; B]
        } else {
            noise(B, 100 + k as u64)
        }
    };
    let mut first_mid_last: Vec<u8> = (0..9).flat_map(|k| block(k, k == 0 || k == 4)).collect();
    first_mid_last.extend_from_slice(&[0; 100]);
    let alternating: Vec<u8> = (0..60).flat_map(|k| block(k, k % 2 == 0)).collect();
    let mut zero_tail = noise(3 * B, 7);
    zero_tail.extend_from_slice(&vec![0u8; 2 * B]);
    zero_tail.push(0);
    let cases: Vec<HoleCase> = vec![
        ("first-mid-last", first_mid_last, 7, 0, vec![(1, 3), (5, 8)]),
        ("all-zero", vec![0u8; 5 * B + 7], 0, 0, vec![]),
        ("zero-block", vec![0u8; B], 0, 0, vec![]),
        (
            "alternating",
            alternating,
            30,
            1,
            (0..30).map(|i| (2 * i + 1, 2 * i + 1)).collect(),
        ),
        ("zero-tail", zero_tail, 3, 0, vec![(0, 2)]),
        ("dense", noise(3 * B + 5, 8), 4, 0, vec![(0, 3)]),
    ];
    // One source holding every file at 512-byte (not 4 KiB) aligned
    // offsets, like a tar.
    let mut all = vec![1u8; 512];
    let mut at = Vec::new();
    for (_, data, ..) in &cases {
        at.push(all.len() as u64);
        all.extend_from_slice(data);
        all.resize(all.len().next_multiple_of(512) + 512, 3);
    }
    let src: Arc<dyn ReadAt> = Arc::new(ZeroAware(all));
    let mut t = Tree::new(meta(0o755));
    for ((name, data, ..), &offset) in cases.iter().zip(&at) {
        node(
            &mut t,
            &format!("holes/{name}"),
            meta(0o644),
            Kind::File(FileData::Source {
                source: src.clone(),
                offset,
                len: data.len() as u64,
            }),
        );
    }
    let dir = support::tempdir();
    let img = write_raw(&t, &opts(64 << 20), dir.path(), "holes.img");
    e2fsck_clean(&img);
    for (name, data, blocks, tree, extents) in &cases {
        let path = format!("/holes/{name}");
        assert!(dump(&img, &path, dir.path()) == *data, "{path} reads back");
        let s = stat(&img, &path);
        assert!(s.contains(&format!("Size: {}\n", data.len())), "{s}");
        assert!(
            s.contains(&format!("Blockcount: {}\n", (blocks + tree) * 8)),
            "{path}: {blocks} data + {tree} tree blocks:\n{s}"
        );
        let got: Vec<(u64, u64)> = extent_leaves(&debugfs(&img, &format!("ex {path}")))
            .iter()
            .map(|e| (e.0, e.1))
            .collect();
        assert_eq!(&got, extents, "{path}");
    }
}

/// Issue 14, finding 7: sizes from 64 TiB on failed with "inodes needed,
/// at most N possible"; past the writer's maximum the error now names the
/// size limit (and 64 TiB itself lays out).
#[test]
fn sizes_past_the_maximum_name_the_size_limit_not_inodes() {
    const MAX: u64 = 64 << 40;
    let tree = Tree::new(meta(0o755));
    for size in [MAX + 4096, 65 << 40, u64::MAX] {
        let err = ext4::write(&tree, &opts(size)).unwrap_err();
        assert!(
            matches!(err, Ext4Error::TooLarge { size: s, max: MAX } if s == size),
            "{size}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.ends_with(
                "is larger than the 70368744177664-byte (64 TiB) maximum this writer lays out"
            ),
            "{text}"
        );
    }
    let t0 = std::time::Instant::now();
    let disk = ext4::write(&tree, &opts(MAX)).expect("64 TiB is within the maximum");
    eprintln!("64 TiB laid out in {:?}", t0.elapsed());
    assert_eq!(disk.size(), MAX);
}

/// Issue 14, finding 7: an empty attribute name (or nothing after the
/// namespace, which the kernel refuses too) gets its own error.
#[test]
fn empty_xattr_names_are_refused_as_empty() {
    for name in ["", "user.", "security."] {
        let mut tree = Tree::new(meta(0o755));
        let mut m = meta(0o644);
        m.xattrs.insert(name.as_bytes().to_vec(), b"v".to_vec());
        file(&mut tree, "etc/f", m, b"x");
        let err = ext4::write(&tree, &opts(16 << 20)).unwrap_err();
        assert!(
            matches!(&err, Ext4Error::Xattr { path, name: n, .. } if path == "/etc/f" && n == name),
            "{name:?}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "\"/etc/f\": extended attribute {name:?}: the name is empty (an attribute needs a name after its namespace)"
            )
        );
    }
}

/// Issue 14, finding 7: device numbers that do not fit ext4's new-style
/// encoding (12-bit major, 20-bit minor) were masked into another device;
/// they are refused naming the file, and the largest that fit read back.
#[test]
fn device_numbers_past_the_encoding_are_refused_not_masked() {
    for (major, minor) in [(4096, 0), (0, 1 << 20), (u32::MAX, u32::MAX)] {
        let mut tree = Tree::new(meta(0o755));
        node(
            &mut tree,
            "dev/big",
            meta(0o600),
            Kind::BlockDev { major, minor },
        );
        let err = ext4::write(&tree, &opts(16 << 20)).unwrap_err();
        assert!(
            matches!(&err, Ext4Error::DeviceNumber { path, major: a, minor: b }
                if path == "/dev/big" && (*a, *b) == (major, minor)),
            "{major}:{minor}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "\"/dev/big\": device number {major}:{minor} does not fit ext4's encoding (major at most 4095, minor at most 1048575)"
            )
        );
    }
    let mut tree = Tree::new(meta(0o755));
    let largest = Kind::CharDev {
        major: 4095,
        minor: 1_048_575,
    };
    node(&mut tree, "dev/largest", meta(0o600), largest);
    let dir = support::tempdir();
    let img = write_raw(&tree, &opts(16 << 20), dir.path(), "dev.img");
    if has_tools() {
        e2fsck_clean(&img);
        let s = stat(&img, "/dev/largest");
        assert!(s.contains("Device major/minor number: 4095:1048575"), "{s}");
    }
}
