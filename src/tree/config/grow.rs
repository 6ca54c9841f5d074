//! Growing the root at first boot: when the VM's disk is larger than the
//! image (every cloud enlarges it), the root partition and its filesystem
//! grow to fill it, online, with what the guest already has (systemd).
//!
//! ```text
//! boot ─► systemd-repart.service (sysinit): /etc/repart.d/50-imgbuild-root.conf
//!           grows the root partition (the disk's last) into the free space after it,
//!           moves the backup GPT to the new end
//!      ─► systemd-growfs@-.service (from x-systemd.growfs on / in /etc/fstab,
//!           ordered after systemd-repart.service): resizes ext4 online
//! ```
//! systemd-repart matches a repart.d file to an existing partition by its
//! type and only ever grows it; `GrowFileSystem=` would do nothing here
//! (it is for partitions mounted by gpt-auto, not by fstab). Debian 12 ships
//! systemd-repart in the `systemd` package, Debian 13 in `systemd-repart`.
//! Facts and sources: shared/notes/boot-facts.md §3.

use super::network::unit_path;
use super::{exists, meta, update_text, Changes, ConfigError, Result};
use crate::tree::Tree;

/// The repart.d file this step writes.
pub const REPART_FILE: &str = "/etc/repart.d/50-imgbuild-root.conf";
/// Where systemd-repart's binary may be.
const REPART_BINARIES: [&str; 2] = ["/usr/bin/systemd-repart", "/bin/systemd-repart"];
/// The link that starts it at boot.
const WANTS: &str = "sysinit.target.wants/systemd-repart.service";

/// The repart.d(5) definition for a root partition of `type_guid`.
fn repart_conf(type_guid: &str) -> String {
    format!(
        "# Written by imgbuild: grow the root partition into the free space after it\n\
         # on boot (the disk's last partition). The filesystem follows through\n\
         # x-systemd.growfs in /etc/fstab. Delete this file to keep the size.\n\
         [Partition]\n\
         Type={type_guid}\n"
    )
}

/// Sets up growth of the root partition (GPT type `type_guid`): writes
/// [`REPART_FILE`] and makes sure `systemd-repart.service` runs at boot.
/// The caller adds `x-systemd.growfs` to the root's fstab options. Fails,
/// naming the package, when the tree has no systemd-repart.
pub fn grow_root_on_boot(tree: &mut Tree, type_guid: &str, epoch: i64) -> Result<Changes> {
    let has_binary = REPART_BINARIES.iter().any(|p| exists(tree, p));
    let Some(unit) = unit_path(tree, "systemd-repart.service").filter(|_| has_binary) else {
        return Err(ConfigError::NeedsProgram {
            program: "systemd-repart",
            looked_for: format!("{} and systemd-repart.service", REPART_BINARIES.join(", ")),
            fix: "install it (Debian 12: package systemd; Debian 13: package systemd-repart), or set [image] grow_root = false",
        });
    };
    let mut changes = Changes::default();
    update_text(
        tree,
        REPART_FILE,
        &repart_conf(type_guid),
        meta(0o644, 0, 0, epoch),
        epoch,
        &mut changes,
    )?;
    // Debian links the unit into sysinit.target.wants itself (it has no
    // [Install] section); add the link only where a tree lacks it.
    let vendor_dir = unit.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let linked = [vendor_dir.as_str(), "/etc/systemd/system"]
        .iter()
        .any(|d| exists(tree, &format!("{d}/{WANTS}")));
    if !linked {
        super::put(
            tree,
            &format!("/etc/systemd/system/{WANTS}"),
            crate::tree::Kind::Symlink(unit.clone().into_bytes()),
            Some(meta(0o777, 0, 0, epoch)),
            epoch,
            &mut changes,
        )?;
    }
    Ok(changes)
}
