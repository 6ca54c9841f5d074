//! The platforms a target can boot on, one row each: every fact about a
//! platform that some layer needs (its name in recipes and manifests, its
//! default format and firmware, the firmware it can boot at all, the bus
//! QEMU puts its boot disk on, the drivers and agents it needs, the kernel
//! command-line words of its console). Adding a platform is adding a row
//! to [`PLATFORMS`].
//!
//! ```text
//! Hypervisor ─► Platform { name, format, only_formats, firmware, secure_boot,
//!                          only_firmware, qemu_bus { bios, uefi },
//!                          drivers: Drivers { name, modules, agents }, cmdline }
//! ```
//! Read by `recipe::resolve` (defaults, what is refused), `tree::drivers`
//! (what the kernel must have), the pipeline (the console words that make
//! disks differ) and `run::test` (how QEMU attaches the disk). A leaf: it
//! imports nothing of ours, so every layer can.

use schemars::JsonSchema;
use serde::Deserialize;

/// Which firmware a target's disk boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// UEFI only.
    Uefi,
    /// Legacy BIOS only.
    Bios,
    /// Both, from the same disk (BIOS boot code and an EFI loader).
    Hybrid,
}

/// A hypervisor profile: which drivers and guest agent the image needs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Hypervisor {
    /// QEMU/KVM: virtio drivers, qemu-guest-agent.
    Kvm,
    /// Microsoft Hyper-V, Generation 2 (UEFI, Secure Boot): hv_* drivers, hyperv-daemons.
    Hyperv,
    /// Microsoft Hyper-V, Generation 1 (BIOS, the boot disk on IDE): hv_* drivers, hyperv-daemons.
    #[serde(rename = "hyperv-gen1")]
    HypervGen1,
    /// Azure (Hyper-V underneath; Generation 1 and 2): hv_* drivers, fixed VHD sized to whole MiB.
    Azure,
    /// VMware vSphere, ESXi, Workstation: vmw_pvscsi, vmxnet3, vmw_balloon,
    /// open-vm-tools; an OVA by default.
    Vmware,
    /// Google Compute Engine: virtio-scsi, virtio-net, gve, the serial
    /// console on ttyS0; `disk.raw` in a gzip'd tar, sized to whole GiB.
    Gce,
    /// KubeVirt: virtio, qemu-guest-agent; a containerDisk (OCI archive).
    Kubevirt,
    /// Amazon EC2: the boot disk on NVMe (EBS on Nitro), the ENA network,
    /// the serial console on ttyS0; a streamOptimized VMDK by default.
    Aws,
}

/// An output format as the recipe names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum FormatName {
    Qcow2,
    Vhdx,
    Vhd,
    Raw,
    Vmdk,
    /// VMware OVA: OVF descriptor, manifest and a streamOptimized VMDK.
    Ova,
    /// Google Compute Engine: `disk.raw` in a gzip'd GNU tar.
    #[serde(rename = "tar.gz")]
    TarGz,
    /// KubeVirt containerDisk: an OCI image archive holding the qcow2.
    #[serde(rename = "oci-archive")]
    OciArchive,
}

/// How the disk is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// virtio-blk (KVM's default).
    Virtio,
    /// The machine's IDE controller (PIIX on `pc`, AHCI on `q35`): how
    /// Hyper-V Generation 1 and Azure Generation 1 attach the boot disk.
    Ide,
    /// A disk on a virtio-scsi controller (Compute Engine's boot disk).
    Scsi,
    /// A disk on VMware's paravirtual SCSI controller (`pvscsi`), where
    /// the OVA puts it.
    Pvscsi,
    /// An NVMe controller with the disk as its namespace: how EC2's Nitro
    /// instances see EBS volumes.
    Nvme,
}

impl Bus {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Ide => "ide",
            Bus::Scsi => "scsi",
            Bus::Pvscsi => "pvscsi",
            Bus::Nvme => "nvme",
        }
    }
}

/// Everything imgbuild knows about one platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Its row's key.
    pub hypervisor: Hypervisor,
    /// The name a recipe and `manifest.json` use (`hyperv-gen1`).
    pub name: &'static str,
    /// The format a target gets when its recipe names none.
    pub format: FormatName,
    /// The only formats the platform imports, when it does not take every
    /// one, and what to tell a recipe asking for another.
    pub only_formats: Option<OnlyFormats>,
    /// The firmware its VMs boot with by default.
    pub firmware: Firmware,
    /// Whether that default includes Secure Boot (for a UEFI boot).
    pub secure_boot: bool,
    /// The only firmware it boots at all, and the help for a recipe asking
    /// for another.
    pub only_firmware: Option<(Firmware, &'static str)>,
    /// How `imgbuild test` attaches the boot disk under QEMU, per firmware.
    pub qemu_bus: QemuBus,
    /// What the guest needs: modules (checked against the kernel) and agents.
    pub drivers: &'static Drivers,
    /// Kernel command-line words the platform adds (its console).
    pub cmdline: &'static [&'static str],
}

