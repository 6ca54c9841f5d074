//! Drivers per hypervisor: what each target's kernel must have, the check
//! that it has it (before anything is written), and the configuration that
//! keeps it there across kernel updates.
//!
//! ```text
//! Hypervisor ─► platform::Drivers { name, modules: [ModuleNeed { any_of, stage }], agents }
//! Tree ─► KernelModules (modules.builtin, modules.dep, *.ko* under /lib/modules/<ver>)
//! initrd ─► cpio::list ─► initramfs_modules
//!                     └─► check ─► DriverReport (where each module was found) | DriverError::Missing
//! write_config ─► /etc/initramfs-tools/modules, /etc/dracut.conf.d/, /etc/modules-load.d/, agent units
//! ```
//! Why: dracut and initramfs-tools treat a missing module as non-fatal, so a
//! Hyper-V image whose initramfs lacks `hv_storvsc` builds fine and then hangs
//! at boot waiting for its root device.

use std::collections::BTreeSet;

use super::cpio::{self, CpioError};
use super::systemd::SystemdError;
use super::{FileData, Inode, Kind, Meta, Tree, TreeError};
pub use crate::platform::{Agent, Drivers, Hypervisor, ModuleNeed, Stage};

/// Where a module was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Found {
    /// Listed in `modules.builtin`.
    Builtin,
    /// A `.ko*` file for this kernel inside the initramfs.
    Initramfs,
    /// A `.ko*` file under `/lib/modules/<ver>` in the tree.
    Installed,
}

/// One module of a [`DriverReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleReport {
    /// Module name.
    pub name: String,
    /// Where it must be.
    pub stage: Stage,
    /// Every place it was found, sorted.
    pub found: Vec<Found>,
    /// For a dependency (from `modules.dep`) of a root module: that module.
    pub required_by: Option<String>,
}

/// The outcome of a successful [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverReport {
    /// The target checked.
    pub target: Hypervisor,
    /// The kernel checked.
    pub kernel_version: String,
    /// Each needed module (one per need; alternatives resolved) and the
    /// dependencies of root modules, in profile order.
    pub modules: Vec<ModuleReport>,
}

impl Found {
    /// `builtin`, `initramfs` or `installed`.
    pub fn name(self) -> &'static str {
        match self {
            Found::Builtin => "builtin",
            Found::Initramfs => "initramfs",
            Found::Installed => "installed",
        }
    }
}

impl DriverReport {
    /// One line: each module and where it was found, in report order, e.g.
    /// `hv_vmbus (builtin), hv_storvsc (initramfs+installed), …`; a
    /// dependency says which module pulled it in.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .modules
            .iter()
            .map(|m| {
                let places: Vec<&str> = m.found.iter().map(|f| f.name()).collect();
                let by = m
                    .required_by
                    .as_ref()
                    .map_or_else(String::new, |b| format!(", for {b}"));
                format!("{} ({}{by})", m.name, places.join("+"))
            })
            .collect();
        parts.join(", ")
    }
}

/// A need nobody meets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingModule {
    /// Alternatives (`hyperv_drm or hyperv_fb`), or the one module.
    pub names: Vec<String>,
    /// Where it had to be.
    pub stage: Stage,
    /// What it drives.
    pub what: String,
    /// For a `modules.dep` dependency: the module that needs it.
    pub required_by: Option<String>,
}

