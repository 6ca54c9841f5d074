//! Finds the disk image inside a package file by walking its tar headers:
//!
//! ```text
//! OVA          outer tar ─► the member named *.vmdk
//! OCI archive  outer tar ─► index.json ─► manifest blob ─► layer blob (an uncompressed tar)
//!                                                          └─► its member under disk/
//! ```
//!
//! Every number read is hostile: members must lie inside the file (and a
//! layer's members inside the layer), JSON members are read only up to
//! [`MAX_JSON`], at most [`MAX_MEMBERS`] headers are walked per archive,
//! blob names come from validated digests.

use std::fs::File;

use super::oci::{Index, Manifest, LAYER_TAR, MANIFEST};
use super::{tar, Member};
use crate::io::ReadAt;
use crate::{Error, Format, Result};

/// The largest JSON member read (index, manifest).
pub const MAX_JSON: u64 = 1 << 20;
/// The most members walked in one archive.
pub const MAX_MEMBERS: usize = 4096;

const FORMAT: &str = "package";

/// One member: its name and where its data lies in the package file.
#[derive(Clone, Debug)]
struct Found {
    name: String,
    kind: u8,
    data: u64,
    size: u64,
}

fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        format: FORMAT,
        structure,
        offset,
        detail: detail.into(),
    }
}

/// Where the disk image lies in a package: an OVA's `.vmdk` member, or the
/// `disk/` member of an OCI archive's layer (offset in the outer file).
pub fn find_disk(file: &File) -> Result<Member> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading the package's metadata", e))?
        .len();
    let members = walk(file, 0, len)?;
    let regular = |m: &&Found| m.kind == tar::TYPE_FILE || m.kind == 0;
    if let Some(index) = members
        .iter()
        .filter(regular)
        .find(|m| m.name == "index.json")
    {
        return oci_disk(file, &members, index);
    }
    let vmdk = members
        .iter()
        .filter(regular)
        .find(|m| m.name.ends_with(".vmdk"))
        .ok_or_else(|| {
            corrupt(
                "archive",
                0,
                "neither a .vmdk member (OVA) nor index.json (OCI)",
            )
        })?;
    Ok(Member {
        name: vmdk.name.clone(),
        offset: vmdk.data,
        size: vmdk.size,
        format: Format::Vmdk,
    })
}

/// The members of the tar archive in `start..end` of `file`.
fn walk(file: &File, start: u64, end: u64) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let Some(block_end) = at.checked_add(tar::BLOCK).filter(|&e| e <= end) else {
            return Err(corrupt(
                "member header",
                at,
                "the archive ends inside a header",
            ));
        };
        let mut h = [0u8; 512];
        ReadAt::read_exact_at(file, &mut h, at)
            .map_err(|e| Error::io(format!("reading a tar header at {at}"), e))?;
        let Some(p) = tar::parse(&h, at)? else {
            break;
        };
        if p.kind == tar::TYPE_GNU_SPARSE {
            return Err(corrupt(
                "member header",
                at,
                "a GNU sparse member where none belongs",
            ));
        }
        if p.size > end - block_end {
            return Err(corrupt(
                "member header",
                at,
                format!("member of {} bytes runs past the end at {end}", p.size),
            ));
        }
        // No overflow: the size is within the file.
        let next = block_end + tar::padded(p.size);
        if out.len() == MAX_MEMBERS {
            return Err(corrupt(
                "archive",
                at,
                format!("more than {MAX_MEMBERS} members"),
            ));
        }
        let name = p
            .name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        out.push(Found {
            name,
            kind: p.kind,
            data: block_end,
            size: p.size,
        });
        at = next;
    }
    Ok(out)
}

/// Reads a JSON member of at most [`MAX_JSON`] bytes.
fn read_json<T: serde::de::DeserializeOwned>(file: &File, m: &Found) -> Result<T> {
    if m.size > MAX_JSON {
        return Err(corrupt(
            "JSON member",
            m.data,
            format!("{} is {} bytes, more than {MAX_JSON}", m.name, m.size),
        ));
    }
    let mut buf = vec![0u8; usize::try_from(m.size).expect("at most MAX_JSON")];
    ReadAt::read_exact_at(file, &mut buf, m.data)
        .map_err(|e| Error::io(format!("reading {}", m.name), e))?;
    serde_json::from_slice(&buf)
        .map_err(|e| corrupt("JSON member", m.data, format!("{}: {e}", m.name)))
}

/// The blob member a digest names, checked against the descriptor's size.
fn blob<'a>(members: &'a [Found], digest: &str, size: u64) -> Result<&'a Found> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| {
            corrupt(
                "descriptor",
                0,
                format!("digest {digest:?} is not sha256:<64 hex>"),
            )
        })?;
    let name = format!("blobs/sha256/{hex}");
    let m = members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| corrupt("archive", 0, format!("no member {name}")))?;
    if m.size != size {
        return Err(corrupt(
            "blob",
            m.data,
            format!("{name} is {} bytes, its descriptor says {size}", m.size),
        ));
    }
    Ok(m)
}