/// The formats a platform imports, and the error and help for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnlyFormats {
    /// What it takes; the platform's default [`Platform::format`] among them.
    pub formats: &'static [FormatName],
    /// The error, at the recipe's `format`.
    pub message: &'static str,
    /// What to write instead.
    pub help: &'static str,
}

/// The bus QEMU puts the boot disk on, per firmware mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuBus {
    /// Under SeaBIOS.
    pub bios: Bus,
    /// Under OVMF (with or without Secure Boot).
    pub uefi: Bus,
}

/// What a platform needs from the guest. Platforms that need the same share
/// one (Hyper-V's two generations); its `name` names the configuration
/// files written for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drivers {
    /// The profile's name (`hyperv` for both Hyper-V generations).
    pub name: &'static str,
    /// Kernel modules.
    pub modules: &'static [ModuleNeed],
    /// Guest agents (enabled if installed; never installed by imgbuild).
    pub agents: &'static [Agent],
}

const VIRTIO: QemuBus = QemuBus {
    bios: Bus::Virtio,
    uefi: Bus::Virtio,
};
/// Generation 1 attaches its boot disk on IDE; a UEFI boot (Generation 2)
/// on virtio stands in for the synthetic SCSI.
const IDE_FOR_BIOS: QemuBus = QemuBus {
    bios: Bus::Ide,
    uefi: Bus::Virtio,
};

