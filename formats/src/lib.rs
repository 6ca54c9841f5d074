//! Disk image formats for imgbuild: raw, qcow2, VHDX and fixed VHD, written
//! from one sparse description of a disk and read back into it.
//!
//! ```text
//!              writers (ImageSink)                     readers (DiskImage)
//! VirtualDisk ─► write_images ─► raw | qcow2 | vhdx | vhd ─► open ─► VirtualDisk
//! ```
//!
//! The crate knows only disks: nothing here knows what a recipe, a filesystem
//! or a partition is. Every writer is deterministic: the same disk and options
//! give the same bytes, with no clock and no randomness.
#![warn(missing_docs)]

pub mod disk;
pub mod error;
pub mod grain;
pub mod hash;
pub mod io;
pub mod package;
pub mod pool;
pub mod qcow2;
pub mod raw;
pub mod sink;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub use disk::{Extent, ExtentData, VirtualDisk, VirtualDiskBuilder};
pub use error::{Error, Result};
pub use io::ReadAt;
pub use sink::{
    shared_data_len, write_disks, write_disks_with_progress, write_images,
    write_images_with_progress, ImageSink, ImageSummary,
};

/// An image format.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Raw bytes, sparse where the disk is zero.
    Raw,
    /// QEMU copy-on-write v3 (compat 1.1).
    Qcow2,
    /// Hyper-V virtual hard disk v2 (MS-VHDX 1.0).
    Vhdx,
    /// Virtual PC / Azure fixed VHD: raw data plus a 512-byte footer.
    Vhd,
    /// VMware VMDK, a hosted sparse extent: streamOptimized (compressed
    /// grains, what vSphere imports) or monolithicSparse (Workstation,
    /// Fusion); see [`VmdkSubformat`].
    Vmdk,
}

impl Format {
    /// All formats, in a fixed order.
    pub const ALL: [Format; 5] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vhdx,
        Format::Vhd,
        Format::Vmdk,
    ];

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vhdx => "vhdx",
            Format::Vhd => "vhd",
            Format::Vmdk => "vmdk",
        }
    }

    /// The format named by a file extension (`img` and `raw` are raw).
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "raw" | "img" | "bin" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vhdx" => Some(Format::Vhdx),
            "vhd" | "vpc" => Some(Format::Vhd),
            "vmdk" => Some(Format::Vmdk),
            _ => None,
        }
    }

    /// The format named by `name` (`raw`, `qcow2`, `vhdx`, `vhd`).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == name.to_ascii_lowercase())
    }

    /// The format's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        self.extension()
    }

    /// A writer for this format into `file`.
    pub fn sink(self, file: File, opts: &WriteOptions) -> Result<Box<dyn ImageSink>> {
        match self {
            Format::Raw => Ok(Box::new(raw::RawWriter::with_hash(file, opts.hash))),
            Format::Qcow2 => Ok(Box::new(qcow2::Qcow2Writer::new(file, opts)?)),
            Format::Vhdx => Ok(Box::new(vhdx::VhdxWriter::new(file, opts)?)),
            Format::Vhd => Ok(Box::new(vhd::VhdWriter::new(file, opts))),
            Format::Vmdk => match opts.vmdk_subformat {
                VmdkSubformat::StreamOptimized => Ok(Box::new(
                    vmdk::VmdkStreamWriter::with_options(file, opts, "lsilogic")?,
                )),
                VmdkSubformat::MonolithicSparse => Ok(Box::new(vmdk::VmdkSparseWriter::new(
                    file, opts.seed, "lsilogic",
                ))),
            },
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Compression for qcow2 data clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Raw deflate, as QEMU's default `compression_type=zlib`.
    Zlib,
    /// zstd (qcow2 v3 compression-type field = 1).
    Zstd,
}

/// VHDX provisioning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subformat {
    /// Only blocks holding data are stored.
    #[default]
    Dynamic,
    /// Every block is stored (LeaveBlockAllocated).
    Fixed,
}

/// VMDK subformat (the descriptor's `createType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmdkSubformat {
    /// Compressed grains with markers, written front to back: what vSphere
    /// imports and an OVA carries.
    #[default]
    StreamOptimized,
    /// Plain grains with redundant grain tables: what VMware Workstation
    /// and Fusion create and run.
    MonolithicSparse,
}

impl VmdkSubformat {
    /// The `createType` name: `streamOptimized`, `monolithicSparse`.
    pub fn name(self) -> &'static str {
        match self {
            VmdkSubformat::StreamOptimized => "streamOptimized",
            VmdkSubformat::MonolithicSparse => "monolithicSparse",
        }
    }
}

