//! `write_config`: records a target's module lists where the OS's own tools
//! read them, so every later initramfs and boot keeps the drivers, and
//! enables the guest agent's units when the agent is installed.
//!
//! ```text
//! Stage::Initramfs modules ─► /etc/initramfs-tools/modules          (appended once)
//!                          └► /etc/dracut.conf.d/imgbuild-<t>.conf   (add_drivers+=" … ")
//! Stage::Installed modules ─► /etc/modules-load.d/imgbuild-<t>.conf  (one per line)
//! agent units present      ─► systemd::enable_unit
//! ```

use std::collections::BTreeSet;

use super::super::systemd;
use super::super::{Kind, Meta, Tree};
use super::{
    kernel_versions, read_small, write_file, DriverError, Hypervisor, KernelModules, Stage,
};

const INITRAMFS_TOOLS_DIR: &[u8] = b"etc/initramfs-tools";
const INITRAMFS_TOOLS_MODULES: &[u8] = b"etc/initramfs-tools/modules";
const DRACUT_DIR: &[u8] = b"etc/dracut.conf.d";
/// An existing /etc/initramfs-tools/modules is a short list.
const MAX_CONFIG: u64 = 1 << 20;

fn is_dir(tree: &Tree, path: &[u8]) -> bool {
    let id = tree.resolve(path, true).ok().and_then(|p| tree.lookup(&p));
    id.is_some_and(|id| matches!(tree.inode(id).kind, Kind::Dir(_)))
}

/// Writes `target`'s driver configuration into `tree` (see the module doc);
/// new files get `meta`'s owner and time with mode 0644. Idempotent: a second
/// call changes nothing. Returns the absolute paths it created or changed,
/// sorted.
///
/// initramfs-tools' list is written when `/etc/initramfs-tools` exists or no
/// dracut configuration directory does; dracut's when `/etc/dracut.conf.d`
/// exists. The modules-load.d list names only modules some installed kernel
/// ships as a file (a built-in or absent one would make
/// systemd-modules-load.service fail), the first present of alternatives.
pub fn write_config(
    tree: &mut Tree,
    target: Hypervisor,
    meta: &Meta,
) -> Result<Vec<String>, DriverError> {
    let profile = target.drivers();
    let name = profile.name;
    let root: Vec<&str> = profile
        .modules
        .iter()
        .filter(|n| n.stage == Stage::Initramfs)
        .flat_map(|n| n.any_of.iter().copied())
        .collect();
    let mut changed = Vec::new();
    let dracut = is_dir(tree, DRACUT_DIR);
    if (is_dir(tree, INITRAMFS_TOOLS_DIR) || !dracut)
        && append_initramfs_tools(tree, target, &root, meta)?
    {
        changed.push(format!(
            "/{}",
            String::from_utf8_lossy(INITRAMFS_TOOLS_MODULES)
        ));
    }
    if dracut {
        let path = format!("etc/dracut.conf.d/imgbuild-{name}.conf");
        let text = format!(
            "# Written by imgbuild: modules the {name} target needs to reach its root filesystem.\nadd_drivers+=\" {} \"\n",
            root.join(" ")
        );
        if write_file(tree, path.as_bytes(), text.as_bytes(), meta)? {
            changed.push(format!("/{path}"));
        }
    }
    let load = modules_to_load(tree, target)?;
    if !load.is_empty() {
        let path = format!("etc/modules-load.d/imgbuild-{name}.conf");
        let mut text =
            format!("# Written by imgbuild: modules the {name} target uses once booted.\n");
        for m in &load {
            text.push_str(m);
            text.push('\n');
        }
        if write_file(tree, path.as_bytes(), text.as_bytes(), meta)? {
            changed.push(format!("/{path}"));
        }
    }
    for agent in profile.agents {
        for unit in agent.units {
            if systemd::find_unit(tree, unit)?.is_some() {
                changed.extend(systemd::enable_unit(tree, unit, meta)?);
            }
        }
    }
    changed.sort();
    changed.dedup();
    Ok(changed)
}

/// Appends the modules `/etc/initramfs-tools/modules` does not list yet
/// (initramfs-tools(7): one module per line, `#` comments). Returns whether
/// the file changed.
fn append_initramfs_tools(
    tree: &mut Tree,
    target: Hypervisor,
    root: &[&str],
    meta: &Meta,
) -> Result<bool, DriverError> {
    let name = target.drivers().name;
    let old = read_small(tree, INITRAMFS_TOOLS_MODULES, MAX_CONFIG)?.unwrap_or_default();
    let old = String::from_utf8_lossy(&old).into_owned();
    let listed: BTreeSet<String> = old
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|m| m.replace('-', "_"))
        .collect();
    let add: Vec<&str> = root
        .iter()
        .copied()
        .filter(|m| !listed.contains(*m))
        .collect();
    if add.is_empty() {
        return Ok(false);
    }
    let mut text = old;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# Added by imgbuild: modules the {name} target needs to reach its root filesystem.\n"
    ));
    for m in add {
        text.push_str(m);
        text.push('\n');
    }
    write_file(tree, INITRAMFS_TOOLS_MODULES, text.as_bytes(), meta)
}

/// The `Stage::Installed` modules some installed kernel has as a file; with no
/// kernel in the tree at all, every first alternative.
fn modules_to_load(tree: &Tree, target: Hypervisor) -> Result<Vec<String>, DriverError> {
    let kernels = kernel_versions(tree)
        .iter()
        .map(|v| KernelModules::read(tree, v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for need in target
        .drivers()
        .modules
        .iter()
        .filter(|n| n.stage == Stage::Installed)
    {
        let pick = if kernels.is_empty() {
            need.any_of.first()
        } else {
            need.any_of
                .iter()
                .find(|m| kernels.iter().any(|k| k.installed.contains_key(**m)))
        };
        out.extend(pick.map(|m| m.to_string()));
    }
    Ok(out)
}