/// What went wrong checking or configuring drivers.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The kernel version is not a plain directory name.
    #[error("kernel version {version:?} is not a directory name")]
    BadVersion {
        /// As given.
        version: String,
    },
    /// A file imgbuild edits is larger than any sane configuration file.
    #[error("{path}: {len} bytes is more than the {limit} allowed for this file")]
    TooLarge {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
        /// The bound.
        limit: u64,
    },
    /// The initramfs could not be read.
    #[error("reading the initramfs")]
    Initramfs(#[from] CpioError),
    /// Needed modules are missing.
    #[error("{}", missing_message(*target, kernel_version, missing))]
    Missing {
        /// The target.
        target: Hypervisor,
        /// The kernel.
        kernel_version: String,
        /// What is missing.
        missing: Vec<MissingModule>,
    },
    /// `/lib/modules/<version>` is not in the tree.
    #[error("kernel {version}: /lib/modules/{version} is not in the OS tree (is the kernel's modules package installed?)")]
    NoModules {
        /// The kernel.
        version: String,
    },
    /// A configuration file imgbuild writes exists and is not a regular file.
    #[error("{path} exists and is not a regular file")]
    NotAFile {
        /// The path.
        path: String,
    },
    /// Reading a file of the tree failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Enabling an agent's unit failed.
    #[error("enabling the guest agent")]
    Systemd(#[from] SystemdError),
    /// Editing the tree failed.
    #[error("editing the OS tree")]
    Tree(#[from] TreeError),
}

fn missing_message(target: Hypervisor, version: &str, missing: &[MissingModule]) -> String {
    let target = target.drivers().name;
    let mut s = format!("target {target}, kernel {version}: missing kernel modules:");
    for m in missing {
        let names = m.names.join(" or ");
        let place = match m.stage {
            Stage::Initramfs => "neither built in (modules.builtin) nor in the initramfs",
            Stage::Installed => {
                "neither built in (modules.builtin) nor installed under /lib/modules"
            }
        };
        s.push_str(&format!("\n  {names} ({}): {place}", m.what));
        if let Some(by) = &m.required_by {
            s.push_str(&format!(" (needed by {by})"));
        }
    }
    let root: Vec<&str> = missing
        .iter()
        .filter(|m| m.stage == Stage::Initramfs)
        .flat_map(|m| m.names.first())
        .map(String::as_str)
        .collect();
    if !root.is_empty() {
        let list = root.join(" ");
        s.push_str(&format!(
            "\nhelp: the {target} target cannot reach its root filesystem without them; add them to \
             /etc/initramfs-tools/modules (or add_drivers+=\" {list} \" in /etc/dracut.conf.d/) and regenerate \
             the initramfs (update-initramfs -u -k {version}, or dracut --force --kver {version}), \
             or use a kernel with them built in"
        ));
    }
    if missing.iter().any(|m| m.stage == Stage::Installed) {
        s.push_str(&format!(
            "\nhelp: install a kernel package for {version} that ships them (on Ubuntu: linux-modules-extra-{version}), \
             or use a kernel with them built in"
        ));
    }
    s
}

/// Checks that `kernel_version` in `tree`, with `initrd` as its initramfs
/// (`None`: boots without one), has every module `target` needs.
pub fn check(
    tree: &Tree,
    kernel_version: &str,
    target: Hypervisor,
    initrd: Option<&FileData>,
) -> Result<DriverReport, DriverError> {
    let kernel = KernelModules::read(tree, kernel_version)?;
    let initramfs = match initrd {
        Some(data) => initramfs_modules(&cpio::list(data)?, kernel_version),
        None => BTreeSet::new(),
    };
    check_modules(&kernel, &initramfs, target)
}

/// [`check`] on modules already read.
pub fn check_modules(
    kernel: &KernelModules,
    initramfs: &BTreeSet<String>,
    target: Hypervisor,
) -> Result<DriverReport, DriverError> {
    let places = Places { kernel, initramfs };
    let mut modules = Vec::new();
    let mut missing = Vec::new();
    for need in target.drivers().modules {
        let chosen = need
            .any_of
            .iter()
            .map(|n| (*n, places.found(n)))
            .find(|(_, f)| enough(need.stage, f));
        let Some((name, f)) = chosen else {
            missing.push(MissingModule {
                names: need.any_of.iter().map(|s| s.to_string()).collect(),
                stage: need.stage,
                what: need.what.to_string(),
                required_by: None,
            });
            continue;
        };
        let loaded_from_initramfs = need.stage == Stage::Initramfs && !f.contains(&Found::Builtin);
        modules.push(ModuleReport {
            name: name.to_string(),
            stage: need.stage,
            found: f,
            required_by: None,
        });
        if loaded_from_initramfs {
            check_dependencies(&places, name, &mut modules, &mut missing);
        }
    }
    if !missing.is_empty() {
        // A dependency shared by two root modules is reported once.
        let mut seen = BTreeSet::new();
        missing.retain(|m| seen.insert(m.names.clone()));
        return Err(DriverError::Missing {
            target,
            kernel_version: kernel.version.clone(),
            missing,
        });
    }
    Ok(DriverReport {
        target,
        kernel_version: kernel.version.clone(),
        modules,
    })
}

/// Where modules can be: the kernel's (built in, installed) and the
/// initramfs's.
struct Places<'a> {
    kernel: &'a KernelModules,
    initramfs: &'a BTreeSet<String>,
}

impl Places<'_> {
    /// Every place module `name` is found.
    fn found(&self, name: &str) -> Vec<Found> {
        let mut f = Vec::new();
        if self.kernel.builtin.contains(name) {
            f.push(Found::Builtin);
        }
        if self.initramfs.contains(name) {
            f.push(Found::Initramfs);
        }
        if self.kernel.installed.contains_key(name) {
            f.push(Found::Installed);
        }
        f
    }
}

