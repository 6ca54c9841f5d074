//! Directories (kernel `Documentation/filesystems/ext4/directory.rst`):
//! linear blocks of `ext4_dir_entry_2`, each ending in a checksum tail, and
//! hashed b-trees (htree, `dir_index`) for directories above one block.
//!
//! ```text
//! leaf:  [inode u32][rec_len u16][name_len u8][type u8][name, pad 4]... [tail 12]
//! root:  ["." 12]["..", rec_len 4084][dx_root_info 8][limit count block][hash block]... [dx_tail 8]
//! node:  [fake dirent, rec_len 4096][limit count block][hash block]... [dx_tail 8]
//! ```

use super::csum::crc32c;
use super::superblock::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
/// Size of the checksum tail at the end of each leaf block.
const TAIL: usize = 12;
/// Usable bytes in a leaf block.
const LEAF_SPACE: usize = BS - TAIL;
/// dx_entry slots in the root: (4096 - 32) / 8 - 1 for the dx_tail.
const ROOT_LIMIT: usize = (BS - 32) / 8 - 1;
/// dx_entry slots in an interior node: (4096 - 8) / 8 - 1.
const NODE_LIMIT: usize = (BS - 8) / 8 - 1;

/// `file_type` values in directory entries.
pub mod ftype {
    /// Regular file.
    pub const REG: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHR: u8 = 3;
    /// Block device.
    pub const BLK: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const LNK: u8 = 7;
}

/// One directory entry to write.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// Name (1..=255 bytes, no `/` or NUL).
    pub name: &'a [u8],
    /// Inode number.
    pub ino: u32,
    /// `file_type`.
    pub ftype: u8,
}

/// Directory content ready to be placed: `blocks.len()` blocks, checksums
/// still to be applied by [`finish`] once the inode number is known.
#[derive(Debug)]
pub struct DirBlocks {
    /// Each 4096-byte block, in logical order.
    pub blocks: Vec<Vec<u8>>,
    /// True for an htree directory (`INDEX_FL`).
    pub indexed: bool,
    /// Which blocks are htree root/nodes (dx tail) rather than leaves.
    dx: Vec<bool>,
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

fn put_entry(b: &mut [u8], at: usize, e: &Entry, len: usize) {
    b[at..at + 4].copy_from_slice(&e.ino.to_le_bytes());
    b[at + 4..at + 6].copy_from_slice(&(len as u16).to_le_bytes());
    b[at + 6] = e.name.len() as u8;
    b[at + 7] = e.ftype;
    b[at + 8..at + 8 + e.name.len()].copy_from_slice(e.name);
}

/// Packs entries into leaf blocks; the last entry of a block takes the rest
/// of the space up to the tail. An empty block gets one unused entry.
fn pack_leaves(entries: &[Entry]) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut blocks = Vec::new();
    let mut firsts = Vec::new();
    let mut i = 0;
    while i < entries.len() || blocks.is_empty() {
        let mut b = vec![0u8; BS];
        let (mut at, start) = (0, i);
        while i < entries.len() && at + rec_len(entries[i].name.len()) <= LEAF_SPACE {
            at += rec_len(entries[i].name.len());
            i += 1;
        }
        let mut pos = 0;
        for (k, e) in entries[start..i].iter().enumerate() {
            let len = if start + k + 1 == i {
                LEAF_SPACE - pos
            } else {
                rec_len(e.name.len())
            };
            put_entry(&mut b, pos, e, len);
            pos += len;
        }
        if start == i {
            b[4..6].copy_from_slice(&(LEAF_SPACE as u16).to_le_bytes());
        }
        firsts.push(start);
        blocks.push(b);
    }
    (blocks, firsts)
}

impl DirBlocks {
    /// Appends an empty leaf block (lost+found's spare blocks).
    pub fn push_empty(&mut self) {
        self.blocks.push(pack_leaves(&[]).0.remove(0));
        self.dx.push(false);
    }
}

/// `children` with their (major, minor) hashes, in htree order: by hash,
/// then by name.
fn hash_sorted<'a, 'e>(children: &'a [Entry<'e>], hash: &Hasher) -> Vec<(u32, u32, &'a Entry<'e>)> {
    let mut sorted: Vec<(u32, u32, &Entry)> = children
        .iter()
        .map(|e| {
            let (h, m) = hash.hash(e.name);
            (h, m, e)
        })
        .collect();
    sorted.sort_by(|a, b| (a.0, a.1, a.2.name).cmp(&(b.0, b.1, b.2.name)));
    sorted
}

