//! Tar headers, written and read: POSIX ustar (regular files, directories)
//! and GNU `oldgnu` sparse members (type `S`, as `tar --format=oldgnu -S`
//! writes them), plus the reader [`super::find_disk`] walks archives with.
//!
//! ```text
//! offset  field      ustar            oldgnu
//!      0  name[100]
//!    100  mode[8]    octal, NUL
//!    108  uid[8] gid[8] size[12] mtime[12]   (octal, NUL; base-256 when too large)
//!    148  chksum[8]  6 octal digits, NUL, space; summed with this field as spaces
//!    156  typeflag   '0' file, '5' dir    'S' sparse
//!    257  magic[8]   "ustar\0" "00"      "ustar  \0"
//!    265  uname[32] gname[32]
//!    329  devmajor[8] devminor[8]
//!    345  prefix[155]                      386: 4 × (offset[12], numbytes[12]);
//!                                          482: isextended; 483: realsize[12]
//! ```
//! An oldgnu extension block holds 21 more (offset, numbytes) pairs and its
//! own `isextended` byte at 504. Everything here is deterministic: no field
//! comes from the environment.

use std::ops::Range;

use crate::{Error, Result};

/// Size of a header and of the unit member data is padded to.
pub const BLOCK: u64 = 512;
/// GNU tar's default record (blocking factor 20): archives end on a multiple.
pub const RECORD: u64 = 20 * BLOCK;

const NAME: Range<usize> = 0..100;
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const SIZE: Range<usize> = 124..136;
const MTIME: Range<usize> = 136..148;
const CHKSUM: Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: Range<usize> = 257..265;
const UNAME: Range<usize> = 265..297;
const GNAME: Range<usize> = 297..329;
const DEVMAJOR: Range<usize> = 329..337;
const DEVMINOR: Range<usize> = 337..345;
const PREFIX: Range<usize> = 345..500;
/// oldgnu: the first sparse entry, then three more, 24 bytes each.
const OLDGNU_SPARSE: usize = 386;
const OLDGNU_ISEXTENDED: usize = 482;
const OLDGNU_REALSIZE: Range<usize> = 483..495;
/// Sparse entries in the header and in each extension block.
const SPARSES_IN_HEADER: usize = 4;
const SPARSES_IN_EXTENSION: usize = 21;
const EXTENSION_ISEXTENDED: usize = 504;

/// POSIX ustar magic and version: "ustar\0" "00".
const MAGIC_USTAR: &[u8; 8] = b"ustar\x0000";
/// GNU (oldgnu) magic and version: "ustar  \0".
const MAGIC_OLDGNU: &[u8; 8] = b"ustar  \x00";

/// Regular file.
pub const TYPE_FILE: u8 = b'0';
/// Directory.
pub const TYPE_DIR: u8 = b'5';
/// GNU sparse file (oldgnu map in the header).
pub const TYPE_GNU_SPARSE: u8 = b'S';

const FORMAT: &str = "tar";

/// One ustar member's metadata.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// Path inside the archive (at most 100 bytes; directories end in `/`).
    pub name: &'a str,
    /// [`TYPE_FILE`] or [`TYPE_DIR`].
    pub kind: u8,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Owner name (`""` leaves it to the numeric id).
    pub uname: &'a str,
    /// Group name.
    pub gname: &'a str,
    /// Data bytes (0 for a directory).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

impl<'a> Entry<'a> {
    /// A regular file owned by root, mode 0644.
    pub fn file(name: &'a str, size: u64, mtime: u64) -> Self {
        Entry {
            name,
            kind: TYPE_FILE,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "root",
            gname: "root",
            size,
            mtime,
        }
    }

    /// A directory owned by root, mode 0755.
    pub fn dir(name: &'a str, mtime: u64) -> Self {
        Entry {
            kind: TYPE_DIR,
            mode: 0o755,
            ..Entry::file(name, 0, mtime)
        }
    }
}

/// A ustar header for `entry`. Fails on a name that does not fit.
pub fn ustar(entry: &Entry) -> Result<[u8; 512]> {
    let mut h = [0u8; 512];
    put_str(&mut h[NAME], entry.name, "member name")?;
    put_number(&mut h[MODE], u64::from(entry.mode));
    put_number(&mut h[UID], u64::from(entry.uid));
    put_number(&mut h[GID], u64::from(entry.gid));
    put_number(&mut h[SIZE], entry.size);
    put_number(&mut h[MTIME], entry.mtime);
    h[TYPEFLAG] = entry.kind;
    h[MAGIC].copy_from_slice(MAGIC_USTAR);
    put_str(&mut h[UNAME], entry.uname, "owner name")?;
    put_str(&mut h[GNAME], entry.gname, "group name")?;
    put_number(&mut h[DEVMAJOR], 0);
    put_number(&mut h[DEVMINOR], 0);
    seal(&mut h);
    Ok(h)
}

