//! Names in one directory: validation, case-insensitive duplicate check,
//! 8.3 short names and VFAT long names (fatgen103 §7 "Long File Name
//! Implementation", basis-name and numeric-tail generation).
//!
//! A name that is already a valid 8.3 name gets no long name: upper case
//! as is, all-lower-case base or extension through the NT case bits
//! (DIR_NTRes 0x08/0x10, honoured by Windows, Linux, mtools and EDK2). Every
//! other name gets a long name plus a generated short name `BASIS~N.EXT`,
//! `N` counting up from 1 until it is unique in the directory. Names that fit
//! 8.3 claim their short names first, so a generated name never takes one.

use std::collections::{BTreeMap, BTreeSet};

/// DIR_NTRes bit: the base name is shown in lower case.
pub const CASE_LOWER_BASE: u8 = 0x08;
/// DIR_NTRes bit: the extension is shown in lower case.
pub const CASE_LOWER_EXT: u8 = 0x10;
/// Longest long name in UTF-16 code units (fatgen103 §7).
const MAX_LFN_UNITS: usize = 255;
/// Characters of a long name that a short name may also hold, besides
/// A–Z and 0–9 (fatgen103 §6.1, DIR_Name).
const SHORT_SPECIAL: &[u8] = b"$%'-_@~`!(){}^#&";
/// Characters no FAT name may hold (fatgen103 §7, plus `/`).
const FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// How one name is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredName {
    /// DIR_Name: 8 + 3 bytes, space padded, upper case.
    pub short: [u8; 11],
    /// DIR_NTRes case bits.
    pub case: u8,
    /// The long name in UTF-16, when one is needed.
    pub long: Option<Vec<u16>>,
}

/// Why a name cannot be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameProblem {
    /// Not UTF-8.
    NotUtf8,
    /// Breaks a FAT naming rule; the text says which.
    Invalid(&'static str),
    /// Same as an earlier name when case is ignored (its index).
    SameIgnoringCase(usize),
    /// Every numeric tail ~1..~999999 is taken.
    TailsExhausted,
}

/// Stores the names of one directory, in the order given. On error, returns
/// the index of the offending name and the problem.
pub fn store_names(names: &[&[u8]]) -> Result<Vec<StoredName>, (usize, NameProblem)> {
    let mut texts = Vec::with_capacity(names.len());
    for (i, raw) in names.iter().enumerate() {
        let text = std::str::from_utf8(raw).map_err(|_| (i, NameProblem::NotUtf8))?;
        validate(text).map_err(|why| (i, NameProblem::Invalid(why)))?;
        texts.push(text);
    }
    check_case_duplicates(&texts)?;
    let mut used = ShortNames::default();
    let mut out: Vec<Option<StoredName>> = texts.iter().map(|t| exact_short(t)).collect();
    for s in out.iter().flatten() {
        used.taken.insert(s.short);
    }
    for (i, slot) in out.iter_mut().enumerate() {
        if slot.is_none() {
            let short = used
                .generate(texts[i])
                .ok_or((i, NameProblem::TailsExhausted))?;
            *slot = Some(StoredName {
                short,
                case: 0,
                long: Some(texts[i].encode_utf16().collect()),
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every slot filled above"))
        .collect())
}

fn validate(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("empty, '.' or '..'");
    }
    if name.encode_utf16().count() > MAX_LFN_UNITS {
        return Err("longer than 255 UTF-16 code units");
    }
    if name.chars().any(|c| c < ' ' || FORBIDDEN.contains(&c)) {
        return Err("contains a control character or one of \" * / : < > ? \\ |");
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err("ends with '.' or ' ' (Windows and Linux strip them)");
    }
    Ok(())
}

/// FAT compares long names without case (fatgen103 §7); two such names in
/// one directory would shadow each other.
fn check_case_duplicates(texts: &[&str]) -> Result<(), (usize, NameProblem)> {
    let mut seen = std::collections::BTreeMap::new();
    for (i, t) in texts.iter().enumerate() {
        if let Some(&first) = seen.get(&t.to_uppercase()) {
            return Err((i, NameProblem::SameIgnoringCase(first)));
        }
        seen.insert(t.to_uppercase(), i);
    }
    Ok(())
}

fn is_short_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SHORT_SPECIAL.contains(&b)
}

/// Case of a run of ASCII bytes: `Some(true)` all lower, `Some(false)` no
/// lower, `None` mixed.
fn uniform_lower(part: &[u8]) -> Option<bool> {
    let lower = part.iter().any(|b| b.is_ascii_lowercase());
    let upper = part.iter().any(|b| b.is_ascii_uppercase());
    match (lower, upper) {
        (true, true) => None,
        (l, _) => Some(l),
    }
}

/// The 8.3 entry of a name that is a valid short name up to uniform case.
fn exact_short(name: &str) -> Option<StoredName> {
    let bytes = name.as_bytes();
    let (base, ext) = match bytes.iter().rposition(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &bytes[..0]),
    };
    let fits = |part: &[u8], max: usize| {
        part.len() <= max && part.iter().all(|b| is_short_char(b.to_ascii_uppercase()))
    };
    if base.is_empty()
        || !fits(base, 8)
        || !fits(ext, 3)
        || (ext.is_empty() && bytes.contains(&b'.'))
    {
        return None;
    }
    let mut case = 0;
    if uniform_lower(base)? {
        case |= CASE_LOWER_BASE;
    }
    if uniform_lower(ext)? {
        case |= CASE_LOWER_EXT;
    }
    Some(StoredName {
        short: pack(base, ext),
        case,
        long: None,
    })
}

