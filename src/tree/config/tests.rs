//! Step tests, osbuild style: apply one step to a small tree and assert the
//! exact added, modified and removed paths, checked against an independent
//! before/after comparison of the whole tree.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::tree::{FileData, Inode, Kind, Meta, Timestamp, Tree};

/// Build epoch used by every test: 2023-11-14T22:13:20Z, day 19675.
const EPOCH: i64 = 1_700_000_000;
/// Time of the files the fixture trees start with.
const OLD: i64 = 1_600_000_000;

fn tree() -> Tree {
    Tree::new(meta(0o755, 0, 0, OLD))
}

fn add_file(t: &mut Tree, path: &str, content: &str, mode: u16, uid: u32, gid: u32) {
    let inode = Inode {
        meta: meta(mode, uid, gid, OLD),
        kind: Kind::File(FileData::Bytes(content.as_bytes().into())),
    };
    t.insert(path.as_bytes(), inode).unwrap();
}

fn add_symlink(t: &mut Tree, path: &str, target: &str) {
    t.insert(
        path.as_bytes(),
        Inode {
            meta: meta(0o777, 0, 0, OLD),
            kind: Kind::Symlink(target.as_bytes().to_vec()),
        },
    )
    .unwrap();
}

fn add_dir(t: &mut Tree, path: &str, mode: u16) {
    t.insert(
        path.as_bytes(),
        Inode {
            meta: meta(mode, 0, 0, OLD),
            kind: Kind::Dir(Default::default()),
        },
    )
    .unwrap();
}

/// Everything observable about one path except a directory's children.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    meta: Meta,
    what: String,
}

fn snapshot(t: &Tree) -> BTreeMap<String, Entry> {
    t.walk()
        .into_iter()
        .map(|(path, id)| {
            let inode = t.inode(id);
            let what = match &inode.kind {
                Kind::Dir(_) => "dir".to_owned(),
                Kind::File(d) => {
                    format!("file {:?}", String::from_utf8_lossy(&d.read_all().unwrap()))
                }
                Kind::Symlink(target) => format!("symlink {}", String::from_utf8_lossy(target)),
                k => format!("{k:?}"),
            };
            (
                format!("/{}", String::from_utf8_lossy(&path)),
                Entry {
                    meta: inode.meta.clone(),
                    what,
                },
            )
        })
        .collect()
}

