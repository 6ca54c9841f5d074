//! Volume geometry and the reserved region: boot sector (BPB), FSInfo and
//! their backups (Microsoft "FAT: General Overview of On-Disk Format",
//! fatgen103, §3 "Boot Sector and BPB" and §5 "FAT32 FSInfo Sector").
//!
//! ```text
//! sector 0 boot | 1 FSInfo | 6 backup boot | 7 backup FSInfo | ..reserved.. | FAT #1 | FAT #2 | cluster 2 ...
//! ```

use super::FatError;

/// Bytes per sector. Only 512 is written (what every firmware reads).
pub const SECTOR: u64 = 512;
/// Fewest clusters a FAT32 volume may have (fatgen103 §3.5: a volume with
/// fewer than 65525 clusters is FAT12 or FAT16, whatever its BPB says).
pub const MIN_CLUSTERS: u64 = 65_525;
/// Most clusters FAT32 can address (fatgen103 §3.5; 0x0FFFFFF7 is BAD).
pub const MAX_CLUSTERS: u64 = 0x0FFF_FFF5;
/// Reserved sectors before the first FAT (mkfs.fat's and Windows' FAT32 default).
const RESERVED_MIN: u64 = 32;
/// Sector of the backup boot sector (BPB_BkBootSec, fatgen103 §3.3).
const BACKUP_BOOT: u64 = 6;
/// Sector of the FSInfo structure (BPB_FSInfo).
const FSINFO: u64 = 1;
/// Number of FATs (BPB_NumFATs).
pub const FATS: u64 = 2;
/// Media descriptor for fixed disks (BPB_Media).
const MEDIA: u8 = 0xF8;

/// Where everything lies on the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Sectors in the volume (BPB_TotSec32).
    pub total_sectors: u64,
    /// Sectors per cluster (BPB_SecPerClus), a power of two 1..=64.
    pub sectors_per_cluster: u64,
    /// Reserved sectors (BPB_RsvdSecCnt), padded so the data area starts on
    /// a cluster boundary.
    pub reserved: u64,
    /// Sectors per FAT (BPB_FATSz32).
    pub fat_sectors: u64,
    /// Data clusters (numbered 2..clusters+2).
    pub clusters: u64,
}

impl Geometry {
    /// The geometry for a volume of `size` bytes. Cluster size: the fatgen103
    /// table (`DskTableFAT32`) from 8 GiB up; below, the largest of 4 KiB,
    /// 2 KiB, 1 KiB and 512 B that keeps at least 65525 clusters, where the
    /// table says 512 B up to 260 MiB. Fewer clusters mean a smaller FAT:
    /// a 256 MiB ESP's two FATs are 0.5 MiB each with 2 KiB clusters, not
    /// 2 MiB, and their unused (zero) tails no longer spread the volume's
    /// few used sectors over several 1 MiB VHDX blocks. Whole 4 KiB clusters
    /// also keep file data on page boundaries.
    pub fn for_size(size: u64) -> Result<Self, FatError> {
        if !size.is_multiple_of(SECTOR) {
            return Err(FatError::SizeNotSectorMultiple { size });
        }
        let total = size / SECTOR;
        if total > u64::from(u32::MAX) {
            return Err(FatError::TooLarge {
                size,
                maximum: u64::from(u32::MAX) * SECTOR,
            });
        }
        // Each row of the table starts where its cluster size already gives
        // well over 65525 clusters, so only 512-byte clusters can fall short.
        // Below 8 GiB the table's 512-byte clusters give way to the largest
        // size up to 4 KiB that still leaves FAT32 its 65525 clusters.
        let table = default_sectors_per_cluster(total);
        let spc = if table <= 8 {
            [8, 4, 2]
                .into_iter()
                .find(|&spc| layout(total, spc).is_some_and(|g| g.clusters >= MIN_CLUSTERS))
                .unwrap_or(table)
        } else {
            table
        };
        match layout(total, spc) {
            Some(g) if g.clusters >= MIN_CLUSTERS => Ok(g),
            _ => Err(FatError::TooSmall {
                size,
                minimum: minimum_size(),
            }),
        }
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }

