use super::*;
use crate::tree::testing::{meta, put};

/// Debian-like: `/lib -> usr/lib`, units in /usr/lib/systemd/system.
fn tree() -> Tree {
    let mut t = Tree::new(meta(0o755));
    t.insert(
        b"lib",
        Inode {
            meta: meta(0o777),
            kind: Kind::Symlink(b"usr/lib".to_vec()),
        },
    )
    .expect("lib");
    let u = "usr/lib/systemd/system";
    put(&mut t, &format!("{u}/ssh.service"), "[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\nAlso=ssh.socket\n");
    put(
        &mut t,
        &format!("{u}/ssh.socket"),
        "[Install]\nWantedBy=sockets.target\n",
    );
    put(
        &mut t,
        &format!("{u}/qemu-guest-agent.service"),
        "[Unit]\n[Service]\nExecStart=-/usr/sbin/qemu-ga\n[Install]\n",
    );
    put(
        &mut t,
        &format!("{u}/getty@.service"),
        "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
    );
    put(
        &mut t,
        &format!("{u}/need.service"),
        "[Install]\nRequiredBy=x.target\n",
    );
    t
}

fn target(t: &Tree, path: &str) -> Option<String> {
    match &t.inode(t.lookup(path.as_bytes())?).kind {
        Kind::Symlink(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    }
}

#[test]
fn parse_install_lists_resets_and_continuations() {
    let i = parse_install(
        "[Service]\nWantedBy=not.this\n[Install]\n# c\nWantedBy=a.target \\\n b.target\nWantedBy=\nWantedBy=c.target\nAlias=x.service y.service\n",
    );
    assert_eq!(i.wanted_by, ["c.target"]);
    assert_eq!(i.alias, ["x.service", "y.service"]);
    assert!(parse_install("[Unit]\n[Install]\n").is_empty());
}

#[test]
fn enable_creates_wants_alias_and_also_links() {
    let mut t = tree();
    let changed = enable_unit(&mut t, "ssh.service", &meta(0)).expect("enable");
    assert_eq!(
        changed,
        [
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/etc/systemd/system/sockets.target.wants/ssh.socket",
            "/etc/systemd/system/sshd.service"
        ]
    );
    let want = "/lib/systemd/system/ssh.service";
    assert_eq!(
        target(&t, "etc/systemd/system/multi-user.target.wants/ssh.service").as_deref(),
        Some(want)
    );
    assert_eq!(
        target(&t, "etc/systemd/system/sshd.service").as_deref(),
        Some(want)
    );
    let id = t.lookup(b"etc/systemd/system/sshd.service").expect("link");
    assert_eq!(t.inode(id).meta.mode, 0o777);
    assert_eq!(
        enable_unit(&mut t, "ssh.service", &meta(0)).expect("again"),
        Vec::<String>::new()
    );
}

/// Debian 13's packages enable their units with `/usr/lib/…` links; enabling
/// again (our links say `/lib/…`) is a no-op, as for systemctl: the same file.
/// A link to another file is still refused.
#[test]
fn enable_accepts_a_link_to_the_same_file_by_another_path() {
    let mut t = tree();
    for (link, to) in [
        (
            "multi-user.target.wants/ssh.service",
            "/usr/lib/systemd/system/ssh.service",
        ),
        (
            "sockets.target.wants/ssh.socket",
            "/usr/lib/systemd/system/ssh.socket",
        ),
        ("sshd.service", "/usr/lib/systemd/system/ssh.service"),
    ] {
        t.insert(
            format!("etc/systemd/system/{link}").as_bytes(),
            Inode {
                meta: meta(0o777),
                kind: Kind::Symlink(to.as_bytes().to_vec()),
            },
        )
        .expect("link");
    }
    assert_eq!(
        enable_unit(&mut t, "ssh.service", &meta(0)).expect("already enabled"),
        Vec::<String>::new()
    );
    let mut t = tree();
    t.insert(
        b"etc/systemd/system/sshd.service",
        Inode {
            meta: meta(0o777),
            kind: Kind::Symlink(b"/usr/lib/systemd/system/ssh.socket".to_vec()),
        },
    )
    .expect("link");
    assert!(matches!(
        enable_unit(&mut t, "ssh.service", &meta(0)),
        Err(SystemdError::Exists { .. })
    ));
}

#[test]
fn enable_required_by_uses_requires_dir() {
    let mut t = tree();
    assert_eq!(
        enable_unit(&mut t, "need.service", &meta(0)).expect("enable"),
        ["/etc/systemd/system/x.target.requires/need.service"]
    );
}

#[test]
fn enable_static_unit_changes_nothing() {
    let mut t = tree();
    assert_eq!(
        enable_unit(&mut t, "qemu-guest-agent.service", &meta(0)).expect("static"),
        Vec::<String>::new()
    );
}

#[test]
fn enable_template_uses_default_instance_or_named_instance() {
    let mut t = tree();
    assert_eq!(
        enable_unit(&mut t, "getty@.service", &meta(0)).expect("template"),
        ["/etc/systemd/system/getty.target.wants/getty@tty1.service"]
    );
    assert_eq!(
        enable_unit(&mut t, "getty@ttyS0.service", &meta(0)).expect("instance"),
        ["/etc/systemd/system/getty.target.wants/getty@ttyS0.service"]
    );
    let link = target(
        &t,
        "etc/systemd/system/getty.target.wants/getty@ttyS0.service",
    );
    assert_eq!(link.as_deref(), Some("/lib/systemd/system/getty@.service"));
}

#[test]
fn enable_refuses_missing_masked_and_conflicting() {
    let mut t = tree();
    assert!(matches!(
        enable_unit(&mut t, "nope.service", &meta(0)),
        Err(SystemdError::NotFound { .. })
    ));
    assert!(matches!(
        enable_unit(&mut t, "../x", &meta(0)),
        Err(SystemdError::BadName { .. })
    ));
    let other = Inode {
        meta: meta(0o777),
        kind: Kind::Symlink(b"/lib/systemd/system/other.service".to_vec()),
    };
    t.insert(b"etc/systemd/system/sshd.service", other)
        .expect("link");
    assert!(matches!(
        enable_unit(&mut t, "ssh.service", &meta(0)),
        Err(SystemdError::Exists { .. })
    ));
    mask_unit(&mut t, "need.service", &meta(0)).expect("mask");
    assert!(matches!(
        enable_unit(&mut t, "need.service", &meta(0)),
        Err(SystemdError::Masked { .. })
    ));
}

#[test]
fn unit_in_etc_wins_over_lib() {
    let mut t = tree();
    put(
        &mut t,
        "etc/systemd/system/ssh.socket",
        "[Install]\nWantedBy=other.target\n",
    );
    let f = find_unit(&t, "ssh.socket").expect("read").expect("found");
    assert_eq!(f.path, "/etc/systemd/system/ssh.socket");
    assert_eq!(f.install.wanted_by, ["other.target"]);
}

#[test]
fn disable_removes_what_enable_made_and_stray_wants_links() {
    let mut t = tree();
    enable_unit(&mut t, "ssh.service", &meta(0)).expect("enable");
    let stray = Inode {
        meta: meta(0o777),
        kind: Kind::Symlink(b"/lib/systemd/system/ssh.service".to_vec()),
    };
    t.insert(
        b"etc/systemd/system/graphical.target.wants/ssh.service",
        stray,
    )
    .expect("stray");
    let removed = disable_unit(&mut t, "ssh.service").expect("disable");
    assert_eq!(
        removed,
        [
            "/etc/systemd/system/graphical.target.wants/ssh.service",
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/etc/systemd/system/sockets.target.wants/ssh.socket",
            "/etc/systemd/system/sshd.service"
        ]
    );
    assert_eq!(
        disable_unit(&mut t, "ssh.service").expect("again"),
        Vec::<String>::new()
    );
}

#[test]
fn mask_links_to_dev_null_and_refuses_a_file() {
    let mut t = tree();
    assert_eq!(
        mask_unit(&mut t, "ssh.service", &meta(0)).expect("mask"),
        ["/etc/systemd/system/ssh.service"]
    );
    assert_eq!(
        target(&t, "etc/systemd/system/ssh.service").as_deref(),
        Some("/dev/null")
    );
    assert_eq!(
        mask_unit(&mut t, "ssh.service", &meta(0)).expect("again"),
        Vec::<String>::new()
    );
    put(&mut t, "etc/systemd/system/local.service", "[Service]\n");
    assert!(matches!(
        mask_unit(&mut t, "local.service", &meta(0)),
        Err(SystemdError::Exists { .. })
    ));
}
