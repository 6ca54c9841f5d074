//! The 256-byte on-disk inode (kernel `Documentation/filesystems/ext4/inodes.rst`).
//!
//! ```text
//! 0x00 mode uid size_lo atime ctime mtime dtime gid links blocks_lo flags
//! 0x28 i_block[60] (extent tree, fast symlink target or device number)
//! 0x64 generation file_acl_lo size_high ... blocks_hi file_acl_hi uid_hi gid_hi csum_lo
//! 0x80 extra_isize csum_hi ctime_extra mtime_extra atime_extra crtime crtime_extra ...
//! 0xA0 in-inode extended attributes (magic + entries + values), up to 0x100
//! ```

use super::csum::crc32c;
use super::superblock::{EXTRA_ISIZE, INODE_SIZE};
use crate::tree::{Timestamp, MAX_DEV_MAJOR, MAX_DEV_MINOR};

/// `i_flags`: hashed-indexed directory.
pub const INDEX_FL: u32 = 0x1000;
/// `i_flags`: the inode uses extents.
pub const EXTENTS_FL: u32 = 0x80000;
/// Offset of the in-inode xattr area (128 + `i_extra_isize`).
pub const XATTR_OFFSET: usize = 128 + EXTRA_ISIZE as usize;
/// Bytes available for in-inode xattrs (magic included).
pub const XATTR_SPACE: usize = INODE_SIZE as usize - XATTR_OFFSET;

/// Everything an inode records, decoded.
#[derive(Clone, Debug)]
pub struct InodeSpec {
    /// `i_mode`: type and permission bits.
    pub mode: u16,
    /// Owner (32 bits; high half in `l_i_uid_high`).
    pub uid: u32,
    /// Group (32 bits).
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// `i_links_count`.
    pub links: u16,
    /// atime, ctime, mtime and crtime.
    pub time: Timestamp,
    /// `i_flags`.
    pub flags: u32,
    /// `i_block`.
    pub i_block: [u8; 60],
    /// Blocks in use, in 4 KiB blocks (stored as 512-byte sectors).
    pub blocks: u64,
    /// `i_file_acl`: the xattr block, or 0.
    pub file_acl: u64,
    /// The in-inode xattr area (at most [`XATTR_SPACE`] bytes), or empty.
    pub xattrs: Vec<u8>,
}

impl Default for InodeSpec {
    fn default() -> Self {
        Self {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            links: 0,
            time: Timestamp::default(),
            flags: 0,
            i_block: [0; 60],
            blocks: 0,
            file_acl: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Splits a time into the 32-bit field and the `_extra` field: two epoch
/// bits then nanoseconds << 2 (`ext4_encode_extra_time`). Representable
/// range: -2^31 ..= 2^34 - 2^31 - 1 seconds; times outside are clamped.
pub fn encode_time(t: Timestamp) -> (u32, u32) {
    let secs = t.secs.clamp(-(1i64 << 31), (1i64 << 34) - (1i64 << 31) - 1);
    let lo = secs as i32; // low 32 bits, reinterpreted as signed
    let epoch = ((secs - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, epoch | (t.nsec.min(999_999_999) << 2))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

impl InodeSpec {
    /// Encodes the inode, checksummed with its seed (`crc32c(inode_seed,
    /// inode with i_checksum_lo/hi = 0)`, low half at 0x7C, high at 0x82).
    pub fn encode(&self, inode_seed: u32) -> [u8; INODE_SIZE as usize] {
        let mut b = [0u8; INODE_SIZE as usize];
        let (t, extra) = encode_time(self.time);
        let sectors = self.blocks * 8;
        put16(&mut b, 0x00, self.mode);
        put16(&mut b, 0x02, self.uid as u16);
        put32(&mut b, 0x04, self.size as u32);
        put32(&mut b, 0x08, t); // atime
        put32(&mut b, 0x0C, t); // ctime
        put32(&mut b, 0x10, t); // mtime
        put16(&mut b, 0x18, self.gid as u16);
        put16(&mut b, 0x1A, self.links);
        put32(&mut b, 0x1C, sectors as u32);
        put32(&mut b, 0x20, self.flags);
        b[0x28..0x64].copy_from_slice(&self.i_block);
        put32(&mut b, 0x68, self.file_acl as u32);
        put32(&mut b, 0x6C, (self.size >> 32) as u32);
        put16(&mut b, 0x74, (sectors >> 32) as u16); // l_i_blocks_high
        put16(&mut b, 0x76, (self.file_acl >> 32) as u16);
        put16(&mut b, 0x78, (self.uid >> 16) as u16);
        put16(&mut b, 0x7A, (self.gid >> 16) as u16);
        put16(&mut b, 0x80, EXTRA_ISIZE);
        put32(&mut b, 0x84, extra); // ctime_extra
        put32(&mut b, 0x88, extra); // mtime_extra
        put32(&mut b, 0x8C, extra); // atime_extra
        put32(&mut b, 0x90, t); // crtime
        put32(&mut b, 0x94, extra);
        let n = self.xattrs.len().min(XATTR_SPACE);
        b[XATTR_OFFSET..XATTR_OFFSET + n].copy_from_slice(&self.xattrs[..n]);
        let c = crc32c(inode_seed, &b);
        put16(&mut b, 0x7C, c as u16);
        put16(&mut b, 0x82, (c >> 16) as u16);
        b
    }
}

/// `i_block` of a character or block device: the kernel's old encoding in
/// word 0 when major and minor fit 8 bits, else the new one in word 1
/// (`new_encode_dev`: 12 bits of major, 20 of minor). `None` when the
/// numbers do not fit the new encoding (they would be silently masked).
pub fn device_block(major: u32, minor: u32) -> Option<[u8; 60]> {
    if major > MAX_DEV_MAJOR || minor > MAX_DEV_MINOR {
        return None;
    }
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        put32(&mut b, 0, (major << 8) | minor);
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        put32(&mut b, 4, new);
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_encode_epoch_bits() {
        assert_eq!(encode_time(Timestamp { secs: 1, nsec: 5 }), (1, 5 << 2));
        // 2^32 + 10 (year 2106): low word 10, epoch 1.
        assert_eq!(encode_time(Timestamp::from_secs((1 << 32) + 10)), (10, 1));
        // Negative times keep epoch 0 with a negative low word.
        assert_eq!(encode_time(Timestamp::from_secs(-1)), (u32::MAX, 0));
        // 2^31 (2038-01-19T03:14:08) is -2^31 in the low word, epoch 1.
        assert_eq!(encode_time(Timestamp::from_secs(1 << 31)), (1 << 31, 1));
    }

    #[test]
    fn devices_use_old_or_new_encoding() {
        assert_eq!(&device_block(1, 3).unwrap()[..8], &[3, 1, 0, 0, 0, 0, 0, 0]);
        // major 259, minor 0x12345 -> 0x45 | 259 << 8 | 0x12300 << 12
        let b = device_block(259, 0x12345).unwrap();
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()),
            0x45 | (259 << 8) | (0x12300 << 12)
        );
    }

    /// Issue 14, finding 7: numbers past 12/20 bits were masked into another device.
    #[test]
    fn devices_past_the_new_encoding_are_refused_not_masked() {
        let largest = device_block(4095, 1_048_575).unwrap();
        assert_eq!(
            u32::from_le_bytes(largest[4..8].try_into().unwrap()),
            u32::MAX
        );
        assert_eq!(device_block(4096, 0), None);
        assert_eq!(device_block(0, 1_048_576), None);
    }
}
