//! The 512-byte tar header block: POSIX ustar (IEEE 1003.1-2017, pax
//! "ustar Interchange Format"), its GNU variant (magic `"ustar  \0"`) and
//! old V7 headers (no magic). Numeric fields are octal or, as GNU tar and
//! star write for values that do not fit, base-256 (GNU tar manual §"Basic
//! Tar Format": a leading byte 0x80 means positive binary, 0xFF negative
//! two's complement).

use super::TarProblem;

/// Size of a tar block (header or data padding unit).
pub const BLOCK: u64 = 512;

// Field ranges, ustar table "ustar Header Block".
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 108);
const UID: (usize, usize) = (108, 116);
const GID: (usize, usize) = (116, 124);
const SIZE: (usize, usize) = (124, 136);
const MTIME: (usize, usize) = (136, 148);
const CHKSUM: (usize, usize) = (148, 156);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 257);
const MAGIC: (usize, usize) = (257, 263);
const DEVMAJOR: (usize, usize) = (329, 337);
const DEVMINOR: (usize, usize) = (337, 345);
const PREFIX: (usize, usize) = (345, 500);

/// POSIX ustar magic "ustar\0" (then version "00").
const USTAR_MAGIC: &[u8] = b"ustar\0";

/// One decoded header block.
pub struct Header {
    raw: [u8; BLOCK as usize],
}

impl Header {
    /// Wraps a block after checking its checksum.
    pub fn parse(raw: [u8; BLOCK as usize]) -> Result<Self, TarProblem> {
        let h = Self { raw };
        h.check_checksum()?;
        Ok(h)
    }

    /// True for the all-zero block that ends an archive.
    pub fn is_zero_block(raw: &[u8]) -> bool {
        raw.iter().all(|&b| b == 0)
    }

    /// The checksum is the sum of the header bytes with the checksum field
    /// read as eight spaces; historical writers summed signed chars, which
    /// we accept too.
    fn check_checksum(&self) -> Result<(), TarProblem> {
        let expected = self.number("chksum", CHKSUM)?;
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &b) in self.raw.iter().enumerate() {
            let b = if (CHKSUM.0..CHKSUM.1).contains(&i) {
                b' '
            } else {
                b
            };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        if expected != unsigned && expected != signed {
            return Err(TarProblem::BadChecksum {
                expected,
                found: unsigned,
            });
        }
        Ok(())
    }

    /// The type flag byte (`'0'`, `'5'`, `'x'`, …).
    pub fn typeflag(&self) -> u8 {
        self.raw[TYPEFLAG]
    }

    fn is_posix_ustar(&self) -> bool {
        &self.raw[MAGIC.0..MAGIC.1] == USTAR_MAGIC
    }

    /// The path: `prefix/name` for POSIX ustar, `name` otherwise (GNU headers
    /// keep atime/ctime where ustar has the prefix).
    pub fn path(&self) -> Vec<u8> {
        let name = cstr(&self.raw[NAME.0..NAME.1]);
        let prefix = cstr(&self.raw[PREFIX.0..PREFIX.1]);
        if self.is_posix_ustar() && !prefix.is_empty() {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            p
        } else {
            name.to_vec()
        }
    }

    /// The link target field.
    pub fn linkname(&self) -> Vec<u8> {
        cstr(&self.raw[LINKNAME.0..LINKNAME.1]).to_vec()
    }

    /// Permission bits (the file-type bits some writers add are dropped).
    pub fn mode(&self) -> Result<u16, TarProblem> {
        let m = self.number("mode", MODE)?;
        u16::try_from(m & 0o7777).map_err(|_| TarProblem::OutOfRange {
            field: "mode",
            value: m.to_string(),
        })
    }

    /// Owner id.
    pub fn uid(&self) -> Result<i64, TarProblem> {
        self.number("uid", UID)
    }

    /// Group id.
    pub fn gid(&self) -> Result<i64, TarProblem> {
        self.number("gid", GID)
    }

    /// Data size in bytes.
    pub fn size(&self) -> Result<i64, TarProblem> {
        self.number("size", SIZE)
    }

    /// Modification time in seconds (may be negative in base-256).
    pub fn mtime(&self) -> Result<i64, TarProblem> {
        self.number("mtime", MTIME)
    }

    /// Device major number.
    pub fn devmajor(&self) -> Result<i64, TarProblem> {
        self.number("devmajor", DEVMAJOR)
    }

    /// Device minor number.
    pub fn devminor(&self) -> Result<i64, TarProblem> {
        self.number("devminor", DEVMINOR)
    }

    fn number(&self, field: &'static str, range: (usize, usize)) -> Result<i64, TarProblem> {
        parse_numeric(&self.raw[range.0..range.1]).ok_or_else(|| TarProblem::BadNumber {
            field,
            raw: show_field(&self.raw[range.0..range.1]),
        })
    }
}

/// The bytes before the first NUL.
pub fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn show_field(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() {
                char::from(c).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}

/// Parses an octal or base-256 numeric field; `None` when malformed or out
/// of the `i64` range.
pub fn parse_numeric(field: &[u8]) -> Option<i64> {
    match field.first() {
        Some(0x80) => {
            let mut v: i128 = 0;
            for &b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(i128::from(b))?;
            }
            i64::try_from(v).ok()
        }
        Some(0xff) => {
            // Two's complement over the whole field: the unsigned value
            // minus 256^len (fields are at most 12 bytes, so i128 holds it).
            let mut u: i128 = 0;
            for &b in field {
                u = u.checked_mul(256)?.checked_add(i128::from(b))?;
            }
            let bits = u32::try_from(field.len()).ok()?.checked_mul(8)?;
            let modulus = 1i128.checked_shl(bits).filter(|&m| m > 0)?;
            i64::try_from(u.checked_sub(modulus)?).ok()
        }
        _ => parse_octal(field),
    }
}

/// Octal digits after optional leading spaces, ended by NUL or space (only
/// NULs and spaces may follow); an empty field is 0.
fn parse_octal(field: &[u8]) -> Option<i64> {
    let start = field.iter().position(|&b| b != b' ').unwrap_or(field.len());
    let s = &field[start..];
    let end = s
        .iter()
        .position(|b| !(b'0'..=b'7').contains(b))
        .unwrap_or(s.len());
    if !s[end..].iter().all(|&b| b == 0 || b == b' ') {
        return None;
    }
    let mut v: i64 = 0;
    for &b in &s[..end] {
        v = v.checked_mul(8)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_allow_padding_and_terminators() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"   644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(
            parse_numeric(b"00000000017777777777\0"),
            Some(0o17777777777)
        );
    }

    #[test]
    fn octal_field_rejects_garbage_and_digits_after_terminator() {
        assert_eq!(parse_numeric(b"0009\0\0\0\0"), None);
        assert_eq!(parse_numeric(b"12 34\0\0\0"), None);
        assert_eq!(parse_numeric(b"abc\0\0\0\0\0"), None);
    }

    #[test]
    fn base256_positive_and_negative() {
        // 8-byte uid field holding 70000 in binary.
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0x01, 0x11, 0x70]),
            Some(70000)
        );
        // 12-byte mtime field holding -1 and -86400.
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        let mut f = [0xffu8; 12];
        f[8..].copy_from_slice(&(-86400i32).to_be_bytes());
        assert_eq!(parse_numeric(&f), Some(-86400));
    }

    #[test]
    fn base256_beyond_i64_is_rejected() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[3] = 0x80; // 2^71
        assert_eq!(parse_numeric(&f), None);
    }
}
