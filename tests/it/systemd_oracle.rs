//! `tree::systemd` against `systemctl --root`: the same unit files in a
//! directory and in a `Tree`, the same enable/disable/mask steps, and after
//! each step the same symlinks under /etc.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use imgbuild::tree::systemd::{disable_unit, enable_unit, mask_unit};
use imgbuild::tree::{FileData, Inode, Kind, Meta, Tree};

use crate::support::{require_tool, run_ok, tempdir};

/// Unit files: the [Install] sections of Debian bookworm's hyperv-daemons,
/// qemu-guest-agent and waagent packages, plus the shapes systemctl handles
/// (Alias, Also, RequiredBy, templates with DefaultInstance).
const UNITS: [(&str, &str); 9] = [
    ("hv-kvp-daemon.service", "[Unit]\nDescription=Hyper-V KVP\n\n[Service]\nExecStart=/usr/sbin/hv_kvp_daemon -n\n\n[Install]\nWantedBy=multi-user.target\n"),
    ("hv-vss-daemon.service", "[Service]\nExecStart=/usr/sbin/hv_vss_daemon -n\n\n[Install]\nWantedBy=multi-user.target\n"),
    ("qemu-guest-agent.service", "[Unit]\nDescription=QEMU Guest Agent\n\n[Service]\nExecStart=-/usr/sbin/qemu-ga\n\n[Install]\n"),
    ("walinuxagent.service", "[Service]\nExecStart=/usr/sbin/waagent -daemon\n\n[Install]\nWantedBy=multi-user.target\n"),
    ("ssh.service", "[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\nAlso=ssh.socket\n"),
    ("ssh.socket", "[Install]\nWantedBy=sockets.target\n"),
    ("getty@.service", "[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n"),
    ("need.service", "[Install]\nRequiredBy=x.target y.target\n"),
    ("multi.service", "[Install]\nWantedBy=a.target \\\n  b.target\n"),
];

enum Step {
    Enable(&'static str),
    Disable(&'static str),
    Mask(&'static str),
}

const STEPS: [Step; 12] = [
    Step::Enable("hv-kvp-daemon.service"),
    Step::Enable("hv-vss-daemon.service"),
    Step::Enable("qemu-guest-agent.service"),
    Step::Enable("walinuxagent.service"),
    Step::Enable("ssh.service"),
    Step::Enable("getty@.service"),
    Step::Enable("getty@ttyS0.service"),
    Step::Enable("need.service"),
    Step::Enable("multi.service"),
    Step::Disable("ssh.service"),
    Step::Mask("hv-vss-daemon.service"),
    Step::Disable("need.service"),
];

/// Symlinks under `root/etc`, as path -> target.
fn dir_links(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.join("etc")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
            let ft = fs::symlink_metadata(&path).expect("lstat").file_type();
            let rel = path
                .strip_prefix(root)
                .expect("below")
                .to_str()
                .expect("utf-8")
                .to_string();
            if ft.is_symlink() {
                out.insert(
                    rel,
                    fs::read_link(&path)
                        .expect("readlink")
                        .to_str()
                        .expect("utf-8")
                        .to_string(),
                );
            } else if ft.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

fn tree_links(tree: &Tree) -> BTreeMap<String, String> {
    tree.walk()
        .into_iter()
        .filter(|(p, _)| p.starts_with(b"etc/"))
        .filter_map(|(p, id)| match &tree.inode(id).kind {
            Kind::Symlink(t) => Some((
                String::from_utf8_lossy(&p).into_owned(),
                String::from_utf8_lossy(t).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn enable_disable_mask_match_systemctl_root() {
    if !require_tool("systemctl") {
        return;
    }
    let dir = tempdir();
    let root = dir.path();
    let units = root.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).expect("mkdir");
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).expect("symlink");
    let meta = Meta {
        mode: 0o755,
        ..Meta::default()
    };
    let mut tree = Tree::new(meta.clone());
    tree.insert(
        b"lib",
        Inode {
            meta: meta.clone(),
            kind: Kind::Symlink(b"usr/lib".to_vec()),
        },
    )
    .expect("lib");
    tree.insert(
        b"etc",
        Inode {
            meta: meta.clone(),
            kind: Kind::Dir(BTreeMap::new()),
        },
    )
    .expect("etc");
    for (name, text) in UNITS {
        fs::write(units.join(name), text).expect("write unit");
        let inode = Inode {
            meta: meta.clone(),
            kind: Kind::File(FileData::Bytes(text.as_bytes().into())),
        };
        tree.insert(format!("usr/lib/systemd/system/{name}").as_bytes(), inode)
            .expect("unit");
    }
    for step in STEPS {
        let (verb, unit) = match step {
            Step::Enable(u) => {
                enable_unit(&mut tree, u, &meta).unwrap_or_else(|e| panic!("enable {u}: {e}"));
                ("enable", u)
            }
            Step::Disable(u) => {
                disable_unit(&mut tree, u).unwrap_or_else(|e| panic!("disable {u}: {e}"));
                ("disable", u)
            }
            Step::Mask(u) => {
                mask_unit(&mut tree, u, &meta).unwrap_or_else(|e| panic!("mask {u}: {e}"));
                ("mask", u)
            }
        };
        run_ok(
            Command::new("systemctl")
                .arg(format!("--root={}", root.display()))
                .args(["--quiet", verb, unit]),
        );
        assert_eq!(
            tree_links(&tree),
            dir_links(root),
            "after systemctl {verb} {unit}"
        );
    }
    assert!(
        tree_links(&tree).len() >= 8,
        "the steps leave links to compare"
    );
}
