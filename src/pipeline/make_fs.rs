//! `imgbuild make-fs`: one filesystem from a tarball, no recipe.

use std::path::PathBuf;

use imgbuild_formats::VirtualDisk;

use super::read_os::dir_meta;
use crate::fs::{ext4, fat};
use crate::source;
use crate::tree::Tree;

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
pub fn make_fs(m: &MakeFs) -> anyhow::Result<VirtualDisk> {
    use anyhow::Context;
    let mut tree = Tree::new(dir_meta(m.epoch));
    let opts = source::tar::TarOptions {
        temp_dir: None,
        owners: source::tar::Owners::Numeric,
        clamp_mtime: None,
        zeros: m.zeros.clone(),
        max_unpacked: Some(source::UnpackLimit::for_disk(m.size)),
    };
    source::tar::read_tar(&m.source, &mut tree, &opts).context("cannot read the source tarball")?;
    if m.ext4 {
        let uuid = m.uuid.unwrap_or_else(|| m.seed.uuid("ext4.uuid"));
        let mut o = ext4::Ext4Options::new(m.size, uuid, m.seed.uuid("ext4.hash_seed"), m.epoch);
        if let Some(l) = &m.label {
            o.label = l.clone();
        }
        ext4::write(&tree, &o).map_err(|e| match e {
            ext4::Ext4Error::TooSmall { needed, size } => anyhow::anyhow!(
                "{} does not fit in {}: the filesystem needs at least {} ({needed} bytes); raise --size",
                m.source.display(),
                crate::size::human(size),
                crate::size::human(needed)
            ),
            e => anyhow::Error::new(e).context("cannot lay out the ext4 filesystem"),
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
        fat::write(&tree, &o).context("cannot lay out the FAT filesystem")
    }
}
