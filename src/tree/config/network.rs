//! Default networking: DHCP on every Ethernet link with systemd-networkd, or
//! with ifupdown when networkd is not in the image.

use super::{exists, meta, update_text, Changes, ConfigError, Result};
use crate::tree::Tree;

/// The `.network` file this step writes (systemd.network(5)); `80-` sorts it
/// after anything a package or the recipe puts earlier, so theirs win.
pub const DHCP_NETWORK_FILE: &str = "/etc/systemd/network/80-imgbuild-dhcp.network";

const DHCP_NETWORK: &str = "# Written by imgbuild: DHCP on every Ethernet link.\n\
[Match]\n\
Type=ether\n\
Name=en* eth*\n\
\n\
[Network]\n\
DHCP=yes\n";

/// ifupdown fallback: the kernel's first Ethernet name without predictable
/// naming, and the usual virtio/Hyper-V predictable names.
const IFUPDOWN_FILE: &str = "/etc/network/interfaces.d/imgbuild-dhcp";
const IFUPDOWN_DHCP: &str = "# Written by imgbuild: DHCP on the usual first Ethernet names.\n\
allow-hotplug eth0\niface eth0 inet dhcp\n\n\
allow-hotplug ens3\niface ens3 inet dhcp\n\n\
allow-hotplug enp0s3\niface enp0s3 inet dhcp\n";

/// Unit directories in systemd's search order for vendor units.
const UNIT_DIRS: [&str; 2] = ["/lib/systemd/system", "/usr/lib/systemd/system"];

/// Configures DHCP on every Ethernet link: with systemd-networkd when its unit
/// is in the tree (writes [`DHCP_NETWORK_FILE`] and enables
/// `systemd-networkd.service` as `systemctl enable` would); else with
/// ifupdown when `/etc/network/interfaces` exists (a stanza for `eth0`,
/// `ens3` and `enp0s3` in `/etc/network/interfaces.d/`, which Debian's
/// default `interfaces` sources). Neither: an error naming what was sought.
pub fn configure_dhcp(tree: &mut Tree, epoch: i64) -> Result<Changes> {
    let mut changes = Changes::default();
    if unit_path(tree, "systemd-networkd.service").is_some() {
        update_text(
            tree,
            DHCP_NETWORK_FILE,
            DHCP_NETWORK,
            meta(0o644, 0, 0, epoch),
            epoch,
            &mut changes,
        )?;
        enable_unit(tree, "systemd-networkd.service", epoch, &mut changes)?;
    } else if exists(tree, "/etc/network/interfaces") {
        update_text(
            tree,
            IFUPDOWN_FILE,
            IFUPDOWN_DHCP,
            meta(0o644, 0, 0, epoch),
            epoch,
            &mut changes,
        )?;
    } else {
        return Err(ConfigError::Missing {
            what: "network configuration backend",
            name: "systemd-networkd or ifupdown".into(),
            looked_for: "/lib/systemd/system/systemd-networkd.service, /usr/lib/systemd/system/systemd-networkd.service, /etc/network/interfaces".into(),
        });
    }
    Ok(changes)
}

/// Where a vendor unit lives (`/lib/systemd/system/<unit>` spelling first, as
/// Debian 12's systemctl writes its symlinks), if it does.
pub(crate) fn unit_path(tree: &Tree, unit: &str) -> Option<String> {
    UNIT_DIRS
        .iter()
        .map(|d| format!("{d}/{unit}"))
        .find(|p| exists(tree, p))
}

/// `systemctl enable` offline, through [`crate::tree::systemd::enable_unit`],
/// recording the symlinks it makes in `changes`.
pub(crate) fn enable_unit(
    tree: &mut Tree,
    unit: &str,
    epoch: i64,
    changes: &mut Changes,
) -> Result<()> {
    let before = tree.clone();
    let made =
        crate::tree::systemd::enable_unit(tree, unit, &meta(0o777, 0, 0, epoch)).map_err(|e| {
            ConfigError::Missing {
                what: "systemd unit",
                name: unit.to_owned(),
                looked_for: format!("/etc/systemd/system, {} ({e})", UNIT_DIRS.join(", ")),
            }
        })?;
    // Parent directories the links needed were created too: report them.
    for path in &made {
        let mut dir = path.as_str();
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if parent.is_empty()
                || before
                    .lookup(&before.resolve(parent.as_bytes(), false)?)
                    .is_some()
            {
                break;
            }
            changes.added.insert(parent.to_owned());
            dir = parent;
        }
    }
    changes.added.extend(made);
    Ok(())
}
