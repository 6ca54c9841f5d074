//! Disk assembly: one disk per distinct way of booting, each with its ESP,
//! GRUB's BIOS core image and the shared root filesystem.

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgbuild_formats::VirtualDisk;
use sha2::Digest;

use super::error::{BuildError, Result};
use super::records::{BiosRecord, BootRecord, Disk};
use crate::fs::{ext4, fat};
use crate::layout::{self, LayoutPlan};
use crate::plan::{FirmwareModes, Loader, Plan, TargetPlan};
use crate::tree::{boot, Tree};

/// What the boot step needs for one disk: its targets' command line,
/// firmware and Secure Boot requirement.
fn boot_options(
    plan: &Plan,
    layout: &LayoutPlan,
    key: &DiskKey,
    secure_boot: bool,
    epoch: i64,
) -> boot::BootOptions {
    boot::BootOptions {
        loader: match plan.boot.loader {
            Loader::Grub => boot::LoaderKind::Grub,
            Loader::SystemdBoot => boot::LoaderKind::SystemdBoot,
        },
        bios: key.firmware.bios,
        uefi: key.firmware.uefi,
        secure_boot,
        root_fs_uuid: crate::ids::Guid(plan.seed.uuid("ext4.uuid")),
        esp_partition: layout::ESP_ENTRY,
        bios_boot_lba: layout.bios().start / 512,
        entry_id: plan.name.clone(),
        title: plan.name.clone(),
        root_partuuid: layout.root().guid,
        cmdline: key.cmdline.clone(),
        extra_cmdline: key.extra.clone(),
        timeout: 0,
        epoch,
        host_systemd_boot: Some(PathBuf::from(boot::SYSTEMD_BOOT)),
    }
}

/// What makes two targets' disks differ: the command line (the target's,
/// then its hypervisor profile's additions, such as Azure's serial
/// console) and the firmware they boot with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DiskKey {
    cmdline: String,
    extra: String,
    firmware: FirmwareModes,
}