/// Index key of each leaf (starting at entry `firsts[k]` of `sorted`): its
/// first hash, with bit 0 set when the same hash continues from the
/// previous leaf (a collision run).
fn leaf_keys(sorted: &[(u32, u32, &Entry)], firsts: &[usize]) -> Vec<u32> {
    firsts
        .iter()
        .enumerate()
        .map(|(k, &f)| {
            let h = sorted[f].0;
            if k > 0 && sorted[f - 1].0 == h {
                h | 1
            } else {
                h
            }
        })
        .collect()
}

/// Lays out a directory: `.` and `..` then `children` (sorted by name);
/// one linear block when they fit, else an htree keyed by `hash`.
pub fn build(ino: u32, parent: u32, children: &[Entry], hash: &Hasher) -> Result<DirBlocks, usize> {
    let dot = [
        Entry {
            name: b".",
            ino,
            ftype: ftype::DIR,
        },
        Entry {
            name: b"..",
            ino: parent,
            ftype: ftype::DIR,
        },
    ];
    let mut all: Vec<Entry> = dot.to_vec();
    all.extend(children.iter().cloned());
    let (blocks, _) = pack_leaves(&all);
    if blocks.len() == 1 {
        return Ok(DirBlocks {
            dx: vec![false],
            blocks,
            indexed: false,
        });
    }
    let sorted = hash_sorted(children, hash);
    let entries: Vec<Entry> = sorted.iter().map(|s| s.2.clone()).collect();
    let (leaves, firsts) = pack_leaves(&entries);
    let keys = leaf_keys(&sorted, &firsts);
    let nodes = if leaves.len() <= ROOT_LIMIT {
        0
    } else {
        leaves.len().div_ceil(NODE_LIMIT)
    };
    if nodes > ROOT_LIMIT {
        return Err(children.len());
    }
    let leaf_base = 1 + nodes as u32;
    let leaf_refs: Vec<(u32, u32)> = keys
        .iter()
        .enumerate()
        .map(|(k, &h)| (h, leaf_base + k as u32))
        .collect();
    let mut blocks = Vec::with_capacity(1 + nodes + leaves.len());
    let mut dx = Vec::new();
    let root_refs: Vec<(u32, u32)> = if nodes == 0 {
        leaf_refs.clone()
    } else {
        leaf_refs
            .chunks(NODE_LIMIT)
            .enumerate()
            .map(|(n, c)| (c[0].0, 1 + n as u32))
            .collect()
    };
    blocks.push(dx_root(ino, parent, &root_refs, nodes > 0));
    dx.push(true);
    if nodes > 0 {
        for chunk in leaf_refs.chunks(NODE_LIMIT) {
            blocks.push(dx_node(chunk));
            dx.push(true);
        }
    }
    dx.extend(std::iter::repeat_n(false, leaves.len()));
    blocks.extend(leaves);
    Ok(DirBlocks {
        blocks,
        indexed: true,
        dx,
    })
}

fn put_dx_entries(b: &mut [u8], at: usize, limit: usize, refs: &[(u32, u32)]) {
    b[at..at + 2].copy_from_slice(&(limit as u16).to_le_bytes());
    b[at + 2..at + 4].copy_from_slice(&(refs.len() as u16).to_le_bytes());
    b[at + 4..at + 8].copy_from_slice(&refs[0].1.to_le_bytes());
    for (i, (h, blk)) in refs.iter().enumerate().skip(1) {
        let p = at + 8 * i;
        b[p..p + 4].copy_from_slice(&h.to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&blk.to_le_bytes());
    }
}

fn dx_root(ino: u32, parent: u32, refs: &[(u32, u32)], levels: bool) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    put_entry(
        &mut b,
        0,
        &Entry {
            name: b".",
            ino,
            ftype: ftype::DIR,
        },
        12,
    );
    put_entry(
        &mut b,
        12,
        &Entry {
            name: b"..",
            ino: parent,
            ftype: ftype::DIR,
        },
        BS - 12,
    );
    // dx_root_info: reserved_zero, hash_version, info_length 8, indirect_levels.
    b[0x1C] = super::superblock::DX_HASH_HALF_MD4;
    b[0x1D] = 8;
    b[0x1E] = u8::from(levels);
    put_dx_entries(&mut b, 0x20, ROOT_LIMIT, refs);
    b
}

fn dx_node(refs: &[(u32, u32)]) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    b[4..6].copy_from_slice(&(BS as u16).to_le_bytes()); // fake dirent: inode 0, rec_len 4096
    put_dx_entries(&mut b, 8, NODE_LIMIT, refs);
    b
}

