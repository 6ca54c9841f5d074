//! Default networking: DHCP on every Ethernet link with systemd-networkd, or
//! with ifupdown when networkd is not in the image.

use super::{exists, meta, put, read_text, update_text, Changes, ConfigError, Result};
use crate::tree::{Kind, Tree};

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

/// A minimal offline `systemctl enable` for units this module and
/// `hygiene` install: `WantedBy=`/`RequiredBy=` symlinks in
/// `/etc/systemd/system/<target>.wants|.requires/`, `Alias=` symlinks and
/// `Also=` units, from the unit's `[Install]` section (systemd.unit(5)
/// "[Install] Section Options"). Kept small on purpose; the lead will fold it
/// into `tree::systemd::enable_unit` later.
pub(crate) fn enable_unit(
    tree: &mut Tree,
    unit: &str,
    epoch: i64,
    changes: &mut Changes,
) -> Result<()> {
    let mut todo = vec![unit.to_owned()];
    let mut done: Vec<String> = Vec::new();
    while let Some(unit) = todo.pop() {
        if done.contains(&unit) {
            continue;
        }
        done.push(unit.clone());
        let local = format!("/etc/systemd/system/{unit}");
        let path = if exists(tree, &local) {
            Some(local)
        } else {
            unit_path(tree, &unit)
        };
        let Some(path) = path else {
            return Err(ConfigError::Missing {
                what: "systemd unit",
                name: unit,
                looked_for: format!("/etc/systemd/system, {}", UNIT_DIRS.join(", ")),
            });
        };
        let text = read_text(tree, &path)?.unwrap_or_default();
        for (key, value) in install_section(&text) {
            for word in value.split_whitespace() {
                let link = match key {
                    "WantedBy" => format!("/etc/systemd/system/{word}.wants/{unit}"),
                    "RequiredBy" => format!("/etc/systemd/system/{word}.requires/{unit}"),
                    "Alias" => format!("/etc/systemd/system/{word}"),
                    "Also" => {
                        todo.push(word.to_owned());
                        continue;
                    }
                    _ => continue,
                };
                symlink(tree, &link, &path, epoch, changes)?;
            }
        }
    }
    Ok(())
}

/// The `key=value` lines of the `[Install]` section (comments skipped).
fn install_section(text: &str) -> Vec<(&str, &str)> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_install = line == "[Install]";
        } else if in_install && !line.starts_with(['#', ';']) {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim(), v.trim()));
            }
        }
    }
    out
}

/// Makes `link` a symlink to `target` unless it already is one.
fn symlink(
    tree: &mut Tree,
    link: &str,
    target: &str,
    epoch: i64,
    changes: &mut Changes,
) -> Result<()> {
    let rel = tree.resolve(link.as_bytes(), false)?;
    if let Some(id) = tree.lookup(&rel) {
        if matches!(&tree.inode(id).kind, Kind::Symlink(t) if t == target.as_bytes()) {
            return Ok(());
        }
    }
    put(
        tree,
        link,
        Kind::Symlink(target.as_bytes().to_vec()),
        Some(meta(0o777, 0, 0, epoch)),
        epoch,
        changes,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_only() {
        let unit = "[Unit]\nWantedBy=no.target\n[Install]\n# c\nWantedBy=multi-user.target\nAlso=a.socket b.service\n[X]\nAlias=no\n";
        assert_eq!(
            install_section(unit),
            vec![
                ("WantedBy", "multi-user.target"),
                ("Also", "a.socket b.service")
            ]
        );
    }
}