/// Rewrites the size of a header made by [`ustar`] (and its checksum).
pub fn set_size(header: &mut [u8; 512], size: u64) {
    put_number(&mut header[SIZE], size);
    seal(header);
}

/// Rewrites the name of a header made by [`ustar`] (and its checksum).
pub fn set_name(header: &mut [u8; 512], name: &str) -> Result<()> {
    header[NAME].fill(0);
    put_str(&mut header[NAME], name, "member name")?;
    seal(header);
    Ok(())
}

/// The header and extension blocks of a GNU oldgnu sparse member `name` of
/// `realsize` bytes whose data is `map` (sorted, non-overlapping ranges),
/// stored concatenated. Like GNU tar 1.34 (`--format=oldgnu -S`, which
/// finds the data by SEEK_DATA), the map ends with an empty entry at
/// `realsize`: on extraction GNU tar truncates the file there, which gives a
/// file ending in a hole its full length.
pub fn oldgnu_sparse(name: &str, realsize: u64, map: &[Range<u64>], mtime: u64) -> Result<Vec<u8>> {
    let mut entries: Vec<(u64, u64)> = map.iter().map(|r| (r.start, r.end - r.start)).collect();
    entries.push((realsize, 0));
    let stored: u64 = map.iter().map(|r| r.end - r.start).sum();
    let mut h = [0u8; 512];
    put_str(&mut h[NAME], name, "member name")?;
    put_number(&mut h[MODE], 0o644);
    put_number(&mut h[UID], 0);
    put_number(&mut h[GID], 0);
    put_number(&mut h[SIZE], stored);
    put_number(&mut h[MTIME], mtime);
    h[TYPEFLAG] = TYPE_GNU_SPARSE;
    h[MAGIC].copy_from_slice(MAGIC_OLDGNU);
    put_str(&mut h[UNAME], "root", "owner name")?;
    put_str(&mut h[GNAME], "root", "group name")?;
    let (first, rest) = entries.split_at(entries.len().min(SPARSES_IN_HEADER));
    put_sparse(&mut h[OLDGNU_SPARSE..OLDGNU_ISEXTENDED], first);
    h[OLDGNU_ISEXTENDED] = u8::from(!rest.is_empty());
    put_number(&mut h[OLDGNU_REALSIZE], realsize);
    seal(&mut h);
    let mut out = h.to_vec();
    let blocks: Vec<&[(u64, u64)]> = rest.chunks(SPARSES_IN_EXTENSION).collect();
    for (i, chunk) in blocks.iter().enumerate() {
        let mut b = [0u8; 512];
        put_sparse(&mut b[..EXTENSION_ISEXTENDED], chunk);
        b[EXTENSION_ISEXTENDED] = u8::from(i + 1 < blocks.len());
        out.extend_from_slice(&b);
    }
    Ok(out)
}

fn put_sparse(area: &mut [u8], entries: &[(u64, u64)]) {
    for (slot, &(offset, numbytes)) in area.chunks_exact_mut(24).zip(entries) {
        put_number(&mut slot[..12], offset);
        put_number(&mut slot[12..], numbytes);
    }
}

/// Bytes of zeros that end an archive of `len` bytes: two zero blocks, then
/// up to the next [`RECORD`], as GNU tar pads.
pub fn end_padding(len: u64) -> u64 {
    (len + 2 * BLOCK).next_multiple_of(RECORD) - len
}

/// `len` rounded up to whole blocks.
pub fn padded(len: u64) -> u64 {
    len.next_multiple_of(BLOCK)
}

