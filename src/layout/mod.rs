//! Disk layout: the partition plan (GPT) and the assembly of filesystem
//! images into one `VirtualDisk`.
//!
//! ```text
//! 0    20 KiB                 1 MiB                1 MiB + esp_size        size - 1 MiB   size
//! | MBR+GPT | BIOS boot (GRUB core) | ESP (FAT32)    | root (ext4)           | (free) | backup GPT |
//!   entry:     1 "bios"             2 "esp"          3 "root"
//! ```
//!
//! The hybrid layout Debian's cloud images use (boot-facts.md §1.5), in disk
//! order: the BIOS boot partition fills the first MiB after the GPT
//! (from LBA 40, the first 4 KiB boundary; 1004 KiB, above GRUB's 1900-sector
//! advice) and holds GRUB's core image when the disk boots with BIOS; the
//! ESP and the root start on 1 MiB boundaries, and the root is physically
//! last, so that it can grow into a larger disk. Every disk has all three
//! partitions, whatever its firmware, so partition numbers are the same for
//! every target of a recipe. The protective MBR carries GRUB's boot code
//! when the disk boots with BIOS.

pub mod gpt;

use imgbuild_formats::{VirtualDisk, VirtualDiskBuilder};

use crate::ids::{Guid, Seed};

/// Partition alignment (of the ESP and the root).
pub const ALIGN: u64 = 1 << 20;
/// Where the BIOS boot partition starts: LBA 40, the first 4 KiB boundary
/// after the primary GPT (LBA 0–33).
pub const BIOS_BOOT_START: u64 = gpt::FIRST_USABLE.next_multiple_of(8) * gpt::LBA;
/// Where the ESP starts.
pub const ESP_START: u64 = ALIGN;
/// GPT entry numbers (1-based), as GRUB's `(,gptN)` and `/dev/sdaN` count.
pub const BIOS_BOOT_ENTRY: u32 = 1;
/// The ESP's entry number.
pub const ESP_ENTRY: u32 = 2;
/// The root's entry number.
pub const ROOT_ENTRY: u32 = 3;

/// One partition of the plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedPartition {
    /// Name in the GPT (`bios`, `esp`, `root`).
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID (PARTUUID).
    pub guid: Guid,
    /// Start in bytes (4 KiB aligned; the root 1 MiB aligned).
    pub start: u64,
    /// Size in bytes (the root: a multiple of 1 MiB).
    pub size: u64,
    /// GPT attribute bits.
    pub attributes: u64,
}

/// The partition plan of a disk: where each filesystem goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayoutPlan {
    /// Virtual disk size (a multiple of 1 MiB).
    pub size: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Partitions, in disk order.
    pub partitions: Vec<PlannedPartition>,
}

impl LayoutPlan {
    /// The BIOS boot partition (entry [`BIOS_BOOT_ENTRY`]).
    pub fn bios(&self) -> &PlannedPartition {
        &self.partitions[BIOS_BOOT_ENTRY as usize - 1]
    }

    /// The EFI system partition (entry [`ESP_ENTRY`]).
    pub fn esp(&self) -> &PlannedPartition {
        &self.partitions[ESP_ENTRY as usize - 1]
    }

    /// The root partition (entry [`ROOT_ENTRY`]).
    pub fn root(&self) -> &PlannedPartition {
        &self.partitions[ROOT_ENTRY as usize - 1]
    }
}

