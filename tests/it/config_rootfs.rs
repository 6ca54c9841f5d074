//! The configuration steps applied to a real Debian 12 rootfs (made by
//! scripts/debian-rootfs.sh with mmdebstrap), then checked by shadow-utils'
//! own checkers (`pwck`, `grpck`, `chage`, `passwd -S`), `systemctl --root`
//! and `findmnt --verify` on the tree written back to disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use imgbuild::tree::config::*;
use imgbuild::tree::{FileData, Inode, Kind, Meta, Timestamp, Tree};

use crate::support;
use crate::support::{debian_tar, require_tool, run, run_ok};

/// Build epoch: 2023-11-14T22:13:20Z (day 19675).
const EPOCH: i64 = 1_700_000_000;

/// What the test reads from the rootfs: the parts the steps look at.
const PARTS: [&str; 13] = [
    "./etc",
    "./bin",
    "./lib",
    "./sbin",
    "./root",
    "./home",
    "./usr/bin/bash",
    "./usr/sbin/nologin",
    "./usr/lib/systemd/system",
    "./usr/share/zoneinfo/Europe/Berlin",
    "./usr/share/zoneinfo/Etc/UTC",
    "./usr/share/zoneinfo/UTC",
    "./var/lib/dpkg/status",
];

/// Reads `dir/rel` (and below) into `tree` with its real metadata.
fn load(tree: &mut Tree, dir: &Path, rel: &str) {
    let path = dir.join(rel);
    let md = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let meta = Meta {
        mode: u16::try_from(md.mode() & 0o7777).unwrap(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timestamp::from_secs(md.mtime()),
        xattrs: Default::default(),
    };
    let kind = if md.is_dir() {
        Kind::Dir(Default::default())
    } else if md.file_type().is_symlink() {
        Kind::Symlink(
            fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes(),
        )
    } else if md.is_file() {
        Kind::File(FileData::Bytes(fs::read(&path).unwrap().into()))
    } else {
        return;
    };
    tree.insert(rel.as_bytes(), Inode { meta, kind }).unwrap();
    if md.is_dir() {
        let mut names: Vec<String> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for n in names {
            load(tree, dir, &format!("{rel}/{n}"));
        }
    }
}

/// Writes the tree into `out` (owners, modes, symlinks as they are).
fn materialize(tree: &Tree, out: &Path) {
    for (path, id) in tree.walk() {
        let dest = out.join(String::from_utf8(path).unwrap());
        let inode = tree.inode(id);
        match &inode.kind {
            Kind::Dir(_) => fs::create_dir_all(&dest).unwrap(),
            Kind::File(d) => fs::write(&dest, d.read_all().unwrap()).unwrap(),
            Kind::Symlink(t) => symlink(String::from_utf8(t.clone()).unwrap(), &dest).unwrap(),
            _ => continue,
        }
        lchown(&dest, Some(inode.meta.uid), Some(inode.meta.gid)).unwrap();
        if !matches!(inode.kind, Kind::Symlink(_)) {
            fs::set_permissions(
                &dest,
                fs::Permissions::from_mode(u32::from(inode.meta.mode)),
            )
            .unwrap();
        }
    }
}

/// pwck's complaints (its "no changes" trailer dropped), and its exit code.
fn pwck(root: &Path) -> (Vec<String>, Option<i32>) {
    let out = run(Command::new("pwck").arg("-r").arg("-R").arg(root));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines = text
        .lines()
        .filter(|l| !l.contains("no changes"))
        .map(str::to_owned)
        .collect();
    (lines, out.status.code())
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).unwrap()
}