fn put_str(field: &mut [u8], s: &str, what: &'static str) -> Result<()> {
    if s.len() > field.len() || s.as_bytes().contains(&0) {
        return Err(Error::InvalidOption {
            option: "package name",
            detail: format!(
                "tar {what} {s:?} is longer than {} bytes or holds a NUL",
                field.len()
            ),
        });
    }
    field[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

/// A numeric field: zero-padded octal and a NUL when it fits, else GNU's
/// base-256 (first byte 0x80, the value big-endian in the rest), which GNU
/// tar, bsdtar and Go's archive/tar read.
fn put_number(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || value < 1u64 << (3 * digits) {
        let text = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(text.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let be = value.to_be_bytes();
        let n = be.len().min(field.len() - 1);
        let at = field.len() - n;
        field[at..].copy_from_slice(&be[be.len() - n..]);
    }
}

/// The header checksum: the unsigned sum of all 512 bytes with the checksum
/// field counted as spaces (POSIX ustar).
pub fn checksum(h: &[u8; 512]) -> u32 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| u32::from(if CHKSUM.contains(&i) { b' ' } else { b }))
        .sum()
}

/// Writes the checksum as GNU tar does: six octal digits, NUL, space.
fn seal(h: &mut [u8; 512]) {
    let sum = checksum(h);
    h[CHKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A header read back: what [`super::find_disk`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Path (ustar prefix and name joined).
    pub name: String,
    /// Type flag.
    pub kind: u8,
    /// Data bytes following the header (padded to a block).
    pub size: u64,
}

/// Parses one header block at file offset `at`: `Ok(None)` for a zero block
/// (the end of the archive). Checks the magic and the checksum.
pub fn parse(h: &[u8; 512], at: u64) -> Result<Option<Parsed>> {
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let corrupt = |detail: String| Error::Corrupt {
        format: FORMAT,
        structure: "member header",
        offset: at,
        detail,
    };
    let magic = &h[MAGIC];
    if magic != MAGIC_USTAR && magic != MAGIC_OLDGNU {
        return Err(corrupt(format!(
            "magic {magic:02x?} is neither ustar nor GNU"
        )));
    }
    let stored =
        read_number(&h[CHKSUM]).ok_or_else(|| corrupt("checksum field is not a number".into()))?;
    let found = checksum(h);
    if stored != u64::from(found) {
        return Err(corrupt(format!(
            "checksum field says {stored:#o}, the header sums to {found:#o}"
        )));
    }
    let size = read_number(&h[SIZE]).ok_or_else(|| corrupt("size field is not a number".into()))?;
    let name = text(&h[NAME]);
    let name = if magic == MAGIC_USTAR && h[PREFIX.start] != 0 {
        format!("{}/{name}", text(&h[PREFIX]))
    } else {
        name
    };
    Ok(Some(Parsed {
        name,
        kind: h[TYPEFLAG],
        size,
    }))
}

/// Sparse map entries (offset, numbytes) in `area` (24 bytes each), up to
/// the first empty slot; `None` when a number is malformed.
fn sparse_entries(area: &[u8]) -> Option<Vec<(u64, u64)>> {
    area.chunks_exact(24)
        .take_while(|e| e[0] != 0)
        .map(|e| Some((read_number(&e[..12])?, read_number(&e[12..])?)))
        .collect()
}

/// The sparse part of an oldgnu `S` header read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseHeader {
    /// Its map entries (offset, numbytes).
    pub entries: Vec<(u64, u64)>,
    /// Extension blocks follow.
    pub extended: bool,
    /// The file's real size.
    pub realsize: u64,
}

/// The sparse part of an oldgnu `S` header (the inverse of
/// [`oldgnu_sparse`]; numbers octal or base-256).
pub fn parse_oldgnu_sparse(h: &[u8; 512], at: u64) -> Result<SparseHeader> {
    let corrupt = |detail: &str| Error::Corrupt {
        format: FORMAT,
        structure: "sparse header",
        offset: at,
        detail: detail.into(),
    };
    let entries = sparse_entries(&h[OLDGNU_SPARSE..OLDGNU_ISEXTENDED])
        .ok_or_else(|| corrupt("a sparse map entry is not a number"))?;
    let realsize =
        read_number(&h[OLDGNU_REALSIZE]).ok_or_else(|| corrupt("real size is not a number"))?;
    Ok(SparseHeader {
        entries,
        extended: h[OLDGNU_ISEXTENDED] != 0,
        realsize,
    })
}

/// An oldgnu sparse extension block: its map entries and whether another
/// block follows.
pub fn parse_sparse_extension(b: &[u8; 512], at: u64) -> Result<(Vec<(u64, u64)>, bool)> {
    let entries = sparse_entries(&b[..EXTENSION_ISEXTENDED]).ok_or_else(|| Error::Corrupt {
        format: FORMAT,
        structure: "sparse extension block",
        offset: at,
        detail: "a sparse map entry is not a number".into(),
    })?;
    Ok((entries, b[EXTENSION_ISEXTENDED] != 0))
}

/// A NUL-terminated field as text (invalid UTF-8 replaced).
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// A numeric field: octal (leading spaces, then digits, ended by NUL or
/// space) or base-256 (first byte 0x80). `None` when malformed or too large.
pub fn read_number(field: &[u8]) -> Option<u64> {
    if field.first() == Some(&0x80) {
        let rest = &field[1..];
        let skip = rest.len().saturating_sub(8);
        if rest[..skip].iter().any(|&b| b != 0) {
            return None;
        }
        return Some(
            rest[skip..]
                .iter()
                .fold(0u64, |v, &b| (v << 8) | u64::from(b)),
        );
    }
    let mut digits = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ')
        .peekable();
    digits.peek()?;
    digits.try_fold(0u64, |v, &b| {
        let d = (b as char).to_digit(8)?;
        v.checked_mul(8)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ustar_file_header_has_gnu_tar_s_field_layout() {
        let h = ustar(&Entry::file("a.ovf", 1234, 1_700_000_000)).unwrap();
        assert_eq!(&h[0..6], b"a.ovf\0");
        assert_eq!(&h[100..108], b"0000644\0"); // mode
        assert_eq!(&h[108..116], b"0000000\0"); // uid
        assert_eq!(&h[124..136], b"00000002322\0"); // 1234 in octal
        assert_eq!(&h[136..148], b"14524770400\0"); // 1_700_000_000 in octal
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert_eq!(&h[265..270], b"root\0");
        assert_eq!(h[154..156], *b"\0 ");
        assert_eq!(read_number(&h[148..156]), Some(u64::from(checksum(&h))));
    }

    #[test]
    fn large_numbers_switch_to_base_256() {
        let mut f = [0u8; 12];
        put_number(&mut f, 8 << 30); // 8 GiB: one more than 11 octal digits hold
        assert_eq!(f[0], 0x80);
        assert_eq!(read_number(&f), Some(8 << 30));
        put_number(&mut f, (8 << 30) - 1);
        assert_eq!(&f, b"77777777777\0");
    }

    #[test]
    fn parse_reads_back_what_ustar_wrote_and_rejects_a_bad_checksum() {
        let mut h = ustar(&Entry::dir("disk/", 0)).unwrap();
        let p = parse(&h, 0).unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.kind, p.size), ("disk/", TYPE_DIR, 0));
        h[0] = b'x';
        assert!(matches!(
            parse(&h, 512),
            Err(Error::Corrupt { offset: 512, .. })
        ));
    }

    #[test]
    fn a_long_sparse_map_spills_into_extension_blocks() {
        // 30 ranges + the closing empty entry: 4 in the header, 21 + 6 in two blocks.
        let map: Vec<Range<u64>> = (0..30u64).map(|i| i * 1024..i * 1024 + 100).collect();
        let out = oldgnu_sparse("disk.raw", 1 << 20, &map, 0).unwrap();
        assert_eq!(out.len(), 3 * 512);
        assert_eq!(out[OLDGNU_ISEXTENDED], 1);
        assert_eq!(out[512 + EXTENSION_ISEXTENDED], 1);
        assert_eq!(out[1024 + EXTENSION_ISEXTENDED], 0);
        let last = 1024 + 5 * 24; // the sixth entry of the second block
        assert_eq!(read_number(&out[last..last + 12]), Some(1 << 20));
        assert_eq!(read_number(&out[last + 12..last + 24]), Some(0));
        assert_eq!(read_number(&out[SIZE]), Some(3000));
        // And read back.
        let first = parse_oldgnu_sparse(out[..512].try_into().unwrap(), 0).unwrap();
        assert_eq!(
            (first.entries.len(), first.extended, first.realsize),
            (4, true, 1 << 20)
        );
        let (second, more) =
            parse_sparse_extension(out[512..1024].try_into().unwrap(), 512).unwrap();
        assert_eq!((second.len(), more), (21, true));
        let (third, more) = parse_sparse_extension(out[1024..].try_into().unwrap(), 1024).unwrap();
        assert_eq!((third.len(), more), (6, false));
        assert_eq!(third[5], (1 << 20, 0));
        assert_eq!(first.entries[1], (1024, 100));
    }

    #[test]
    fn a_sparse_map_past_8_gib_reads_back_in_base_256() {
        let size = 10u64 << 30;
        let map = [0..4096, (9 << 30)..(9 << 30) + 512];
        let out = oldgnu_sparse("disk.raw", size, &map, 0).unwrap();
        let h = parse_oldgnu_sparse(out[..512].try_into().unwrap(), 0).unwrap();
        assert_eq!(h.realsize, size);
        assert_eq!(h.entries, vec![(0, 4096), (9 << 30, 512), (size, 0)]);
    }

    #[test]
    fn the_archive_ends_on_a_whole_record() {
        assert_eq!(end_padding(0), RECORD);
        assert_eq!(end_padding(RECORD - 1024), 1024);
        assert_eq!(end_padding(RECORD - 512), RECORD + 512);
    }
}