    /// Byte offset of FAT number `index` (0 or 1).
    pub fn fat_offset(&self, index: u64) -> u64 {
        (self.reserved + index * self.fat_sectors) * SECTOR
    }

    /// Byte offset of data cluster `cluster` (2 is the first).
    pub fn cluster_offset(&self, cluster: u64) -> u64 {
        (self.reserved + FATS * self.fat_sectors) * SECTOR + (cluster - 2) * self.cluster_size()
    }
}

/// fatgen103 §3.5 `DskTableFAT32`: up to 260 MiB 512-byte clusters, up to
/// 8 GiB 4 KiB, up to 16 GiB 8 KiB, up to 32 GiB 16 KiB, then 32 KiB.
fn default_sectors_per_cluster(total_sectors: u64) -> u64 {
    match total_sectors {
        0..=532_480 => 1,
        532_481..=16_777_216 => 8,
        16_777_217..=33_554_432 => 16,
        33_554_433..=67_108_864 => 32,
        _ => 64,
    }
}

/// Lays out `total` sectors with `spc` sectors per cluster: the smallest FAT
/// that covers every cluster it leaves room for, found by bisection (the
/// clusters needed shrink as the FAT grows, so the predicate is monotone).
/// `None` when the volume cannot even hold the reserved area and the FATs.
fn layout(total: u64, spc: u64) -> Option<Geometry> {
    let geometry_with = |fat: u64| -> Option<Geometry> {
        let data_start = (RESERVED_MIN + FATS * fat).next_multiple_of(spc);
        let clusters = total.checked_sub(data_start)? / spc;
        Some(Geometry {
            total_sectors: total,
            sectors_per_cluster: spc,
            reserved: data_start - FATS * fat,
            fat_sectors: fat,
            clusters: clusters.min(MAX_CLUSTERS),
        })
    };
    // Entries 0 and 1 are reserved; 4 bytes per entry (fatgen103 §4).
    let covers =
        |fat: u64| geometry_with(fat).is_some_and(|g| (g.clusters + 2) * 4 <= fat * SECTOR);
    // A FAT for every sector as a cluster is always big enough.
    let (mut lo, mut hi) = (1u64, ((total / spc + 2) * 4).div_ceil(SECTOR));
    if !covers(hi) {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if covers(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    geometry_with(lo)
}

/// The smallest volume size, in bytes, this writer lays out as FAT32.
pub fn minimum_size() -> u64 {
    // A FAT32 FAT holds at least MIN_CLUSTERS + 2 entries, which bounds the
    // size from below; the first size above that bound that lays out works.
    let fat = ((MIN_CLUSTERS + 2) * 4).div_ceil(SECTOR);
    let mut total = RESERVED_MIN + FATS * fat + MIN_CLUSTERS;
    while layout(total, 1).is_none_or(|g| g.clusters < MIN_CLUSTERS) {
        total += 1;
    }
    total * SECTOR
}

/// Fields of the boot sector that are not geometry.
pub struct BootParams<'a> {
    /// BS_VolID.
    pub volume_id: u32,
    /// BS_VolLab, 11 bytes padded with spaces.
    pub label: &'a [u8; 11],
    /// BPB_HiddSec: sectors before the volume (the partition's start LBA).
    pub hidden_sectors: u32,
}

/// The first 8 reserved sectors: boot sector, FSInfo, and their backups at
/// sectors 6 and 7 (as mkfs.fat writes them). Later reserved sectors are zero.
pub fn reserved_area(
    g: &Geometry,
    p: &BootParams<'_>,
    free_clusters: u64,
    next_free: u64,
) -> Vec<u8> {
    let boot = boot_sector(g, p);
    let info = fsinfo(free_clusters, next_free);
    let mut out = vec![0u8; to_usize((BACKUP_BOOT + 2) * SECTOR)];
    for base in [0, BACKUP_BOOT] {
        put(&mut out, base * SECTOR, &boot);
        put(&mut out, (base + FSINFO) * SECTOR, &info);
    }
    out
}

fn put(out: &mut [u8], at: u64, bytes: &[u8]) {
    let at = to_usize(at);
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("reserved-area offsets are a few KiB")
}

/// Encodes the boot sector (fatgen103 §3.1–3.3).
fn boot_sector(g: &Geometry, p: &BootParams<'_>) -> [u8; 512] {
    let mut b = [0u8; 512];
    let u16_of = |n: u64| u16::try_from(n).expect("geometry fields fit their BPB width");
    let u32_of = |n: u64| u32::try_from(n).expect("geometry fields fit their BPB width");
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]); // BS_jmpBoot: jmp to 0x5A, nop
    b[3..11].copy_from_slice(b"MSWIN4.1"); // BS_OEMName, the value fatgen103 recommends
    b[11..13].copy_from_slice(&u16_of(SECTOR).to_le_bytes()); // BPB_BytsPerSec
    b[13] = u8::try_from(g.sectors_per_cluster).expect("at most 64"); // BPB_SecPerClus
    b[14..16].copy_from_slice(&u16_of(g.reserved).to_le_bytes()); // BPB_RsvdSecCnt
    b[16] = 2; // BPB_NumFATs
               // BPB_RootEntCnt, BPB_TotSec16 and BPB_FATSz16 stay 0 on FAT32.
    b[21] = MEDIA; // BPB_Media
    b[24..26].copy_from_slice(&32u16.to_le_bytes()); // BPB_SecPerTrk (mkfs.fat's default)
    b[26..28].copy_from_slice(&64u16.to_le_bytes()); // BPB_NumHeads (mkfs.fat's default)
    b[28..32].copy_from_slice(&p.hidden_sectors.to_le_bytes()); // BPB_HiddSec
    b[32..36].copy_from_slice(&u32_of(g.total_sectors).to_le_bytes()); // BPB_TotSec32
    b[36..40].copy_from_slice(&u32_of(g.fat_sectors).to_le_bytes()); // BPB_FATSz32
                                                                     // BPB_ExtFlags 0: FATs mirrored at run time. BPB_FSVer 0.0.
    b[44..48].copy_from_slice(&2u32.to_le_bytes()); // BPB_RootClus
    b[48..50].copy_from_slice(&u16_of(FSINFO).to_le_bytes()); // BPB_FSInfo
    b[50..52].copy_from_slice(&u16_of(BACKUP_BOOT).to_le_bytes()); // BPB_BkBootSec
    b[64] = 0x80; // BS_DrvNum: hard disk
    b[66] = 0x29; // BS_BootSig: the next three fields are present
    b[67..71].copy_from_slice(&p.volume_id.to_le_bytes()); // BS_VolID
    b[71..82].copy_from_slice(p.label); // BS_VolLab
    b[82..90].copy_from_slice(b"FAT32   "); // BS_FilSysType (informational only)
                                            // Boot code at 0x5A (BS_jmpBoot's target): this volume is not bootable
                                            // by BIOS, so halt: cli; hlt; jmp back to hlt.
    b[90..94].copy_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]);
    b[510] = 0x55; // signature word 0xAA55
    b[511] = 0xAA;
    b
}

