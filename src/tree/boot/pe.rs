//! Does an EFI binary (a PE32/PE32+ image) carry an Authenticode signature,
//! and by whom? What the manifest records for every EFI binary and what the
//! Secure Boot check reads. The signature is not verified here (the
//! firmware does that); this reads only where it is and whose certificates
//! it embeds.
//!
//! ```text
//! 0x3C e_lfanew ─► "PE\0\0" ─► COFF header (20) ─► optional header
//!   magic 0x10B (PE32): data directories at +96, count at +92
//!   magic 0x20B (PE32+): data directories at +112, count at +108
//! data directory 4 (IMAGE_DIRECTORY_ENTRY_SECURITY): file offset, size
//!   ─► WIN_CERTIFICATE { dwLength, wRevision 0x0200, wCertificateType 0x0002 PKCS#7 SignedData }
//! ```
//! (Microsoft PE/COFF specification, "Optional Header Data Directories",
//! "The Attribute Certificate Table".)

use crate::tree::FileData;

/// The issuer names of the Microsoft UEFI CAs that sign third-party EFI
/// binaries such as shim ("Microsoft Corporation UEFI CA 2011", and the
/// 2023 successor). A PKCS#7 blob carries its certificates' names as DER
/// strings, so their bytes appear verbatim in the certificate table.
const MICROSOFT_UEFI_CA: [&[u8]; 2] = [
    b"Microsoft Corporation UEFI CA 2011",
    b"Microsoft UEFI CA 2023",
];

/// What the signature check found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Signature {
    /// The image is a PE file.
    pub pe: bool,
    /// It has an attribute certificate table holding PKCS#7 signed data.
    pub signed: bool,
    /// One of the embedded certificates names the Microsoft UEFI CA: what
    /// Secure Boot with Microsoft's third-party key (the "UEFI CA" template
    /// of Hyper-V, Azure Trusted Launch, OVMF's `.ms` variables) trusts.
    pub microsoft_uefi_ca: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads `len` bytes at `at`, or `None` past the end.
fn read(data: &FileData, at: u64, len: u64) -> Option<Vec<u8>> {
    let end = at.checked_add(len)?;
    if end > data.len() {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    data.read_at(at, &mut buf).ok()?;
    Some(buf)
}

/// Largest certificate table read (signed shims carry ~2 KiB; a kernel a few KiB).
const MAX_CERT_TABLE: u64 = 1 << 20;

/// Finds the signature of the PE image in `data`; not a PE, unsigned and
/// malformed tables all read as "not signed".
pub fn signature(data: &FileData) -> Signature {
    let mut found = Signature::default();
    let Some(head) = read(data, 0, 0x40) else {
        return found;
    };
    if &head[..2] != b"MZ" {
        return found;
    }
    let Some(pe) = u32_at(&head, 0x3C).map(u64::from) else {
        return found;
    };
    // Signature, COFF header and the optional header up to 16 directories.
    let Some(hdr) = read(data, pe, 24 + 112 + 16 * 8) else {
        return found;
    };
    if &hdr[..4] != b"PE\0\0" {
        return found;
    }
    found.pe = true;
    let opt = 24;
    let (count_at, dirs_at) = match u16_at(&hdr, opt) {
        Some(0x10B) => (opt + 92, opt + 96),
        Some(0x20B) => (opt + 108, opt + 112),
        _ => return found,
    };
    if u32_at(&hdr, count_at).unwrap_or(0) <= 4 {
        return found;
    }
    let (Some(offset), Some(size)) = (u32_at(&hdr, dirs_at + 32), u32_at(&hdr, dirs_at + 36))
    else {
        return found;
    };
    let (offset, size) = (u64::from(offset), u64::from(size));
    if !(8..=MAX_CERT_TABLE).contains(&size) {
        return found;
    }
    let Some(table) = read(data, offset, size) else {
        return found;
    };
    // WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA.
    found.signed = u16_at(&table, 4) == Some(0x0200) && u16_at(&table, 6) == Some(0x0002);
    found.microsoft_uefi_ca = found.signed
        && MICROSOFT_UEFI_CA
            .iter()
            .any(|name| table.windows(name.len()).any(|w| w == *name));
    found
}

/// PE images for tests: unsigned, or with an attribute certificate table.
#[cfg(test)]
pub(crate) mod fixtures {
    /// A minimal PE32+ image: MZ header, PE header at 0x40, optional header
    /// with 16 data directories, and `cert` as the certificate table.
    pub fn pe(cert: Option<&[u8]>) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b[0x40..0x44].copy_from_slice(b"PE\0\0");
        let opt = 0x40 + 24;
        b[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        if let Some(cert) = cert {
            let at = b.len() as u32;
            let dir = opt + 112 + 4 * 8;
            b[dir..dir + 4].copy_from_slice(&at.to_le_bytes());
            b[dir + 4..dir + 8].copy_from_slice(&(cert.len() as u32).to_le_bytes());
            b.extend_from_slice(cert);
        }
        b
    }

    /// A WIN_CERTIFICATE holding PKCS#7 signed data `body`.
    pub fn win_cert(body: &[u8]) -> Vec<u8> {
        let mut c = ((8 + body.len()) as u32).to_le_bytes().to_vec();
        c.extend_from_slice(&0x0200u16.to_le_bytes());
        c.extend_from_slice(&0x0002u16.to_le_bytes());
        c.extend_from_slice(body);
        c
    }

    /// A PE image whose signature names `who` (a certificate's subject).
    pub fn signed_by(who: &str) -> Vec<u8> {
        pe(Some(&win_cert(who.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{pe as pe_bytes, win_cert};
    use super::*;

    fn pe(cert: Option<&[u8]>) -> FileData {
        FileData::Bytes(pe_bytes(cert).into())
    }

    #[test]
    fn unsigned_pe_is_pe_but_not_signed() {
        let s = signature(&pe(None));
        assert_eq!((s.pe, s.signed, s.microsoft_uefi_ca), (true, false, false));
    }

    #[test]
    fn pkcs7_table_is_signed_and_names_the_ca_it_embeds() {
        let s = signature(&pe(Some(&win_cert(b"..Debian Secure Boot Signer.."))));
        assert_eq!((s.signed, s.microsoft_uefi_ca), (true, false));
        let s = signature(&pe(Some(&win_cert(
            b"..Microsoft Corporation UEFI CA 2011..",
        ))));
        assert_eq!((s.signed, s.microsoft_uefi_ca), (true, true));
    }

    #[test]
    fn not_pe_and_truncated_tables_read_as_unsigned() {
        assert_eq!(
            signature(&FileData::Bytes(b"#!/bin/sh".to_vec().into())),
            Signature::default()
        );
        let mut cut = pe_bytes(Some(&win_cert(b"Microsoft Corporation UEFI CA 2011")));
        cut.truncate(cut.len() - 1);
        let s = signature(&FileData::Bytes(cut.into()));
        assert_eq!((s.pe, s.signed), (true, false));
        // Wrong certificate type (WIN_CERT_TYPE_X509 = 1).
        let mut c = win_cert(b"x");
        c[6] = 1;
        assert!(!signature(&pe(Some(&c))).signed);
    }
}