/// Options shared by the writers; each reads the ones that apply to it.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// qcow2 cluster size in bytes (default 64 KiB; 512 B..2 MiB, a power of two).
    pub cluster_size: Option<u32>,
    /// qcow2 compression (default none).
    pub compression: Option<Compression>,
    /// Threads for compression (qcow2 and streamOptimized VMDK; default:
    /// available parallelism). Never changes the bytes.
    pub threads: Option<usize>,
    /// VHDX block size in bytes (default 1 MiB; 1..256 MiB, a power of two).
    pub block_size: Option<u32>,
    /// VHDX logical sector size: 512 (default) or 4096.
    pub logical_sector_size: Option<u32>,
    /// VHDX dynamic (default) or fixed.
    pub subformat: Subformat,
    /// VMDK streamOptimized (default) or monolithicSparse.
    pub vmdk_subformat: VmdkSubformat,
    /// The ranges given to `ImageSink::begin` may hold zeros (a converted
    /// image's allocation map, not scanned beforehand): writers that leave
    /// zero data unallocated check the data as it streams instead of
    /// laying out storage for every allocated range (qcow2 without
    /// compression then places tables after the data, and a dynamic VHDX
    /// writes its BAT last). Off by default: the builder's maps are exact,
    /// and the layout made from an exact map is written front to back.
    pub detect_zeros: bool,
    /// Compute the SHA-256 of the file while writing it, where the format is
    /// written front to back (`ImageSummary::sha256`). Off by default: hashing
    /// costs CPU that `convert` does not need.
    pub hash: bool,
    /// Seed for every GUID/id a format stores (VHDX GUIDs, VHD unique id).
    /// `None`: derived from the disk's content.
    pub seed: Option<[u8; 32]>,
}

/// An opened image, readable as the virtual disk it holds.
pub trait DiskImage: ReadAt {
    /// The format.
    fn format(&self) -> Format;
    /// Virtual size in bytes (the same as `ReadAt::len`).
    fn virtual_size(&self) -> u64 {
        self.len()
    }
    /// Disk ranges that may hold non-zero data, sorted and merged.
    fn allocated(&self) -> Result<Vec<Range<u64>>>;
    /// Header facts a person debugging the image wants, as (name, value).
    fn facts(&self) -> Vec<(String, String)>;
}

/// Guesses the format of an image from its first and last bytes.
pub fn detect(file: &File) -> Result<Format> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading image metadata", e))?
        .len();
    let mut head = [0u8; 8];
    if len >= 8 {
        ReadAt::read_exact_at(file, &mut head, 0)
            .map_err(|e| Error::io("reading image header", e))?;
    }
    if head[..4] == *b"QFI\xfb" {
        return Ok(Format::Qcow2);
    }
    if head == *b"vhdxfile" {
        return Ok(Format::Vhdx);
    }
    if head == *b"conectix" {
        return Ok(Format::Vhd);
    }
    if head[..4] == *b"KDMV" {
        return Ok(Format::Vmdk);
    }
    if len >= 512 && len % 512 == 0 {
        let mut foot = [0u8; 8];
        ReadAt::read_exact_at(file, &mut foot, len - 512)
            .map_err(|e| Error::io("reading image footer", e))?;
        if foot == *b"conectix" {
            return Ok(Format::Vhd);
        }
    }
    Ok(Format::Raw)
}

/// Opens an image, detecting its format unless `format` is given. A
/// package holding its disk uncompressed (an OVA, a KubeVirt OCI archive:
/// a tar) opens as the disk inside it, read in place; GCE's gzip'd tar is
/// refused with what to do instead.
pub fn open(path: &Path, format: Option<Format>) -> Result<Arc<dyn DiskImage>> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    if format.is_none() {
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading image metadata", e))?
            .len();
        let mut head = [0u8; 263];
        if len >= head.len() as u64 {
            ReadAt::read_exact_at(&file, &mut head, 0)
                .map_err(|e| Error::io("reading image header", e))?;
            if head[..2] == [0x1f, 0x8b] {
                return Err(Error::Unsupported {
                    format: "gzip",
                    feature: "reading a disk inside gzip (a GCE image.tar.gz): unpack it with \
                              `tar -xzf`, then open its disk.raw"
                        .into(),
                });
            }
            if head[257..262] == *b"ustar" {
                return package::open_disk(Arc::new(
                    io::SizedFile::new(file)
                        .map_err(|e| Error::io("reading the package's size", e))?,
                ));
            }
        }
    }
    let format = match format {
        Some(f) => f,
        None => detect(&file)?,
    };
    match format {
        Format::Raw => Ok(Arc::new(raw::RawReader::new(file)?)),
        Format::Qcow2 => Ok(Arc::new(qcow2::Qcow2Reader::from_file(file)?)),
        Format::Vhdx => Ok(Arc::new(vhdx::VhdxReader::open(file)?)),
        Format::Vhd => Ok(Arc::new(vhd::VhdReader::open(file)?)),
        Format::Vmdk => Ok(Arc::new(vmdk::VmdkReader::open(file)?)),
    }
}

/// Granule at which writers check data for zeros (as qemu-img does, so
/// all-zero blocks are not stored): raw output leaves such blocks as holes.
pub const ZERO_SCAN: usize = 4096;

/// Describes an opened image as a [`VirtualDisk`] whose extents point at the
/// image itself: its allocated ranges, as the image's metadata gives them
/// (a raw file's: SEEK_DATA/SEEK_HOLE). Nothing is read here, so converting
/// reads each byte once; the ranges may hold zeros, which writers given
/// [`WriteOptions::detect_zeros`] leave unallocated as the data streams by.
pub fn disk_from_image(image: Arc<dyn DiskImage>) -> Result<VirtualDisk> {
    let size = image.virtual_size();
    let source: Arc<dyn ReadAt> = Arc::new(ImageSource(image.clone()));
    let mut builder = VirtualDiskBuilder::new(size);
    for r in image.allocated()? {
        let end = r.end.min(size);
        if r.start < end {
            builder.source(r.start, end - r.start, source.clone(), r.start);
        }
    }
    builder.build()
}

struct ImageSource(Arc<dyn DiskImage>);

impl ReadAt for ImageSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
}
