use std::io::Write;

use super::*;

/// One newc ("070701") or crc ("070702") entry: header, name, pad, data, pad
/// (buffer-format.rst). `at` is the stream offset the entry starts at, which
/// must be a multiple of 4.
fn entry(magic: &[u8; 6], name: &str, mode: u32, data: &[u8], chksum: u32) -> Vec<u8> {
    let mut out = magic.to_vec();
    let namesize = u32::try_from(name.len() + 1).expect("short name");
    let size = u32::try_from(data.len()).expect("small data");
    // c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize c_maj c_min c_rmaj c_rmin c_namesize c_chksum
    for v in [1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, chksum] {
        out.extend_from_slice(format!("{v:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    entry(MAGIC_NEWC, name, 0o100644, data, 0)
}

fn dir(name: &str) -> Vec<u8> {
    entry(MAGIC_NEWC, name, 0o040755, b"", 0)
}

fn trailer() -> Vec<u8> {
    entry(MAGIC_NEWC, "TRAILER!!!", 0, b"", 0)
}

/// A whole archive of the named files (contents = their names).
fn archive(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend(if n.ends_with('/') {
            dir(n.trim_end_matches('/'))
        } else {
            file(n, n.as_bytes())
        });
    }
    out.extend(trailer());
    out
}

fn ls(bytes: &[u8]) -> Result<Initramfs, CpioError> {
    list(&FileData::Bytes(bytes.into()))
}

fn names(i: &Initramfs) -> Vec<String> {
    i.entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("in memory");
    e.finish().expect("in memory")
}

#[test]
fn newc_archive_lists_entries_in_order() {
    let i = ls(&archive(&["usr/", "usr/lib/a.ko", "init"])).expect("valid archive");
    assert_eq!(names(&i), ["usr", "usr/lib/a.ko", "init"]);
    assert_eq!(i.segments.len(), 1);
    assert_eq!(i.segments[0].compression, Compression::None);
    assert!(i.entries[1].is_file() && !i.entries[0].is_file());
    assert_eq!(i.entries[1].size, 12);
}

#[test]
fn early_microcode_prefix_then_padding_then_gzip() {
    // initramfs-tools: uncompressed early cpio, zero padding, compressed main archive.
    let mut img = archive(&["kernel/", "kernel/x86/microcode/GenuineIntel.bin"]);
    img.extend([0u8; 512]);
    let main_at = img.len() as u64;
    img.extend(gzip(&archive(&[
        "./init",
        "usr/lib/modules/6.1/kernel/hv_storvsc.ko",
    ])));
    let i = ls(&img).expect("valid initramfs");
    assert_eq!(
        names(&i),
        [
            "kernel",
            "kernel/x86/microcode/GenuineIntel.bin",
            "./init",
            "usr/lib/modules/6.1/kernel/hv_storvsc.ko"
        ]
    );
    assert_eq!(
        i.segments
            .iter()
            .map(|s| (s.offset, s.compression))
            .collect::<Vec<_>>(),
        [(0, Compression::None), (main_at, Compression::Gzip)]
    );
    assert_eq!(i.entries[2].path(), b"init");
    assert_eq!(i.segments[1].entries, 2..4);
}

#[test]
fn two_archives_inside_one_compressed_stream() {
    let mut inner = archive(&["a"]);
    inner.extend([0u8; 8]);
    inner.extend(archive(&["b"]));
    let i = ls(&gzip(&inner)).expect("valid");
    assert_eq!(names(&i), ["a", "b"]);
}

#[test]
fn zstd_xz_lzma_and_lz4_legacy_segments() {
    let a = archive(&["z"]);
    let mut img = zstd::encode_all(&a[..], 1).expect("zstd");
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&archive(&["x"])).expect("xz");
    img.extend(xz.finish().expect("xz"));
    let opts = liblzma::stream::LzmaOptions::new_preset(1).expect("preset");
    let stream = liblzma::stream::Stream::new_lzma_encoder(&opts).expect("lzma encoder");
    let mut lz = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    lz.write_all(&archive(&["l"])).expect("lzma");
    img.extend(lz.finish().expect("lzma"));
    // lz4 legacy: magic, then le32 length + block; it runs to the end of the file.
    let block = lz4_flex::block::compress(&archive(&["4"]));
    img.extend(LZ4_LEGACY_MAGIC.to_le_bytes());
    img.extend(u32::try_from(block.len()).expect("small").to_le_bytes());
    img.extend(block);
    let i = ls(&img).expect("valid");
    assert_eq!(names(&i), ["z", "x", "l", "4"]);
    let kinds: Vec<_> = i.segments.iter().map(|s| s.compression).collect();
    assert_eq!(
        kinds,
        [
            Compression::Zstd,
            Compression::Xz,
            Compression::Lzma,
            Compression::Lz4Legacy
        ]
    );
}

#[test]
fn crc_format_checksum_is_verified() {
    let data = b"\x01\x02\xff";
    let mut good = entry(MAGIC_CRC, "f", 0o100644, data, 0x102);
    good.extend(entry(MAGIC_CRC, "TRAILER!!!", 0, b"", 0));
    assert_eq!(names(&ls(&good).expect("checksum matches")), ["f"]);
    let mut bad = entry(MAGIC_CRC, "f", 0o100644, data, 0x103);
    bad.extend(trailer());
    match ls(&bad) {
        Err(CpioError::BadChecksum {
            expected: 0x103,
            found: 0x102,
            at,
            ..
        }) => assert_eq!(at.offset, 0),
        other => panic!("expected BadChecksum, got {other:?}"),
    }
}

#[test]
fn rejects_bad_magic_inside_archive_with_offset() {
    let mut img = file("a", b"x");
    let at = img.len() as u64;
    img.extend(b"070707");
    img.extend([b'0'; 104]);
    match ls(&img) {
        Err(CpioError::BadMagic { at: loc, found }) => {
            assert_eq!((loc.offset, found.as_str()), (at, "070707"))
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
}

#[test]
fn rejects_non_hex_field() {
    let mut img = file("a", b"x");
    img[6 + 8 * 6] = b'g'; // c_filesize
    match ls(&img) {
        Err(CpioError::BadField {
            field: "c_filesize",
            ..
        }) => {}
        other => panic!("expected BadField, got {other:?}"),
    }
}

#[test]
fn rejects_name_longer_than_path_max() {
    let img = file(&"n".repeat(5000), b"");
    match ls(&img) {
        Err(CpioError::BadName { len: 5001, .. }) => {}
        other => panic!("expected BadName, got {other:?}"),
    }
}

#[test]
fn rejects_archive_without_trailer_as_truncated() {
    match ls(&file("a", b"data")) {
        Err(CpioError::Truncated {
            structure: "a cpio header",
            ..
        }) => {}
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn rejects_file_data_past_the_end() {
    let mut img = file("a", &[7u8; 100]);
    img.truncate(150);
    match ls(&img) {
        Err(CpioError::Truncated {
            structure: "cpio file data",
            at,
        }) => assert_eq!(at.offset, 0),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn rejects_unknown_magic_with_offset() {
    let mut img = archive(&["a"]);
    let at = img.len() as u64;
    img.extend(b"PK\x03\x04");
    match ls(&img) {
        Err(CpioError::UnknownMagic { offset, found }) => {
            assert_eq!((offset, found), (at, b"PK\x03\x04".to_vec()))
        }
        other => panic!("expected UnknownMagic, got {other:?}"),
    }
}

#[test]
fn unaligned_cpio_after_padding_is_not_an_archive() {
    // The kernel only takes '0' as a cpio start at a 4-byte boundary.
    let mut img = archive(&["a"]);
    img.push(1);
    img.extend(archive(&["b"]));
    assert!(matches!(ls(&img), Err(CpioError::UnknownMagic { .. })));
}

#[test]
fn bzip2_is_recognised_and_unsupported() {
    match ls(b"BZh91AY&SY") {
        Err(CpioError::Unsupported { at, feature }) => {
            assert_eq!((at.segment, at.compression), (0, Compression::Bzip2));
            assert!(feature.contains("bzip2"));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn broken_padding_inside_compressed_stream() {
    let mut inner = archive(&["a"]);
    inner.extend([0u8; 2]);
    inner.extend(archive(&["b"]));
    match ls(&gzip(&inner)) {
        Err(CpioError::BrokenPadding { at }) => assert_eq!(at.offset % 4, 2),
        other => panic!("expected BrokenPadding, got {other:?}"),
    }
}

#[test]
fn compressed_stream_ending_inside_an_archive_is_truncated() {
    // The kernel's "junk at the end of compressed archive".
    let g = gzip(&file("a", b"x"));
    assert!(matches!(ls(&g), Err(CpioError::Truncated { .. })));
}

#[test]
fn corrupt_gzip_is_a_decompress_error_at_its_segment() {
    let mut img = archive(&["a"]);
    let at = img.len() as u64;
    let mut g = gzip(&archive(&["b"]));
    let n = g.len();
    g.truncate(n - 12);
    img.extend(g);
    match ls(&img) {
        Err(CpioError::Decompress {
            at: loc,
            compression: Compression::Gzip,
            ..
        }) => assert_eq!(loc.segment, at),
        Err(CpioError::Truncated { at: loc, .. }) => assert_eq!(loc.segment, at),
        other => panic!("expected a gzip error, got {other:?}"),
    }
}

#[test]
fn entry_limit_is_enforced() {
    let img = archive(&["a", "b", "c"]);
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    match list_with_limits(&FileData::Bytes(img.into()), &limits) {
        Err(CpioError::Limit {
            what: "entries",
            limit: 2,
            ..
        }) => {}
        other => panic!("expected Limit, got {other:?}"),
    }
}

#[test]
fn unpacked_limit_is_enforced() {
    let img = gzip(&archive(&["a", "b", "c"]));
    let limits = Limits {
        max_unpacked: 200,
        ..Limits::default()
    };
    match list_with_limits(&FileData::Bytes(img.into()), &limits) {
        Err(CpioError::Limit {
            what: "unpacked bytes",
            limit: 200,
            ..
        }) => {}
        other => panic!("expected Limit, got {other:?}"),
    }
}

#[test]
fn lz4_block_longer_than_bound_is_refused() {
    let mut img = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
    img.extend(u32::MAX.to_le_bytes());
    assert!(matches!(
        ls(&img),
        Err(CpioError::Decompress {
            compression: Compression::Lz4Legacy,
            ..
        })
    ));
}

#[test]
fn empty_and_all_zero_inputs_list_nothing() {
    assert_eq!(ls(b"").expect("empty"), Initramfs::default());
    assert_eq!(ls(&[0u8; 4096]).expect("zeros"), Initramfs::default());
}

/// Every truncation and every single-bit flip of a small multi-segment image
/// (early cpio, padding, gzip, zstd, crc entry) lists or fails with a typed
/// error, never panics: a deterministic slice of what the `cpio_reader` fuzz
/// target explores.
#[test]
fn truncations_and_bit_flips_never_panic() {
    let mut img = archive(&["kernel/", "kernel/x86/microcode/AuthenticAMD.bin"]);
    img.extend([0u8; 8]);
    img.extend(gzip(&archive(&["init", "usr/lib/modules/6.1/a.ko"])));
    img.extend(zstd::encode_all(&archive(&["b"])[..], 1).expect("zstd"));
    while !img.len().is_multiple_of(4) {
        img.push(0); // an uncompressed archive starts 4-byte aligned
    }
    let mut crc = entry(MAGIC_CRC, "c", 0o100644, b"abc", 0x126);
    crc.extend(trailer());
    img.extend(crc);
    assert_eq!(
        names(&ls(&img).expect("the unmodified image is valid")).len(),
        6
    );
    let limits = Limits {
        max_entries: 64,
        max_name_bytes: 4096,
        max_unpacked: 1 << 20,
    };
    for len in 0..img.len() {
        let _ = list_with_limits(&FileData::Bytes(img[..len].into()), &limits);
    }
    for i in 0..img.len() {
        for bit in 0..8 {
            let mut m = img.clone();
            m[i] ^= 1 << bit;
            let _ = list_with_limits(&FileData::Bytes(m.into()), &limits);
        }
    }
}
