//! The boot step: from the OS tree and the firmware a disk must boot with,
//! the ESP's tree, the BIOS boot code, and a record of every boot binary.
//! One swappable unit, [`boot_files`], with two loaders:
//!
//! - `grub` (the default; [`grub`]): GRUB i386-pc for BIOS, shim and the
//!   distribution's signed GRUB for UEFI and Secure Boot, one menu on the ESP;
//! - `systemd-boot` (UEFI only, unsigned): [`esp_tree`], below.
//!
//! systemd-boot (Boot Loader Specification type #1 entries):
//!
//! ```text
//! OS tree                                        ESP tree
//! /boot/vmlinuz-<ver>  (newest, dpkg order) ──►  /<id>/<ver>/linux
//! /boot/initrd.img-<ver>                    ──►  /<id>/<ver>/initrd
//! /usr/lib/systemd/boot/efi/systemd-bootx64.efi ─► /EFI/BOOT/BOOTX64.EFI (removable-media path)
//!   (or a host file given in the options)       └► /EFI/systemd/systemd-bootx64.efi
//!                                                /loader/loader.conf
//!                                                /loader/entries/<id>.conf
//! ```
//! File contents are shared references ([`FileData`] clones), never copies.

pub mod core_image;
pub mod grub;
pub mod pe;
mod version;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use imgbuild_formats::io::SizedFile;

use crate::ids::Guid;

pub use self::version::compare as compare_versions;
use super::{FileData, Inode, Kind, Meta, Timestamp, Tree, TreeError};

/// Where systemd-boot's x86-64 binary lives in a Debian tree
/// (package systemd-boot-efi).
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Kernel file name prefix in `/boot` (Debian, Fedora, Arch).
const KERNEL_PREFIX: &str = "vmlinuz-";
/// Initrd names tried next to the kernel, `{}` being the version.
const INITRD_NAMES: [&str; 3] = ["initrd.img-{}", "initrd-{}", "initramfs-{}.img"];

/// Which boot loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderKind {
    /// GRUB (BIOS and UEFI, Secure Boot through shim).
    Grub,
    /// systemd-boot (UEFI only).
    SystemdBoot,
}

/// What the boot step needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// The loader.
    pub loader: LoaderKind,
    /// Install BIOS boot code (GRUB only).
    pub bios: bool,
    /// Install a UEFI loader.
    pub uefi: bool,
    /// Fail unless the UEFI chain passes Secure Boot with Microsoft's keys.
    pub secure_boot: bool,
    /// The root filesystem's UUID (GRUB finds the kernel by it).
    pub root_fs_uuid: Guid,
    /// The ESP's entry number in the GPT (GRUB for BIOS: `(,gptN)`).
    pub esp_partition: u32,
    /// First LBA of the BIOS boot partition (where the core image goes).
    pub bios_boot_lba: u64,
    /// Entry id: the ESP directory holding the kernel and the entry's file
    /// name (`debian`, a machine name). Letters, digits, `.`, `_`, `-`.
    pub entry_id: String,
    /// The menu title (`Debian GNU/Linux 12 (bookworm)`).
    pub title: String,
    /// PARTUUID of the root partition (`root=PARTUUID=…`).
    pub root_partuuid: Guid,
    /// Kernel command line after `root=… rw`.
    pub cmdline: String,
    /// Per-target additions (`console=ttyS0`, Hyper-V or cloud options).
    pub extra_cmdline: String,
    /// Menu timeout in seconds (0: boot the default at once, a key shows the menu).
    pub timeout: u32,
    /// Modification time of the files and directories created.
    pub epoch: i64,
    /// systemd-boot binary on the build host, used when the OS tree has none.
    pub host_systemd_boot: Option<PathBuf>,
}

/// Where the systemd-boot binary came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoaderSource {
    /// This path in the OS tree.
    Tree(String),
    /// This file on the build host.
    Host(PathBuf),
}

/// What the boot step found and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// The kernel version (`6.1.0-40-cloud-amd64`).
    pub kernel_version: String,
    /// The kernel's path in the OS tree, symlinks resolved.
    pub kernel: String,
    /// The initrd's path in the OS tree, if there is one.
    pub initrd: Option<String>,
    /// Where systemd-boot came from.
    pub loader: LoaderSource,
    /// The entry file's path on the ESP.
    pub entry: String,
}

