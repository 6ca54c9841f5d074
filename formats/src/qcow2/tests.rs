//! Hostile-input tests: images written by our writer, then damaged one field
//! at a time. Each must give an error naming the problem, never a panic.

use std::sync::Arc;

use super::Qcow2Reader;
use crate::io::{be32, be64};
use crate::{
    write_images, Compression, DiskImage, Error, Format, ReadAt, VirtualDiskBuilder, WriteOptions,
};

const CS: u64 = 65536;

/// A 10 MiB disk with data in clusters 0 and 100, as qcow2 bytes.
fn image(compression: Option<Compression>) -> Vec<u8> {
    let mut b = VirtualDiskBuilder::new(10 << 20);
    b.bytes(0, b"boot sector ".repeat(100))
        .bytes(100 * CS, b"payload ".repeat(9000));
    let disk = b.build().unwrap();
    let file = tempfile::tempfile().unwrap();
    let opts = WriteOptions {
        compression,
        threads: Some(1),
        ..Default::default()
    };
    write_images(
        &disk,
        vec![Format::Qcow2
            .sink(file.try_clone().unwrap(), &opts)
            .unwrap()],
    )
    .unwrap();
    let mut out = vec![0u8; usize::try_from(ReadAt::len(&file)).unwrap()];
    ReadAt::read_exact_at(&file, &mut out, 0).unwrap();
    out
}

/// Opens, maps and reads every allocated byte; the first error wins.
fn open_and_read(bytes: Vec<u8>) -> crate::Result<()> {
    let r = Qcow2Reader::from_reader(Arc::new(bytes))?;
    let _ = r.facts();
    for range in r.allocated()? {
        let mut buf = vec![0u8; usize::try_from(range.end - range.start).unwrap()];
        r.read_exact_at(&mut buf, range.start).map_err(|e| {
            // The reader's own errors travel inside the io::Error.
            let msg = e.to_string();
            match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(ours)) => *ours,
                _ => Error::io(msg, std::io::Error::other("read failed")),
            }
        })?;
    }
    Ok(())
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// File offset of the L2 table mapping guest cluster 0.
fn l2_offset(b: &[u8]) -> usize {
    let l1 = usize::try_from(be64(b, 40)).unwrap();
    usize::try_from(be64(b, l1) & super::tables::OFFSET_MASK).unwrap()
}

#[test]
fn undamaged_images_read() {
    open_and_read(image(None)).unwrap();
    open_and_read(image(Some(Compression::Zlib))).unwrap();
    open_and_read(image(Some(Compression::Zstd))).unwrap();
}

#[test]
fn truncated_header_is_truncated() {
    let b = image(None)[..50].to_vec();
    assert!(matches!(
        open_and_read(b),
        Err(Error::Truncated {
            structure: "header",
            ..
        })
    ));
}

#[test]
fn l1_table_past_end_of_file_is_truncated() {
    let mut b = image(None);
    let past = (b.len() as u64).next_multiple_of(CS);
    put64(&mut b, 40, past);
    assert!(matches!(
        open_and_read(b),
        Err(Error::Truncated {
            structure: "L1 table",
            ..
        })
    ));
}

#[test]
fn l1_entry_past_end_of_file_is_truncated() {
    let mut b = image(None);
    let l1 = usize::try_from(be64(&b, 40)).unwrap();
    put64(&mut b, l1, (1 << 63) | (1000 * CS));
    assert!(matches!(
        open_and_read(b),
        Err(Error::Truncated {
            structure: "L2 table",
            ..
        })
    ));
}

#[test]
fn l2_entry_past_end_of_file_is_an_error() {
    let mut b = image(None);
    let l2 = l2_offset(&b);
    put64(&mut b, l2, (1 << 63) | (1000 * CS));
    let err = open_and_read(b).unwrap_err();
    assert!(err.to_string().contains("data cluster"), "{err}");
}

#[test]
fn misaligned_l2_entry_is_corrupt() {
    let mut b = image(None);
    let l2 = l2_offset(&b);
    let e = be64(&b, l2);
    put64(&mut b, l2, e + 512);
    let err = open_and_read(b).unwrap_err();
    assert!(err.to_string().contains("not cluster aligned"), "{err}");
}

#[test]
fn huge_l1_size_is_corrupt() {
    let mut b = image(None);
    put32(&mut b, 36, u32::MAX);
    assert!(matches!(
        open_and_read(b),
        Err(Error::Corrupt { offset: 36, .. })
    ));
}

#[test]
fn l1_size_too_small_for_virtual_size_is_corrupt() {
    let mut b = image(None);
    put64(&mut b, 24, 1 << 50);
    assert!(matches!(
        open_and_read(b),
        Err(Error::Corrupt { offset: 36, .. })
    ));
}

#[test]
fn bad_cluster_bits_are_corrupt() {
    for bits in [0u32, 8, 22, 63, u32::MAX] {
        let mut b = image(None);
        put32(&mut b, 20, bits);
        assert!(
            matches!(open_and_read(b), Err(Error::Corrupt { offset: 20, .. })),
            "cluster_bits {bits}"
        );
    }
}

#[test]
fn unknown_incompatible_bit_is_unsupported() {
    let mut b = image(None);
    put64(&mut b, 72, 1 << 5);
    assert!(matches!(open_and_read(b), Err(Error::Unsupported { .. })));
}

#[test]
fn duplicate_l2_pointers_are_corrupt() {
    // Two L1 entries sharing one L2 table would let a small file describe a
    // huge allocated map; refused up front.
    let mut b = image(None);
    put64(&mut b, 24, 1 << 30);
    put32(&mut b, 36, 2);
    let l1 = usize::try_from(be64(&b, 40)).unwrap();
    let first = be64(&b, l1);
    put64(&mut b, l1 + 8, first);
    let err = open_and_read(b).unwrap_err();
    assert!(err.to_string().contains("two entries"), "{err}");
}

#[test]
fn compressed_cluster_with_garbage_is_corrupt() {
    for c in [Compression::Zlib, Compression::Zstd] {
        let mut b = image(Some(c));
        let l2 = l2_offset(&b);
        let entry = be64(&b, l2);
        let x = 62 - (16 - 8);
        let at = usize::try_from(entry & ((1u64 << x) - 1)).unwrap();
        b[at..at + 16].fill(0xff);
        let err = open_and_read(b).unwrap_err();
        assert!(
            err.to_string().contains("compressed cluster"),
            "{c:?}: {err}"
        );
    }
}

#[test]
fn compressed_entry_past_end_of_file_is_truncated() {
    let mut b = image(Some(Compression::Zlib));
    let l2 = l2_offset(&b);
    let past = b.len() as u64 + 4096;
    put64(&mut b, l2, (1 << 62) | past);
    let err = open_and_read(b).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn header_fields_read_back() {
    let b = image(Some(Compression::Zstd));
    assert_eq!(be32(&b, 4), 3, "version");
    assert_eq!(be64(&b, 72), 1 << 3, "incompatible bit 3 for zstd");
    assert_eq!(b[104], 1, "compression_type zstd");
    let r = Qcow2Reader::from_reader(Arc::new(b)).unwrap();
    let facts = r.facts();
    let get = |k: &str| {
        facts
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // Cluster 0 and the 72000 bytes at cluster 100, which spill into 101.
    assert_eq!(get("compressed clusters"), "3");
    assert_eq!(get("refcount bits"), "16");
}