/// Every platform, one row each, in [`Hypervisor::ALL`]'s order.
pub const PLATFORMS: [Platform; 8] = [
    Platform {
        hypervisor: Hypervisor::Kvm,
        name: "kvm",
        format: FormatName::Qcow2,
        only_formats: None,
        // KVM hosts (QEMU, libvirt, Proxmox, OpenStack) default to SeaBIOS
        // and offer OVMF.
        firmware: Firmware::Hybrid,
        secure_boot: false,
        only_firmware: None,
        qemu_bus: VIRTIO,
        drivers: &KVM,
        cmdline: &[],
    },
    Platform {
        hypervisor: Hypervisor::Hyperv,
        name: "hyperv",
        format: FormatName::Vhdx,
        only_formats: None,
        // Generation 2 is UEFI with Secure Boot on.
        firmware: Firmware::Uefi,
        secure_boot: true,
        only_firmware: Some((Firmware::Uefi, "Hyper-V Generation 2 boots UEFI only; for BIOS use hypervisor = \"hyperv-gen1\" (Generation 1)")),
        qemu_bus: IDE_FOR_BIOS,
        drivers: &HYPERV,
        cmdline: &[],
    },
    Platform {
        hypervisor: Hypervisor::HypervGen1,
        name: "hyperv-gen1",
        format: FormatName::Vhdx,
        only_formats: None,
        firmware: Firmware::Bios,
        secure_boot: false,
        only_firmware: Some((Firmware::Bios, "Hyper-V Generation 1 boots BIOS only; for UEFI use hypervisor = \"hyperv\" (Generation 2)")),
        qemu_bus: IDE_FOR_BIOS,
        drivers: &HYPERV,
        cmdline: &[],
    },
    Platform {
        hypervisor: Hypervisor::Azure,
        name: "azure",
        format: FormatName::Vhd,
        only_formats: Some(OnlyFormats {
            formats: &[FormatName::Vhd],
            message: "Azure takes fixed VHD images only",
            help: "use format = \"vhd\" or leave it out",
        }),
        // One VHD for Generation 1 and 2, Trusted Launch (Secure Boot) being
        // the default for new Generation 2 VMs.
        firmware: Firmware::Hybrid,
        secure_boot: true,
        only_firmware: None,
        qemu_bus: IDE_FOR_BIOS,
        drivers: &AZURE,
        // Azure's "Prepare Linux for Azure images": serial console on ttyS0
        // for boot diagnostics. Not its `rootdelay=300`: Debian's
        // initramfs-tools (0.142, /usr/share/initramfs-tools/init line
        // 231) *sleeps* that long on every boot, before it even looks
        // for the root (measured: 390 s to the login prompt under QEMU
        // instead of 88 s); it waits for the root device by itself.
        cmdline: &["console=ttyS0,115200n8", "earlyprintk=ttyS0,115200"],
    },
    Platform {
        hypervisor: Hypervisor::Vmware,
        name: "vmware",
        format: FormatName::Ova,
        only_formats: None,
        // vSphere creates new VMs with EFI (the OVA says so) and still
        // offers BIOS; Secure Boot is a per-VM choice, off by default.
        firmware: Firmware::Hybrid,
        secure_boot: false,
        only_firmware: None,
        // Debian's OVMF has no PVSCSI driver (its shell finds no disk), so
        // only SeaBIOS boots from PVSCSI, which proves the guest's
        // vmw_pvscsi; UEFI boots prove the EFI chain on virtio.
        qemu_bus: QemuBus {
            bios: Bus::Pvscsi,
            uefi: Bus::Virtio,
        },
        drivers: &VMWARE,
        cmdline: &[],
    },
    Platform {
        hypervisor: Hypervisor::Gce,
        name: "gce",
        format: FormatName::TarGz,
        only_formats: Some(OnlyFormats {
            formats: &[FormatName::TarGz, FormatName::Raw],
            message: "Compute Engine imports a raw disk in a tar.gz",
            help: "use format = \"tar.gz\" or leave it out",
        }),
        // GCE boots UEFI images (Shielded VM, Secure Boot optional and off
        // by default) and legacy BIOS ones.
        firmware: Firmware::Hybrid,
        secure_boot: false,
        only_firmware: None,
        qemu_bus: QemuBus {
            bios: Bus::Scsi,
            uefi: Bus::Scsi,
        },
        drivers: &GCE,
        // Compute Engine's serial console (port 1) is what
        // `gcloud compute instances get-serial-port-output` shows.
        cmdline: &["console=ttyS0,115200n8"],
    },
    Platform {
        hypervisor: Hypervisor::Kubevirt,
        name: "kubevirt",
        format: FormatName::OciArchive,
        only_formats: None,
        // KubeVirt boots SeaBIOS unless the VM asks for EFI.
        firmware: Firmware::Hybrid,
        secure_boot: false,
        only_firmware: None,
        qemu_bus: VIRTIO,
        drivers: &KUBEVIRT,
        cmdline: &[],
    },
    Platform {
        hypervisor: Hypervisor::Aws,
        name: "aws",
        // `aws ec2 import-snapshot` (and `import-image`) take a disk as
        // `Format=VMDK|VHD|RAW` (EC2 API `SnapshotDiskContainer`,
        // `ImageDiskContainer`), the VMDK streamOptimized (VM
        // Import/Export user guide, image formats). The streamOptimized
        // VMDK is the one of the three that is compressed, so it is the
        // smallest file to upload to S3 (the shipped recipe: about the
        // OVA's 191 MiB, where a raw or fixed VHD disk is its whole 4 GiB).
        format: FormatName::Vmdk,
        only_formats: Some(OnlyFormats {
            formats: &[FormatName::Vmdk, FormatName::Vhd, FormatName::Raw],
            message: "EC2 imports (import-snapshot, import-image) streamOptimized VMDK, VHD and raw disks only",
            help: "use format = \"vmdk\" (the default), \"vhd\" or \"raw\", or leave it out",
        }),
        // An AMI's boot mode is `legacy-bios`, `uefi` or `uefi-preferred`
        // (EC2 User Guide, AMI boot modes): one disk serves all three.
        // Secure Boot is off by default: an AMI registered without
        // `--uefi-data` starts its instances in Setup Mode, with no keys
        // (EC2 User Guide, UEFI Secure Boot). The chain is signed all the
        // same, so an AMI registered with Microsoft's keys boots it.
        firmware: Firmware::Hybrid,
        secure_boot: false,
        only_firmware: None,
        qemu_bus: QemuBus {
            bios: Bus::Nvme,
            uefi: Bus::Nvme,
        },
        drivers: &AWS,
        // EC2's serial console (`aws ec2 get-console-output`, EC2 Serial
        // Console) is the first serial port.
        cmdline: &["console=ttyS0,115200n8"],
    },
];

impl Hypervisor {
    /// Every platform, in a fixed order.
    pub const ALL: [Hypervisor; 8] = [
        Hypervisor::Kvm,
        Hypervisor::Hyperv,
        Hypervisor::HypervGen1,
        Hypervisor::Azure,
        Hypervisor::Vmware,
        Hypervisor::Gce,
        Hypervisor::Kubevirt,
        Hypervisor::Aws,
    ];