/// Whether places `f` satisfy `stage`.
fn enough(stage: Stage, f: &[Found]) -> bool {
    match stage {
        Stage::Initramfs => f.contains(&Found::Builtin) || f.contains(&Found::Initramfs),
        Stage::Installed => f.contains(&Found::Builtin) || f.contains(&Found::Installed),
    }
}

/// A module loaded from the initramfs needs its dependencies there too:
/// each is reported (once), and missing when the initramfs lacks it.
fn check_dependencies(
    places: &Places,
    name: &str,
    modules: &mut Vec<ModuleReport>,
    missing: &mut Vec<MissingModule>,
) {
    for dep in places.kernel.dependencies(name) {
        let f = places.found(&dep);
        if !enough(Stage::Initramfs, &f) {
            missing.push(MissingModule {
                names: vec![dep.clone()],
                stage: Stage::Initramfs,
                what: format!("dependency of {name}"),
                required_by: Some(name.to_string()),
            });
        }
        if !modules.iter().any(|m: &ModuleReport| m.name == dep) {
            let required_by = Some(name.to_string());
            modules.push(ModuleReport {
                name: dep,
                stage: Stage::Initramfs,
                found: f,
                required_by,
            });
        }
    }
}

/// The contents of a regular file of the tree (through symlinks), if any.
pub(crate) fn read_small(
    tree: &Tree,
    path: &[u8],
    limit: u64,
) -> Result<Option<Vec<u8>>, DriverError> {
    let show = || format!("/{}", String::from_utf8_lossy(path));
    let Some(id) = tree.resolve(path, true).ok().and_then(|p| tree.lookup(&p)) else {
        return Ok(None);
    };
    let Kind::File(data) = &tree.inode(id).kind else {
        return Ok(None);
    };
    if data.len() > limit {
        return Err(DriverError::TooLarge {
            path: show(),
            len: data.len(),
            limit,
        });
    }
    data.read_all()
        .map(Some)
        .map_err(|source| DriverError::Read {
            path: show(),
            source,
        })
}

/// Puts `content` at `path` (through symlinks), keeping an existing file's
/// metadata; a new file gets `meta` with mode 0644. Returns whether it changed.
pub(crate) fn write_file(
    tree: &mut Tree,
    path: &[u8],
    content: &[u8],
    meta: &Meta,
) -> Result<bool, DriverError> {
    let path = tree.resolve(path, true)?;
    if let Some(id) = tree.lookup(&path) {
        if !matches!(tree.inode(id).kind, Kind::File(_)) {
            return Err(DriverError::NotAFile {
                path: format!("/{}", String::from_utf8_lossy(&path)),
            });
        }
        if read_small(tree, &path, MAX_INDEX)?.as_deref() == Some(content) {
            return Ok(false);
        }
        tree.inode_mut(id).kind = Kind::File(FileData::Bytes(content.into()));
        return Ok(true);
    }
    let meta = Meta {
        mode: 0o644,
        ..meta.clone()
    };
    tree.insert(
        &path,
        Inode {
            meta,
            kind: Kind::File(FileData::Bytes(content.into())),
        },
    )?;
    Ok(true)
}

mod config;
mod modules;
pub use config::write_config;
use modules::MAX_INDEX;
pub use modules::{initramfs_modules, kernel_versions, module_name, KernelModules};

#[cfg(test)]
mod tests;
