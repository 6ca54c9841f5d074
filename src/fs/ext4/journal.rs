//! An empty, clean jbd2 journal (kernel `Documentation/filesystems/ext4/journal.rst`).
//!
//! Only the first journal block is written: the jbd2 superblock (big-endian)
//! with `s_start = 0`, which tells the kernel and e2fsck that there is
//! nothing to replay. The other journal blocks stay zero (gaps in the disk).

/// `h_magic` of every jbd2 block.
const JBD2_MAGIC_NUMBER: u32 = 0xC03B_3998;
/// `h_blocktype`: superblock version 2.
const JBD2_SUPERBLOCK_V2: u32 = 4;
/// jbd2 refuses journals shorter than this (`JBD2_MIN_JOURNAL_BLOCKS`).
pub const MIN_JOURNAL_BLOCKS: u64 = 1024;

/// e2fsprogs' `ext2fs_default_journal_size` (lib/ext2fs/mkjournal.c) for
/// 4 KiB blocks: 0 (no journal) below 2048 blocks, up to 1 GiB.
pub fn default_size(blocks: u64) -> u64 {
    match blocks {
        b if b < 2048 => 0,
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 8192 * 1024 => 32_768,
        b if b < 16_384 * 1024 => 65_536,
        b if b < 32_768 * 1024 => 131_072,
        _ => 262_144,
    }
}

/// The journal superblock for an internal journal of `blocks` blocks of
/// `block_size` bytes (the filesystem's), as
/// `ext2fs_create_journal_superblock2` makes it: v2, no features, one user,
/// `s_first = 1`, `s_sequence = 1`, `s_uuid` = the filesystem's UUID.
/// The block size comes in as a parameter, so that this file knows nothing
/// of the ext4 superblock (which asks it for [`default_size`]).
pub fn superblock(blocks: u32, block_size: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; block_size as usize];
    let mut put = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put(0x0, JBD2_MAGIC_NUMBER);
    put(0x4, JBD2_SUPERBLOCK_V2);
    put(0xC, block_size); // s_blocksize
    put(0x10, blocks); // s_maxlen
    put(0x14, 1); // s_first
    put(0x18, 1); // s_sequence
    put(0x40, 1); // s_nr_users
    b[0x30..0x40].copy_from_slice(uuid);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_follow_mke2fs() {
        assert_eq!(default_size(2047), 0);
        assert_eq!(default_size(16_384), 1024);
        assert_eq!(default_size(1 << 20), 16_384); // 4 GiB -> 64 MiB
    }

    #[test]
    fn superblock_is_big_endian() {
        let b = superblock(4096, 4096, &[7; 16]);
        assert_eq!(&b[0..4], &[0xC0, 0x3B, 0x39, 0x98]);
        assert_eq!(&b[0x10..0x14], &[0, 0, 0x10, 0]);
    }
}
