//! GUIDs as VHDX stores them: mixed-endian (data1 u32 LE, data2 u16 LE,
//! data3 u16 LE, data4 raw; MS-VHDX 2, [MS-DTYP] 2.3.4.2), and the derivation
//! of our own GUIDs from a seed.

use std::fmt;

use sha2::{Digest, Sha256};

/// A GUID, held in its textual (big-endian) byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID.
    pub const ZERO: Guid = Guid([0; 16]);

    /// A GUID from its textual fields `data1-data2-data3-data4`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: u64) -> Guid {
        let a = d1.to_be_bytes();
        let b = d2.to_be_bytes();
        let c = d3.to_be_bytes();
        let d = d4.to_be_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// The 16 bytes as stored on disk (mixed-endian).
    pub fn to_le_bytes(self) -> [u8; 16] {
        let mut g = self.0;
        g[0..4].reverse();
        g[4..6].reverse();
        g[6..8].reverse();
        g
    }

    /// Parses 16 on-disk (mixed-endian) bytes at `at` of `b` (bounds checked by the caller).
    pub fn from_le_slice(b: &[u8], at: usize) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[at..at + 16]);
        g[0..4].reverse();
        g[4..6].reverse();
        g[6..8].reverse();
        Guid(g)
    }

    /// True for the all-zero GUID.
    pub fn is_zero(self) -> bool {
        self == Guid::ZERO
    }

    /// A version-4-shaped GUID derived from `seed` and `name` (SHA-256), so
    /// the same seed always gives the same GUIDs and different names differ.
    pub fn derive(seed: &[u8; 32], name: &str) -> Guid {
        let mut h = Sha256::new();
        h.update(b"imgbuild-vhdx-guid\0");
        h.update(seed);
        h.update(name.as_bytes());
        let d = h.finalize();
        let mut g = [0u8; 16];
        g.copy_from_slice(&d[..16]);
        g[6] = (g[6] & 0x0f) | 0x40;
        g[8] = (g[8] & 0x3f) | 0x80;
        Guid(g)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        for (i, b) in g.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// BAT region (MS-VHDX 2.2.3.1).
pub const BAT_REGION: Guid = Guid::from_fields(0x2DC2_7766, 0xF623, 0x4200, 0x9D64_115E_9BFD_4A08);
/// Metadata region (MS-VHDX 2.2.3.1).
pub const METADATA_REGION: Guid =
    Guid::from_fields(0x8B7C_A206, 0x4790, 0x4B9A, 0xB8FE_575F_050F_886E);

/// File Parameters item (MS-VHDX 2.6.2.1).
pub const FILE_PARAMETERS: Guid =
    Guid::from_fields(0xCAA1_6737, 0xFA36, 0x4D43, 0xB3B6_33F0_AA44_E76B);
/// Virtual Disk Size item (MS-VHDX 2.6.2.2).
pub const VIRTUAL_DISK_SIZE: Guid =
    Guid::from_fields(0x2FA5_4224, 0xCD1B, 0x4876, 0xB211_5DBE_D83B_F4B8);
/// Page 83 Data / Virtual Disk ID item (MS-VHDX 2.6.2.3).
pub const PAGE83_DATA: Guid = Guid::from_fields(0xBECA_12AB, 0xB2E6, 0x4523, 0x93EF_C309_E000_C746);
/// Logical Sector Size item (MS-VHDX 2.6.2.4).
pub const LOGICAL_SECTOR_SIZE: Guid =
    Guid::from_fields(0x8141_BF1D, 0xA96F, 0x4709, 0xBA47_F233_A8FA_AB5F);
/// Physical Sector Size item (MS-VHDX 2.6.2.5).
pub const PHYSICAL_SECTOR_SIZE: Guid =
    Guid::from_fields(0xCDA3_48C7, 0x445D, 0x4471, 0x9CC9_E988_5251_C556);
/// Parent Locator item, differencing disks only (MS-VHDX 2.6.2.6).
pub const PARENT_LOCATOR: Guid =
    Guid::from_fields(0xA8D3_5F2D, 0xB30B, 0x454D, 0xABF7_D3D8_4834_AB0C);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bat_guid_is_stored_mixed_endian() {
        // 2DC27766-F623-4200-9D64-115E9BFD4A08 as qemu's file stores it.
        assert_eq!(
            BAT_REGION.to_le_bytes(),
            [
                0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
                0x4A, 0x08
            ]
        );
        assert_eq!(
            Guid::from_le_slice(&BAT_REGION.to_le_bytes(), 0),
            BAT_REGION
        );
        assert_eq!(
            BAT_REGION.to_string(),
            "2dc27766-f623-4200-9d64-115e9bfd4a08"
        );
    }

    #[test]
    fn derived_guids_depend_on_seed_and_name() {
        let a = Guid::derive(&[1; 32], "x");
        assert_eq!(a, Guid::derive(&[1; 32], "x"));
        assert_ne!(a, Guid::derive(&[1; 32], "y"));
        assert_ne!(a, Guid::derive(&[2; 32], "x"));
        assert_eq!(a.0[6] >> 4, 4);
    }
}
