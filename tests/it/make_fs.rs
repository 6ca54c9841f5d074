//! `imgbuild make-fs` end to end, through the CLI: tar in, filesystem image
//! out, checked against independent oracles. ext4: `e2fsck -fn`, then
//! tests/support/fs_vs_tar.py, which reads the tar with Python's tarfile and
//! the image with debugfs only, and compares them entry by entry (type, mode
//! with set-uid/set-gid/sticky, 32-bit owners, size, sha256, symlink targets,
//! devices, mtimes, xattrs, POSIX ACLs, hard links). Formats: `qemu-img
//! compare` against the raw image. FAT: `fsck.vfat -n`, `mdir` and `mcopy`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::ext4::e2fsck_clean;
use crate::support::*;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// The tricky pax tar of tests/support/make_tricky_tar.py (written by Python's tarfile).
fn tricky_tar(dir: &Path) -> PathBuf {
    let out = dir.join("tricky.tar");
    run_ok(
        Command::new("python3")
            .arg(script("make_tricky_tar.py"))
            .arg(&out)
            .arg("pax"),
    );
    out
}

/// A pax tar from a JSON list of entries (tests/support/make_tar.py).
fn make_tar(path: &Path, entries: &Value) {
    run_ok(
        Command::new("python3")
            .arg(script("make_tar.py"))
            .arg(path)
            .arg(entries.to_string()),
    );
}