/// One disk per distinct [`DiskKey`]: targets that boot the same way share
/// one disk, assembled once and written in one pass. The root filesystem is
/// the same for all of them (the boot step writes only the ESP, the BIOS
/// boot partition and the MBR's code).
pub(super) fn assemble_disks(
    tree: &Tree,
    plan: &Plan,
    layout: &LayoutPlan,
    root: &VirtualDisk,
    epoch: i64,
) -> Result<Vec<Disk>> {
    // Each disk's boot files and ESP are independent of the others': made
    // side by side, kept in key order.
    std::thread::scope(|scope| {
        let jobs: Vec<_> = disk_keys(plan)
            .into_iter()
            .map(|(key, targets)| {
                scope.spawn(move || assemble_disk(tree, plan, layout, root, epoch, &key, targets))
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The disk of the targets that share `key`.
fn assemble_disk(
    tree: &Tree,
    plan: &Plan,
    layout: &LayoutPlan,
    root: &VirtualDisk,
    epoch: i64,
    key: &DiskKey,
    targets: Vec<TargetPlan>,
) -> Result<Disk> {
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let secure_boot = targets.iter().any(|t| t.secure_boot);
    let opts = boot_options(plan, layout, key, secure_boot, epoch);
    let files = boot::boot_files(tree, &opts).map_err(|source| BuildError::Boot {
        targets: names.join(", "),
        source,
    })?;
    let boot = boot_record(&files, &opts, names);
    let esp = esp(&files, plan, layout, epoch)?;
    let core = bios_core(&files, layout)?;
    let code = files.bios.as_ref().map(|b| &b.boot_code);
    let disk = layout::assemble(layout, &[&core, &esp, root], code)?;
    Ok(Disk {
        disk,
        targets,
        boot,
    })
}

/// The targets grouped by the disk they need.
fn disk_keys(plan: &Plan) -> BTreeMap<DiskKey, Vec<TargetPlan>> {
    let mut by_key: BTreeMap<DiskKey, Vec<TargetPlan>> = BTreeMap::new();
    for t in &plan.targets {
        let key = DiskKey {
            cmdline: t.cmdline.clone(),
            extra: t.hypervisor.platform().cmdline.join(" "),
            firmware: t.firmware,
        };
        by_key.entry(key).or_default().push(t.clone());
    }
    by_key
}

/// How the disk boots, as the manifest records it.
fn boot_record(
    files: &boot::BootFiles,
    opts: &boot::BootOptions,
    names: Vec<String>,
) -> BootRecord {
    let bios = files.bios.as_ref().map(|b| BiosRecord {
        boot_code: format!("tree:{}/boot.img", boot::grub::I386_PC),
        core_sha256: crate::ids::hex(&sha2::Sha256::digest(&b.core)),
        core_size: b.core.len() as u64,
        core_modules: b.modules.clone(),
        prefix: b.prefix.clone(),
    });
    BootRecord {
        targets: names,
        firmware: files.firmware.iter().map(|s| s.to_string()).collect(),
        loader: match files.loader {
            boot::LoaderKind::Grub => "grub".into(),
            boot::LoaderKind::SystemdBoot => "systemd-boot".into(),
        },
        kernel: files.kernel.kernel.0.clone(),
        kernel_signed: files.kernel_signed,
        initrd: files.kernel.initrd.as_ref().map(|i| i.0.clone()),
        cmdline: opts.kernel_cmdline(),
        config: files.config.clone(),
        efi: files.efi.clone(),
        bios,
    }
}

/// The EFI system partition's FAT filesystem.
fn esp(
    files: &boot::BootFiles,
    plan: &Plan,
    layout: &LayoutPlan,
    epoch: i64,
) -> Result<VirtualDisk> {
    let esp_part = layout.esp();
    let fat_opts = fat::FatOptions {
        size: esp_part.size,
        volume_id: plan.seed.u32("esp.volume_id"),
        label: plan.layout.esp_label.clone(),
        epoch,
        hidden_sectors: u32::try_from(esp_part.start / 512).map_err(|source| {
            BuildError::OutOfRange {
                what: "the ESP's start".into(),
                source,
            }
        })?,
    };
    fat::write(&files.esp, &fat_opts).map_err(BuildError::Esp)
}

/// The BIOS boot partition: GRUB's core image when the disk boots BIOS.
fn bios_core(files: &boot::BootFiles, layout: &LayoutPlan) -> Result<VirtualDisk> {
    let bios_part = layout.bios();
    let mut core = imgbuild_formats::VirtualDiskBuilder::new(bios_part.size);
    if let Some(b) = &files.bios {
        if b.core.len() as u64 > bios_part.size {
            return Err(BuildError::CoreTooLarge {
                size: b.core.len() as u64,
                available: bios_part.size,
            });
        }
        core.bytes(0, b.core.clone());
    }
    Ok(core.build()?)
}

/// The root filesystem, laid out to fill the root partition; a tree too
/// large for it says the smallest `[image] size` that fits.
pub(super) fn root_filesystem(
    tree: &Tree,
    plan: &Plan,
    layout: &LayoutPlan,
    epoch: i64,
) -> Result<VirtualDisk> {
    let root_part = layout.root();
    let mut ext4_opts = ext4::Ext4Options::new(
        root_part.size,
        plan.seed.uuid("ext4.uuid"),
        plan.seed.uuid("ext4.hash_seed"),
        epoch,
    );
    ext4_opts.label = plan.layout.root_label.clone();
    match ext4::write(tree, &ext4_opts) {
        Ok(r) => Ok(r),
        Err(ext4::Ext4Error::TooSmall { needed, .. }) => Err(BuildError::TooLarge {
            needed,
            available: root_part.size,
            min_disk_size: layout::min_disk_size(plan.layout.esp_size, needed),
        }),
        Err(e) => Err(BuildError::RootFilesystem(e)),
    }
}
