//! `manifest.json`: one typed record, written by the pipeline and read back
//! by `imgbuild verify`, `test` and `boot`. Deterministic: no times, no host
//! paths; lists in a fixed order.
//!
//! A build directory is untrusted input (CI jobs test directories that other
//! jobs produced): [`read_manifest`] bounds what it reads, and refuses a
//! manifest whose outputs name anything but a plain file in the directory
//! (an absolute path, `..`, a separator, a symbolic link) before any caller
//! opens or writes a file on its word.

use std::path::{Path, PathBuf};

use imgbuild_formats::package::Member;
use imgbuild_formats::Format;
use serde::{Deserialize, Serialize};

use crate::layout::LayoutPlan;
use crate::plan::{Hypervisor, Input, TestPlan};
use crate::source::mmdebstrap::ArchiveState;
use crate::tree::boot::EfiBinary;

/// Name of the manifest in an output directory.
pub const MANIFEST: &str = "manifest.json";

/// The largest manifest read back. A real one holds a few hundred packages
/// (about 100 KiB); a bigger file is not ours.
pub const MAX_MANIFEST: u64 = 64 << 20;

/// The manifest's content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// Image name.
    pub name: String,
    /// SHA-256 of the recipe file.
    pub recipe_sha256: String,
    /// Epoch used for every timestamp.
    pub epoch: u64,
    /// The build seed (hex).
    pub seed: String,
    /// Every input with its digest.
    pub inputs: Vec<Input>,
    /// Partition layout with GUIDs.
    pub layout: LayoutPlan,
    /// The kernel booted.
    pub kernel_version: String,
    /// Per distinct disk: its targets, kernel, initrd, loader source and
    /// kernel command line.
    pub boot: Vec<BootRecord>,
    /// An mmdebstrap source's archives, in apt's order, each with the
    /// `Date` of its Release file when the tree was bootstrapped: how fresh
    /// the image's packages are.
    #[serde(default)]
    pub archives: Vec<ArchiveState>,
    /// Installed packages (dpkg status), sorted by name.
    pub packages: Vec<Package>,
    /// The images.
    pub outputs: Vec<OutputRecord>,
    /// What `imgbuild test` checks on each output's serial console (absent
    /// in manifests written before `imgbuild test` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestPlan>,
    /// SHA-256 of this file with this value set to 64 zeros
    /// (`imgbuild verify` checks it: any changed byte shows).
    pub self_sha256: String,
}

/// How one disk boots.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
    pub efi: Vec<EfiBinary>,
    /// GRUB for BIOS, when the disk boots with BIOS.
    pub bios: Option<BiosRecord>,
}

/// GRUB's BIOS boot code.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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

/// One installed package.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The suite of the archive it came from (mmdebstrap sources): the
    /// first of the archives that publishes this version, as apt chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// One image written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputRecord {
    /// Target name.
    pub target: String,
    /// Its hypervisor profile (`kvm`, `hyperv`, `hyperv-gen1`, `azure`, …):
    /// how `imgbuild test` and `boot` attach the disk. Empty in manifests
    /// written before 0.2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hypervisor: String,
    /// File name inside the output directory.
    pub file: String,
    /// Format (of the disk inside the package, for a package).
    pub format: Format,
    /// The package (`ova`, `tar.gz`, `oci-archive`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Where the disk lies inside the package file, when it is stored
    /// there uncompressed (OVA, OCI archive): what `imgbuild test` boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// Virtual disk size.
    pub virtual_size: u64,
    /// File size.
    pub file_size: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Firmware modes the image boots in (`bios`, `uefi`, `secure-boot`):
    /// what `imgbuild test` boots it with.
    #[serde(default)]
    pub firmware: Vec<String>,
}

impl OutputRecord {
    /// Its hypervisor profile, when the manifest names one we know.
    pub fn hypervisor(&self) -> Option<Hypervisor> {
        Hypervisor::from_name(&self.hypervisor)
    }

    /// A Compute Engine image (`disk.raw` in a gzip'd tar), which QEMU
    /// cannot open in place.
    pub fn is_gce_archive(&self) -> bool {
        self.package.as_deref() == Some("tar.gz")
    }
}

