//! pax extended header records (IEEE 1003.1-2017, pax "pax Extended Header"):
//! `"%d %s=%s\n"`, the length counting the whole record. Values are bytes
//! (`SCHILY.xattr.*` values are binary).

use std::collections::BTreeMap;

use super::TarProblem;
use crate::tree::Timestamp;

/// What the extended headers before one entry say about it.
#[derive(Debug, Default)]
pub struct Extended {
    /// pax `path`.
    pub path: Option<Vec<u8>>,
    /// pax `linkpath`.
    pub linkpath: Option<Vec<u8>>,
    /// GNU `L` long name (pax `path` wins over it).
    pub long_name: Option<Vec<u8>>,
    /// GNU `K` long link target.
    pub long_link: Option<Vec<u8>>,
    /// pax `size`.
    pub size: Option<u64>,
    /// pax `uid`.
    pub uid: Option<u64>,
    /// pax `gid`.
    pub gid: Option<u64>,
    /// pax `mtime` (with fraction).
    pub mtime: Option<Timestamp>,
    /// `SCHILY.xattr.NAME` (star, GNU tar, libarchive, python) and
    /// `RHT.security.selinux` (GNU tar `--selinux`), by xattr name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `SCHILY.acl.access`: the access ACL as text (GNU tar `--acls`, star, bsdtar).
    pub acl_access: Option<Vec<u8>>,
    /// `SCHILY.acl.default`: the default ACL as text.
    pub acl_default: Option<Vec<u8>>,
    /// A `GNU.sparse.*` key was present: a sparse file in pax format.
    pub sparse: bool,
    /// A `SCHILY.xattr.` record had no attribute name (refused once the
    /// entry it belongs to, and so its path, is known).
    pub empty_xattr_name: bool,
    /// True once any extended header was seen (to catch dangling ones).
    pub seen: bool,
}

impl Extended {
    /// Applies the records of one `x` header.
    pub fn apply_records(&mut self, data: &[u8]) -> Result<(), TarProblem> {
        self.seen = true;
        for (key, value) in records(data)? {
            self.apply(key, value)?;
        }
        Ok(())
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), TarProblem> {
        // An empty value removes the keyword (pax "Extended Header Keywords").
        let v = (!value.is_empty()).then(|| value.to_vec());
        match key {
            b"path" => self.path = v,
            b"linkpath" => self.linkpath = v,
            b"size" => self.size = decimal("size", value)?,
            b"uid" => self.uid = decimal("uid", value)?,
            b"gid" => self.gid = decimal("gid", value)?,
            b"mtime" => {
                self.mtime = if value.is_empty() {
                    None
                } else {
                    Some(parse_time(value)?)
                }
            }
            b"SCHILY.acl.access" => self.acl_access = v,
            b"SCHILY.acl.default" => self.acl_default = v,
            b"RHT.security.selinux" => {
                self.xattrs
                    .insert(b"security.selinux".to_vec(), value.to_vec());
            }
            k if k.starts_with(b"SCHILY.xattr.") => {
                let name = &k[b"SCHILY.xattr.".len()..];
                if name.is_empty() {
                    self.empty_xattr_name = true;
                } else {
                    self.xattrs.insert(name.to_vec(), value.to_vec());
                }
            }
            k if k.starts_with(b"GNU.sparse.") => self.sparse = true,
            // atime, ctime, uname, gname, charset, comment, SCHILY.dev/ino/nlink,
            // LIBARCHIVE.* (libarchive writes SCHILY.xattr too): nothing we keep.
            _ => {}
        }
        Ok(())
    }
}

/// One pax record: keyword and value.
pub type Record<'a> = (&'a [u8], &'a [u8]);

/// Splits pax data into `(keyword, value)` records.
pub fn records(mut data: &[u8]) -> Result<Vec<Record<'_>>, TarProblem> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // Some writers pad the data block with NULs after the last record.
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let bad = |reason: &str| TarProblem::BadPax {
            reason: reason.to_owned(),
        };
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("record without a length"))?;
        let len = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| bad("record length is not a decimal number"))?;
        if len <= space + 1 || len > data.len() {
            return Err(TarProblem::BadPax {
                reason: format!(
                    "record length {len} outside the header ({} bytes left)",
                    data.len()
                ),
            });
        }
        let (record, rest) = data.split_at(len);
        let body = record[space + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("record does not end with a newline"))?;
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("record without '='"))?;
        out.push((&body[..eq], &body[eq + 1..]));
        data = rest;
    }
    Ok(out)
}

fn decimal(field: &'static str, value: &[u8]) -> Result<Option<u64>, TarProblem> {
    if value.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(value)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| TarProblem::BadNumber {
            field,
            raw: String::from_utf8_lossy(value).into_owned(),
        })
}

/// Parses a pax time: `[-]SECONDS[.FRACTION]`. A negative time with a
/// fraction is below the whole seconds: `-1.25` is secs -2, nsec 750000000.
pub fn parse_time(value: &[u8]) -> Result<Timestamp, TarProblem> {
    let bad = || TarProblem::BadNumber {
        field: "mtime",
        raw: String::from_utf8_lossy(value).into_owned(),
    };
    let (neg, rest) = match value.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (int, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &b""[..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let secs: i64 = std::str::from_utf8(int)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    // Nanoseconds from the first nine fraction digits, right-padded.
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !neg {
        return Ok(Timestamp { secs, nsec });
    }
    if nsec == 0 {
        return Ok(Timestamp {
            secs: secs.checked_neg().ok_or_else(bad)?,
            nsec: 0,
        });
    }
    let secs = secs
        .checked_neg()
        .and_then(|s| s.checked_sub(1))
        .ok_or_else(bad)?;
    Ok(Timestamp {
        secs,
        nsec: 1_000_000_000 - nsec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_binary_values() {
        let data = b"18 path=etc/a b=c\n29 SCHILY.xattr.user.x=\x00\x01\n\xff\n\n";
        let r = records(data).unwrap();
        assert_eq!(r[0], (&b"path"[..], &b"etc/a b=c"[..]));
        assert_eq!(
            r[1],
            (&b"SCHILY.xattr.user.x"[..], &b"\x00\x01\n\xff\n"[..])
        );
    }

    #[test]
    fn records_reject_length_past_the_data() {
        assert!(matches!(
            records(b"99 path=x\n"),
            Err(TarProblem::BadPax { .. })
        ));
        assert!(matches!(records(b"2 \n"), Err(TarProblem::BadPax { .. })));
        assert!(matches!(
            records(b"10 pathx=x "),
            Err(TarProblem::BadPax { .. })
        ));
    }

    #[test]
    fn times_with_fractions_and_signs() {
        assert_eq!(
            parse_time(b"1700000000").unwrap(),
            Timestamp {
                secs: 1_700_000_000,
                nsec: 0
            }
        );
        assert_eq!(
            parse_time(b"4102444800.5").unwrap(),
            Timestamp {
                secs: 4_102_444_800,
                nsec: 500_000_000
            }
        );
        assert_eq!(
            parse_time(b"-1.25").unwrap(),
            Timestamp {
                secs: -2,
                nsec: 750_000_000
            }
        );
        assert_eq!(
            parse_time(b"-86400").unwrap(),
            Timestamp {
                secs: -86400,
                nsec: 0
            }
        );
        assert_eq!(
            parse_time(b"1.1234567891").unwrap(),
            Timestamp {
                secs: 1,
                nsec: 123_456_789
            }
        );
        assert!(parse_time(b"1e9").is_err());
        assert!(parse_time(b"").is_err());
        assert!(parse_time(b"99999999999999999999").is_err());
    }
}
