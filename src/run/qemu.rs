//! One image in QEMU, in one firmware mode: the machine, the firmware files
//! (found on the host), a throw-away copy of the firmware variables, the
//! disk opened read-only with writes going to a discarded overlay
//! (`snapshot=on`), and the accelerator.
//!
//! | mode | machine | firmware files (Debian package `ovmf`) |
//! |---|---|---|
//! | `bios` | `pc` (SeaBIOS, QEMU's default) | none |
//! | `uefi` | `q35` | `OVMF_CODE_4M.fd`, a copy of `OVMF_VARS_4M.fd` |
//! | `secure-boot` | `q35,smm=on`, pflash `secure=on` | `OVMF_CODE_4M.secboot.fd`, a copy of `OVMF_VARS_4M.ms.fd` (Microsoft's keys enrolled, Secure Boot on) |
//!
//! At most as many guests as the machine has CPUs run at once across every
//! process that uses [`Slot`] (`imgbuild test` runs, the project's own
//! tests): each boot holds one of that many lock files in the temp dir.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use crate::platform::Bus;

/// The emulator.
pub const QEMU: &str = "qemu-system-x86_64";
/// Where Debian's `ovmf` package puts its firmware.
pub const OVMF_DIR: &str = "/usr/share/OVMF";

/// How the machine starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// SeaBIOS on the `pc` machine: what QEMU, libvirt, Proxmox and
    /// OpenStack use unless told otherwise.
    Bios,
    /// OVMF on q35 without Secure Boot.
    Uefi,
    /// OVMF on q35 with Secure Boot enforced and Microsoft's keys enrolled
    /// (Hyper-V Generation 2 with the UEFI CA template, Azure Trusted Launch).
    SecureBoot,
}