    /// Its row of [`PLATFORMS`].
    pub fn platform(self) -> &'static Platform {
        let row = &PLATFORMS[self as usize];
        debug_assert_eq!(row.hypervisor, self, "PLATFORMS is in declaration order");
        row
    }

    /// The name a recipe uses.
    pub fn name(self) -> &'static str {
        self.platform().name
    }

    /// The platform a recipe calls `name`.
    pub fn from_name(name: &str) -> Option<Hypervisor> {
        Hypervisor::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The firmware the platform boots its VMs with by default, and
    /// whether that includes Secure Boot.
    pub fn default_firmware(self) -> (Firmware, bool) {
        let p = self.platform();
        (p.firmware, p.secure_boot)
    }

    /// What the guest needs on this platform.
    pub fn drivers(self) -> &'static Drivers {
        self.platform().drivers
    }
}

impl std::fmt::Display for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// The drivers and agents each platform needs.

/// Where a module must be for the target to work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Needed to reach the root filesystem: built in, or in the initramfs.
    Initramfs,
    /// Needed once the system runs: built in, or installed under `/lib/modules/<ver>`.
    Installed,
}

/// One module a target needs; any one of `any_of` will do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleNeed {
    /// Alternative module names (normalised: `_`, no extension).
    pub any_of: &'static [&'static str],
    /// Where it must be.
    pub stage: Stage,
    /// What it drives, for messages.
    pub what: &'static str,
}

/// A guest agent: a package and the units it ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agent {
    /// Debian package name.
    pub package: &'static str,
    /// Its systemd units, enabled when their unit file is present.
    pub units: &'static [&'static str],
}

const fn need(any_of: &'static [&'static str], stage: Stage, what: &'static str) -> ModuleNeed {
    ModuleNeed {
        any_of,
        stage,
        what,
    }
}

const KVM_MODULES: &[ModuleNeed] = &[
    need(&["virtio_pci"], Stage::Initramfs, "virtio PCI transport"),
    need(&["virtio_blk"], Stage::Initramfs, "virtio-blk disk"),
    need(
        &["virtio_scsi"],
        Stage::Initramfs,
        "virtio-scsi disk controller",
    ),
    need(
        &["sd_mod"],
        Stage::Initramfs,
        "SCSI disk (/dev/sdX behind virtio-scsi)",
    ),
    need(&["virtio_net"], Stage::Installed, "virtio network"),
    need(
        &["virtio_console"],
        Stage::Installed,
        "virtio console and guest-agent channel",
    ),
];

const HYPERV_MODULES: &[ModuleNeed] = &[
    need(&["hv_vmbus"], Stage::Initramfs, "Hyper-V VMBus"),
    need(
        &["hv_storvsc"],
        Stage::Initramfs,
        "Hyper-V synthetic SCSI disk",
    ),
    need(
        &["sd_mod"],
        Stage::Initramfs,
        "SCSI disk (/dev/sdX behind storvsc)",
    ),
    need(
        &["hv_netvsc"],
        Stage::Installed,
        "Hyper-V synthetic network",
    ),
    need(
        &["hv_utils"],
        Stage::Installed,
        "Hyper-V integration services (shutdown, time sync, KVP)",
    ),
    need(&["hyperv_keyboard"], Stage::Installed, "Hyper-V keyboard"),
    need(&["hid_hyperv"], Stage::Installed, "Hyper-V mouse"),
    need(
        &["hyperv_drm", "hyperv_fb"],
        Stage::Installed,
        "Hyper-V synthetic video",
    ),
];

/// Azure provisions through a UDF-formatted virtual DVD ("Prepare Linux for
/// Azure images": kernel support for mounting UDF is required).
const AZURE_MODULES: &[ModuleNeed] = &[
    HYPERV_MODULES[0],
    HYPERV_MODULES[1],
    HYPERV_MODULES[2],
    HYPERV_MODULES[3],
    HYPERV_MODULES[4],
    HYPERV_MODULES[5],
    HYPERV_MODULES[6],
    HYPERV_MODULES[7],
    need(&["udf"], Stage::Installed, "UDF provisioning media"),
];

/// VMware's paravirtual devices: the PVSCSI controller the OVA puts the
/// disk on, the vmxnet3 NIC it declares, and the memory balloon.
const VMWARE_MODULES: &[ModuleNeed] = &[
    need(
        &["vmw_pvscsi"],
        Stage::Initramfs,
        "VMware paravirtual SCSI disk controller",
    ),
    need(
        &["sd_mod"],
        Stage::Initramfs,
        "SCSI disk (/dev/sdX behind PVSCSI)",
    ),
    need(&["vmxnet3"], Stage::Installed, "VMware vmxnet3 network"),
    need(&["vmw_balloon"], Stage::Installed, "VMware memory balloon"),
];