fn oci_disk(file: &File, members: &[Found], index: &Found) -> Result<Member> {
    let index: Index = read_json(file, index)?;
    let desc = index
        .manifests
        .iter()
        .find(|d| d.media_type == MANIFEST)
        .ok_or_else(|| corrupt("index.json", 0, "no image manifest"))?;
    let manifest: Manifest = read_json(file, blob(members, &desc.digest, desc.size)?)?;
    for layer in manifest.layers.iter().filter(|l| l.media_type == LAYER_TAR) {
        let blob = blob(members, &layer.digest, layer.size)?;
        let end = blob.data + blob.size;
        let inner = walk(file, blob.data, end)?;
        let disk = inner.into_iter().find(|m| {
            (m.kind == tar::TYPE_FILE || m.kind == 0)
                && m.name
                    .strip_prefix("disk/")
                    .is_some_and(|rest| !rest.is_empty())
        });
        if let Some(disk) = disk {
            return Ok(Member {
                format: sniff(file, &disk)?,
                name: disk.name,
                offset: disk.data,
                size: disk.size,
            });
        }
    }
    Err(corrupt(
        "manifest",
        0,
        "no uncompressed layer holds a file under disk/",
    ))
}

/// qcow2 by its magic, else raw (a containerDisk may hold either).
fn sniff(file: &File, m: &Found) -> Result<Format> {
    let mut magic = [0u8; 4];
    if m.size < 4 {
        return Ok(Format::Raw);
    }
    ReadAt::read_exact_at(file, &mut magic, m.data)
        .map_err(|e| Error::io(format!("reading {}", m.name), e))?;
    Ok(if magic == *b"QFI\xfb" {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::package::{sink, Package, PackageOptions};
    use crate::{write_images, VirtualDiskBuilder, WriteOptions};

    /// A tar of `(name, data)` members, without end blocks.
    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in members {
            let h = tar::ustar(&tar::Entry::file(name, data.len() as u64, 0)).unwrap();
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(tar::padded(out.len() as u64) as usize, 0);
        }
        out
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn assert_corrupt(bytes: &[u8], case: &str) {
        match find_disk(&file_of(bytes)) {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("{case}: expected Corrupt, got {other:?}"),
        }
    }

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn an_empty_or_cut_archive_is_corrupt() {
        assert_corrupt(&[], "empty file");
        let a = archive(&[("x.vmdk", b"KDMV")]);
        assert_corrupt(&a[..300], "header cut short");
        assert_corrupt(&a[..512], "data missing");
    }

    #[test]
    fn a_bad_header_checksum_is_corrupt() {
        let mut a = archive(&[("x.vmdk", b"KDMV")]);
        a[0] = b'y';
        assert_corrupt(&a, "checksum");
    }

    #[test]
    fn a_huge_member_size_is_corrupt_not_an_overflow() {
        // Found by this test: rounding the size up to a block overflowed.
        let mut h = tar::ustar(&tar::Entry::file("x.vmdk", 0, 0)).unwrap();
        tar::set_size(&mut h, u64::MAX); // base-256
        assert_eq!(h[124], 0x80);
        assert_corrupt(&h, "size u64::MAX");
    }

    #[test]
    fn an_oversized_json_member_is_refused_before_reading() {
        let mut h = tar::ustar(&tar::Entry::file("index.json", MAX_JSON + 1, 0)).unwrap();
        tar::set_size(&mut h, MAX_JSON + 1);
        let f = file_of(&h);
        f.set_len(512 + tar::padded(MAX_JSON + 1)).unwrap();
        assert!(matches!(find_disk(&f), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn malformed_json_and_hostile_digests_are_corrupt() {
        assert_corrupt(&archive(&[("index.json", b"{not json")]), "bad JSON");
        let traversal = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../etc/passwd","size":1}]}"#;
        assert_corrupt(&archive(&[("index.json", traversal)]), "digest traversal");
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MANIFEST}","digest":"{DIGEST}","size":5}}]}}"#
        );
        let blob = format!("blobs/sha256/{}", &DIGEST[7..]);
        let a = archive(&[("index.json", index.as_bytes()), (&blob, b"{}")]);
        assert_corrupt(&a, "blob size differs from its descriptor");
        assert_corrupt(
            &archive(&[("index.json", index.as_bytes())]),
            "missing blob",
        );
    }

    #[test]
    fn too_many_members_are_corrupt() {
        let names: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("f{i}")).collect();
        let members: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        assert_corrupt(&archive(&members), "member count");
    }

    #[test]
    fn an_archive_without_a_disk_is_corrupt() {
        assert_corrupt(&archive(&[("readme", b"hello")]), "no disk");
    }

    /// Flips bytes of a real OCI archive's headers and JSON: any result but
    /// a panic (or a hang) is fine.
    #[test]
    fn mutated_oci_archives_never_panic() {
        let mut b = VirtualDiskBuilder::new(1 << 20);
        b.bytes(0, vec![1u8; 4096]);
        let disk = b.build().unwrap();
        let out = tempfile::tempfile().unwrap();
        let options = PackageOptions {
            package: Package::OciArchive,
            name: "t".into(),
            mtime: 0,
        };
        let s = sink(&options, out.try_clone().unwrap(), &WriteOptions::default()).unwrap();
        let member = write_images(&disk, vec![s])
            .unwrap()
            .remove(0)
            .member
            .unwrap();
        assert_eq!(find_disk(&out).unwrap(), member);
        let len = usize::try_from(out.metadata().unwrap().len()).unwrap();
        let mut good = vec![0u8; len];
        ReadAt::read_exact_at(&out, &mut good, 0).unwrap();
        // Everything but the qcow2's data: headers, JSON, padding.
        let interesting: Vec<usize> = (0..len)
            .filter(|&i| (i as u64) < member.offset || i as u64 >= member.offset + member.size)
            .collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..400 {
            let mut bad = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = interesting[(x % interesting.len() as u64) as usize];
                bad[at] = (x >> 32) as u8;
            }
            let _ = find_disk(&file_of(&bad));
        }
    }
}