impl Mode {
    /// Its name in `manifest.json` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bios => "bios",
            Mode::Uefi => "uefi",
            Mode::SecureBoot => "secure-boot",
        }
    }

    /// The mode named `name` (`bios`, `uefi`, `secure-boot`).
    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::Bios, Mode::Uefi, Mode::SecureBoot]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// (code, variables template) file names, none for BIOS.
    fn ovmf(self) -> Option<(&'static str, &'static str)> {
        match self {
            Mode::Bios => None,
            Mode::Uefi => Some(("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")),
            Mode::SecureBoot => Some(("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// The host's KVM.
    Kvm,
    /// QEMU's own emulation: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` can be opened and the host is not itself a
    /// virtual machine (nested KVM often hangs mid-boot: GRUB stops at
    /// "GRUB loading.." on such hosts), else TCG; with why, for stderr.
    pub fn detect() -> (Accel, String) {
        let kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm");
        if let Err(e) = kvm {
            return (Accel::Tcg, format!("TCG (no usable /dev/kvm: {e})"));
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let guest = cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
        if guest {
            return (
                Accel::Tcg,
                "TCG (this host is a virtual machine, where nested KVM is unreliable; --accel kvm to try it)"
                    .into(),
            );
        }
        (Accel::Kvm, "KVM".into())
    }

    /// Its name for QEMU's `accel=` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A QEMU command that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A firmware file is missing.
    #[error("{path} is missing: install Debian's `{package}` package (apt install {package})")]
    Firmware {
        /// The file.
        path: PathBuf,
        /// The package that has it.
        package: &'static str,
    },
    /// The image's format is not one QEMU reads.
    #[error("cannot tell the format of {0}: use --format raw|qcow2|vhdx|vhd")]
    Format(PathBuf),
    /// Copying the variable store failed.
    #[error("cannot copy the firmware variables {path}: {source}")]
    Vars {
        /// The template.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One boot's machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The image.
    pub image: PathBuf,
    /// Its format as imgbuild names it (`raw`, `qcow2`, `vhdx`, `vhd`).
    pub format: String,
    /// Firmware mode.
    pub mode: Mode,
    /// Disk bus.
    pub bus: Bus,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub smp: u32,
    /// The accelerator.
    pub accel: Accel,
    /// More QEMU arguments, appended.
    pub extra: Vec<String>,
    /// Where OVMF's files are.
    pub ovmf_dir: PathBuf,
    /// The disk lies at this (offset, length) inside `image` (a package:
    /// OVA, OCI archive), read in place through QEMU's `raw` driver.
    pub member: Option<(u64, u64)>,
    /// Open the image read-only, writes going to a throw-away overlay
    /// (`snapshot=on`, the default): a boot never changes the image, and
    /// several may share it.
    pub snapshot: bool,
}

impl Machine {
    /// `image` in `mode` on virtio, 1 GiB, one CPU, TCG; the format from
    /// the file name's extension.
    pub fn new(image: &Path, mode: Mode) -> Result<Machine, QemuError> {
        let format = image
            .extension()
            .and_then(|e| e.to_str())
            .and_then(imgbuild_formats::Format::from_extension)
            .map(|f| f.name().to_string())
            .ok_or_else(|| QemuError::Format(image.to_path_buf()))?;
        Ok(Machine::for_format(image, &format, mode))
    }

    /// `image` in `format` (`raw`, `qcow2`, `vhdx`, `vhd`), otherwise as
    /// [`Machine::new`].
    pub fn for_format(image: &Path, format: &str, mode: Mode) -> Machine {
        Machine {
            image: image.to_path_buf(),
            format: format.to_string(),
            mode,
            bus: Bus::Virtio,
            memory_mib: 1024,
            smp: 1,
            accel: Accel::Tcg,
            extra: Vec::new(),
            ovmf_dir: PathBuf::from(OVMF_DIR),
            member: None,
            snapshot: true,
        }
    }

    /// The command: the serial console on stdout (and stdin), no display,
    /// no reboot (a guest that reboots ends the run), and a virtio NIC
    /// (every kernel imgbuild boots has `virtio_net`; Debian's cloud
    /// kernels lack the e1000 QEMU would pick) on QEMU's user network with
    /// `restrict=on`: the guest gets a DHCP lease and reaches nothing
    /// outside itself, neither the host nor anything beyond it (QEMU without
    /// network options gives it a route off the machine). `vars` receives a
    /// copy of the firmware's variable store (UEFI modes); it is the
    /// caller's to delete afterwards.
    pub fn command(&self, vars: &Path) -> Result<Command, QemuError> {
        let mut cmd = Command::new(QEMU);
        cmd.args(["-m", &self.memory_mib.to_string()]);
        cmd.args(["-smp", &self.smp.to_string()]);
        cmd.args(["-nographic", "-no-reboot"]);
        cmd.args(["-nic", "user,restrict=on,model=virtio-net-pci"]);
        let accel = self.accel.name();
        match self.mode.ovmf() {
            None => {
                cmd.args(["-machine", &format!("pc,accel={accel}")]);
            }
            Some((code, template)) => {
                let code = self.ovmf_dir.join(code);
                let template = self.ovmf_dir.join(template);
                for path in [&code, &template] {
                    if !path.exists() {
                        return Err(QemuError::Firmware {
                            path: path.clone(),
                            package: "ovmf",
                        });
                    }
                }
                std::fs::copy(&template, vars).map_err(|source| QemuError::Vars {
                    path: template.clone(),
                    source,
                })?;
                if self.mode == Mode::SecureBoot {
                    cmd.args(["-machine", &format!("q35,smm=on,accel={accel}")]);
                    cmd.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                } else {
                    cmd.args(["-machine", &format!("q35,accel={accel}")]);
                }
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    code.display()
                ));
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
            }
        }
        // QEMU calls a VHD `vpc`.
        let format = match self.format.as_str() {
            "vhd" => "vpc",
            f => f,
        };
        let path = self.image.display().to_string().replace(',', ",,");
        let snapshot = if self.snapshot { ",snapshot=on" } else { "" };
        let file = match self.member {
            None => format!("file={path},format={format}{snapshot}"),
            Some((offset, size)) => format!(
                "driver={format},file.driver=raw,file.offset={offset},file.size={size},\
                 file.file.driver=file,file.file.filename={path}{snapshot}"
            ),
        };
        match self.bus {
            Bus::Virtio | Bus::Ide => {
                cmd.arg("-drive")
                    .arg(format!("{file},if={}", self.bus.name()));
            }
            Bus::Scsi | Bus::Pvscsi => {
                let controller = if self.bus == Bus::Scsi {
                    "virtio-scsi-pci"
                } else {
                    "pvscsi"
                };
                cmd.args(["-device", &format!("{controller},id=scsi0")]);
                cmd.arg("-drive").arg(format!("{file},if=none,id=disk0"));
                cmd.args(["-device", "scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0"]);
            }
            // An NVMe controller whose namespace is the disk, as EC2 shows
            // an EBS volume; NVMe needs a serial number. SeaBIOS and OVMF
            // both boot from it.
            Bus::Nvme => {
                cmd.arg("-drive").arg(format!("{file},if=none,id=disk0"));
                cmd.args(["-device", "nvme,serial=imgbuild0,drive=disk0,bootindex=0"]);
            }
        }
        cmd.args(&self.extra);
        Ok(cmd)
    }
}

/// One of the machine-wide QEMU slots, held (a file lock) until dropped.
pub struct Slot {
    _lock: File,
}

impl Slot {
    /// Waits for one of `jobs` slots (at least one).
    pub fn take(jobs: usize) -> Slot {
        let dir = std::env::temp_dir();
        loop {
            for i in 0..jobs.max(1) {
                let path = dir.join(format!("imgbuild-qemu-slot-{i}.lock"));
                let Ok(f) = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                else {
                    continue;
                };
                if f.try_lock().is_ok() {
                    return Slot { _lock: f };
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The number of slots by default: `IMGBUILD_QEMU_JOBS`, else the
    /// number of CPUs.
    pub fn default_jobs() -> usize {
        std::env::var("IMGBUILD_QEMU_JOBS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PLATFORMS;

    /// Every command a boot can be given (every platform's bus in every
    /// mode, a file or a package's member) has exactly one network option,
    /// QEMU's user network with `restrict=on`: no route off the machine.
    #[test]
    fn every_machine_command_has_one_restricted_user_network() {
        let dir = tempfile::tempdir().unwrap();
        let ovmf = dir.path().join("ovmf");
        std::fs::create_dir_all(&ovmf).unwrap();
        for (code, vars) in [Mode::Uefi, Mode::SecureBoot]
            .iter()
            .filter_map(|m| m.ovmf())
        {
            std::fs::write(ovmf.join(code), b"").unwrap();
            std::fs::write(ovmf.join(vars), b"").unwrap();
        }
        let vars = dir.path().join("vars.fd");
        let mut seen = 0;
        for p in &PLATFORMS {
            for mode in [Mode::Bios, Mode::Uefi, Mode::SecureBoot] {
                for member in [None, Some((512, 4096))] {
                    let mut m = Machine::for_format(Path::new("disk.img"), "raw", mode);
                    m.ovmf_dir = ovmf.clone();
                    m.bus = match mode {
                        Mode::Bios => p.qemu_bus.bios,
                        _ => p.qemu_bus.uefi,
                    };
                    m.member = member;
                    let args = args(&m.command(&vars).unwrap());
                    let net: Vec<(&String, &String)> = args
                        .iter()
                        .zip(args.iter().skip(1))
                        .filter(|(o, _)| ["-nic", "-net", "-netdev"].contains(&o.as_str()))
                        .collect();
                    assert_eq!(
                        net.len(),
                        1,
                        "{:?} {mode} {:?}: {args:?}",
                        p.hypervisor,
                        m.bus
                    );
                    let (_, value) = net[0];
                    assert!(
                        value.starts_with("user,") && value.split(',').any(|o| o == "restrict=on"),
                        "{value}"
                    );
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, PLATFORMS.len() * 6);
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// EC2's bus: the disk is the namespace of an NVMe controller, the one
    /// boot device, and the user network stays restricted.
    #[test]
    fn an_nvme_boot_attaches_the_disk_to_an_nvme_controller_on_a_restricted_network() {
        let mut m = Machine::for_format(Path::new("/images/a,b.vmdk"), "vmdk", Mode::Bios);
        m.bus = Bus::Nvme;
        let args = args(
            &m.command(Path::new("/unused"))
                .expect("BIOS needs no firmware"),
        );
        let after = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(
            after("-drive"),
            ["file=/images/a,,b.vmdk,format=vmdk,snapshot=on,if=none,id=disk0"]
        );
        assert_eq!(
            after("-device"),
            ["nvme,serial=imgbuild0,drive=disk0,bootindex=0"]
        );
        assert_eq!(after("-nic"), ["user,restrict=on,model=virtio-net-pci"]);
    }
}
