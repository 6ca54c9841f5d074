//! [`BuildError`]: why a build failed, one variant per stage, each with
//! what a program needs to act on it (the path, the target, the sizes) and
//! its cause as `source`. Displayed with its causes (`{:#}` through anyhow,
//! or walking `source()`), it reads as the CLI prints it.

use std::path::PathBuf;

use crate::fs::{ext4, fat};
use crate::layout::LayoutError;
use crate::plan::InputProblem;
use crate::size::human;
use crate::source::SourceError;
use crate::tree::boot::BootError;
use crate::tree::config::ConfigError;
use crate::tree::drivers::DriverError;

/// A boxed cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The output directory cannot be taken, written or replaced (it is a
    /// file, not writable, or another build holds it).
    #[error("cannot use the output directory {}", path.display())]
    OutputDirectory {
        /// The output directory.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Cause,
    },
    /// A file the plan names does not exist (the OS tarball or directory,
    /// a file's `source`).
    #[error("{what} {path} does not exist")]
    MissingInput {
        /// Which input (`the OS tarball`, `the content of /etc/motd`).
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An input changed or became unreadable while the build ran, or its
    /// `sha256` pin does not match: checked once the images are written,
    /// before they are put in place. Each problem carries its
    /// `file:line:col` diagnostic.
    #[error("{}", crate::diagnostic::render_all(&.0.iter().map(|p| p.diagnostic().clone()).collect::<Vec<_>>()))]
    Inputs(Vec<InputProblem>),
    /// Reading the OS source failed.
    #[error("{context}")]
    Source {
        /// What was being read (`cannot read the OS tarball rootfs.tar`).
        context: String,
        /// Why.
        #[source]
        source: Box<SourceError>,
    },
    /// A configuration step failed on the tree.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configuration step failed, with the step named.
    #[error("{context}")]
    ConfigStep {
        /// The step (`cannot enable ssh.service`).
        context: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The tree has no kernel to boot.
    #[error("cannot find what to boot")]
    NoKernel(#[source] BootError),
    /// The kernel's modules or initramfs cannot be read.
    #[error("{context}")]
    Kernel {
        /// What was read.
        context: String,
        /// Why.
        #[source]
        source: DriverError,
    },
    /// A target's hypervisor needs a driver the kernel and initramfs lack.
    #[error("target {target:?} cannot boot kernel {kernel}")]
    Drivers {
        /// The target.
        target: String,
        /// The kernel version.
        kernel: String,
        /// The missing module.
        #[source]
        source: DriverError,
    },
    /// The OS tree does not fit the disk.
    #[error(
        "the OS tree does not fit: the root filesystem needs {} but the disk leaves it {}; set [image] size to at least {} ({min_disk_size} bytes)",
        human(*needed),
        human(*available),
        human(*min_disk_size)
    )]
    TooLarge {
        /// Bytes the root filesystem needs.
        needed: u64,
        /// Bytes the root partition has.
        available: u64,
        /// The smallest `[image] size` that fits.
        min_disk_size: u64,
    },
    /// The root filesystem cannot be laid out.
    #[error("cannot lay out the root filesystem")]
    RootFilesystem(#[source] ext4::Ext4Error),
    /// A disk's boot files cannot be made (a loader missing, Secure Boot
    /// impossible).
    #[error("cannot make target {targets} boot")]
    Boot {
        /// The targets of that disk, comma-separated.
        targets: String,
        /// Why.
        #[source]
        source: BootError,
    },
    /// The EFI system partition cannot be laid out.
    #[error("cannot lay out the EFI system partition")]
    Esp(#[source] fat::FatError),
    /// GRUB's core image is larger than the BIOS boot partition.
    #[error(
        "GRUB's core image ({size} bytes) does not fit the BIOS boot partition ({available} bytes)"
    )]
    CoreTooLarge {
        /// The core image's size.
        size: u64,
        /// The partition's size.
        available: u64,
    },
    /// The partition plan cannot be made or filled.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Assembling a disk's extents failed.
    #[error(transparent)]
    Disk(#[from] imgbuild_formats::Error),
    /// Writing or putting the outputs in place failed: the cause, as it
    /// reads (its own causes through `source`).
    #[error(transparent)]
    Write(Cause),
    /// The manifest cannot be encoded.
    #[error("cannot encode the manifest")]
    Manifest(#[source] Cause),
    /// A value of the plan does not fit where it goes (the epoch as a
    /// timestamp, the ESP's start as FAT's hidden sectors).
    #[error("{what} is out of range")]
    OutOfRange {
        /// The value (`epoch 4294967296`).
        what: String,
        /// Why.
        #[source]
        source: std::num::TryFromIntError,
    },
}

/// A `Result` of the pipeline.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl BuildError {
    /// For the CLI: the problems that are the recipe's (its pins, its files),
    /// as `file:line:col` diagnostics.
    pub fn recipe_problems(&self) -> Option<&[InputProblem]> {
        match self {
            BuildError::Inputs(p) => Some(p),
            _ => None,
        }
    }

    /// [`BuildError::Write`] from the output steps' error, its causes kept.
    pub(crate) fn write(e: anyhow::Error) -> BuildError {
        BuildError::Write(e.into())
    }

    /// [`BuildError::Manifest`], its causes kept.
    pub(crate) fn manifest(e: anyhow::Error) -> BuildError {
        BuildError::Manifest(e.into())
    }
}