/// The changes between two snapshots (a removed directory listed alone).
fn diff(before: &BTreeMap<String, Entry>, after: &BTreeMap<String, Entry>) -> Changes {
    let mut c = Changes::default();
    for (p, e) in after {
        match before.get(p) {
            None => drop(c.added.insert(p.clone())),
            Some(old) if old != e => drop(c.modified.insert(p.clone())),
            Some(_) => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        let parent = p.rsplit_once('/').map_or("", |(a, _)| a);
        if after.contains_key(parent) || parent.is_empty() {
            c.removed.insert(p.clone());
        }
    }
    c
}

/// Runs a step and checks that what it reports is what the tree shows.
fn run<F: FnOnce(&mut Tree) -> Result<Changes>>(t: &mut Tree, step: F) -> Changes {
    let before = snapshot(t);
    let changes = step(t).unwrap();
    assert_eq!(
        changes,
        diff(&before, &snapshot(t)),
        "reported changes differ from the tree's"
    );
    changes
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

fn text(t: &Tree, path: &str) -> String {
    read_text(t, path)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} missing"))
}

fn meta_of(t: &Tree, path: &str) -> Meta {
    t.inode(
        t.lookup(path.as_bytes())
            .unwrap_or_else(|| panic!("{path} missing")),
    )
    .meta
    .clone()
}

#[test]
fn hostname_on_empty_tree_writes_both_files() {
    let mut t = tree();
    let c = run(&mut t, |t| set_hostname(t, "golden", EPOCH));
    assert_eq!(c.added, set(&["/etc", "/etc/hostname", "/etc/hosts"]));
    assert!(c.modified.is_empty() && c.removed.is_empty());
    assert_eq!(text(&t, "/etc/hostname"), "golden\n");
    assert_eq!(
        text(&t, "/etc/hosts").lines().nth(1),
        Some("127.0.1.1\tgolden")
    );
    assert_eq!(meta_of(&t, "/etc/hosts"), meta(0o644, 0, 0, EPOCH));
}

#[test]
fn hostname_edits_hosts_keeping_other_lines_and_metadata() {
    let mut t = tree();
    add_file(&mut t, "/etc/hostname", "debian\n", 0o600, 0, 4);
    add_file(
        &mut t,
        "/etc/hosts",
        "127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost\n",
        0o644,
        0,
        0,
    );
    let c = run(&mut t, |t| set_hostname(t, "web.example.com", EPOCH));
    assert_eq!(c.modified, set(&["/etc/hostname", "/etc/hosts"]));
    assert_eq!(
        text(&t, "/etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1\tweb.example.com web\n::1 localhost\n"
    );
    assert_eq!(meta_of(&t, "/etc/hostname"), meta(0o600, 0, 4, EPOCH));
    let again = run(&mut t, |t| set_hostname(t, "web.example.com", EPOCH + 1));
    assert!(again.is_empty(), "second run changed {again:?}");
}

#[test]
fn timezone_missing_zone_names_it() {
    let mut t = tree();
    let err = set_timezone(&mut t, "Mars/Olympus", EPOCH).unwrap_err();
    assert_eq!(err.to_string(), "timezone \"Mars/Olympus\" not found in the image (looked for /usr/share/zoneinfo/Mars/Olympus (is tzdata installed?))");
}

#[test]
fn timezone_replaces_localtime_and_writes_debian_timezone() {
    let mut t = tree();
    add_file(
        &mut t,
        "/usr/share/zoneinfo/Europe/Berlin",
        "TZif",
        0o644,
        0,
        0,
    );
    add_file(&mut t, "/etc/debian_version", "12.5\n", 0o644, 0, 0);
    add_symlink(&mut t, "/etc/localtime", "/usr/share/zoneinfo/Etc/UTC");
    let c = run(&mut t, |t| set_timezone(t, "Europe/Berlin", EPOCH));
    assert_eq!(c.added, set(&["/etc/timezone"]));
    assert_eq!(c.modified, set(&["/etc/localtime"]));
    let id = t.lookup(b"etc/localtime").unwrap();
    assert!(
        matches!(&t.inode(id).kind, Kind::Symlink(s) if s == b"/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(text(&t, "/etc/timezone"), "Europe/Berlin\n");
}

#[test]
fn locale_c_utf8_always_works_and_others_need_compiled_data() {
    let mut t = tree();
    let c = run(&mut t, |t| set_locale(t, "C.UTF-8", EPOCH));
    assert_eq!(
        c.added,
        set(&[
            "/etc",
            "/etc/default",
            "/etc/default/locale",
            "/etc/locale.conf"
        ])
    );
    assert_eq!(text(&t, "/etc/locale.conf"), "LANG=C.UTF-8\n");
    let err = set_locale(&mut t, "de_DE.UTF-8", EPOCH).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("locale \"de_DE.UTF-8\" not found in the image"),
        "{err}"
    );
    add_dir(&mut t, "/usr/lib/locale/de_DE.utf8", 0o755);
    let c = run(&mut t, |t| set_locale(t, "de_DE.UTF-8", EPOCH));
    assert_eq!(
        c.modified,
        set(&["/etc/default/locale", "/etc/locale.conf"])
    );
}

/// A Debian-like base: root, sudo (27), shadow (42), users (100), a skeleton.
fn users_tree() -> Tree {
    let mut t = tree();
    add_file(
        &mut t,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n",
        0o644,
        0,
        0,
    );
    add_file(
        &mut t,
        "/etc/shadow",
        "root:*:19000:0:99999:7:::\n_apt:*:19000:0:99999:7:::\n",
        0o640,
        0,
        42,
    );
    add_file(
        &mut t,
        "/etc/group",
        "root:x:0:\nsudo:x:27:\nshadow:x:42:\nusers:x:100:\n",
        0o644,
        0,
        0,
    );
    add_file(
        &mut t,
        "/etc/gshadow",
        "root:*::\nsudo:*::\nshadow:*::\nusers:*::\n",
        0o640,
        0,
        42,
    );
    add_file(&mut t, "/etc/skel/.profile", "# profile\n", 0o644, 0, 0);
    add_file(&mut t, "/etc/skel/.config/x", "x\n", 0o600, 0, 0);
    add_file(&mut t, "/usr/bin/bash", "ELF", 0o755, 0, 0);
    add_symlink(&mut t, "/bin", "usr/bin");
    add_dir(&mut t, "/root", 0o700);
    add_dir(&mut t, "/home", 0o755);
    t
}

fn ops() -> UserSpec {
    UserSpec {
        name: "ops".into(),
        groups: vec!["sudo".into()],
        ssh_authorized_keys: vec!["ssh-ed25519 AAAA ops@x".into()],
        ..Default::default()
    }
}

#[test]
fn user_is_added_like_useradd() {
    let mut t = users_tree();
    let c = run(&mut t, |t| add_users(t, &[ops()], EPOCH));
    let home = [
        "/home/ops",
        "/home/ops/.profile",
        "/home/ops/.config",
        "/home/ops/.config/x",
        "/home/ops/.ssh",
        "/home/ops/.ssh/authorized_keys",
    ];
    assert_eq!(c.added, set(&home));
    assert_eq!(
        c.modified,
        set(&["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"])
    );
    assert!(text(&t, "/etc/passwd").ends_with("\nops:x:1000:1000::/home/ops:/bin/bash\n"));
    assert!(text(&t, "/etc/shadow").ends_with("\nops:*:19675:0:99999:7:::\n"));
    assert_eq!(
        text(&t, "/etc/group"),
        "root:x:0:\nsudo:x:27:ops\nshadow:x:42:\nusers:x:100:\nops:x:1000:\n"
    );
    assert_eq!(
        text(&t, "/etc/gshadow"),
        "root:*::\nsudo:*::ops\nshadow:*::\nusers:*::\nops:!::\n"
    );
    assert_eq!(meta_of(&t, "/etc/shadow"), meta(0o640, 0, 42, EPOCH));
    assert_eq!(meta_of(&t, "/home/ops"), meta(0o700, 1000, 1000, EPOCH));
    assert_eq!(
        meta_of(&t, "/home/ops/.config/x"),
        meta(0o600, 1000, 1000, OLD)
    );
    assert_eq!(
        meta_of(&t, "/home/ops/.ssh"),
        meta(0o700, 1000, 1000, EPOCH)
    );
    assert_eq!(
        meta_of(&t, "/home/ops/.ssh/authorized_keys"),
        meta(0o600, 1000, 1000, EPOCH)
    );
    assert_eq!(
        text(&t, "/home/ops/.ssh/authorized_keys"),
        "ssh-ed25519 AAAA ops@x\n"
    );
}

#[test]
fn adding_the_same_user_twice_changes_nothing() {
    let mut t = users_tree();
    add_users(&mut t, &[ops()], EPOCH).unwrap();
    let again = run(&mut t, |t| add_users(t, &[ops()], EPOCH));
    assert!(again.is_empty(), "second run changed {again:?}");
}

#[test]
fn existing_user_gets_groups_and_keys_not_a_duplicate() {
    let mut t = users_tree();
    let root = UserSpec {
        name: "root".into(),
        groups: vec!["users".into()],
        ssh_authorized_keys: vec!["ssh-rsa K".into()],
        ..Default::default()
    };
    let c = run(&mut t, |t| add_users(t, &[root], EPOCH));
    assert_eq!(c.added, set(&["/root/.ssh", "/root/.ssh/authorized_keys"]));
    assert_eq!(c.modified, set(&["/etc/group", "/etc/gshadow"]));
    assert_eq!(
        text(&t, "/etc/passwd")
            .lines()
            .filter(|l| l.starts_with("root:"))
            .count(),
        1
    );
    assert!(text(&t, "/etc/group").contains("\nusers:x:100:root\n"));
    let moved = UserSpec {
        name: "root".into(),
        uid: Some(5),
        ..Default::default()
    };
    assert_eq!(
        add_users(&mut t, &[moved], EPOCH).unwrap_err().to_string(),
        "user \"root\": exists with uid 0, not 5"
    );
}

#[test]
fn ids_follow_useradd_allocation() {
    let mut t = users_tree();
    add_groups(
        &mut t,
        &[GroupSpec {
            name: "docker".into(),
            gid: Some(1000),
            system: false,
        }],
        EPOCH,
    )
    .unwrap();
    let sys = UserSpec {
        name: "svc".into(),
        system: true,
        ..Default::default()
    };
    let b = UserSpec {
        name: "b".into(),
        ..Default::default()
    };
    let c = run(&mut t, |t| add_users(t, &[ops(), b, sys], EPOCH));
    let passwd = text(&t, "/etc/passwd");
    // ops: uid 1000, but gid 1000 is docker's, so the first free gid 1001; b: 1001 and gid 1002.
    assert!(
        passwd
            .contains("\nops:x:1000:1001::/home/ops:/bin/bash\nb:x:1001:1002::/home/b:/bin/bash\n"),
        "{passwd}"
    );
    // System: highest free id below 1000, nologin, no home, no aging.
    assert!(
        passwd.ends_with("\nsvc:x:999:999::/nonexistent:/usr/sbin/nologin\n"),
        "{passwd}"
    );
    assert!(text(&t, "/etc/shadow").ends_with("\nsvc:*:19675::::::\n"));
    assert!(!c.added.iter().any(|p| p.starts_with("/nonexistent")));
}

#[test]
fn explicit_gid_joins_existing_group_and_system_home_is_0755_without_skel() {
    let mut t = users_tree();
    let web = UserSpec {
        name: "web".into(),
        gid: Some(100),
        system: true,
        home: Some("/srv/web".into()),
        ..Default::default()
    };
    let c = run(&mut t, |t| add_users(t, &[web], EPOCH));
    assert_eq!(c.added, set(&["/srv", "/srv/web"]));
    assert_eq!(
        c.modified,
        set(&["/etc/passwd", "/etc/shadow"]),
        "no group is created"
    );
    assert!(text(&t, "/etc/passwd").ends_with("\nweb:x:999:100::/srv/web:/usr/sbin/nologin\n"));
    assert_eq!(meta_of(&t, "/srv/web"), meta(0o755, 999, 100, EPOCH));
}

#[test]
fn groups_are_allocated_like_groupadd() {
    let mut t = users_tree();
    let specs = [
        GroupSpec {
            name: "docker".into(),
            gid: None,
            system: true,
        },
        GroupSpec {
            name: "team".into(),
            gid: None,
            system: false,
        },
        GroupSpec {
            name: "sudo".into(),
            gid: None,
            system: false,
        },
    ];
    let c = run(&mut t, |t| add_groups(t, &specs, EPOCH));
    assert_eq!(c.modified, set(&["/etc/group", "/etc/gshadow"]));
    assert!(text(&t, "/etc/group").ends_with("\nusers:x:100:\ndocker:x:999:\nteam:x:1000:\n"));
    let clash = GroupSpec {
        name: "sudo".into(),
        gid: Some(28),
        system: false,
    };
    assert_eq!(
        add_groups(&mut t, &[clash], EPOCH).unwrap_err().to_string(),
        "group \"sudo\": exists with gid 27"
    );
}

#[test]
fn user_errors_name_the_problem() {
    let cases: [(UserSpec, &str); 4] = [
        (UserSpec { groups: vec!["wheel".into()], ..ops() }, "group \"wheel\" not found in the image (looked for /etc/group, for user \"ops\"; add it with a group entry first)"),
        (UserSpec { uid: Some(42), ..ops() }, "user \"ops\": uid 42 is already used by user \"_apt\""),
        (UserSpec { name: "Ops".into(), ..ops() }, "invalid user name \"Ops\": must match [a-z_][a-z0-9_-]*[$]? and be at most 32 characters"),
        (UserSpec { name: "users".into(), ..Default::default() }, "user \"users\": a group named \"users\" exists; set gid to make it the primary group"),
    ];
    for (spec, want) in cases {
        let mut t = users_tree();
        let before = snapshot(&t);
        let err = add_users(&mut t, std::slice::from_ref(&spec), EPOCH).unwrap_err();
        assert_eq!(err.to_string(), want, "case {}", spec.name);
        assert!(
            diff(&before, &snapshot(&t)).is_empty(),
            "case {}: tree changed on error",
            spec.name
        );
    }
}

#[test]
fn files_resolve_owners_and_replace_whole_entries() {
    let mut t = users_tree();
    add_users(&mut t, &[ops()], EPOCH).unwrap();
    add_file(&mut t, "/etc/motd", "old", 0o600, 7, 7);
    let specs = [
        FileSpec {
            path: "/etc/motd".into(),
            kind: FileKind::File(FileData::Bytes(b"hi\n"[..].into())),
            mode: None,
            owner: None,
            group: None,
        },
        FileSpec {
            path: "/srv/app/data".into(),
            kind: FileKind::Dir,
            mode: Some(0o750),
            owner: Some(Owner::Name("ops".into())),
            group: Some(Owner::Name("sudo".into())),
        },
        FileSpec {
            path: "/srv/app/current".into(),
            kind: FileKind::Symlink("data".into()),
            mode: None,
            owner: None,
            group: Some(Owner::Id(5)),
        },
    ];
    let c = run(&mut t, |t| apply_files(t, &specs, EPOCH));
    assert_eq!(
        c.added,
        set(&["/srv", "/srv/app", "/srv/app/data", "/srv/app/current"])
    );
    assert_eq!(c.modified, set(&["/etc/motd"]));
    assert_eq!(meta_of(&t, "/etc/motd"), meta(0o644, 0, 0, EPOCH));
    assert_eq!(meta_of(&t, "/srv/app"), meta(0o755, 0, 0, EPOCH));
    assert_eq!(meta_of(&t, "/srv/app/data"), meta(0o750, 1000, 27, EPOCH));
    assert_eq!(meta_of(&t, "/srv/app/current"), meta(0o777, 0, 5, EPOCH));
}

#[test]
fn files_refuse_unknown_owner_and_replacing_a_directory() {
    let mut t = users_tree();
    let unknown = FileSpec {
        path: "/x".into(),
        kind: FileKind::Dir,
        mode: None,
        owner: Some(Owner::Name("nobody2".into())),
        group: None,
    };
    assert_eq!(
        apply_files(&mut t, &[unknown], EPOCH)
            .unwrap_err()
            .to_string(),
        "user \"nobody2\" not found in the image (looked for /etc/passwd (add users before files))"
    );
    let over_dir = FileSpec {
        path: "/home".into(),
        kind: FileKind::Symlink("/srv".into()),
        mode: None,
        owner: None,
        group: None,
    };
    assert_eq!(
        apply_files(&mut t, &[over_dir], EPOCH)
            .unwrap_err()
            .to_string(),
        "/home is a directory, expected a symbolic link"
    );
}

/// Debian 12's networkd units (their [Install] sections), merged /usr.
fn networkd_tree() -> Tree {
    let mut t = tree();
    add_symlink(&mut t, "/lib", "usr/lib");
    let units = [
        ("systemd-networkd.service", "[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\nAlso=systemd-network-generator.service\nAlso=systemd-networkd-wait-online.service\n"),
        ("systemd-networkd.socket", "[Install]\nWantedBy=sockets.target\n"),
        ("systemd-network-generator.service", "[Install]\nWantedBy=sysinit.target\n"),
        ("systemd-networkd-wait-online.service", "[Install]\nWantedBy=network-online.target\n"),
    ];
    for (name, text) in units {
        add_file(
            &mut t,
            &format!("/usr/lib/systemd/system/{name}"),
            text,
            0o644,
            0,
            0,
        );
    }
    t
}

#[test]
fn dhcp_with_networkd_writes_network_file_and_enables_like_systemctl() {
    let mut t = networkd_tree();
    let c = run(&mut t, |t| configure_dhcp(t, EPOCH));
    let s = "/etc/systemd/system";
    let links = [
        (
            format!("{s}/multi-user.target.wants/systemd-networkd.service"),
            "systemd-networkd.service",
        ),
        (
            format!("{s}/dbus-org.freedesktop.network1.service"),
            "systemd-networkd.service",
        ),
        (
            format!("{s}/sockets.target.wants/systemd-networkd.socket"),
            "systemd-networkd.socket",
        ),
        (
            format!("{s}/sysinit.target.wants/systemd-network-generator.service"),
            "systemd-network-generator.service",
        ),
        (
            format!("{s}/network-online.target.wants/systemd-networkd-wait-online.service"),
            "systemd-networkd-wait-online.service",
        ),
    ];
    for (link, unit) in &links {
        let id = t
            .lookup(link.as_bytes())
            .unwrap_or_else(|| panic!("{link} missing"));
        let want = format!("/lib/systemd/system/{unit}");
        assert!(
            matches!(&t.inode(id).kind, Kind::Symlink(x) if x == want.as_bytes()),
            "{link}"
        );
    }
    let dirs = [
        "/etc",
        "/etc/systemd",
        s,
        "/etc/systemd/network",
        DHCP_NETWORK_FILE,
    ];
    let wants = [
        "multi-user.target.wants",
        "sockets.target.wants",
        "sysinit.target.wants",
        "network-online.target.wants",
    ]
    .map(|w| format!("{s}/{w}"));
    let mut added: BTreeSet<String> = links.iter().map(|(l, _)| l.clone()).chain(wants).collect();
    added.extend(set(&dirs));
    assert_eq!(c.added, added);
    assert!(text(&t, DHCP_NETWORK_FILE)
        .contains("[Match]\nType=ether\nName=en* eth*\n\n[Network]\nDHCP=yes\n"));
}

#[test]
fn dhcp_without_networkd_uses_ifupdown_or_fails() {
    let mut t = tree();
    assert!(configure_dhcp(&mut t, EPOCH)
        .unwrap_err()
        .to_string()
        .starts_with("network configuration backend \"systemd-networkd or ifupdown\" not found"));
    add_file(
        &mut t,
        "/etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n",
        0o644,
        0,
        0,
    );
    let c = run(&mut t, |t| configure_dhcp(t, EPOCH));
    assert_eq!(
        c.added,
        set(&[
            "/etc/network/interfaces.d",
            "/etc/network/interfaces.d/imgbuild-dhcp"
        ])
    );
    assert!(text(&t, "/etc/network/interfaces.d/imgbuild-dhcp").contains("iface eth0 inet dhcp\n"));
}

#[test]
fn fstab_is_replaced_and_mount_points_made() {
    let mut t = tree();
    add_file(
        &mut t,
        "/etc/fstab",
        "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
        0o644,
        0,
        0,
    );
    let entries = [FstabEntry::root_ext4("1111-22"), FstabEntry::esp("3333-44")];
    let c = run(&mut t, |t| write_fstab(t, &entries, EPOCH));
    assert_eq!(c.added, set(&["/boot", "/boot/efi"]));
    assert_eq!(c.modified, set(&["/etc/fstab"]));
    let body: Vec<String> = text(&t, "/etc/fstab")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        body,
        [
            "PARTUUID=1111-22\t/\text4\trw,discard,errors=remount-ro\t0\t1",
            "PARTUUID=3333-44\t/boot/efi\tvfat\tumask=0077\t0\t2"
        ]
    );
    let bad = FstabEntry {
        options: "a b".into(),
        ..FstabEntry::esp("x")
    };
    assert!(write_fstab(&mut t, &[bad], EPOCH).is_err());
}

#[test]
fn golden_image_hygiene_removes_per_machine_state() {
    let mut t = networkd_tree();
    add_file(
        &mut t,
        "/etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
        0o644,
        0,
        0,
    );
    add_file(
        &mut t,
        "/var/lib/dbus/machine-id",
        "0123456789abcdef0123456789abcdef\n",
        0o644,
        0,
        0,
    );
    add_file(&mut t, "/etc/ssh/ssh_host_ed25519_key", "k", 0o600, 0, 0);
    add_file(
        &mut t,
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "k",
        0o644,
        0,
        0,
    );
    add_file(&mut t, "/etc/ssh/sshd_config", "UsePAM yes\n", 0o644, 0, 0);
    add_file(
        &mut t,
        "/usr/lib/systemd/system/ssh.service",
        "[Install]\nWantedBy=multi-user.target\n",
        0o644,
        0,
        0,
    );
    add_file(&mut t, "/var/lib/systemd/random-seed", "seed", 0o600, 0, 0);
    add_file(&mut t, "/var/cache/apt/pkgcache.bin", "c", 0o644, 0, 0);
    add_file(
        &mut t,
        "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "r",
        0o644,
        0,
        0,
    );
    add_file(&mut t, "/var/lib/apt/lists/lock", "", 0o640, 0, 0);
    add_dir(&mut t, "/var/lib/apt/lists/partial", 0o700);
    let c = run(&mut t, |t| {
        clean_for_golden_image(
            t,
            &Hygiene {
                remove_apt_lists: true,
            },
            EPOCH,
        )
    });
    let unit = format!("/etc/systemd/system/{SSH_KEYGEN_UNIT}");
    let wants = [
        "/etc/systemd/system/multi-user.target.wants",
        "/etc/systemd/system/ssh.service.wants",
    ];
    let mut added = set(&["/etc/systemd", "/etc/systemd/system", &unit]);
    for w in wants {
        added.insert(w.to_owned());
        added.insert(format!("{w}/{SSH_KEYGEN_UNIT}"));
    }
    assert_eq!(c.added, added);
    assert_eq!(
        c.modified,
        set(&["/etc/machine-id", "/var/lib/dbus/machine-id"])
    );
    let removed = [
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/var/lib/systemd/random-seed",
        "/var/cache/apt/pkgcache.bin",
        "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
    ];
    assert_eq!(c.removed, set(&removed));
    assert_eq!(meta_of(&t, "/etc/machine-id"), meta(0o444, 0, 0, EPOCH));
    assert_eq!(text(&t, "/etc/machine-id"), "");
    let again = run(&mut t, |t| {
        clean_for_golden_image(
            t,
            &Hygiene {
                remove_apt_lists: true,
            },
            EPOCH,
        )
    });
    assert!(again.is_empty(), "second run changed {again:?}");
}

#[test]
fn nocloud_seed_is_private() {
    let mut t = tree();
    let seed = NoCloud {
        user_data: "#cloud-config\n".into(),
        meta_data: "instance-id: golden\n".into(),
        network_config: None,
    };
    let c = run(&mut t, |t| write_nocloud(t, &seed, EPOCH));
    assert_eq!(
        c.added,
        set(&[
            "/var",
            "/var/lib",
            "/var/lib/cloud",
            "/var/lib/cloud/seed",
            "/var/lib/cloud/seed/nocloud",
            "/var/lib/cloud/seed/nocloud/user-data",
            "/var/lib/cloud/seed/nocloud/meta-data"
        ])
    );
    assert_eq!(
        meta_of(&t, "/var/lib/cloud/seed/nocloud/user-data"),
        meta(0o600, 0, 0, EPOCH)
    );
}

#[test]
fn installed_packages_reads_only_installed_stanzas() {
    let mut t = tree();
    let status = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\nDescription: x\n more\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: base-files\nStatus: hold ok installed\nVersion: 12.4\n";
    add_file(&mut t, "/var/lib/dpkg/status", status, 0o644, 0, 0);
    let pkgs = installed_packages(&t).unwrap();
    assert_eq!(
        pkgs,
        [
            ("base-files".to_owned(), "12.4".to_owned()),
            ("zlib1g".to_owned(), "1:1.2.13".to_owned())
        ]
    );
}

#[test]
fn changes_merge_keeps_added_added() {
    let mut a = Changes {
        added: set(&["/a"]),
        ..Default::default()
    };
    a.merge(Changes {
        modified: set(&["/a", "/b"]),
        removed: set(&["/c"]),
        ..Default::default()
    });
    assert_eq!(
        (a.added, a.modified, a.removed),
        (set(&["/a"]), set(&["/b"]), set(&["/c"]))
    );
    let _ = Timestamp::default();
}
