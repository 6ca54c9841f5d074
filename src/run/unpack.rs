//! Unpacking a Compute Engine image (`disk.raw` in a gzip'd GNU tar) into a
//! sparse raw file, so `imgbuild test` can boot it: QEMU cannot read a disk
//! inside gzip. Reads what GNU tar writes with `--format=oldgnu -S` (a
//! sparse member, typeflag `S`, its map in the header and extension blocks)
//! and plain regular members; nothing else of tar.
//!
//! Bounded against a hostile archive: headers are checked (checksum,
//! octal fields), the map may hold at most [`MAX_SPARSE`] entries, each
//! entry must lie inside the real size and follow the previous one, and the
//! data written never exceeds the member's stored size.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use flate2::read::MultiGzDecoder;

/// Most sparse map entries accepted (a 4 GiB disk has a few thousand).
pub const MAX_SPARSE: usize = 1 << 20;

/// The member GCE imports.
pub const GCE_MEMBER: &str = "disk.raw";

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why.
        source: io::Error,
    },
    /// The archive is not what GCE imports.
    #[error("not a Compute Engine image archive: {0}")]
    Bad(String),
}

fn io(context: &str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        context: context.to_string(),
        source,
    }
}

/// Parses a NUL/space-terminated octal field.
fn octal(field: &[u8], what: &str) -> Result<u64, UnpackError> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&c| c != 0)
        .filter(|&c| c != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s =
        std::str::from_utf8(&text).map_err(|_| UnpackError::Bad(format!("{what} is not octal")))?;
    u64::from_str_radix(s, 8).map_err(|_| UnpackError::Bad(format!("{what} {s:?} is not octal")))
}

fn checksum_ok(h: &[u8; 512]) -> Result<bool, UnpackError> {
    let stored = octal(&h[148..156], "header checksum")?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    Ok(sum == stored)
}

/// Reads the sparse map entries (offset, length) from `bytes`, 24 bytes
/// each, stopping at the first empty one.
fn map_entries(bytes: &[u8], map: &mut Vec<(u64, u64)>) -> Result<(), UnpackError> {
    for e in bytes.chunks_exact(24) {
        if e[0] == 0 {
            break;
        }
        if map.len() >= MAX_SPARSE {
            return Err(UnpackError::Bad(format!(
                "more than {MAX_SPARSE} sparse map entries"
            )));
        }
        map.push((
            octal(&e[..12], "sparse offset")?,
            octal(&e[12..], "sparse length")?,
        ));
    }
    Ok(())
}

/// Unpacks `disk.raw` from the gzip'd tar `archive` into `out` (made
/// `realsize` long, holes left as holes). Returns the disk's size.
pub fn unpack_gce(archive: &File, out: &File) -> Result<u64, UnpackError> {
    let mut r = MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, archive));
    let mut h = [0u8; 512];
    loop {
        r.read_exact(&mut h).map_err(io("reading a tar header"))?;
        if h.iter().all(|&b| b == 0) {
            return Err(UnpackError::Bad(format!("no member {GCE_MEMBER}")));
        }
        if !checksum_ok(&h)? {
            return Err(UnpackError::Bad("a tar header's checksum is wrong".into()));
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let stored = octal(&h[124..136], "member size")?;
        let typeflag = h[156];
        let wanted = name.trim_start_matches("./") == GCE_MEMBER;
        if !wanted || !matches!(typeflag, b'S' | b'0' | 0) {
            // Skip this member's data, padded to 512.
            let skip = stored.div_ceil(512) * 512;
            io::copy(&mut (&mut r).take(skip), &mut io::sink())
                .map_err(io("skipping a tar member"))?;
            continue;
        }
        let (size, map) = if typeflag == b'S' {
            let mut map = Vec::new();
            map_entries(&h[386..482], &mut map)?;
            let mut extended = h[482] != 0;
            let realsize = octal(&h[483..495], "real size")?;
            while extended {
                let mut e = [0u8; 512];
                r.read_exact(&mut e)
                    .map_err(io("reading a sparse header"))?;
                map_entries(&e[..504], &mut map)?;
                extended = e[504] != 0;
            }
            (realsize, map)
        } else {
            (stored, vec![(0, stored)])
        };
        out.set_len(size).map_err(io("sizing disk.raw"))?;
        let mut left = stored;
        let mut end = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for (offset, len) in map {
            if offset < end || offset.checked_add(len).is_none_or(|e| e > size) {
                return Err(UnpackError::Bad(format!(
                    "sparse entry at {offset} of {len} bytes is out of order or past the size {size}"
                )));
            }
            if len > left {
                return Err(UnpackError::Bad(
                    "the sparse map holds more data than the member".into(),
                ));
            }
            let mut done = 0u64;
            while done < len {
                let n = usize::try_from((len - done).min(buf.len() as u64)).expect("at most 1 MiB");
                r.read_exact(&mut buf[..n])
                    .map_err(io("reading disk.raw"))?;
                // All-zero chunks stay holes.
                if buf[..n].iter().any(|&b| b != 0) {
                    out.write_all_at(&buf[..n], offset + done)
                        .map_err(io("writing disk.raw"))?;
                }
                done += n as u64;
            }
            left -= len;
            end = offset + len;
        }
        return Ok(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A GNU tar (`--format=oldgnu -S`) of a file with more holes than the
    /// header's four map entries unpacks to the same bytes.
    #[test]
    fn gnu_tar_sparse_archives_unpack_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let f = File::create(&raw).unwrap();
        f.set_len(64 << 20).unwrap();
        for i in 0..9u64 {
            f.write_all_at(&[i as u8 + 1; 5000], i * (7 << 20) + 123)
                .unwrap();
        }
        drop(f);
        let tgz = dir.path().join("image.tar.gz");
        let ok = Command::new("tar")
            .args(["--format=oldgnu", "-Sczf"])
            .arg(&tgz)
            .arg("-C")
            .arg(dir.path())
            .arg("disk.raw")
            .status()
            .expect("GNU tar");
        assert!(ok.success());
        let out = dir.path().join("out.raw");
        let o = File::create(&out).unwrap();
        let size = unpack_gce(&File::open(&tgz).unwrap(), &o).unwrap();
        assert_eq!(size, 64 << 20);
        assert_eq!(std::fs::read(&raw).unwrap(), std::fs::read(&out).unwrap());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tar.gz");
        // Not gzip at all; then gzip of a header with a bad checksum.
        std::fs::write(&p, b"not gzip").unwrap();
        let out = File::create(dir.path().join("o")).unwrap();
        assert!(unpack_gce(&File::open(&p).unwrap(), &out).is_err());
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &[b'7'; 1024]).unwrap();
        std::fs::write(&p, e.finish().unwrap()).unwrap();
        let err = unpack_gce(&File::open(&p).unwrap(), &out).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