fn make_fs(fs: &str, size: &str, tar: &Path, out: &Path) -> Output {
    run(imgbuild()
        .args(["make-fs", "--type", fs, "--size", size])
        .arg(tar)
        .arg(out))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ext4_tools() -> bool {
    require_tool("e2fsck") && require_tool("debugfs") && require_tool("python3")
}

/// Runs the entry-by-entry comparison; `Ok(summary)` or `Err(mismatch text)`.
fn fs_vs_tar(tar: &Path, img: &Path) -> Result<Value, String> {
    let out = run(Command::new("python3")
        .arg(script("fs_vs_tar.py"))
        .arg(tar)
        .arg(img));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(serde_json::from_str(text.trim()).expect("summary JSON"))
    } else {
        Err(format!("{text}{}", stderr(&out)))
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Distinct paths in the tar, by Python's tarfile (tests/support/tar_listing.py).
fn tar_paths(tar: &Path) -> usize {
    let out = run_ok(
        Command::new("python3")
            .arg(script("tar_listing.py"))
            .arg(tar),
    );
    let mut paths: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8 listing")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("listing JSON");
            v["path"].as_str().expect("path").to_string()
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths.len()
}

#[test]
fn ext4_from_tricky_tar_matches_it_entry_by_entry() {
    if !ext4_tools() {
        return;
    }
    let d = tempdir();
    let tar = tricky_tar(d.path());
    let img = p(d.path(), "tricky.img");
    let out = make_fs("ext4", "256M", &tar, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    e2fsck_clean(&img);
    let summary = fs_vs_tar(&tar, &img).unwrap_or_else(|e| panic!("{e}"));
    // The comparison really covered the fixture's corner cases.
    assert!(n(&summary, "files") >= 3000, "{summary}");
    assert_eq!(n(&summary, "hardlink_groups"), 2, "{summary}");
    assert_eq!(n(&summary, "devices"), 3, "{summary}");
    assert_eq!(n(&summary, "fifos"), 1, "{summary}");
    assert_eq!(n(&summary, "acls"), 2, "{summary}");
    assert!(n(&summary, "xattrs") >= 2, "{summary}");
    assert!(n(&summary, "bytes") > 40 << 20, "{summary}");
    assert!(
        n(&summary, "paths") as usize >= tar_paths(&tar) - 1,
        "{summary}"
    );

    // The comparison can fail: break the hard-linked set-uid file's mode and
    // an ACL behind the writer's back, and both are named.
    let broken = p(d.path(), "broken.img");
    std::fs::copy(&img, &broken).unwrap();
    for cmd in [
        "sif /usr/bin/suidprog mode 0100755",
        "ea_rm /var/log/journal system.posix_acl_default",
    ] {
        run_ok(Command::new("debugfs").args(["-w", "-R", cmd]).arg(&broken));
    }
    let err = fs_vs_tar(&tar, &broken).expect_err("mismatches found");
    // suidlink sorts first of the inode's two names.
    assert!(
        err.contains("b'/usr/bin/suidlink': mode: tar '0o4755', image '0o755'"),
        "{err}"
    );
    assert!(err.contains("b'/var/log/journal': xattr names"), "{err}");
}

#[test]
fn ext4_from_debian_rootfs_matches_it_entry_by_entry() {
    let Some(tar) = debian_tar() else { return };
    if !ext4_tools() {
        return;
    }
    let d = tempdir();
    let img = p(d.path(), "debian.img");
    let out = make_fs("ext4", "1G", &tar, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    e2fsck_clean(&img);
    let summary = fs_vs_tar(&tar, &img).unwrap_or_else(|e| panic!("{e}"));
    assert!(n(&summary, "paths") >= 12_000, "{summary}");
    assert!(
        n(&summary, "paths") as usize >= tar_paths(&tar) - 1,
        "{summary}"
    );
    assert!(n(&summary, "acls") >= 1, "{summary}");
}

#[test]
fn zero_blocks_of_tar_files_become_holes() {
    if !ext4_tools() || !require_tool("zstd") {
        return;
    }
    // The tar's zero sectors are mapped while it is hashed for the seed;
    // ext4 then allocates no block for a zero 4 KiB block (as mke2fs -d).
    const B: u64 = 4096;
    let dir = tempdir();
    let tar = dir.path().join("holes.tar");
    let entries = serde_json::json!([
        // 11 blocks: 0, 4, 5 and the partial last one are zero.
        {"name": "holey", "size": 10 * B + 100,
         "zero": [[0, B], [4 * B, 2 * B], [10 * B, 100]]},
        {"name": "all-zero", "size": 3 * B, "zero": [[0, 3 * B]]},
        {"name": "dense", "size": 3 * B},
    ]);
    make_tar(&tar, &entries);
    // A compressed tar's zeros are mapped while it is unpacked.
    let zst = dir.path().join("holes.tar.zst");
    std::fs::write(
        &zst,
        run_ok(Command::new("zstd").args(["-q", "-c"]).arg(&tar)).stdout,
    )
    .expect("write the .zst");
    for source in [&tar, &zst] {
        let img = dir.path().join("holes.img");
        let o = make_fs("ext4", "64M", source, &img);
        assert!(o.status.success(), "{}", stderr(&o));
        e2fsck_clean(&img);
        fs_vs_tar(&tar, &img).expect("same contents as the tar");
        assert_holes(&img);
    }
}

/// The files of `zero_blocks_of_tar_files_become_holes` have exactly their
/// non-zero blocks allocated (debugfs `Blockcount`, 512-byte units).
fn assert_holes(img: &Path) {
    for (file, blocks) in [("holey", 7u64), ("all-zero", 0), ("dense", 3)] {
        let out = run_ok(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("stat /{file}"))
                .arg(img),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let count: u64 = text
            .split("Blockcount: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no Blockcount for {file}: {text}"));
        assert_eq!(
            count,
            blocks * 8,
            "{file}: 512-byte sectors allocated\n{text}"
        );
    }
}

#[test]
fn ext4_as_qcow2_vhdx_and_vhd_equals_the_raw_image_and_inspects() {
    if !(require_tool("qemu-img") && require_tool("python3")) {
        return;
    }
    let d = tempdir();
    let tar = tricky_tar(d.path());
    let raw = p(d.path(), "fs.img");
    assert!(make_fs("ext4", "256M", &tar, &raw).status.success());
    for (ext, qemu_fmt) in [("qcow2", "qcow2"), ("vhdx", "vhdx"), ("vhd", "vpc")] {
        let img = p(d.path(), &format!("fs.{ext}"));
        let out = make_fs("ext4", "256M", &tar, &img);
        assert!(out.status.success(), "{ext}: {}", stderr(&out));
        if ext != "vhd" {
            run_ok(
                Command::new("qemu-img")
                    .args(["check", "-f", qemu_fmt])
                    .arg(&img),
            );
        }
        let cmp = run_ok(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", qemu_fmt])
                .arg(&raw)
                .arg(&img),
        );
        assert!(
            String::from_utf8_lossy(&cmp.stdout).contains("Images are identical"),
            "{ext}"
        );
        let info = run_ok(imgbuild().args(["inspect", "--json"]).arg(&img));
        let v: Value = serde_json::from_slice(&info.stdout).expect("inspect JSON");
        assert_eq!(v["format"], ext, "{v}");
        assert_eq!(v["virtual_size"], 256u64 << 20, "{v}");
        let q = run_ok(
            Command::new("qemu-img")
                .args(["info", "--output=json", "-f", qemu_fmt])
                .arg(&img),
        );
        let q: Value = serde_json::from_slice(&q.stdout).expect("qemu-img JSON");
        assert_eq!(q["format"], qemu_fmt, "{q}");
        assert!(q["virtual-size"].as_u64().unwrap() >= 256 << 20, "{q}");
    }
}

#[test]
fn vfat_from_small_tar_reads_back_with_mtools() {
    if !(require_tool("fsck.vfat") && require_tool("mcopy") && require_tool("python3")) {
        return;
    }
    let d = tempdir();
    let tar = p(d.path(), "fat.tar");
    let long = "A very long file name that does not fit 8.3 – with ünïcödé.txt";
    let files: Vec<(String, Vec<u8>)> = vec![
        (format!("docs/{long}"), b"long name\n".to_vec()),
        ("docs/short.txt".into(), b"s".to_vec()),
        (
            "EFI/BOOT/BOOTX64.EFI".into(),
            (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect(),
        ),
        ("empty-file".into(), Vec::new()),
        ("MixedCase.Txt".into(), b"mixed".to_vec()),
        ("a.b.c.d".into(), b"dots".to_vec()),
        (
            format!("deep/{}/{}/x", "d".repeat(100), "e".repeat(100)),
            b"x".to_vec(),
        ),
    ];
    let mut entries = vec![
        serde_json::json!({"name": "docs", "type": "dir"}),
        serde_json::json!({"name": "empty-dir", "type": "dir"}),
    ];
    for (name, data) in &files {
        if name.starts_with("EFI") {
            entries.push(serde_json::json!({"name": name, "size": data.len()}));
        } else {
            entries.push(
                serde_json::json!({"name": name, "data": String::from_utf8(data.clone()).unwrap()}),
            );
        }
    }
    make_tar(&tar, &Value::Array(entries));
    let img = p(d.path(), "fat.img");
    let out = make_fs("vfat", "64M", &tar, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    run_ok(Command::new("fsck.vfat").arg("-n").arg(&img));

    let mdir = run_ok(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-/", "-b", "-i"])
            .arg(&img)
            .arg("::"),
    );
    let mut listed: Vec<String> = String::from_utf8(mdir.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.trim_start_matches("::/")
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    listed.sort();
    let mut want: Vec<String> = vec!["docs".into(), "empty-dir".into(), "EFI".into()];
    let (dd, ee) = ("d".repeat(100), "e".repeat(100));
    want.extend([
        "EFI/BOOT".into(),
        "deep".into(),
        format!("deep/{dd}"),
        format!("deep/{dd}/{ee}"),
    ]);
    want.extend(files.iter().map(|(n, _)| n.clone()));
    want.sort();
    assert_eq!(listed, want);

    let back = p(d.path(), "back");
    std::fs::create_dir(&back).unwrap();
    run_ok(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-n", "-i"])
            .arg(&img)
            .arg("::*")
            .arg(&back),
    );
    for (name, data) in &files {
        let got = std::fs::read(back.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == *data, "{name}: content differs");
    }
    assert!(back.join("empty-dir").is_dir());
}

#[test]
fn vfat_refuses_symlinks_and_devices_naming_the_entry() {
    if !require_tool("python3") {
        return;
    }
    let d = tempdir();
    for (entry, kind, what) in [
        (
            serde_json::json!({"name": "dir/l", "type": "symlink", "link": "a"}),
            "dir/l",
            "not a symbolic link",
        ),
        (
            serde_json::json!({"name": "dev/null", "type": "chr"}),
            "dev/null",
            "not a character device",
        ),
    ] {
        let tar = p(d.path(), "bad.tar");
        make_tar(
            &tar,
            &serde_json::json!([{"name": "dir/a", "data": "a"}, entry]),
        );
        let img = p(d.path(), "bad.img");
        let out = make_fs("vfat", "64M", &tar, &img);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "/{kind}: a FAT volume holds only directories and regular files, {what}"
            )),
            "{err}"
        );
        assert!(!img.exists());
    }
}

#[test]
fn ext4_too_small_says_how_much_is_needed_and_that_is_right() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let img = p(d.path(), "small.img");
    let out = make_fs("ext4", "64M", &tar, &img);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // error: TAR does not fit in 64 MiB: the filesystem needs at least 386 MiB (404750336 bytes); raise --size
    let prefix = format!(
        "error: {} does not fit in 64 MiB: the filesystem needs at least ",
        tar.display()
    );
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.trim_end().ends_with(" bytes); raise --size"), "{err}");
    let needed: u64 = err
        .rsplit_once('(')
        .and_then(|(_, b)| b.split_once(' '))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {err}"));
    assert_eq!(needed % (1 << 20), 0, "{err}");
    assert!(
        err.contains(&format!("at least {} MiB (", needed >> 20)),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "output left behind"
    );

    // The stated size is enough, and it is close to the minimum: 1/64 less is not.
    let ok = make_fs("ext4", &needed.to_string(), &tar, &img);
    assert!(ok.status.success(), "{}", stderr(&ok));
    if require_tool("e2fsck") {
        e2fsck_clean(&img);
    }
    let less = (needed - needed / 64) / (1 << 20) * (1 << 20);
    let small = p(d.path(), "less.img");
    let out = make_fs("ext4", &less.to_string(), &tar, &small);
    assert_eq!(out.status.code(), Some(1), "{less} fits too");
    assert!(stderr(&out).contains(&format!("({needed} bytes)")));
    assert!(!small.exists());
}

/// Runs make-fs in `cwd` with `TZ`, on `tar` given relative to `cwd`.
fn make_fs_in(cwd: &Path, tz: &str, fs: &str, size: &str, out: &str) -> Vec<u8> {
    let o = run(imgbuild()
        .current_dir(cwd)
        .env("TZ", tz)
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["make-fs", "--type", fs, "--size", size, "in.tar", out]));
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(cwd.join(out)).unwrap()
}

