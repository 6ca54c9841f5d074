//! A synthetic Debian-like root filesystem: a stand-in kernel, its
//! initramfs and module lists, the account files, a stand-in systemd-boot.
//! Enough for every step before the boot to run, and for the driver check
//! to find (or miss) `hv_storvsc`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{require_tool, run_ok};

pub const VERSION: &str = "6.1.0-99-test";

/// Built into the synthetic kernel (`modules.builtin`).
const BUILTIN: &[&str] = &[
    "kernel/drivers/hv/hv_vmbus.ko",
    "kernel/drivers/scsi/sd_mod.ko",
];

/// In the synthetic initramfs (and installed); `hv_storvsc` only with `storvsc`.
const IN_INITRAMFS: &[&str] = &[
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/scsi/virtio_scsi.ko",
];
const STORVSC: &str = "kernel/drivers/scsi/hv_storvsc.ko";

/// Installed under /lib/modules only (always, `hv_storvsc` included: a
/// module on disk does not help a driver needed to mount the root).
const INSTALLED_ONLY: &[&str] = &[
    STORVSC,
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/char/virtio_console.ko",
    "kernel/drivers/net/hyperv/hv_netvsc.ko",
    "kernel/drivers/hv/hv_utils.ko",
    "kernel/drivers/input/serio/hyperv-keyboard.ko",
    "kernel/drivers/hid/hid-hyperv.ko",
    "kernel/drivers/gpu/drm/hyperv/hyperv_drm.ko",
    "kernel/fs/udf/udf.ko",
];

/// `modules.dep`: the virtio transports need virtio_ring.
const MODULES_DEP: &str = "kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/scsi/hv_storvsc.ko:\n";

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

fn sh(script: &str) {
    run_ok(Command::new("sh").arg("-c").arg(script));
}

pub fn tools() -> bool {
    ["cpio", "gzip", "tar"].iter().all(|t| require_tool(t))
}

/// Makes `dir/rootfs.tar`: a kernel, its gzip newc initramfs (with
/// `hv_storvsc` only when `storvsc`), its module directory, systemd-boot and
/// the account files the configuration step reads.
pub fn synthetic_rootfs(dir: &Path, storvsc: bool) -> PathBuf {
    let initramfs: &[&str] = if storvsc { &[STORVSC] } else { &[] };
    synthetic_rootfs_with(dir, initramfs, &[])
}

/// [`synthetic_rootfs`] without `hv_storvsc` in the initramfs, with the
/// modules `initramfs` (paths under `/lib/modules/<version>/`) in the
/// initramfs and installed, and `installed` installed only.
pub fn synthetic_rootfs_with(dir: &Path, initramfs: &[&str], installed: &[&str]) -> PathBuf {
    let root = dir.join("root");
    let initrd = dir.join("initrd");
    let moddir = format!("lib/modules/{VERSION}");
    let mut in_initramfs: Vec<&str> = IN_INITRAMFS.to_vec();
    in_initramfs.extend(initramfs);
    let initramfs = in_initramfs;
    for m in &initramfs {
        write(
            &initrd.join(&moddir).join(m),
            format!("module {m}\n").as_bytes(),
        );
    }
    write(&initrd.join("init"), b"#!/bin/sh\n");
    for m in initramfs.iter().chain(INSTALLED_ONLY).chain(installed) {
        write(
            &root.join(&moddir).join(m),
            format!("module {m}\n").as_bytes(),
        );
    }
    write(
        &root.join(&moddir).join("modules.builtin"),
        format!("{}\n", BUILTIN.join("\n")).as_bytes(),
    );
    write(
        &root.join(&moddir).join("modules.dep"),
        MODULES_DEP.as_bytes(),
    );
    write(
        &root.join(format!("boot/vmlinuz-{VERSION}")),
        b"not a real kernel",
    );
    fs::create_dir_all(root.join("boot")).expect("mkdir boot");
    sh(&format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio --quiet -o -H newc | gzip -9n > '{}'",
        initrd.display(),
        root.join(format!("boot/initrd.img-{VERSION}")).display()
    ));
    write(
        &root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        b"MZ not really systemd-boot",
    );
    write(&root.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n");
    write(&root.join("etc/group"), b"root:x:0:\nsudo:x:27:\n");
    write(&root.join("etc/shadow"), b"root:*:19000:0:99999:7:::\n");
    write(&root.join("etc/gshadow"), b"root:*::\nsudo:*::\n");
    write(
        &root.join("etc/os-release"),
        b"ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"synthetic\"\n",
    );
    fs::create_dir_all(root.join("root")).expect("mkdir /root");
    let tar = dir.join("rootfs.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg("."),
    );
    tar
}
