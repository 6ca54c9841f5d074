//! Seed → every GUID, UUID, volume id and hash seed a build needs, derived
//! by name so that adding a new id never changes the existing ones.

use sha2::{Digest, Sha256};

/// A 32-byte build seed (by default a hash of the recipe and its inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    /// The seed as the hash of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Seed(Sha256::digest(bytes).into())
    }

    /// 32 bytes derived from the seed and `name`.
    pub fn derive(&self, name: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"imgbuild-id\0");
        h.update(self.0);
        h.update(name.as_bytes());
        h.finalize().into()
    }

    /// A child seed for `name` (e.g. one per filesystem).
    pub fn child(&self, name: &str) -> Seed {
        Seed(self.derive(name))
    }

    /// An RFC 4122 version-4-shaped UUID derived from `name`, in big-endian
    /// (textual) byte order. GPT and VHDX store GUIDs mixed-endian: use
    /// [`guid_le`] for those.
    pub fn uuid(&self, name: &str) -> [u8; 16] {
        let d = self.derive(name);
        let mut u = [0u8; 16];
        u.copy_from_slice(&d[..16]);
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        u
    }

    /// A 32-bit id (FAT volume id) derived from `name`.
    pub fn u32(&self, name: &str) -> u32 {
        let d = self.derive(name);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }
}

/// A UUID/GUID held as its 16 bytes in big-endian (textual) order; it
/// prints and serializes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses a textual GUID at compile time (constant type GUIDs); a
    /// malformed constant fails the build.
    pub const fn from_text(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36, "a GUID has 36 characters");
        let mut out = [0u8; 16];
        let (mut i, mut n) = (0, 0);
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                assert!(b[i] == b'-', "dashes at 8, 13, 18, 23");
                i += 1;
                continue;
            }
            let c = b[i];
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("not a hex digit"),
            };
            out[n / 2] |= digit << if n % 2 == 0 { 4 } else { 0 };
            n += 1;
            i += 1;
        }
        Guid(out)
    }
}

#[cfg(test)]
#[test]
fn guid_from_text_reads_what_uuid_string_writes() {
    let g = Guid::from_text("c12a7328-F81F-11d2-ba4b-00a0c93ec93b");
    assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    assert_eq!(
        Some(g.0),
        parse_uuid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
    );
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&uuid_string(self.0))
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_uuid(&text).map(Guid).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&text),
                &"a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            )
        })
    }
}

/// Converts a big-endian UUID to the mixed-endian GUID layout of GPT and
/// VHDX (data1 u32 LE, data2 u16 LE, data3 u16 LE, data4 as is).
pub fn guid_le(uuid: [u8; 16]) -> [u8; 16] {
    let mut g = uuid;
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// Formats a big-endian UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_string(u: [u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (case-insensitive).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(u)
}

/// Lower-case hex of `bytes` (digests, seeds).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_distinct_by_name() {
        let s = Seed::from_bytes(b"recipe");
        assert_eq!(s.uuid("gpt.disk"), s.uuid("gpt.disk"));
        assert_ne!(s.uuid("gpt.disk"), s.uuid("gpt.esp"));
        assert_eq!(s.uuid("x")[6] >> 4, 4);
    }

    #[test]
    fn guid_le_matches_the_esp_type_guid_bytes() {
        // C12A7328-F81F-11D2-BA4B-00A0C93EC93B as stored on disk (UEFI spec).
        let u = parse_uuid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").unwrap();
        assert_eq!(
            guid_le(u),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(uuid_string(u), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }
}