/// Encodes the FSInfo sector (fatgen103 §5). `next_free` is the first free
/// cluster; a value past `u32` (no free cluster) is stored as 0xFFFFFFFF,
/// "unknown".
fn fsinfo(free_clusters: u64, next_free: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    let as_u32 = |n: u64| u32::try_from(n).unwrap_or(0xFFFF_FFFF);
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes()); // FSI_LeadSig "RRaA"
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes()); // FSI_StrucSig "rrAa"
    s[488..492].copy_from_slice(&as_u32(free_clusters).to_le_bytes()); // FSI_Free_Count
    s[492..496].copy_from_slice(&as_u32(next_free).to_le_bytes()); // FSI_Nxt_Free
    s[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes()); // FSI_TrailSig
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn esp_sizes_get_the_largest_cluster_keeping_fat32() {
        for (size, cluster) in [
            (64 * MIB, 512),
            (128 * MIB, 1024),
            (256 * MIB, 2048),
            (260 * MIB, 4096),
            (261 * MIB, 4096),
            (1024 * MIB, 4096),
            (9 * 1024 * MIB, 8192),
        ] {
            let g = Geometry::for_size(size).unwrap();
            assert_eq!(g.cluster_size(), cluster, "size {size}");
            assert!(
                g.clusters >= MIN_CLUSTERS,
                "size {size}: {} clusters",
                g.clusters
            );
        }
    }

    #[test]
    fn fat_covers_every_cluster_and_data_is_cluster_aligned() {
        for size in [
            64 * MIB,
            100 * MIB + 512,
            261 * MIB,
            1024 * MIB,
            minimum_size(),
        ] {
            let g = Geometry::for_size(size).unwrap();
            assert!(
                (g.clusters + 2) * 4 <= g.fat_sectors * SECTOR,
                "size {size}"
            );
            // A FAT one sector smaller would not cover the clusters it
            // leaves room for: the FAT is minimal.
            let fat = g.fat_sectors - 1;
            let more = (g.total_sectors
                - (RESERVED_MIN + 2 * fat).next_multiple_of(g.sectors_per_cluster))
                / g.sectors_per_cluster;
            assert!((more + 2) * 4 > fat * SECTOR, "size {size}");
            assert_eq!(
                (g.reserved + 2 * g.fat_sectors) % g.sectors_per_cluster,
                0,
                "size {size}"
            );
            assert!(g.reserved >= RESERVED_MIN);
            let end = g.cluster_offset(g.clusters + 2);
            assert!(end <= size, "size {size}: data ends at {end}");
            assert!(
                end + g.cluster_size() > size,
                "size {size}: a whole cluster unused"
            );
        }
    }

    #[test]
    fn every_row_of_the_cluster_table_starts_with_enough_clusters() {
        for total in [532_481u64, 16_777_217, 33_554_433, 67_108_865] {
            let g = Geometry::for_size(total * SECTOR).unwrap();
            assert!(
                g.clusters >= MIN_CLUSTERS,
                "{total} sectors: {} clusters",
                g.clusters
            );
        }
    }

    #[test]
    fn below_the_minimum_is_refused_naming_it() {
        let min = minimum_size();
        assert!(Geometry::for_size(min).is_ok());
        match Geometry::for_size(min - SECTOR) {
            Err(FatError::TooSmall { minimum, .. }) => assert_eq!(minimum, min),
            other => panic!("expected TooSmall, got {other:?}"),
        }
        assert!(matches!(
            Geometry::for_size(MIB + 1),
            Err(FatError::SizeNotSectorMultiple { .. })
        ));
    }

    #[test]
    fn boot_sector_fields() {
        let g = Geometry::for_size(64 * MIB).unwrap();
        let p = BootParams {
            volume_id: 0x1234_5678,
            label: b"ESP        ",
            hidden_sectors: 2048,
        };
        let r = reserved_area(&g, &p, 1000, 7);
        assert_eq!(&r[0..3], &[0xEB, 0x58, 0x90]);
        assert_eq!(u16::from_le_bytes([r[11], r[12]]), 512);
        assert_eq!(u32::from_le_bytes(r[28..32].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(r[32..36].try_into().unwrap()), 131_072);
        assert_eq!(
            u32::from_le_bytes(r[67..71].try_into().unwrap()),
            0x1234_5678
        );
        assert_eq!(&r[71..82], b"ESP        ");
        assert_eq!(&r[510..512], &[0x55, 0xAA]);
        assert_eq!(&r[0..512], &r[3072..3584], "backup boot sector");
        assert_eq!(&r[512..1024], &r[3584..4096], "backup FSInfo");
        assert_eq!(
            u32::from_le_bytes(r[512 + 488..512 + 492].try_into().unwrap()),
            1000
        );
        assert_eq!(
            u32::from_le_bytes(r[512 + 492..512 + 496].try_into().unwrap()),
            7
        );
    }
}