/// Writes the checksums: a tail on each leaf (`crc32c(seed, block[..4084])`)
/// and a dx_tail on htree nodes (over the used dx entries and the tail's
/// reserved word, then a zero checksum: `ext4_dx_csum`).
pub fn finish(d: &mut DirBlocks, inode_seed: u32) {
    for (b, &is_dx) in d.blocks.iter_mut().zip(&d.dx) {
        if is_dx {
            let count_at = if b[0..4] == [0; 4] { 8 } else { 0x20 };
            let limit = usize::from(u16::from_le_bytes([b[count_at], b[count_at + 1]]));
            let count = usize::from(u16::from_le_bytes([b[count_at + 2], b[count_at + 3]]));
            let tail = count_at + 8 * limit;
            let c = crc32c(inode_seed, &b[..count_at + 8 * count]);
            let c = crc32c(c, &b[tail..tail + 4]);
            let c = crc32c(c, &[0; 4]);
            b[tail + 4..tail + 8].copy_from_slice(&c.to_le_bytes());
        } else {
            // ext4_dir_entry_tail: inode 0, rec_len 12, name_len 0, type 0xDE.
            b[LEAF_SPACE + 4..LEAF_SPACE + 6].copy_from_slice(&(TAIL as u16).to_le_bytes());
            b[LEAF_SPACE + 7] = 0xDE;
            let c = crc32c(inode_seed, &b[..LEAF_SPACE]);
            b[LEAF_SPACE + 8..].copy_from_slice(&c.to_le_bytes());
        }
    }
}

/// The directory name hash: half MD4 with signed chars, seeded by
/// `s_hash_seed` (kernel `fs/ext4/hash.c`).
#[derive(Clone, Debug)]
pub struct Hasher {
    seed: [u32; 4],
}

impl Hasher {
    /// A hasher for `s_hash_seed`; an all-zero seed means the MD4 defaults.
    pub fn new(seed: &[u8; 16]) -> Self {
        let mut s = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        if seed.iter().any(|&b| b != 0) {
            for (i, w) in s.iter_mut().enumerate() {
                *w = u32::from_le_bytes(seed[4 * i..4 * i + 4].try_into().expect("4 bytes"));
            }
        }
        Self { seed: s }
    }

    /// `(major hash with bit 0 clear, minor hash)` of a name.
    pub fn hash(&self, name: &[u8]) -> (u32, u32) {
        let mut buf = self.seed;
        let mut p = name;
        loop {
            let mut input = [0u32; 8];
            str2hashbuf_signed(p, &mut input);
            half_md4_transform(&mut buf, &input);
            if p.len() <= 32 {
                break;
            }
            p = &p[32..];
        }
        let mut h = buf[1] & !1;
        if h == 0x7fff_ffff << 1 {
            h = (0x7fff_ffff - 1) << 1;
        }
        (h, buf[2])
    }
}

/// `str2hashbuf_signed`: packs up to 32 bytes (as signed chars) into 8 words,
/// padded with the length byte repeated.
fn str2hashbuf_signed(msg: &[u8], out: &mut [u32; 8]) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let mut n = 0;
    for (i, &c) in msg.iter().take(32).enumerate() {
        val = (i32::from(c as i8) as u32).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[n] = val;
            n += 1;
            val = pad;
        }
    }
    if n < 8 && !msg.len().min(32).is_multiple_of(4) {
        out[n] = val;
        n += 1;
    }
    for w in out.iter_mut().skip(n) {
        *w = pad;
    }
}

fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0x5A82_7999;
    const K3: u32 = 0x6ED9_EBA1;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);
    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_directory_is_one_linear_block() {
        let kids = [Entry {
            name: b"a",
            ino: 12,
            ftype: ftype::REG,
        }];
        let d = build(2, 2, &kids, &Hasher::new(&[0; 16])).unwrap();
        assert!(!d.indexed);
        assert_eq!(d.blocks.len(), 1);
        // ".": rec_len 12; "..": 12; "a": the rest up to the tail (4084 - 24).
        assert_eq!(&d.blocks[0][4..6], &12u16.to_le_bytes());
        assert_eq!(&d.blocks[0][28..30], &(4084u16 - 24).to_le_bytes());
    }

    #[test]
    fn hash_clears_bit_zero() {
        let h = Hasher::new(&[1; 16]);
        for name in [&b"a"[..], b"hello-world", &[0xffu8; 40]] {
            assert_eq!(h.hash(name).0 & 1, 0);
        }
    }
}
