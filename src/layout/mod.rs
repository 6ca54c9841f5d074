//! Disk layout: the partition plan (GPT) and the assembly of filesystem
//! images into one `VirtualDisk`.
//!
//! ```text
//! 0     20 KiB                      1 MiB + esp_size        size - 1 MiB   size
//! | GPT | ESP (FAT32)               | root (ext4)           | (free) | backup GPT |
//! ```
//!
//! The ESP starts at LBA 40, the first 4 KiB boundary after the partition
//! array, and ends where a 1 MiB-aligned ESP of `esp_size` would; the root
//! starts and ends on 1 MiB boundaries. 4 KiB is the alignment storage
//! needs (UEFI 2.10 §5.3.2 asks for the physical block size; 1 MiB is its
//! "may"). Starting the ESP at 1 MiB would leave the GPT's 17 KiB alone in
//! the disk's first MiB, which a VHDX stores as a whole 1 MiB block: here
//! the boot sector and FATs share it, and the ESP gains 1004 KiB (a 256 MiB
//! ESP gets FAT32 with 4 KiB clusters: 65,525 of them need 256.5 MiB).

pub mod gpt;

use imgbuild_formats::{VirtualDisk, VirtualDiskBuilder};

use crate::ids::{parse_uuid, Seed};

/// Partition alignment (of the root, and of the ESP's end).
pub const ALIGN: u64 = 1 << 20;
/// Where the ESP starts: LBA 40, the first 4 KiB boundary after the
/// primary GPT (LBA 0–33).
pub const ESP_START: u64 = gpt::FIRST_USABLE.next_multiple_of(8) * gpt::LBA;

/// One partition of the plan.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedPartition {
    /// Name in the GPT (`esp`, `root`).
    pub name: String,
    /// Type GUID, textual.
    pub type_guid: String,
    /// Unique GUID, textual (PARTUUID).
    pub guid: String,
    /// Start in bytes (4 KiB aligned; the root 1 MiB aligned).
    pub start: u64,
    /// Size in bytes (the root: a multiple of 1 MiB).
    pub size: u64,
    /// GPT attribute bits.
    pub attributes: u64,
}

/// The partition plan of a disk: where each filesystem goes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayoutPlan {
    /// Virtual disk size (a multiple of 1 MiB).
    pub size: u64,
    /// Disk GUID, textual.
    pub disk_guid: String,
    /// Partitions, in disk order.
    pub partitions: Vec<PlannedPartition>,
}

/// What is wrong with a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// Disk size unusable.
    #[error("disk size {size} bytes must be a whole number of MiB")]
    Unaligned {
        /// The size.
        size: u64,
    },
    /// Partitions do not fit.
    #[error("disk of {size} bytes is too small: the partitions need at least {needed} bytes")]
    TooSmall {
        /// Disk size.
        size: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// A filesystem image does not match its partition.
    #[error("filesystem for partition {name:?} is {fs} bytes but the partition is {part} bytes")]
    SizeMismatch {
        /// Partition.
        name: String,
        /// Filesystem size.
        fs: u64,
        /// Partition size.
        part: u64,
    },
    /// Encoding the GPT failed.
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
    /// Extents collide.
    #[error(transparent)]
    Disk(#[from] imgbuild_formats::Error),
}

/// The standard UEFI layout: an ESP from LBA 40 to 1 MiB + `esp_size`, then
/// a root partition filling the disk up to the last whole MiB before the
/// backup GPT (module docs).
/// GUIDs come from `seed` (`gpt.disk`, `gpt.esp`, `gpt.root`).
pub fn uefi_plan(size: u64, esp_size: u64, seed: &Seed) -> Result<LayoutPlan, LayoutError> {
    if !size.is_multiple_of(ALIGN) || !esp_size.is_multiple_of(ALIGN) {
        return Err(LayoutError::Unaligned {
            size: if size.is_multiple_of(ALIGN) {
                esp_size
            } else {
                size
            },
        });
    }
    let root_start = ALIGN + esp_size;
    // The backup GPT takes the last 33 sectors: the root ends at the last MiB boundary before it.
    let root_end = size.saturating_sub(ALIGN);
    if root_end < root_start + ALIGN {
        return Err(LayoutError::TooSmall {
            size,
            needed: root_start + 2 * ALIGN,
        });
    }
    let guid = |n: &str| crate::ids::uuid_string(seed.uuid(n));
    Ok(LayoutPlan {
        size,
        disk_guid: guid("gpt.disk"),
        partitions: vec![
            PlannedPartition {
                name: "esp".into(),
                type_guid: gpt::types::ESP.into(),
                guid: guid("gpt.esp"),
                start: ESP_START,
                size: ALIGN + esp_size - ESP_START,
                attributes: 0,
            },
            PlannedPartition {
                name: "root".into(),
                type_guid: gpt::types::ROOT_X86_64.into(),
                guid: guid("gpt.root"),
                start: root_start,
                size: root_end - root_start,
                attributes: 0,
            },
        ],
    })
}

/// Places the GPT and each filesystem image (in plan order) into one disk.
pub fn assemble(
    plan: &LayoutPlan,
    filesystems: &[&VirtualDisk],
) -> Result<VirtualDisk, LayoutError> {
    let mut b = VirtualDiskBuilder::new(plan.size);
    let mut parts = Vec::new();
    for (p, fs) in plan.partitions.iter().zip(filesystems) {
        if fs.size() != p.size {
            return Err(LayoutError::SizeMismatch {
                name: p.name.clone(),
                fs: fs.size(),
                part: p.size,
            });
        }
        b.disk(p.start, fs);
        parts.push(gpt::Partition {
            type_guid: parse_uuid(&p.type_guid).expect("plan GUIDs are well-formed"),
            guid: parse_uuid(&p.guid).expect("plan GUIDs are well-formed"),
            first_lba: p.start / gpt::LBA,
            last_lba: (p.start + p.size) / gpt::LBA - 1,
            attributes: p.attributes,
            name: p.name.clone(),
        });
    }
    gpt::write(
        &mut b,
        plan.size,
        parse_uuid(&plan.disk_guid).expect("plan GUIDs are well-formed"),
        &parts,
    )?;
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uefi_plan_aligns_and_fills_the_disk() {
        let plan = uefi_plan(4 << 30, 256 << 20, &Seed([1; 32])).unwrap();
        let root = &plan.partitions[1];
        assert_eq!(root.start, 257 << 20);
        assert_eq!(root.start + root.size, (4 << 30) - (1 << 20));
        let esp = &plan.partitions[0];
        assert_eq!(esp.type_guid, gpt::types::ESP);
        assert_eq!((esp.start, esp.start + esp.size), (40 * 512, 257 << 20));
    }

    #[test]
    fn assemble_places_filesystems_and_tables() {
        let plan = uefi_plan(16 << 20, 4 << 20, &Seed([2; 32])).unwrap();
        let mut esp = VirtualDiskBuilder::new(plan.partitions[0].size);
        esp.bytes(0, vec![0xAAu8; 512]);
        let esp = esp.build().unwrap();
        let root = VirtualDiskBuilder::new(plan.partitions[1].size)
            .build()
            .unwrap();
        let disk = assemble(&plan, &[&esp, &root]).unwrap();
        let mut b = [0u8; 1];
        disk.read_at(ESP_START, &mut b).unwrap();
        assert_eq!(b[0], 0xAA);
        let parts = gpt::read_partitions(&disk).unwrap().unwrap();
        assert_eq!(parts[1].guid, plan.partitions[1].guid);
    }
}
