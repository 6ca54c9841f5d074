//! Packages: the containers platforms import a disk in, written as one
//! [`ImageSink`] so they are sinks of the same pass as the plain images.
//!
//! ```text
//!              ┌─ Ova        tar: <name>.ovf, <name>.mf (SHA-1), <name>-disk1.vmdk (streamOptimized)
//! VirtualDisk ─┼─ GceTarGz   gzip (parallel, deterministic) of a GNU tar holding disk.raw (sparse)
//!              └─ OciArchive OCI image layout in a tar: one layer with disk/<file>.qcow2, owned 107:107
//! ```
//!
//! Every byte follows from the disk, the options and [`PackageOptions::mtime`]:
//! tar headers carry that time, uid/gid 0 (the containerDisk's own files 107),
//! fixed modes; gzip has no name and no time; JSON is written with sorted keys.
//!
//! [`find_disk`] reads a package back: where its disk lies (OVA, OCI archive).

mod find;
pub mod gce;
pub mod gzip;
pub mod oci;
pub mod ova;
pub mod tar;

pub use find::{find_disk, MAX_JSON, MAX_MEMBERS};

use std::fs::File;
use std::sync::Arc;

use crate::{Error, Format, ImageSink, ReadAt, Result, WriteOptions};

/// Opens the disk inside a package (OVA, OCI archive) in place: found with
/// [`find_disk`], read through a window of the package file.
pub fn open_disk(file: Arc<crate::io::SizedFile>) -> Result<Arc<dyn crate::DiskImage>> {
    let member = find_disk(file.file())?;
    let window: Arc<dyn ReadAt> = Arc::new(Window {
        file,
        offset: member.offset,
        len: member.size,
    });
    let inner: Arc<dyn crate::DiskImage> = match member.format {
        Format::Vmdk => Arc::new(crate::vmdk::VmdkReader::from_reader(window)?),
        Format::Qcow2 => Arc::new(crate::qcow2::Qcow2Reader::from_reader(window)?),
        other => {
            return Err(Error::Unsupported {
                format: "package",
                feature: format!("a {other} disk inside a package"),
            })
        }
    };
    Ok(Arc::new(InPackage { inner, member }))
}

/// `len` bytes of a file from `offset`.
struct Window {
    file: Arc<crate::io::SizedFile>,
    offset: u64,
    len: u64,
}

impl ReadAt for Window {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        crate::io::check_range(offset, buf.len(), self.len)?;
        self.file.read_exact_at(buf, self.offset + offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// The disk of a package: the inner image, with where it lies in its facts.
struct InPackage {
    inner: Arc<dyn crate::DiskImage>,
    member: Member,
}

impl ReadAt for InPackage {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn known_zero(&self, offset: u64, len: u64) -> Option<bool> {
        self.inner.known_zero(offset, len)
    }
}

impl crate::DiskImage for InPackage {
    fn format(&self) -> Format {
        self.inner.format()
    }

    fn virtual_size(&self) -> u64 {
        self.inner.virtual_size()
    }

    fn allocated(&self) -> Result<Vec<std::ops::Range<u64>>> {
        self.inner.allocated()
    }

    fn facts(&self) -> Vec<(String, String)> {
        let mut facts = vec![(
            "package member".to_string(),
            format!(
                "{} ({} bytes at offset {})",
                self.member.name, self.member.size, self.member.offset
            ),
        )];
        facts.extend(self.inner.facts());
        facts
    }
}

/// A package around a disk image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Package {
    /// VMware OVA (DMTF OVF 1.x package): a tar whose first member is the
    /// OVF descriptor (the VMDK's `ovf:size` included), then the manifest
    /// (`.mf`, SHA-1 lines as OVF 1.x specifies), then the disk as a
    /// streamOptimized VMDK.
    Ova(OvfSettings),
    /// Google Compute Engine image: `disk.raw` in a GNU (oldgnu, sparse)
    /// tar, gzip compressed.
    GceTarGz,
    /// KubeVirt containerDisk: an OCI image layout archive whose one
    /// uncompressed layer holds the qcow2 under `disk/`, owned by UID/GID 107.
    OciArchive,
}

/// The virtual hardware an OVF descriptor declares.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OvfSettings {
    /// The virtual system's name (`VirtualSystem ovf:id` and `Name`).
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Boot firmware: EFI (`vmw:Config firmware=efi`) or BIOS.
    pub efi: bool,
    /// EFI Secure Boot on (`bootOptions.efiSecureBootEnabled`).
    pub secure_boot: bool,
    /// The disk's controller.
    pub controller: OvfController,
}

/// The SCSI controller the OVF puts the disk on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OvfController {
    /// VMware Paravirtual SCSI (`VirtualSCSI`; the guest needs `vmw_pvscsi`).
    Pvscsi,
    /// LSI Logic Parallel (`lsilogic`).
    LsiLogic,
}

/// What a package sink needs beyond the disk's [`WriteOptions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageOptions {
    /// The package.
    pub package: Package,
    /// Base name of the members (`debian-bookworm-vmware` gives
    /// `debian-bookworm-vmware.ovf`, `…-disk1.vmdk`; the OCI layer's
    /// `disk/debian-bookworm-kubevirt.qcow2`). GCE's member is always `disk.raw`.
    pub name: String,
    /// Modification time of every tar member and the OCI `created` field
    /// (seconds since the Unix epoch).
    pub mtime: u64,
}

/// Where the disk image lies inside a package file, when it is stored
/// uncompressed there (OVA, OCI archive): a reader or QEMU (`raw` driver with
/// `offset` and `size`) can use it in place.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The member's path inside the (innermost) tar.
    pub name: String,
    /// Byte offset of the disk image in the package file.
    pub offset: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Its format.
    pub format: Format,
}

impl Package {
    /// The file extension: `ova`, `tar.gz`, `oci.tar`.
    pub fn extension(&self) -> &'static str {
        match self {
            Package::Ova(_) => "ova",
            Package::GceTarGz => "tar.gz",
            Package::OciArchive => "oci.tar",
        }
    }

    /// The format of the disk inside: VMDK, raw, qcow2.
    pub fn disk_format(&self) -> Format {
        match self {
            Package::Ova(_) => Format::Vmdk,
            Package::GceTarGz => Format::Raw,
            Package::OciArchive => Format::Qcow2,
        }
    }

    /// `ova`, `tar.gz`, `oci-archive`: the recipe's `format` for it.
    pub fn name(&self) -> &'static str {
        match self {
            Package::Ova(_) => "ova",
            Package::GceTarGz => "tar.gz",
            Package::OciArchive => "oci-archive",
        }
    }
}

/// A writer of `options.package` into `file`; `write` are the options of the
/// disk inside (qcow2 cluster size and compression, seed, hash, threads).
/// The summary's `member` says where the disk lies when stored uncompressed.
///
/// `file` should be empty and, for an OVA, open for reading too: the OVA
/// hashes its VMDK member by reading it back.
pub fn sink(
    options: &PackageOptions,
    file: File,
    write: &WriteOptions,
) -> Result<Box<dyn ImageSink>> {
    match &options.package {
        Package::GceTarGz => Ok(Box::new(gce::GceWriter::new(
            file,
            options.mtime,
            crate::pool::threads(write.threads)?,
            write.hash,
        )?)),
        Package::Ova(settings) => Ok(Box::new(ova::OvaWriter::new(
            file,
            &options.name,
            options.mtime,
            settings,
            write,
        )?)),
        Package::OciArchive => Ok(Box::new(oci::OciWriter::new(
            file,
            &options.name,
            options.mtime,
            write,
        )?)),
    }
}
