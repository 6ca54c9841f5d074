//! Configuring the tree: the recipe's `[config]` (hostname, users, files,
//! network, services, cloud-init), the drivers each target's platform
//! needs, and the golden-image steps (growing the root, fstab, hygiene).

use super::error::{BuildError, Result};
use super::read_os::BootstrapRecord;
use crate::layout::LayoutPlan;
use crate::plan::{NetworkPlan, Plan};
use crate::tree::{boot, config, drivers, systemd, Meta, Timestamp, Tree};

pub(super) fn configure(tree: &mut Tree, plan: &Plan, epoch: i64) -> Result<()> {
    let c = &plan.config;
    if let Some(h) = &c.hostname {
        config::set_hostname(tree, h, epoch)?;
    }
    if let Some(tz) = &c.timezone {
        config::set_timezone(tree, tz, epoch)?;
    }
    if let Some(l) = &c.locale {
        config::set_locale(tree, l, epoch)?;
    }
    let users: Vec<_> = c.users.iter().map(|u| u.to_spec()).collect();
    config::add_users(tree, &users, epoch)?;
    let files = c
        .files
        .iter()
        .map(|f| {
            f.to_spec(&plan.inputs).map_err(|e| {
                input_error(
                    format!("the content of {}", f.path),
                    f.content.as_ref(),
                    &plan.inputs,
                    e,
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    config::apply_files(tree, &files, epoch)?;
    if c.network == NetworkPlan::Dhcp {
        config::configure_dhcp(tree, epoch)?;
    }
    let meta = Meta {
        mode: 0o644,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    };
    let step = |context: String| {
        move |e: systemd::SystemdError| BuildError::ConfigStep {
            context,
            source: Box::new(e),
        }
    };
    for unit in &c.services.enable {
        systemd::enable_unit(tree, unit, &meta).map_err(step(format!("cannot enable {unit}")))?;
    }
    for unit in &c.services.disable {
        systemd::disable_unit(tree, unit).map_err(step(format!("cannot disable {unit}")))?;
    }
    for unit in &c.services.mask {
        systemd::mask_unit(tree, unit, &meta).map_err(step(format!("cannot mask {unit}")))?;
    }
    if let Some(ci) = &c.cloud_init {
        let seed = ci
            .to_nocloud(&plan.inputs)
            .map_err(|e| BuildError::ConfigStep {
                context: "cannot read the cloud-init documents".into(),
                source: Box::new(e),
            })?;
        config::write_nocloud(tree, &seed, epoch)?;
    }
    Ok(())
}

/// A file input's read error: [`BuildError::MissingInput`] when the file
/// is gone, else a [`BuildError::ConfigStep`].
fn input_error(
    what: String,
    content: Option<&crate::plan::Content>,
    inputs: &[crate::plan::Input],
    e: std::io::Error,
) -> BuildError {
    let path = match content {
        Some(crate::plan::Content::File(i)) => inputs.get(*i).map(|i| i.path.clone()),
        _ => None,
    };
    match path {
        Some(path) if e.kind() == std::io::ErrorKind::NotFound => {
            BuildError::MissingInput { what, path }
        }
        _ => BuildError::ConfigStep {
            context: format!("cannot read {what}"),
            source: Box::new(e),
        },
    }
}

/// Checks every target's drivers. The kernel's module lists are read and the
/// initramfs is unpacked once, whatever the number of targets.
pub(super) fn check_drivers(
    tree: &Tree,
    plan: &Plan,
    kernel: &boot::Kernel,
) -> Result<Vec<(String, drivers::DriverReport)>> {
    let version = &kernel.version;
    let modules =
        drivers::KernelModules::read(tree, version).map_err(|source| BuildError::Kernel {
            context: format!("cannot read the modules of kernel {version}"),
            source,
        })?;
    let initramfs = match &kernel.initrd {
        Some((path, data)) => {
            let listing = crate::tree::cpio::list(data).map_err(|e| BuildError::Kernel {
                context: format!("cannot read the initramfs {path}"),
                source: drivers::DriverError::Initramfs(e),
            })?;
            drivers::initramfs_modules(&listing, version)
        }
        None => Default::default(),
    };
    let mut reports = Vec::new();
    for t in &plan.targets {
        let report =
            drivers::check_modules(&modules, &initramfs, t.hypervisor).map_err(|source| {
                BuildError::Drivers {
                    target: t.name.clone(),
                    kernel: version.clone(),
                    source,
                }
            })?;
        reports.push((t.name.clone(), report));
    }
    Ok(reports)
}

pub(super) fn write_driver_config(tree: &mut Tree, plan: &Plan, epoch: i64) -> Result<()> {
    let meta = Meta {
        mode: 0o644,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    };
    let mut seen = Vec::new();
    // Platforms that need the same drivers (Hyper-V's two generations)
    // share one configuration, written once.
    for t in &plan.targets {
        let name = t.hypervisor.drivers().name;
        if !seen.contains(&name) {
            seen.push(name);
            drivers::write_config(tree, t.hypervisor, &meta).map_err(|e| {
                BuildError::ConfigStep {
                    context: format!("cannot write the driver configuration for {}", t.name),
                    source: Box::new(e),
                }
            })?;
        }
    }
    Ok(())
}

/// The golden-image steps once the drivers are in: growing the root on
/// first boot (when the plan asks), `/etc/fstab` naming the partitions by
/// GUID, and the hygiene that leaves no host or build state behind.
pub(super) fn finish_tree(
    tree: &mut Tree,
    plan: &Plan,
    layout: &LayoutPlan,
    epoch: i64,
) -> Result<()> {
    let (esp_part, root_part) = (layout.esp(), layout.root());
    let mut root_entry = config::FstabEntry::root_ext4(&root_part.guid.to_string());
    if plan.layout.grow_root {
        config::grow_root_on_boot(tree, &root_part.type_guid.to_string(), epoch).map_err(|e| {
            BuildError::ConfigStep {
                context: "cannot set up growing the root on first boot".into(),
                source: Box::new(e),
            }
        })?;
        root_entry.options.push_str(",x-systemd.growfs");
    }
    config::write_fstab(
        tree,
        &[
            root_entry,
            config::FstabEntry::esp(&esp_part.guid.to_string()),
        ],
        epoch,
    )?;
    config::clean_for_golden_image(tree, &config::Hygiene::default(), epoch)?;
    Ok(())
}

/// The installed packages (dpkg), sorted: name, version, and for an
/// mmdebstrap source the suite of the archive each came from.
pub(super) fn installed_packages(
    tree: &Tree,
    bootstrap: Option<&BootstrapRecord>,
) -> Vec<(String, String, Option<String>)> {
    let origin = |name: &str, version: &str| {
        let (info, _) = bootstrap?;
        info.origins.get(&format!("{name} {version}")).cloned()
    };
    config::installed_packages(tree)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| {
            let o = origin(&n, &v);
            (n, v, o)
        })
        .collect()
}
