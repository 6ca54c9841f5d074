//! The sizes of a qcow2 image that follow from its virtual size and cluster
//! size, and the header they give: what the plain and the compressed writer
//! both lay out from.

use super::header::{
    CompressionType, Header, HEADER_LENGTH_V3, INCOMPAT_COMPRESSION, MAX_L1_BYTES,
};
use super::refcount::{RefcountPlan, REFCOUNT_ORDER};
use crate::{Error, Result};

/// Sizes that follow from the virtual size and the cluster size.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    /// Virtual size in bytes.
    pub size: u64,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Cluster size in bytes.
    pub cs: u64,
    /// Entries per L2 table.
    pub l2_entries: u64,
    /// L1 entries covering the virtual size (qcow2.rst: ceil(size / (cs * l2_entries))).
    pub l1_size: u64,
    /// Clusters holding the L1 table.
    pub l1_clusters: u64,
}

impl Geometry {
    /// Checks that the L1 table fits qemu's limit. The virtual size is
    /// rounded up to whole 512-byte sectors: qemu ignores a partial last
    /// sector of a qcow2 (qcow2_do_open: total_sectors = size / 512) and
    /// `qemu-img create` rounds up the same way.
    pub fn new(size: u64, cluster_bits: u32) -> Result<Self> {
        let size = size
            .checked_next_multiple_of(512)
            .ok_or_else(|| Error::InvalidOption {
                option: "size",
                detail: format!("virtual size {size} is too large"),
            })?;
        let cs = 1u64 << cluster_bits;
        let l2_entries = cs / 8;
        let l1_size = size.div_ceil(cs).div_ceil(l2_entries);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Error::InvalidOption {
                option: "cluster_size",
                detail: format!("a {size} byte disk needs an L1 table over qemu's 32 MiB limit: use larger clusters"),
            });
        }
        // An empty disk has no L1 table at all: qemu-img check counts an
        // L1 cluster of a 0-entry table as leaked.
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        Ok(Self {
            size,
            cluster_bits,
            cs,
            l2_entries,
            l1_size,
            l1_clusters,
        })
    }

    /// The header for this geometry with the given tables.
    pub fn header(
        &self,
        l1_offset: u64,
        rt_offset: u64,
        rt: RefcountPlan,
        compression: CompressionType,
    ) -> Header {
        Header {
            version: 3,
            cluster_bits: self.cluster_bits,
            size: self.size,
            l1_size: u32::try_from(self.l1_size).expect("L1 size checked against 32 MiB"),
            l1_table_offset: l1_offset,
            refcount_table_offset: rt_offset,
            refcount_table_clusters: u32::try_from(rt.table_clusters)
                .expect("refcount table checked against 8 MiB"),
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: if compression == CompressionType::Zstd {
                INCOMPAT_COMPRESSION
            } else {
                0
            },
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: REFCOUNT_ORDER,
            header_length: HEADER_LENGTH_V3,
            compression,
        }
    }
}
