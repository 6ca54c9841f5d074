//! CRC32C as ext4's `metadata_csum` uses it (ext4 `checksums.rst`): the
//! Castagnoli polynomial, reflected, *without* the final inversion. The
//! kernel's `ext4_chksum(sbi, crc, buf, len)` is `crc32c_le(crc, buf, len)`.
//!
//! ```text
//! fs seed     = crc32c(~0, s_uuid)
//! inode seed  = crc32c(crc32c(fs seed, le32 ino), le32 i_generation)
//! superblock  = crc32c(~0, sb[0..0x3FC])
//! ```

/// Reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// Slicing-by-8 tables, built at compile time.
static TABLES: [[u32; 256]; 8] = build_tables();

const fn build_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

/// Continues a raw CRC32C (no pre- or post-inversion) over `data`.
pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][(hi & 0xff) as usize]
            ^ TABLES[2][((hi >> 8) & 0xff) as usize]
            ^ TABLES[1][((hi >> 16) & 0xff) as usize]
            ^ TABLES[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    crc
}

/// The filesystem checksum seed: `crc32c(~0, s_uuid)`.
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c(!0, uuid)
}

/// The per-inode seed used for inodes, extent blocks, directory blocks and
/// htree nodes (`ext4_inode_csum_seed`; generation is always 0 here).
pub fn inode_seed(fs_seed: u32, ino: u32) -> u32 {
    let c = crc32c(fs_seed, &ino.to_le_bytes());
    crc32c(c, &0u32.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value() {
        // CRC-32C("123456789") = 0xE3069283 with init ~0 and final inversion.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn slicing_matches_bytewise() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut bytewise = 0x1234_5678u32;
        for &b in &data {
            bytewise = (bytewise >> 8) ^ TABLES[0][((bytewise ^ u32::from(b)) & 0xff) as usize];
        }
        assert_eq!(crc32c(0x1234_5678, &data), bytewise);
    }
}
