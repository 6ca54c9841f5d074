//! Golden-image hygiene: remove what must differ between machines booted from
//! the same image; and the cloud-init NoCloud seed.
//!
//! Left alone on purpose: `/etc/resolv.conf` (it may be a symlink into
//! systemd-resolved's runtime directory) and `/var/log` (dpkg's and apt's
//! logs document how the image was made).

use super::network::{enable_unit, unit_path};
use super::{exists, meta, put, remove, update_text, write_file, Changes, Result};
use crate::tree::{Kind, Tree};

/// Options of [`clean_for_golden_image`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hygiene {
    /// Also remove the downloaded package indexes in `/var/lib/apt/lists`
    /// (smaller image; `apt-get update` is then needed before installing).
    pub remove_apt_lists: bool,
}

/// The oneshot unit that makes SSH host keys on first boot. Debian 12's
/// `ssh.service` runs `sshd -t` first, which fails without host keys, and
/// openssh-server makes keys only in its postinst, so without this unit an
/// image with its keys removed would have no SSH at all. `ssh-keygen -A`
/// makes only the missing key types.
pub const SSH_KEYGEN_UNIT: &str = "imgbuild-ssh-keygen.service";

const SSH_KEYGEN: &str =
    "# Written by imgbuild: SSH host keys are made on first boot, per machine.\n\
[Unit]\n\
Description=Generate SSH host keys\n\
Before=ssh.service\n\
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart=/usr/bin/ssh-keygen -A\n\
RemainAfterExit=yes\n\
\n\
[Install]\n\
WantedBy=multi-user.target ssh.service\n";

/// Files that must not be shared between machines, removed if present:
/// systemd's random seed (systemd-random-seed.service) and its credential
/// host key (systemd-creds(1)), and apt's binary caches (rebuilt on use).
const PER_MACHINE_FILES: [&str; 4] = [
    "/var/lib/systemd/random-seed",
    "/var/lib/systemd/credential.secret",
    "/var/cache/apt/pkgcache.bin",
    "/var/cache/apt/srcpkgcache.bin",
];

/// Makes the tree a golden image:
/// - `/etc/machine-id` empty, 0444 root: systemd treats that as first boot
///   and makes a new id (machine-id(5));
/// - `/var/lib/dbus/machine-id`, if present, a symlink to `/etc/machine-id`
///   (what Debian's dbus package makes);
/// - `/etc/ssh/ssh_host_*` removed; when the image has `ssh.service`, the
///   [`SSH_KEYGEN_UNIT`] is installed in `/etc/systemd/system` and enabled;
/// - the per-machine files in `PER_MACHINE_FILES` removed, and with
///   [`Hygiene::remove_apt_lists`] the files in `/var/lib/apt/lists`.
pub fn clean_for_golden_image(tree: &mut Tree, opts: &Hygiene, epoch: i64) -> Result<Changes> {
    let mut changes = Changes::default();
    let empty_id = meta(0o444, 0, 0, epoch);
    let rel = tree.resolve(b"/etc/machine-id", false)?;
    let current = tree.lookup(&rel).map(|id| tree.inode(id));
    let already = current.is_some_and(|i| {
        matches!(&i.kind, Kind::File(d) if d.is_empty())
            && i.meta.mode == 0o444
            && i.meta.uid == 0
            && i.meta.gid == 0
    });
    if !already {
        write_file(
            tree,
            "/etc/machine-id",
            b"",
            Some(empty_id),
            epoch,
            &mut changes,
        )?;
    }
    let dbus = tree.resolve(b"/var/lib/dbus/machine-id", false)?;
    if let Some(id) = tree.lookup(&dbus) {
        if !matches!(&tree.inode(id).kind, Kind::Symlink(t) if t == b"/etc/machine-id") {
            put(
                tree,
                "/var/lib/dbus/machine-id",
                Kind::Symlink(b"/etc/machine-id".to_vec()),
                Some(meta(0o777, 0, 0, epoch)),
                epoch,
                &mut changes,
            )?;
        }
    }
    for name in children_named(tree, "/etc/ssh", |n| n.starts_with(b"ssh_host_")) {
        remove(tree, &format!("/etc/ssh/{name}"), &mut changes)?;
    }
    if unit_path(tree, "ssh.service").is_some() {
        let path = format!("/etc/systemd/system/{SSH_KEYGEN_UNIT}");
        update_text(
            tree,
            &path,
            SSH_KEYGEN,
            meta(0o644, 0, 0, epoch),
            epoch,
            &mut changes,
        )?;
        enable_unit(tree, SSH_KEYGEN_UNIT, epoch, &mut changes)?;
    }
    for path in PER_MACHINE_FILES {
        remove(tree, path, &mut changes)?;
    }
    if opts.remove_apt_lists {
        // Index files only: `lock` and the `partial/` directory stay for apt.
        let lists = tree.resolve(b"/var/lib/apt/lists", true)?;
        for name in children_named(tree, "/var/lib/apt/lists", |n| n != b"lock") {
            let full = [lists.as_slice(), b"/", name.as_bytes()].concat();
            if tree
                .lookup(&full)
                .is_some_and(|id| matches!(tree.inode(id).kind, Kind::File(_)))
            {
                remove(tree, &format!("/var/lib/apt/lists/{name}"), &mut changes)?;
            }
        }
    }
    Ok(changes)
}

/// Names in directory `dir` (symlinks followed) for which `keep` holds.
fn children_named(tree: &Tree, dir: &str, keep: impl Fn(&[u8]) -> bool) -> Vec<String> {
    let Ok(rel) = tree.resolve(dir.as_bytes(), true) else {
        return Vec::new();
    };
    let Some(id) = tree.lookup(&rel) else {
        return Vec::new();
    };
    tree.children(id)
        .filter(|(n, _)| keep(n))
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// A cloud-init NoCloud seed (cloud-init's "NoCloud" datasource, seed
/// directory `/var/lib/cloud/seed/nocloud/`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoCloud {
    /// `user-data` (usually `#cloud-config` YAML).
    pub user_data: String,
    /// `meta-data` (YAML: `instance-id`, `local-hostname`).
    pub meta_data: String,
    /// `network-config` (network config v1/v2), if any.
    pub network_config: Option<String>,
}

/// Writes the NoCloud seed files, 0600 root (user-data may carry secrets).
/// cloud-init itself must be installed in the image; this step only seeds it.
pub fn write_nocloud(tree: &mut Tree, seed: &NoCloud, epoch: i64) -> Result<Changes> {
    let mut changes = Changes::default();
    let dir = "/var/lib/cloud/seed/nocloud";
    super::mkdir_p(tree, dir, &meta(0o755, 0, 0, epoch), &mut changes)?;
    let files = [
        ("user-data", Some(&seed.user_data)),
        ("meta-data", Some(&seed.meta_data)),
        ("network-config", seed.network_config.as_ref()),
    ];
    for (name, text) in files {
        let path = format!("{dir}/{name}");
        match text {
            Some(text) => write_file(
                tree,
                &path,
                text.as_bytes(),
                Some(meta(0o600, 0, 0, epoch)),
                epoch,
                &mut changes,
            )
            .map(|_| ())?,
            None if exists(tree, &path) => remove(tree, &path, &mut changes).map(|_| ())?,
            None => {}
        }
    }
    Ok(changes)
}