#[test]
fn debian_rootfs_configured_passes_shadow_and_systemd_checks() {
    let Some(tar) = debian_tar() else { return };
    for tool in [
        "tar",
        "pwck",
        "grpck",
        "chage",
        "passwd",
        "systemctl",
        "systemd-analyze",
        "findmnt",
        "dpkg-query",
    ] {
        if !require_tool(tool) {
            return;
        }
    }
    let tmp = support::tempdir();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-x")
            .arg("--numeric-owner")
            .arg("-f")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .args(PARTS)
            .arg("./var/lib/dpkg"),
    );
    let mut tree = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    for part in PARTS {
        load(&mut tree, &src, part.trim_start_matches("./"));
    }
    // openssh-server is not in the test rootfs: add its unit (Debian 12's
    // [Install] section) and a host key, as if it were.
    let file = |text: &[u8], mode: u16| Inode {
        meta: Meta {
            mode,
            ..Meta::default()
        },
        kind: Kind::File(FileData::Bytes(text.into())),
    };
    let ssh_unit = b"[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n";
    tree.insert(b"usr/lib/systemd/system/ssh.service", file(ssh_unit, 0o644))
        .unwrap();
    tree.insert(b"etc/ssh/ssh_host_ed25519_key", file(b"secret", 0o600))
        .unwrap();
    let pristine = tmp.path().join("pristine");
    materialize(&tree, &pristine);

    let ops = UserSpec {
        name: "ops".into(),
        groups: vec!["sudo".into()],
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nz ops@test".into()],
        ..Default::default()
    };
    let svc = UserSpec {
        name: "svc".into(),
        system: true,
        ..Default::default()
    };
    let sudoers = FileSpec {
        path: "/etc/sudoers.d/ops".into(),
        kind: FileKind::File(FileData::Bytes(b"ops ALL=(ALL) NOPASSWD:ALL\n"[..].into())),
        mode: Some(0o440),
        owner: None,
        group: None,
    };
    let fstab = [
        FstabEntry::root_ext4("11111111-2222-3333-4444-555555555555"),
        FstabEntry::esp("11111111-2222-3333-4444-666666666666"),
    ];
    let mut changes = Changes::default();
    changes.merge(set_hostname(&mut tree, "golden", EPOCH).unwrap());
    changes.merge(set_timezone(&mut tree, "Europe/Berlin", EPOCH).unwrap());
    changes.merge(set_locale(&mut tree, "C.UTF-8", EPOCH).unwrap());
    changes.merge(add_users(&mut tree, &[ops, svc], EPOCH).unwrap());
    changes.merge(apply_files(&mut tree, &[sudoers], EPOCH).unwrap());
    changes.merge(configure_dhcp(&mut tree, EPOCH).unwrap());
    changes.merge(write_fstab(&mut tree, &fstab, EPOCH).unwrap());
    changes.merge(clean_for_golden_image(&mut tree, &Hygiene::default(), EPOCH).unwrap());
    let out = tmp.path().join("out");
    materialize(&tree, &out);
    eprintln!(
        "added {:#?}\nmodified {:#?}\nremoved {:#?}",
        changes.added, changes.modified, changes.removed
    );

    // Shadow-utils: no complaint that the untouched rootfs does not have
    // (mmdebstrap's minbase lacks a few system users' homes, e.g. /var/cache/man).
    let (before, before_code) = pwck(&pristine);
    let (after, after_code) = pwck(&out);
    assert_eq!(after, before, "pwck found new problems");
    assert_eq!(after_code, before_code, "pwck exit code");
    run_ok(Command::new("grpck").arg("-r").arg("-R").arg(&out));
    let passwd = fs::read_to_string(out.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("\nops:x:1000:1000::/home/ops:/bin/bash\n"),
        "{passwd}"
    );
    // A system user takes the highest free id below SYS_UID_MAX (999), as useradd -r does.
    // Its group takes the same id if free, else the highest free gid.
    let ids = |f: &str| -> Vec<u32> {
        fs::read_to_string(pristine.join(f))
            .unwrap()
            .lines()
            .map(|l| l.split(':').nth(2).unwrap().parse().unwrap())
            .collect()
    };
    let (uids, gids) = (ids("etc/passwd"), ids("etc/group"));
    let uid = (101..=999u32).rev().find(|id| !uids.contains(id)).unwrap();
    let gid = if gids.contains(&uid) {
        (101..=999u32).rev().find(|id| !gids.contains(id)).unwrap()
    } else {
        uid
    };
    assert!(
        passwd.contains(&format!(
            "\nsvc:x:{uid}:{gid}::/nonexistent:/usr/sbin/nologin\n"
        )),
        "{passwd}"
    );
    let chage = stdout(
        Command::new("chage")
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .arg("-R")
            .arg(&out)
            .args(["-l", "ops"]),
    );
    assert!(
        chage
            .lines()
            .any(|l| l.starts_with("Last password change") && l.ends_with(": Nov 14, 2023")),
        "{chage}"
    );
    assert!(
        chage.lines().any(
            |l| l.starts_with("Maximum number of days between password change")
                && l.ends_with(": 99999")
        ),
        "{chage}"
    );
    let status = stdout(
        Command::new("passwd")
            .env("LC_ALL", "C")
            .arg("-R")
            .arg(&out)
            .args(["-S", "ops"]),
    );
    assert_eq!(
        status.split_whitespace().take(2).collect::<Vec<_>>(),
        ["ops", "L"],
        "{status}"
    );
    let group = fs::read_to_string(out.join("etc/group")).unwrap();
    let sudo: BTreeMap<&str, &str> = group.lines().filter_map(|l| l.split_once(':')).collect();
    assert!(
        sudo["sudo"].ends_with(":ops"),
        "sudo members: {}",
        sudo["sudo"]
    );
    let home = fs::symlink_metadata(out.join("home/ops/.ssh/authorized_keys")).unwrap();
    assert_eq!(
        (home.mode() & 0o7777, home.uid(), home.gid()),
        (0o600, 1000, 1000)
    );
    assert!(out.join("home/ops/.bashrc").is_file(), "skel not copied");

    // systemd: networkd is enabled as `systemctl enable` would have it.
    for unit in [
        "systemd-networkd.service",
        "systemd-networkd.socket",
        "systemd-network-generator.service",
    ] {
        let state = stdout(
            Command::new("systemctl")
                .arg(format!("--root={}", out.display()))
                .args(["is-enabled", unit]),
        );
        assert_eq!(state.trim(), "enabled", "{unit}");
    }
    let keygen = out.join("etc/systemd/system").join(SSH_KEYGEN_UNIT);
    run_ok(Command::new("systemd-analyze").arg("verify").arg(&keygen));
    let state = stdout(
        Command::new("systemctl")
            .arg(format!("--root={}", out.display()))
            .args(["is-enabled", SSH_KEYGEN_UNIT]),
    );
    assert_eq!(state.trim(), "enabled", "{SSH_KEYGEN_UNIT}");
    assert!(
        !out.join("etc/ssh/ssh_host_ed25519_key").exists(),
        "host key kept"
    );
    assert_eq!(
        fs::read_link(out.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(fs::read(out.join("etc/machine-id")).unwrap(), b"");

    // fstab parses; the devices are not on this machine, so only "unreachable" errors are allowed.
    let verify = run(Command::new("findmnt")
        .arg("--verify")
        .arg("--tab-file")
        .arg(out.join("etc/fstab")));
    let text = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        text.contains("0 parse errors") && text.contains("0 warnings"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("[E]"))
            .all(|l| l.contains("unreachable on boot required")),
        "{text}"
    );
    assert!(out.join("boot/efi").is_dir());

    let pkgs = installed_packages(&tree).unwrap();
    let names: Vec<&str> = pkgs.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["passwd", "sudo", "systemd", "linux-image-cloud-amd64"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let dpkg = stdout(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", src.join("var/lib/dpkg").display()))
            .args(["-W", "-f", "${db:Status-Abbrev}|${Package}|${Version}\n"]),
    );
    let mut oracle: Vec<(String, String)> = dpkg
        .lines()
        .filter(|l| l.starts_with("ii") || l.starts_with("hi"))
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[1].to_owned(), f[2].to_owned())
        })
        .collect();
    oracle.sort();
    oracle.dedup();
    assert_eq!(pkgs, oracle, "installed_packages differs from dpkg-query");
}
