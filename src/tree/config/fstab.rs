//! `/etc/fstab` (fstab(5)).

use super::{meta, mkdir_p, write_file, Changes, ConfigError, Result};
use crate::tree::Tree;

/// One fstab(5) line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FstabEntry {
    /// What to mount: `PARTUUID=...`, `UUID=...`, a device.
    pub spec: String,
    /// Where (`/`, `/boot/efi`, `none` for swap).
    pub mountpoint: String,
    /// Filesystem type (`ext4`, `vfat`, `swap`).
    pub fstype: String,
    /// Mount options (`rw,discard,errors=remount-ro`).
    pub options: String,
    /// dump(8) frequency.
    pub dump: u32,
    /// fsck(8) pass: 1 for the root, 2 for others, 0 to skip.
    pub pass: u32,
}

impl FstabEntry {
    /// The root filesystem: `PARTUUID=<partuuid> / ext4 rw,discard,errors=remount-ro 0 1`.
    pub fn root_ext4(partuuid: &str) -> Self {
        Self::new(partuuid, "/", "ext4", "rw,discard,errors=remount-ro", 1)
    }

    /// The EFI system partition: `PARTUUID=<partuuid> /boot/efi vfat umask=0077 0 2`.
    pub fn esp(partuuid: &str) -> Self {
        Self::new(partuuid, "/boot/efi", "vfat", "umask=0077", 2)
    }

    fn new(partuuid: &str, mountpoint: &str, fstype: &str, options: &str, pass: u32) -> Self {
        let s = |v: &str| v.to_owned();
        Self {
            spec: format!("PARTUUID={partuuid}"),
            mountpoint: s(mountpoint),
            fstype: s(fstype),
            options: s(options),
            dump: 0,
            pass,
        }
    }
}

/// Replaces `/etc/fstab` with `entries` (keeping an existing file's owner and
/// mode, else 0644 root) and creates each absolute mount point that is
/// missing as a 0755 root directory. Returns the changed paths.
pub fn write_fstab(tree: &mut Tree, entries: &[FstabEntry], epoch: i64) -> Result<Changes> {
    let mut text =
        String::from("# /etc/fstab: static file system information (written by imgbuild).\n");
    text.push_str("# <file system> <mount point> <type> <options> <dump> <pass>\n");
    for e in entries {
        for (what, v) in [
            ("fstab spec", &e.spec),
            ("mount point", &e.mountpoint),
            ("fstab type", &e.fstype),
            ("mount options", &e.options),
        ] {
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '#') {
                return Err(ConfigError::Invalid {
                    what,
                    value: v.clone(),
                    why: "must be non-empty, without spaces or '#'".into(),
                });
            }
        }
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            e.spec, e.mountpoint, e.fstype, e.options, e.dump, e.pass
        ));
    }
    let mut changes = Changes::default();
    let existing = super::read_file(tree, "/etc/fstab")?;
    if existing.as_deref() != Some(text.as_bytes()) {
        let m = existing.is_none().then(|| meta(0o644, 0, 0, epoch));
        write_file(tree, "/etc/fstab", text.as_bytes(), m, epoch, &mut changes)?;
    }
    for e in entries.iter().filter(|e| e.mountpoint.starts_with('/')) {
        mkdir_p(tree, &e.mountpoint, &meta(0o755, 0, 0, epoch), &mut changes)?;
    }
    Ok(changes)
}