/// The smallest disk (a whole MiB) whose root partition holds `root_bytes`
/// beside an ESP of `esp_size` ([`plan`]'s arithmetic).
pub fn min_disk_size(esp_size: u64, root_bytes: u64) -> u64 {
    ALIGN + esp_size + root_bytes.next_multiple_of(ALIGN) + ALIGN
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
    /// Not one image per partition.
    #[error("{images} images for {partitions} partitions")]
    Count {
        /// Partitions in the plan.
        partitions: usize,
        /// Images given.
        images: usize,
    },
    /// Encoding the GPT failed.
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
    /// Extents collide.
    #[error(transparent)]
    Disk(#[from] imgbuild_formats::Error),
}

/// The hybrid layout (module docs): a BIOS boot partition in the first MiB,
/// the ESP from 1 MiB to 1 MiB + `esp_size`, then the root filling the disk
/// up to the last whole MiB before the backup GPT.
/// GUIDs come from `seed` (`gpt.disk`, `gpt.bios`, `gpt.esp`, `gpt.root`).
pub fn plan(size: u64, esp_size: u64, seed: &Seed) -> Result<LayoutPlan, LayoutError> {
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
    let guid = |n: &str| Guid(seed.uuid(n));
    Ok(LayoutPlan {
        size,
        disk_guid: guid("gpt.disk"),
        partitions: vec![
            PlannedPartition {
                name: "bios".into(),
                type_guid: Guid::from_text(gpt::types::BIOS_BOOT),
                guid: guid("gpt.bios"),
                start: BIOS_BOOT_START,
                size: ESP_START - BIOS_BOOT_START,
                attributes: 0,
            },
            PlannedPartition {
                name: "esp".into(),
                type_guid: Guid::from_text(gpt::types::ESP),
                guid: guid("gpt.esp"),
                start: ESP_START,
                size: esp_size,
                attributes: 0,
            },
            PlannedPartition {
                name: "root".into(),
                type_guid: Guid::from_text(gpt::types::ROOT_X86_64),
                guid: guid("gpt.root"),
                start: root_start,
                size: root_end - root_start,
                attributes: 0,
            },
        ],
    })
}

/// Places the GPT and each partition's image (in plan order) into one
/// disk; `boot_code` (GRUB's, for BIOS) goes into the protective MBR.
pub fn assemble(
    plan: &LayoutPlan,
    filesystems: &[&VirtualDisk],
    boot_code: Option<&[u8; 440]>,
) -> Result<VirtualDisk, LayoutError> {
    if filesystems.len() != plan.partitions.len() {
        return Err(LayoutError::Count {
            partitions: plan.partitions.len(),
            images: filesystems.len(),
        });
    }
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
            type_guid: p.type_guid.0,
            guid: p.guid.0,
            first_lba: p.start / gpt::LBA,
            last_lba: (p.start + p.size) / gpt::LBA - 1,
            attributes: p.attributes,
            name: p.name.clone(),
        });
    }
    gpt::write(&mut b, plan.size, plan.disk_guid.0, &parts, boot_code)?;
    Ok(b.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_aligns_and_fills_the_disk() {
        let plan = plan(4 << 30, 256 << 20, &Seed([1; 32])).unwrap();
        let root = &plan.partitions[ROOT_ENTRY as usize - 1];
        assert_eq!(root.start, 257 << 20);
        assert_eq!(root.start + root.size, (4 << 30) - (1 << 20));
        let esp = &plan.partitions[ESP_ENTRY as usize - 1];
        assert_eq!(esp.type_guid.to_string(), gpt::types::ESP);
        assert_eq!((esp.start, esp.start + esp.size), (1 << 20, 257 << 20));
        let bios = &plan.partitions[BIOS_BOOT_ENTRY as usize - 1];
        assert_eq!(bios.type_guid.to_string(), gpt::types::BIOS_BOOT);
        assert_eq!((bios.start, bios.start + bios.size), (40 * 512, 1 << 20));
    }

    #[test]
    fn assemble_places_filesystems_and_tables() {
        let plan = plan(16 << 20, 4 << 20, &Seed([2; 32])).unwrap();
        let empty = |i: usize| {
            VirtualDiskBuilder::new(plan.partitions[i].size)
                .build()
                .unwrap()
        };
        let mut esp = VirtualDiskBuilder::new(plan.partitions[1].size);
        esp.bytes(0, vec![0xAAu8; 512]);
        let esp = esp.build().unwrap();
        let code = [0x33u8; 440];
        let disk = assemble(&plan, &[&empty(0), &esp, &empty(2)], Some(&code)).unwrap();
        let mut b = [0u8; 1];
        disk.read_at(ESP_START, &mut b).unwrap();
        assert_eq!(b[0], 0xAA);
        let mut mbr = [0u8; 512];
        disk.read_at(0, &mut mbr).unwrap();
        assert_eq!(&mbr[..440], &code[..]);
        assert_eq!((mbr[450], mbr[510], mbr[511]), (0xEE, 0x55, 0xAA));
        let parts = gpt::read_partitions(&disk).unwrap().unwrap();
        assert_eq!(parts[2].guid, plan.partitions[2].guid.to_string());
        assert!(assemble(&plan, &[&esp], None).is_err());
    }
}
