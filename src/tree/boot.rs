//! The UEFI boot step: from the OS tree, the ESP's tree for systemd-boot
//! (Boot Loader Specification type #1 entries). One swappable unit: a
//! Secure Boot (shim + UKI) or BIOS path replaces this module, not the
//! pipeline around it.
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

mod version;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use imgbuild_formats::io::SizedFile;

pub use self::version::compare as compare_versions;
use super::{FileData, Inode, Kind, Meta, Timestamp, Tree, TreeError};

/// Where systemd-boot's x86-64 binary lives in a Debian tree
/// (package systemd-boot-efi).
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// Kernel file name prefix in `/boot` (Debian, Fedora, Arch).
const KERNEL_PREFIX: &str = "vmlinuz-";
/// Initrd names tried next to the kernel, `{}` being the version.
const INITRD_NAMES: [&str; 3] = ["initrd.img-{}", "initrd-{}", "initramfs-{}.img"];

/// What the boot step needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// Entry id: the ESP directory holding the kernel and the entry's file
    /// name (`debian`, a machine name). Letters, digits, `.`, `_`, `-`.
    pub entry_id: String,
    /// The menu title (`Debian GNU/Linux 12 (bookworm)`).
    pub title: String,
    /// PARTUUID of the root partition (`root=PARTUUID=…`).
    pub root_partuuid: String,
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
    /// No systemd-boot in the tree and no host fallback.
    #[error("systemd-boot not found: {SYSTEMD_BOOT} is not in the tree (install systemd-boot-efi) and no host fallback was given")]
    NoLoader,
    /// Building the ESP tree failed.
    #[error("building the ESP tree")]
    Tree(#[source] TreeError),
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
        let root = format!(
            "root=PARTUUID={} rw",
            self.root_partuuid.to_ascii_lowercase()
        );
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
    if crate::ids::parse_uuid(&opts.root_partuuid).is_none() {
        return bad(
            "root_partuuid",
            "not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        );
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