/// Compute Engine's virtual devices: the boot disk on virtio-scsi, the
/// virtio-net NIC and gVNIC (`gve`) for the machine types that use it.
const GCE_MODULES: &[ModuleNeed] = &[
    need(&["virtio_pci"], Stage::Initramfs, "virtio PCI transport"),
    need(
        &["virtio_scsi"],
        Stage::Initramfs,
        "virtio-scsi disk controller",
    ),
    need(
        &["sd_mod"],
        Stage::Initramfs,
        "SCSI disk (/dev/sdX behind virtio-scsi)",
    ),
    need(&["virtio_net"], Stage::Installed, "virtio network"),
    need(&["gve"], Stage::Installed, "Google Virtual NIC (gVNIC)"),
];

/// EC2's Nitro devices: EBS volumes (the boot disk too) are NVMe
/// namespaces, and the network is the Elastic Network Adapter, without
/// which an AMI does not launch on current instance types ("Enhanced
/// networking with ENA is required"). The Debian cloud kernel builds
/// `nvme` in and ships `ena` as a module. ENA is the network, as
/// `virtio_net` and `gve` are for the others: needed once booted, not to
/// reach the root.
const AWS_MODULES: &[ModuleNeed] = &[
    need(&["nvme"], Stage::Initramfs, "NVMe disk (EBS volumes)"),
    need(&["ena"], Stage::Installed, "Elastic Network Adapter (ENA)"),
];

/// `qemu-guest-agent.service` has no [Install] section: udev starts it when
/// the `org.qemu.guest_agent.0` port appears, so enabling it changes nothing.
const QEMU_GA: Agent = Agent {
    package: "qemu-guest-agent",
    units: &["qemu-guest-agent.service"],
};
/// Debian's hyperv-daemons ships these three (fcopy was dropped upstream in 6.10+).
const HYPERV_DAEMONS: Agent = Agent {
    package: "hyperv-daemons",
    units: &[
        "hv-kvp-daemon.service",
        "hv-vss-daemon.service",
        "hv-fcopy-daemon.service",
    ],
};
/// Debian's open-vm-tools: the tools daemon and the guest authentication service.
const OPEN_VM_TOOLS: Agent = Agent {
    package: "open-vm-tools",
    units: &["open-vm-tools.service", "vgauth.service"],
};
/// Google's guest agent (`google-guest-agent`): accounts, metadata, network.
const GOOGLE_GUEST_AGENT: Agent = Agent {
    package: "google-guest-agent",
    units: &["google-guest-agent.service"],
};
/// Debian's `waagent` package (the Azure Linux Agent).
const WAAGENT: Agent = Agent {
    package: "waagent",
    units: &["walinuxagent.service"],
};

const KVM: Drivers = Drivers {
    name: "kvm",
    modules: KVM_MODULES,
    agents: &[QEMU_GA],
};
const HYPERV: Drivers = Drivers {
    name: "hyperv",
    modules: HYPERV_MODULES,
    agents: &[HYPERV_DAEMONS],
};
const AZURE: Drivers = Drivers {
    name: "azure",
    modules: AZURE_MODULES,
    agents: &[WAAGENT, HYPERV_DAEMONS],
};
const VMWARE: Drivers = Drivers {
    name: "vmware",
    modules: VMWARE_MODULES,
    agents: &[OPEN_VM_TOOLS],
};
const GCE: Drivers = Drivers {
    name: "gce",
    modules: GCE_MODULES,
    agents: &[GOOGLE_GUEST_AGENT],
};
const KUBEVIRT: Drivers = Drivers {
    name: "kubevirt",
    modules: KVM_MODULES,
    agents: &[QEMU_GA],
};
/// No agent: EC2 needs none for a static guest (its provisioning, cloud-init
/// with the Ec2 datasource, is a later step of issue 21).
const AWS: Drivers = Drivers {
    name: "aws",
    modules: AWS_MODULES,
    agents: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A platform's default format is one it imports, or every recipe
    /// leaving `format` out would be refused.
    #[test]
    fn every_default_format_is_among_the_formats_its_platform_imports() {
        for p in &PLATFORMS {
            if let Some(only) = p.only_formats {
                assert!(only.formats.contains(&p.format), "{}", p.name);
            }
        }
        assert!(Hypervisor::Aws.platform().only_formats.is_some());
    }
}
