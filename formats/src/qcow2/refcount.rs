//! Refcount table and blocks (qcow2.rst, "Host cluster management").
//!
//! ```text
//! refcount table (contiguous clusters): u64 offsets of refcount blocks
//!   └─► refcount block (one cluster): cluster_size*8/refcount_bits counts,
//!        here 16-bit big-endian, one per host cluster
//! ```
//! Every host cluster in use needs a count >= 1, the refcount structures
//! themselves included, so their size is a small fixed point.

use super::header::MAX_REFTABLE_BYTES;
use crate::{Error, Result};

/// refcount_order 4: 16-bit refcounts (qemu's default).
pub const REFCOUNT_ORDER: u32 = 4;
/// Largest count a 16-bit refcount holds.
pub const MAX_REFCOUNT: u16 = u16::MAX;

/// How many refcount-table clusters and refcount blocks an image needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefcountPlan {
    /// Clusters of the refcount table.
    pub table_clusters: u64,
    /// Number of refcount blocks.
    pub blocks: u64,
}

/// Host clusters one refcount block covers (16-bit counts).
pub fn clusters_per_block(cluster_size: u64) -> u64 {
    cluster_size / 2
}

/// Sizes the refcount structures for an image whose other structures use
/// `other_clusters` host clusters, counting the structures themselves.
pub fn plan(other_clusters: u64, cluster_size: u64) -> Result<RefcountPlan> {
    let per_block = clusters_per_block(cluster_size);
    let mut p = RefcountPlan {
        table_clusters: 1,
        blocks: 1,
    };
    loop {
        let total = other_clusters + p.table_clusters + p.blocks;
        let blocks = total.div_ceil(per_block);
        let table_clusters = (blocks * 8).div_ceil(cluster_size).max(1);
        if blocks <= p.blocks && table_clusters <= p.table_clusters {
            break;
        }
        p = RefcountPlan {
            blocks: blocks.max(p.blocks),
            table_clusters: table_clusters.max(p.table_clusters),
        };
    }
    if p.table_clusters * cluster_size > MAX_REFTABLE_BYTES {
        return Err(Error::InvalidOption {
            option: "cluster_size",
            detail: format!(
                "the image needs a {} byte refcount table, over qemu's 8 MiB limit: use larger clusters",
                p.table_clusters * cluster_size
            ),
        });
    }
    Ok(p)
}

/// The refcount table: entry i points at block `blocks_offset + i * cluster_size`.
pub fn encode_table(plan: RefcountPlan, blocks_offset: u64, cluster_size: u64) -> Vec<u8> {
    let len = usize::try_from(plan.table_clusters * cluster_size).expect("table is at most 8 MiB");
    let mut b = vec![0u8; len];
    for i in 0..plan.blocks {
        let at = usize::try_from(i * 8).expect("inside the table");
        b[at..at + 8].copy_from_slice(&(blocks_offset + i * cluster_size).to_be_bytes());
    }
    b
}

/// Refcount block `index`: the count of host cluster `c` is `count(c)`.
pub fn encode_block(index: u64, cluster_size: u64, count: impl Fn(u64) -> u16) -> Vec<u8> {
    let per_block = clusters_per_block(cluster_size);
    let first = index * per_block;
    let mut b = vec![0u8; usize::try_from(cluster_size).expect("cluster is at most 2 MiB")];
    for (i, slot) in b.chunks_exact_mut(2).enumerate() {
        slot.copy_from_slice(&count(first + i as u64).to_be_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_its_own_clusters() {
        // 64 KiB clusters: a block covers 32768 clusters. 32766 other clusters
        // plus one table cluster plus one block fill exactly one block.
        assert_eq!(
            plan(32766, 65536).unwrap(),
            RefcountPlan {
                table_clusters: 1,
                blocks: 1
            }
        );
        // One more cluster needs a second block.
        assert_eq!(
            plan(32767, 65536).unwrap(),
            RefcountPlan {
                table_clusters: 1,
                blocks: 2
            }
        );
    }

    #[test]
    fn plan_grows_the_table_for_small_clusters() {
        // 512 B clusters: 256 clusters per block, 64 block pointers per table
        // cluster, so 64 blocks cover 16384 clusters including themselves.
        let p = plan(20000, 512).unwrap();
        let covered = p.blocks * 256;
        assert!(covered >= 20000 + p.blocks + p.table_clusters, "{p:?}");
        assert!(p.table_clusters * 64 >= p.blocks, "{p:?}");
    }

    #[test]
    fn block_and_table_encode_big_endian() {
        let b = encode_block(1, 512, |c| if c == 256 { 3 } else { 0 });
        assert_eq!(&b[0..4], &[0, 3, 0, 0]);
        let t = encode_table(
            RefcountPlan {
                table_clusters: 1,
                blocks: 2,
            },
            0x1000,
            512,
        );
        assert_eq!(
            &t[0..16],
            &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x12, 0]
        );
    }
}