/// Why the ESP cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// An option has a value that would break a config file or a path.
    #[error("boot option {option}: {reason}")]
    BadOption {
        /// Which option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The newest kernel's version cannot be written into a loader entry.
    #[error("kernel version {version:?} has whitespace or control characters")]
    BadKernelVersion {
        /// The version.
        version: String,
    },
    /// Reading the host's systemd-boot failed.
    #[error("reading systemd-boot from the build host at {path}")]
    HostLoader {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No kernel in the tree.
    #[error(
        "no kernel found: /boot has no vmlinuz-<version> file and /vmlinuz does not point at one"
    )]
    NoKernel,
    /// A file a loader needs is not in the tree.
    #[error("{what} needs {path}, which is not in the OS tree: install the package {package}")]
    MissingPackage {
        /// What needs it.
        what: &'static str,
        /// The file.
        path: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A GRUB module or image named in moddep.lst is missing or unreadable.
    #[error("GRUB for BIOS: /usr/lib/grub/i386-pc/{name} is missing or not a file (reinstall grub-pc-bin)")]
    GrubModule {
        /// File name in /usr/lib/grub/i386-pc.
        name: String,
    },
    /// The GRUB core image cannot be made from these modules.
    #[error("GRUB for BIOS: {0}")]
    CoreImage(String),
    /// Secure Boot was required but the chain would be refused.
    #[error("Secure Boot with Microsoft's keys would refuse this disk: {reason}")]
    SecureBoot {
        /// Which binary and why.
        reason: String,
    },
    /// Reading a file of the tree failed.
    #[error("reading a boot file from the OS tree")]
    Read(#[source] std::io::Error),
    /// No systemd-boot in the tree and no host fallback.
    #[error("systemd-boot not found: {SYSTEMD_BOOT} is not in the tree (install systemd-boot-efi) and no host fallback was given")]
    NoLoader,
    /// Building the ESP tree failed.
    #[error("building the ESP tree")]
    Tree(#[source] TreeError),
}

/// GRUB's BIOS pieces: the protective MBR's boot code and the core image
/// for the BIOS boot partition.
#[derive(Clone, Debug)]
pub struct BiosBoot {
    /// Bytes 0..440 of LBA 0 (GRUB's boot.img, patched).
    pub boot_code: [u8; 440],
    /// The core image (whole 512-byte sectors).
    pub core: Vec<u8>,
    /// The GRUB modules built into it, in load order.
    pub modules: Vec<String>,
    /// Where it finds the menu.
    pub prefix: String,
}

/// One EFI binary on the ESP, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EfiBinary {
    /// Path on the ESP.
    pub path: String,
    /// Where it came from: `tree:<path>` or `host:<path>`.
    pub source: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// It carries an Authenticode signature.
    pub signed: bool,
    /// Its signature embeds the Microsoft UEFI CA's certificate.
    pub microsoft_uefi_ca: bool,
}

/// Everything the boot step made for one disk.
#[derive(Debug)]
pub struct BootFiles {
    /// The ESP's contents.
    pub esp: Tree,
    /// BIOS boot code, when the disk boots with BIOS.
    pub bios: Option<BiosBoot>,
    /// The kernel booted and its initrd.
    pub kernel: Kernel,
    /// The kernel image carries a signature (Secure Boot needs one).
    pub kernel_signed: bool,
    /// The loader.
    pub loader: LoaderKind,
    /// The firmware modes the disk boots in: `bios`, `uefi`, `secure-boot`.
    pub firmware: Vec<&'static str>,
    /// Every EFI binary on the ESP.
    pub efi: Vec<EfiBinary>,
    /// The loader's configuration on the ESP (GRUB's menu, the loader entry).
    pub config: String,
}

/// The ESP, BIOS boot code and boot records for one disk (module docs).
pub fn boot_files(os: &Tree, opts: &BootOptions) -> Result<BootFiles, BootError> {
    check_options(opts)?;
    let kernel = find_kernel(os)?;
    let mut sources = std::collections::BTreeMap::new();
    let (esp, bios, config) = match opts.loader {
        LoaderKind::SystemdBoot => {
            if opts.bios {
                return Err(BootError::BadOption {
                    option: "bios",
                    reason: "systemd-boot is UEFI-only; BIOS needs loader grub".into(),
                });
            }
            let (esp, info) = esp_tree(os, opts)?;
            let source = match &info.loader {
                LoaderSource::Tree(p) => format!("tree:{p}"),
                LoaderSource::Host(p) => format!("host:{}", p.display()),
            };
            for path in ["/EFI/BOOT/BOOTX64.EFI", "/EFI/systemd/systemd-bootx64.efi"] {
                sources.insert(path.to_string(), source.clone());
            }
            (esp, None, info.entry)
        }
        LoaderKind::Grub => {
            let vendor = grub::vendor(os);
            let (k, i) = grub::kernel_paths(os, &kernel);
            let menu = grub::menu(opts, &k, i.as_deref());
            let mut files = Vec::new();
            if opts.uefi {
                files = grub::uefi_files(os, &vendor)?;
            }
            let config = format!("/EFI/{vendor}/grub.cfg");
            for path in [config.clone(), "/EFI/BOOT/grub.cfg".to_string()] {
                files.push(grub::EspFile {
                    path,
                    data: FileData::Bytes(menu.clone().into_bytes().into()),
                    source: "imgbuild".into(),
                });
            }
            let bios = if opts.bios {
                Some(grub::bios(os, opts, &vendor)?)
            } else {
                None
            };
            let mut esp = Tree::new(dir_meta(opts.epoch));
            for f in files {
                sources.insert(f.path.clone(), format!("tree:{}", f.source));
                put_file(&mut esp, &f.path, f.data, opts.epoch)?;
            }
            (esp, bios, config)
        }
    };
    let efi = efi_records(&esp, &sources)?;
    let kernel_signed = pe::signature(&kernel.kernel.1).signed;
    let mut firmware = Vec::new();
    if bios.is_some() {
        firmware.push("bios");
    }
    if opts.uefi {
        firmware.push("uefi");
        match secure_boot_refusal(&efi, opts.loader, &kernel, kernel_signed) {
            None => firmware.push("secure-boot"),
            Some(reason) if opts.secure_boot => return Err(BootError::SecureBoot { reason }),
            Some(_) => {}
        }
    }
    Ok(BootFiles {
        esp,
        bios,
        kernel,
        kernel_signed,
        loader: opts.loader,
        firmware,
        efi,
        config,
    })
}

fn dir_meta(epoch: i64) -> Meta {
    Meta {
        mode: 0o755,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    }
}

fn put_file(esp: &mut Tree, path: &str, data: FileData, epoch: i64) -> Result<(), BootError> {
    let inode = Inode {
        meta: Meta {
            mode: 0o644,
            ..dir_meta(epoch)
        },
        kind: Kind::File(data),
    };
    esp.insert(path.as_bytes(), inode)
        .map(|_| ())
        .map_err(BootError::Tree)
}

/// Every `*.efi` file of the ESP with its hash and signature.
fn efi_records(
    esp: &Tree,
    sources: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<EfiBinary>, BootError> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    for (path, id) in esp.walk() {
        let path = format!("/{}", String::from_utf8_lossy(&path));
        let Kind::File(data) = &esp.inode(id).kind else {
            continue;
        };
        if !path.to_ascii_lowercase().ends_with(".efi") {
            continue;
        }
        let bytes = data.read_all().map_err(BootError::Read)?;
        let sig = pe::signature(data);
        out.push(EfiBinary {
            source: sources.get(&path).cloned().unwrap_or_default(),
            path,
            sha256: crate::ids::hex(&Sha256::digest(&bytes)),
            signed: sig.signed,
            microsoft_uefi_ca: sig.microsoft_uefi_ca,
        });
    }
    Ok(out)
}

/// Why Secure Boot with Microsoft's keys would refuse this chain, if it
/// would: the firmware checks `\EFI\BOOT\BOOTX64.EFI` against the
/// Microsoft UEFI CA, shim checks GRUB, and GRUB has shim check the kernel.
fn secure_boot_refusal(
    efi: &[EfiBinary],
    loader: LoaderKind,
    kernel: &Kernel,
    kernel_signed: bool,
) -> Option<String> {
    let find = |p: &str| efi.iter().find(|e| e.path == p);
    let first = find("/EFI/BOOT/BOOTX64.EFI")?;
    if !first.microsoft_uefi_ca {
        return Some(match loader {
            LoaderKind::SystemdBoot => "\\EFI\\BOOT\\BOOTX64.EFI is systemd-boot, unsigned: use loader \"grub\" with shim-signed and grub-efi-amd64-signed".into(),
            LoaderKind::Grub => "\\EFI\\BOOT\\BOOTX64.EFI is GRUB itself, which the Microsoft UEFI CA does not sign: install the package shim-signed".into(),
        });
    }
    if !find("/EFI/BOOT/grubx64.efi").is_some_and(|g| g.signed) {
        return Some("shim's second stage \\EFI\\BOOT\\grubx64.efi is not signed: install the package grub-efi-amd64-signed".into());
    }
    if !kernel_signed {
        return Some(format!(
            "the kernel {} carries no signature: install the distribution's signed kernel package (linux-image-*, not -unsigned)",
            kernel.kernel.0
        ));
    }
    None
}

/// Builds the ESP tree for the newest kernel of `os`.
pub fn esp_tree(os: &Tree, opts: &BootOptions) -> Result<(Tree, BootInfo), BootError> {
    check_options(opts)?;
    let kernel = find_kernel(os)?;
    let (loader_data, loader) = find_loader(os, opts)?;
    let id = &opts.entry_id;
    let ver = &kernel.version;
    let dir = format!("/{id}/{ver}");
    let entry = format!("/loader/entries/{id}.conf");

    let time = Timestamp::from_secs(opts.epoch);
    let mut esp = Tree::new(Meta {
        mode: 0o755,
        mtime: time,
        ..Meta::default()
    });
    let mut put = |path: &str, data: FileData| {
        let inode = Inode {
            meta: Meta {
                mode: 0o644,
                mtime: time,
                ..Meta::default()
            },
            kind: Kind::File(data),
        };
        esp.insert(path.as_bytes(), inode)
            .map(|_| ())
            .map_err(BootError::Tree)
    };
    put("/EFI/BOOT/BOOTX64.EFI", loader_data.clone())?;
    put("/EFI/systemd/systemd-bootx64.efi", loader_data)?;
    put("/loader/loader.conf", text(loader_conf(opts)))?;
    put(&entry, text(entry_conf(opts, ver, kernel.initrd.is_some())))?;
    put(&format!("{dir}/linux"), kernel.kernel.1)?;
    if let Some((_, data)) = &kernel.initrd {
        put(&format!("{dir}/initrd"), data.clone())?;
    }
    let info = BootInfo {
        kernel_version: kernel.version,
        kernel: kernel.kernel.0,
        initrd: kernel.initrd.map(|i| i.0),
        loader,
        entry,
    };
    Ok((esp, info))
}

fn text(s: String) -> FileData {
    FileData::Bytes(s.into_bytes().into())
}

/// `/loader/loader.conf` (systemd-boot loader.conf(5)): boot the entry at
/// once, keep the firmware's console mode (Hyper-V, serial consoles), and no
/// command-line editor (it would let anyone at the console get a root shell).
pub fn loader_conf(opts: &BootOptions) -> String {
    format!(
        "default {}.conf\ntimeout {}\nconsole-mode keep\neditor no\n",
        opts.entry_id, opts.timeout
    )
}

impl BootOptions {
    /// The kernel command line the entry passes: `root=PARTUUID=… rw`, the
    /// recipe's line, then the target's additions.
    pub fn kernel_cmdline(&self) -> String {
        let root = format!("root=PARTUUID={} rw", self.root_partuuid);
        [
            root.as_str(),
            self.cmdline.trim(),
            self.extra_cmdline.trim(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// The Boot Loader Specification type #1 entry.
pub fn entry_conf(opts: &BootOptions, version: &str, has_initrd: bool) -> String {
    let id = &opts.entry_id;
    let mut s = format!(
        "title {}\nversion {version}\nlinux /{id}/{version}/linux\n",
        opts.title
    );
    if has_initrd {
        s.push_str(&format!("initrd /{id}/{version}/initrd\n"));
    }
    s.push_str(&format!("options {}\n", opts.kernel_cmdline()));
    s
}

fn check_options(opts: &BootOptions) -> Result<(), BootError> {
    let bad = |option, reason: &str| {
        Err(BootError::BadOption {
            option,
            reason: reason.to_string(),
        })
    };
    let id_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if opts.entry_id.is_empty()
        || !opts.entry_id.chars().all(id_ok)
        || opts.entry_id.starts_with('.')
    {
        return bad(
            "entry_id",
            "use letters, digits, '.', '_' and '-' (not first '.')",
        );
    }
    if ["efi", "loader"].contains(&opts.entry_id.to_ascii_lowercase().as_str()) {
        return bad(
            "entry_id",
            "\"EFI\" and \"loader\" are the ESP's own directories",
        );
    }
    for (option, value) in [
        ("title", &opts.title),
        ("cmdline", &opts.cmdline),
        ("extra_cmdline", &opts.extra_cmdline),
    ] {
        if value.chars().any(char::is_control) {
            return bad(
                option,
                "control characters (a newline would start a new config line)",
            );
        }
    }
    Ok(())
}

/// The kernel and initrd chosen, as (path in the OS tree, contents).
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The kernel version (`6.1.0-40-cloud-amd64`).
    pub version: String,
    /// The kernel image.
    pub kernel: (String, FileData),
    /// Its initramfs, if there is one.
    pub initrd: Option<(String, FileData)>,
}

/// A regular file at `path` after resolving every symlink.
fn file_at(os: &Tree, path: &str) -> Option<(String, FileData)> {
    let resolved = os.resolve(path.as_bytes(), true).ok()?;
    match &os.inode(os.lookup(&resolved)?).kind {
        Kind::File(data) => Some((
            format!("/{}", String::from_utf8_lossy(&resolved)),
            data.clone(),
        )),
        _ => None,
    }
}

/// The newest `vmlinuz-<version>` in `/boot` by Debian version order; the
/// targets of `/vmlinuz` and `/boot/vmlinuz` count as candidates too (so a
/// kernel kept elsewhere and linked is found).
pub fn find_kernel(os: &Tree) -> Result<Kernel, BootError> {
    let mut candidates: Vec<(String, String)> = Vec::new(); // (version, path)
    if let Some(boot) = os.resolve(b"boot", true).ok().and_then(|p| os.lookup(&p)) {
        for (name, _) in os.children(boot) {
            let name = String::from_utf8_lossy(name);
            if let Some(version) = name.strip_prefix(KERNEL_PREFIX) {
                candidates.push((version.to_string(), format!("/boot/{name}")));
            }
        }
    }
    for link in ["/vmlinuz", "/boot/vmlinuz"] {
        if let Some((path, _)) = file_at(os, link) {
            let base = path.rsplit('/').next().unwrap_or_default();
            if let Some(version) = base.strip_prefix(KERNEL_PREFIX) {
                candidates.push((version.to_string(), path.clone()));
            }
        }
    }
    let found = candidates
        .into_iter()
        .filter_map(|(v, p)| file_at(os, &p).map(|f| (v, f)));
    let (version, kernel) = found
        .max_by(|a, b| compare_versions(&a.0, &b.0))
        .ok_or(BootError::NoKernel)?;
    if version.is_empty() || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BootError::BadKernelVersion { version });
    }
    let dir = kernel.0.rsplit_once('/').map_or("", |d| d.0).to_string();
    let initrd = INITRD_NAMES
        .iter()
        .find_map(|n| file_at(os, &format!("{dir}/{}", n.replace("{}", &version))));
    Ok(Kernel {
        version,
        kernel,
        initrd,
    })
}

/// systemd-boot from the tree, else from the host fallback.
fn find_loader(os: &Tree, opts: &BootOptions) -> Result<(FileData, LoaderSource), BootError> {
    if let Some((path, data)) = file_at(os, SYSTEMD_BOOT) {
        return Ok((data, LoaderSource::Tree(path)));
    }
    let Some(host) = &opts.host_systemd_boot else {
        return Err(BootError::NoLoader);
    };
    let io_err = |source| BootError::HostLoader {
        path: host.clone(),
        source,
    };
    let file = SizedFile::new(File::open(host).map_err(io_err)?).map_err(io_err)?;
    let len = imgbuild_formats::ReadAt::len(&file);
    Ok((
        FileData::Source {
            source: Arc::new(file),
            offset: 0,
            len,
        },
        LoaderSource::Host(host.clone()),
    ))
}

#[cfg(test)]
mod tests;
