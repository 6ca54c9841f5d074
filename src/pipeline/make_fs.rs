//! `imgbuild make-fs`: one filesystem from a tarball, no recipe.

use std::path::PathBuf;

use imgbuild_formats::VirtualDisk;

use super::read_os::dir_meta;
use crate::fs::{ext4, fat};
use crate::size::human;
use crate::source::{self, SourceError};
use crate::tree::Tree;

/// Why `make-fs` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MakeFsError {
    /// The tarball cannot be read.
    #[error("cannot read the source tarball")]
    Source(#[source] SourceError),
    /// The tree does not fit the size asked for.
    #[error(
        "{} does not fit in {}: the filesystem needs at least {} ({needed} bytes); raise --size",
        tarball.display(),
        human(*size),
        human(*needed)
    )]
    TooSmall {
        /// The tarball.
        tarball: PathBuf,
        /// The size asked for.
        size: u64,
        /// The smallest that fits.
        needed: u64,
    },
    /// The ext4 filesystem cannot be laid out.
    #[error("cannot lay out the ext4 filesystem")]
    Ext4(#[source] ext4::Ext4Error),
    /// The FAT filesystem cannot be laid out.
    #[error("cannot lay out the FAT filesystem")]
    Fat(#[source] fat::FatError),
}

#[derive(Clone, Debug)]
pub struct MakeFs {
    /// ext4 (else FAT32).
    pub ext4: bool,
    /// Filesystem size in bytes.
    pub size: u64,
    /// Volume label.
    pub label: Option<String>,
    /// UUID (ext4), else derived from the seed.
    pub uuid: Option<[u8; 16]>,
    /// Seed for ids.
    pub seed: crate::ids::Seed,
    /// Timestamps of created metadata.
    pub epoch: i64,
    /// Source tarball.
    pub source: PathBuf,
    /// Its zero sectors, when they were measured (see [`crate::source::zeros`]).
    pub zeros: Option<std::sync::Arc<crate::source::zeros::ZeroMap>>,
}

/// One filesystem from a tarball, as a disk of exactly `size` bytes.
pub fn make_fs(m: &MakeFs) -> Result<VirtualDisk, MakeFsError> {
    let mut tree = Tree::new(dir_meta(m.epoch));
    let opts = source::tar::TarOptions {
        temp_dir: None,
        owners: source::tar::Owners::Numeric,
        clamp_mtime: None,
        zeros: m.zeros.clone(),
        max_unpacked: Some(source::UnpackLimit::for_disk(m.size)),
    };
    source::tar::read_tar(&m.source, &mut tree, &opts).map_err(MakeFsError::Source)?;
    if m.ext4 {
        let uuid = m.uuid.unwrap_or_else(|| m.seed.uuid("ext4.uuid"));
        let mut o = ext4::Ext4Options::new(m.size, uuid, m.seed.uuid("ext4.hash_seed"), m.epoch);
        if let Some(l) = &m.label {
            o.label = l.clone();
        }
        ext4::write(&tree, &o).map_err(|e| match e {
            ext4::Ext4Error::TooSmall { needed, size } => MakeFsError::TooSmall {
                tarball: m.source.clone(),
                size,
                needed,
            },
            e => MakeFsError::Ext4(e),
        })
    } else {
        let o = fat::FatOptions {
            size: m.size,
            volume_id: m.seed.u32("fat.volume_id"),
            label: m
                .label
                .clone()
                .unwrap_or_else(|| fat::DEFAULT_LABEL.to_string()),
            epoch: m.epoch,
            hidden_sectors: 0,
        };
        fat::write(&tree, &o).map_err(MakeFsError::Fat)
    }
}