/// Pads base and extension into DIR_Name, upper-cased.
fn pack(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut s = [b' '; 11];
    for (d, b) in s[..8].iter_mut().zip(base) {
        *d = b.to_ascii_uppercase();
    }
    for (d, b) in s[8..].iter_mut().zip(ext) {
        *d = b.to_ascii_uppercase();
    }
    s
}

/// Short names taken in one directory, and per basis the lowest numeric
/// tail that may still be free (names are only ever added, so every tail
/// below it stays taken; this keeps a directory of N similar names O(N)).
#[derive(Default)]
struct ShortNames {
    taken: BTreeSet<[u8; 11]>,
    next_tail: BTreeMap<(Vec<u8>, Vec<u8>), u32>,
}

impl ShortNames {
    /// fatgen103 basis-name generation: upper case; characters a short name
    /// cannot hold become `_`; spaces and periods (but the last) dropped;
    /// base 8 and extension 3 characters. Then `~N` from 1 until unused, or
    /// the basis itself when it is the whole name up to case and unused.
    fn generate(&mut self, name: &str) -> Option<[u8; 11]> {
        let (base, ext, lossless) = basis(name);
        let whole = pack(&base, &ext);
        if lossless && self.taken.insert(whole) {
            return Some(whole);
        }
        // A tail keeps at most 6 base characters, so those and the
        // extension decide the whole ~1, ~2, ... sequence.
        let key = (base[..base.len().min(6)].to_vec(), ext.clone());
        let start = self.next_tail.get(&key).copied().unwrap_or(1);
        let (n, short) = (start..=999_999u32)
            .map(|n| (n, with_tail(&base, &ext, n)))
            .find(|(_, s)| !self.taken.contains(s))?;
        self.taken.insert(short);
        self.next_tail.insert(key, n + 1);
        Some(short)
    }
}