#[test]
fn two_runs_in_other_directories_and_time_zones_are_byte_identical() {
    if !require_tool("python3") {
        return;
    }
    let d = tempdir();
    let (a, b) = (p(d.path(), "a"), p(d.path(), "b/c"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let tar = tricky_tar(d.path());
    std::fs::copy(&tar, a.join("in.tar")).unwrap();
    std::fs::copy(&tar, b.join("in.tar")).unwrap();
    for out in ["fs.img", "fs.qcow2", "fs.vhdx"] {
        let x = make_fs_in(&a, "UTC", "ext4", "256M", out);
        let y = make_fs_in(&b, "Asia/Tokyo", "ext4", "256M", out);
        assert!(x == y, "{out}: the two runs differ");
    }
    let fat = p(d.path(), "fat");
    std::fs::create_dir(&fat).unwrap();
    make_tar(
        &fat.join("in.tar"),
        &serde_json::json!([{"name": "EFI/BOOT/BOOTX64.EFI", "size": 5000}, {"name": "Long file name.txt", "data": "x"}]),
    );
    let fat2 = p(d.path(), "fat2/x");
    std::fs::create_dir_all(&fat2).unwrap();
    std::fs::copy(fat.join("in.tar"), fat2.join("in.tar")).unwrap();
    let x = make_fs_in(&fat, "UTC", "vfat", "64M", "fat.img");
    let y = make_fs_in(&fat2, "America/St_Johns", "vfat", "64M", "fat.img");
    assert!(x == y, "vfat: the two runs differ");
}

#[test]
fn hostile_paths_never_touch_the_host() {
    if !(require_tool("python3") && require_tool("debugfs")) {
        return;
    }
    let d = tempdir();
    let work = p(d.path(), "work/sub");
    std::fs::create_dir_all(&work).unwrap();
    let outside = p(d.path(), "outside");
    let abs_dir = p(d.path(), "abs");
    let abs_file = abs_dir.join("evil");
    let escape_target = outside.join("escaped");

    // `..` is refused, naming the entry.
    let tar = p(d.path(), "dotdot.tar");
    make_tar(
        &tar,
        &serde_json::json!([{"name": "ok", "data": "ok"}, {"name": "../../etc/evil", "data": "evil"}]),
    );
    let o = run(imgbuild()
        .current_dir(&work)
        .args(["make-fs", "--type", "ext4", "--size", "16M"])
        .arg(&tar)
        .arg("out.img"));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(r#"entry #1 "../../etc/evil""#)
            && err.contains("has a '..' component; paths must stay inside the image"),
        "{err}"
    );
    assert!(!p(d.path(), "etc").exists());
    assert!(!work.join("out.img").exists());

    // A symlink pointing outside, then a file written "through" it: refused.
    let tar = p(d.path(), "through.tar");
    make_tar(
        &tar,
        &serde_json::json!([
            {"name": "escape", "type": "symlink", "link": outside.to_str().unwrap()},
            {"name": "escape/escaped", "data": "x"}
        ]),
    );
    let o = run(imgbuild()
        .current_dir(&work)
        .args(["make-fs", "--type", "ext4", "--size", "16M"])
        .arg(&tar)
        .arg("out.img"));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(r#"entry #1 "escape/escaped""#)
            && err.contains(r#""escape" is not a directory"#),
        "{err}"
    );

    // An absolute path and a symlink pointing outside land inside the image.
    let tar = p(d.path(), "abs.tar");
    make_tar(
        &tar,
        &serde_json::json!([
            {"name": abs_file.to_str().unwrap(), "data": "abs"},
            {"name": "escape", "type": "symlink", "link": escape_target.to_str().unwrap()},
        ]),
    );
    let o = run(imgbuild()
        .current_dir(&work)
        .args(["make-fs", "--type", "ext4", "--size", "16M"])
        .arg(&tar)
        .arg("out.img"));
    assert!(o.status.success(), "{}", stderr(&o));
    let cat = run_ok(
        Command::new("debugfs")
            .args(["-R", &format!("cat {}", abs_file.display())])
            .arg(work.join("out.img")),
    );
    assert_eq!(cat.stdout, b"abs");

    assert!(
        !abs_dir.exists(),
        "{} was created on the host",
        abs_dir.display()
    );
    assert!(
        !outside.exists(),
        "{} was created on the host",
        outside.display()
    );
    // Nothing but the output appeared next to it.
    let mut left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["out.img"]);
}

/// Issue 14 (compressed-tar bomb): make-fs bounds what a compressed tar may
/// inflate to by its `--size` (plus 1/8): 64 MiB of zeros for a 16 MiB
/// filesystem stops at 18 MiB, names the tar, the bound and the size, and
/// leaves nothing in $TMPDIR nor an output behind.
#[test]
fn make_fs_stops_a_gzip_bomb_at_its_size_bound() {
    use std::io::Write;
    let d = tempdir();
    let tmp = p(d.path(), "tmp");
    std::fs::create_dir(&tmp).unwrap();
    let bomb = p(d.path(), "bomb.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&vec![0u8; 64 << 20]).unwrap();
    std::fs::write(&bomb, gz.finish().unwrap()).unwrap();
    let img = p(d.path(), "out.img");
    let o = run(imgbuild()
        .env("TMPDIR", &tmp)
        .args(["make-fs", "--type", "ext4", "--size", "16M"])
        .arg(&bomb)
        .arg(&img));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}: its gzip stream inflates past 18874368 bytes (18 MiB), the bound for a disk of \
             16777216 bytes (16 MiB)",
            bomb.display()
        )),
        "{err}"
    );
    assert!(!img.exists());
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "left in TMPDIR"
    );
}

/// Issue 14, finding 7: `--size 65T` said "inodes needed"; it names the
/// ext4 writer's maximum size.
#[test]
fn make_fs_past_the_ext4_maximum_names_the_size_limit() {
    let d = tempdir();
    let tar = p(d.path(), "small.tar");
    make_tar(&tar, &serde_json::json!([{"name": "f", "data": "x"}]));
    let img = p(d.path(), "huge.img");
    let o = make_fs("ext4", "65T", &tar, &img);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(
            "ext4 filesystem of 71468255805440 bytes (65 TiB) is larger than the \
             70368744177664-byte (64 TiB) maximum this writer lays out"
        ) && !err.contains("inode"),
        "{err}"
    );
    assert!(!img.exists());
}
