//! What the pipeline hands on: the prepared disks and what they record
//! for the manifest ([`Prepared`], [`Disk`], [`BootRecord`],
//! [`BiosRecord`]), and what a build wrote ([`BuildReport`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgbuild_formats::VirtualDisk;

use super::outputs::OutputInfo;
use crate::layout::LayoutPlan;
use crate::plan::TargetPlan;
use crate::source;
use crate::tree::{boot, drivers};

/// One disk to write and the targets that share it.
pub struct Disk {
    /// The assembled disk.
    pub disk: VirtualDisk,
    /// Targets written from it.
    pub targets: Vec<TargetPlan>,
    /// How it boots (for the manifest).
    pub boot: BootRecord,
}

/// How one disk boots, as the manifest records it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BootRecord {
    /// The targets written from this disk.
    pub targets: Vec<String>,
    /// The firmware modes it boots in: `bios`, `uefi`, `secure-boot` (UEFI
    /// with Secure Boot and Microsoft's keys).
    pub firmware: Vec<String>,
    /// `grub` or `systemd-boot`.
    pub loader: String,
    /// The kernel's path in the OS tree.
    pub kernel: String,
    /// The kernel carries a signature (Secure Boot needs one).
    pub kernel_signed: bool,
    /// The initrd's path in the OS tree.
    pub initrd: Option<String>,
    /// The kernel command line the loader passes.
    pub cmdline: String,
    /// The loader's configuration on the ESP (GRUB's menu, systemd-boot's entry).
    pub config: String,
    /// Every EFI binary on the ESP: where it came from (`tree:…`, or
    /// `host:…` for systemd-boot when the tree lacks it), SHA-256, signature.
    pub efi: Vec<boot::EfiBinary>,
    /// GRUB for BIOS, when the disk boots with BIOS.
    pub bios: Option<BiosRecord>,
}

/// GRUB's BIOS boot code, as the manifest records it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BiosRecord {
    /// The MBR's boot code: GRUB's boot.img from the tree, patched.
    pub boot_code: String,
    /// SHA-256 of the core image in the BIOS boot partition.
    pub core_sha256: String,
    /// Its size in bytes.
    pub core_size: u64,
    /// The GRUB modules built into it.
    pub core_modules: Vec<String>,
    /// Where it reads the menu.
    pub prefix: String,
}

/// Everything checked and assembled, nothing written yet.
pub struct Prepared {
    /// Disks, one per distinct content.
    pub disks: Vec<Disk>,
    /// The partition layout.
    pub layout: LayoutPlan,
    /// Kernel version booted.
    pub kernel_version: String,
    /// Installed packages (dpkg), sorted: name, version, and for an
    /// mmdebstrap source the suite of the archive it came from.
    pub packages: Vec<(String, String, Option<String>)>,
    /// An mmdebstrap source's bootstrap: the archives and their Release
    /// dates, and what was done with the cache.
    pub bootstrap: Option<(
        source::mmdebstrap::BootstrapInfo,
        source::mmdebstrap::CacheAction,
    )>,
    /// Bytes of file data in the root filesystem.
    pub root_min_size: u64,
    /// Per target (plan order): where each module it needs was found.
    pub drivers: Vec<(String, drivers::DriverReport)>,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}

/// What a build wrote.
#[derive(Debug, serde::Serialize)]
pub struct BuildReport {
    /// Output directory.
    pub out_dir: PathBuf,
    /// The images.
    pub outputs: Vec<OutputInfo>,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}