/// The basis of a long name: base, extension, and whether they are the
/// whole name up to case (then no tail is needed).
fn basis(name: &str) -> (Vec<u8>, Vec<u8>, bool) {
    let trimmed = name.trim_start_matches('.');
    let (base_part, ext_part) = match trimmed.rfind('.') {
        Some(dot) => (&trimmed[..dot], &trimmed[dot + 1..]),
        None => (trimmed, ""),
    };
    let convert = |part: &str| -> Vec<u8> {
        part.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| match u8::try_from(c) {
                Ok(b) if is_short_char(b.to_ascii_uppercase()) => b.to_ascii_uppercase(),
                _ => b'_',
            })
            .collect()
    };
    let mut base = convert(base_part);
    let ext: Vec<u8> = convert(ext_part).into_iter().take(3).collect();
    if base.is_empty() {
        base.push(b'_');
    }
    let mut joined = base.clone();
    if !ext.is_empty() {
        joined.push(b'.');
        joined.extend_from_slice(&ext);
    }
    let lossless =
        base.len() <= 8 && ext_part.len() <= 3 && name.to_ascii_uppercase().as_bytes() == joined;
    (base, ext, lossless)
}

fn with_tail(base: &[u8], ext: &[u8], n: u32) -> [u8; 11] {
    let tail = format!("~{n}");
    let keep = base.len().min(8 - tail.len());
    let mut b = base[..keep].to_vec();
    b.extend_from_slice(tail.as_bytes());
    pack(&b, ext)
}