impl Manifest {
    /// Pretty JSON with a trailing newline, sealed ([`super::seal`]): the
    /// bytes `manifest.json` holds.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut unsealed = self.clone();
        unsealed.self_sha256 = super::ZEROS.to_string();
        Ok(super::seal(
            &(serde_json::to_string_pretty(&unsealed)? + "\n"),
        ))
    }

    /// Parses a manifest's text and checks that every output is a plain
    /// file name ([`plain_name`]). Does not check the seal.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_str(text).map_err(ManifestError::Parse)?;
        for (index, o) in m.outputs.iter().enumerate() {
            if let Err(reason) = plain_name(&o.file) {
                return Err(ManifestError::Unsafe {
                    index,
                    file: o.file.clone(),
                    reason,
                });
            }
        }
        Ok(m)
    }

    /// Checks that each output's file in `dir`, where there is one, is a
    /// regular file: not a symbolic link (which could lead anywhere), a
    /// FIFO (which would hang a reader) or a device.
    pub fn check_files(&self, dir: &Path) -> Result<(), ManifestError> {
        for (index, o) in self.outputs.iter().enumerate() {
            let path = dir.join(&o.file);
            if not_regular(&path).is_some() {
                let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
                return Err(ManifestError::Unsafe {
                    index,
                    file: o.file.clone(),
                    reason: if link {
                        "a symbolic link (an output is a regular file in the directory)"
                    } else {
                        "not a regular file"
                    },
                });
            }
        }
        Ok(())
    }

    /// The output recorded for the file `name`.
    pub fn output(&self, name: &str) -> Option<&OutputRecord> {
        self.outputs.iter().find(|o| o.file == name)
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It could not be read.
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    /// It is larger than any manifest imgbuild writes.
    #[error("it is {0} bytes, more than any imgbuild manifest ({MAX_MANIFEST})")]
    TooLarge(u64),
    /// It is not a regular file.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// It is not an imgbuild manifest.
    #[error("it is not an imgbuild manifest")]
    Parse(#[source] serde_json::Error),
    /// An output's `file` is not a plain name in the directory.
    #[error("outputs[{index}] names {file:?}, {reason}: refused, nothing read or written")]
    Unsafe {
        /// Which output.
        index: usize,
        /// What it names.
        file: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// `Ok` when `name` is a plain file name: not empty, not `.` or `..`, no
/// separator, no NUL. Anything else could lead a reader of the manifest
/// outside the build directory.
pub fn plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("an empty name")
    } else if name.starts_with('/') {
        Err("an absolute path")
    } else if name == "." || name == ".." || name.split(['/', '\\']).any(|c| c == "..") {
        Err("a path with `..`")
    } else if name.contains(['/', '\\']) {
        Err("a path with a separator, not a file in the directory")
    } else if name.contains('\0') {
        Err("a name with a NUL")
    } else {
        Ok(())
    }
}

/// What a directory entry is, when it is not a regular file.
pub fn not_regular(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::symlink_metadata(path).ok()?.file_type();
    if t.is_file() {
        None
    } else if t.is_symlink() {
        Some("a symbolic link")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    }
}

/// Reads the text of `dir/manifest.json`: a regular file, at most
/// [`MAX_MANIFEST`] bytes, UTF-8.
pub fn read_text(dir: &Path) -> Result<String, ManifestError> {
    use std::io::Read;
    let path = dir.join(MANIFEST);
    if let Some(kind) = not_regular(&path) {
        return Err(ManifestError::NotRegular(kind));
    }
    let file = std::fs::File::open(&path).map_err(ManifestError::Read)?;
    let len = file.metadata().map_err(ManifestError::Read)?.len();
    if len > MAX_MANIFEST {
        return Err(ManifestError::TooLarge(len));
    }
    let mut text = String::new();
    file.take(MAX_MANIFEST + 1)
        .read_to_string(&mut text)
        .map_err(ManifestError::Read)?;
    Ok(text)
}

/// A build directory's manifest, read as untrusted input: bounded, typed,
/// every output a plain name ([`Manifest::parse`]) whose file in `dir`, if
/// there, is a regular file and not a link leading elsewhere.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ReadError> {
    let path = dir.join(MANIFEST);
    let wrap = |source| ReadError {
        path: path.clone(),
        source,
    };
    let m = Manifest::parse(&read_text(dir).map_err(wrap)?).map_err(wrap)?;
    m.check_files(dir).map_err(wrap)?;
    Ok(m)
}

/// A manifest refused, with its path (the reason is its
/// [`source`](std::error::Error::source)).
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct ReadError {
    /// The manifest's path.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: ManifestError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_pass() {
        for ok in ["a.qcow2", "debian-gce.tar.gz", "x..y", ".hidden"] {
            assert_eq!(plain_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "/elsewhere/evil.tar.gz",
            "../evil",
            "a/../../b",
            "sub/a.qcow2",
            "a\\b",
            "a\0b",
        ] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
    }
}