/// The checksum of a short name stored in each long-name entry
/// (fatgen103 §7, `ChkSum`).
pub fn checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The long-name directory entries for `long`, in on-disk order (highest
/// ordinal, flagged 0x40, first), each 32 bytes (fatgen103 §7, LDIR_*).
pub fn long_entries(long: &[u16], short: &[u8; 11]) -> Vec<[u8; 32]> {
    let sum = checksum(short);
    let mut units = long.to_vec();
    if !units.len().is_multiple_of(13) {
        units.push(0x0000);
        units.resize(units.len().next_multiple_of(13), 0xFFFF);
    }
    let count = units.len() / 13;
    let mut out = Vec::with_capacity(count);
    for (i, chunk) in units.chunks(13).enumerate().rev() {
        let mut e = [0u8; 32];
        let ordinal = u8::try_from(i + 1).expect("at most 20 entries for 255 units");
        e[0] = if i + 1 == count {
            ordinal | 0x40
        } else {
            ordinal
        }; // LDIR_Ord
        e[11] = 0x0F; // LDIR_Attr = ATTR_LONG_NAME
        e[13] = sum; // LDIR_Chksum
                     // LDIR_Name1 (5 units at 1), LDIR_Name2 (6 at 14), LDIR_Name3 (2 at 28).
        let slots = (0..5)
            .map(|k| 1 + 2 * k)
            .chain((0..6).map(|k| 14 + 2 * k))
            .chain([28, 30]);
        for (at, u) in slots.zip(chunk) {
            e[at..at + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(names: &[&str]) -> Vec<StoredName> {
        let raw: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        store_names(&raw).unwrap()
    }

    fn short(s: &StoredName) -> String {
        String::from_utf8_lossy(&s.short).into_owned()
    }

    #[test]
    fn valid_83_names_get_no_long_name() {
        let s = store(&[
            "BOOTX64.EFI",
            "linux",
            "loader.conf",
            "README.md",
            "initrd.img",
            "ReadMe.txt",
            "Ab.TXT",
        ]);
        let view = |s: &StoredName| (short(s), s.case, s.long.is_some());
        assert_eq!(view(&s[0]), ("BOOTX64 EFI".into(), 0, false));
        assert_eq!(view(&s[1]), ("LINUX      ".into(), CASE_LOWER_BASE, false));
        // A four-letter extension is not 8.3.
        assert_eq!(view(&s[2]), ("LOADER~1CON".into(), 0, true));
        assert_eq!(view(&s[3]), ("README  MD ".into(), CASE_LOWER_EXT, false));
        assert_eq!(
            view(&s[4]),
            (
                "INITRD  IMG".into(),
                CASE_LOWER_BASE | CASE_LOWER_EXT,
                false
            )
        );
        // Mixed case inside the base or the extension needs a long name; the
        // short name is the basis without a tail when that is free.
        assert_eq!(view(&s[5]), ("README  TXT".into(), 0, true));
        assert_eq!(view(&s[6]), ("AB      TXT".into(), 0, true));
    }

    #[test]
    fn long_names_get_numeric_tails_in_order() {
        let s = store(&[
            "systemd-bootx64.efi",
            "systemd-bootia32.efi",
            "SYSTEM~1.EFI",
            "x.tar.gz",
        ]);
        // The literal 8.3 name claims ~1 first, so the generated ones skip it.
        assert_eq!(short(&s[2]), "SYSTEM~1EFI");
        assert_eq!(short(&s[0]), "SYSTEM~2EFI");
        assert_eq!(short(&s[1]), "SYSTEM~3EFI");
        assert_eq!(short(&s[3]), "XTAR~1  GZ ");
    }

    #[test]
    fn unicode_and_invalid_short_chars_become_underscores() {
        let s = store(&["café.txt", "a+b", ".bashrc"]);
        assert_eq!(short(&s[0]), "CAF_~1  TXT");
        assert_eq!(short(&s[1]), "A_B~1      ");
        assert_eq!(short(&s[2]), "BASHRC~1   ");
        assert_eq!(
            s[0].long.as_deref(),
            Some(&"café.txt".encode_utf16().collect::<Vec<_>>()[..])
        );
    }

    #[test]
    fn tails_past_nine_shorten_the_basis() {
        let names: Vec<String> = (0..12).map(|i| format!("longname-{i:02}.txt")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let s = store(&refs);
        assert_eq!(short(&s[8]), "LONGNA~9TXT");
        assert_eq!(short(&s[9]), "LONGN~10TXT");
    }

    #[test]
    fn case_duplicates_and_bad_names_are_refused() {
        let raw: Vec<&[u8]> = vec![b"EFI", b"efi"];
        assert_eq!(
            store_names(&raw),
            Err((1, NameProblem::SameIgnoringCase(0)))
        );
        for bad in [
            &b"a:b"[..],
            b"trailing.",
            b"trailing ",
            b"\xff",
            b"tab\tname",
        ] {
            assert!(store_names(&[bad]).is_err(), "{bad:?}");
        }
        let long = "x".repeat(256);
        assert!(store_names(&[long.as_bytes()]).is_err());
    }

    #[test]
    fn checksum_matches_fatgen103_reference() {
        // fatgen103's own formulation of ChkSum (rotate right by hand).
        assert_eq!(checksum(b"FOO     BAR"), {
            let mut sum: u8 = 0;
            for &b in b"FOO     BAR" {
                sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                    .wrapping_add(sum >> 1)
                    .wrapping_add(b);
            }
            sum
        });
    }

    #[test]
    fn long_entries_layout() {
        let name: Vec<u16> = "systemd-bootx64.efi".encode_utf16().collect(); // 19 units: 2 entries
        let e = long_entries(&name, b"SYSTEM~1EFI");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0][0], 0x42);
        assert_eq!(e[1][0], 0x01);
        assert_eq!(e[1][11], 0x0F);
        assert_eq!(e[1][13], checksum(b"SYSTEM~1EFI"));
        assert_eq!(&e[1][1..3], &[b's', 0]);
        // Entry 2 holds units 13..=18 ("64.efi"), then the 0x0000
        // terminator, then 0xFFFF padding.
        assert_eq!(&e[0][1..11], &[b'6', 0, b'4', 0, b'.', 0, b'e', 0, b'f', 0]);
        assert_eq!(&e[0][14..16], &[b'i', 0]);
        assert_eq!(&e[0][16..18], &[0, 0]);
        assert_eq!(&e[0][18..20], &[0xFF, 0xFF]);
        assert_eq!(&e[0][30..32], &[0xFF, 0xFF]);
    }
}
