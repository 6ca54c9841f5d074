//! The qcow2 header (qemu docs/interop/qcow2.rst, "Header"): encoding for the
//! writer and a validating decoder for the reader. All integers big-endian.
//!
//! ```text
//!  0 magic "QFI\xfb"   4 version      8 backing_file_offset  16 backing_file_size
//! 20 cluster_bits     24 size        32 crypt_method        36 l1_size
//! 40 l1_table_offset  48 refcount_table_offset  56 refcount_table_clusters
//! 60 nb_snapshots     64 snapshots_offset   (v2 ends at 72)
//! 72 incompatible_features  80 compatible_features  88 autoclear_features
//! 96 refcount_order  100 header_length  104 compression_type  105..112 padding
//! ```

use super::{corrupt, truncated, unsupported};
use crate::io::{be32, be64};
use crate::Result;

/// "QFI\xfb" (qcow2.rst, Header, bytes 0-3).
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of the v3 header we write: 104 + compression_type byte + 7 padding.
pub const HEADER_LENGTH_V3: u32 = 112;
/// Length of a v2 header (qcow2.rst: "the length is always assumed to be 72").
pub const HEADER_LENGTH_V2: u32 = 72;
/// Smallest v3 header_length (qcow2.rst).
pub const HEADER_LENGTH_V3_MIN: u32 = 104;

/// Incompatible feature bit 0: refcounts may be inconsistent.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: image is corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: compression type field is non-zero.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;

/// Smallest cluster_bits (qcow2.rst: "must not be less than 9").
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster_bits qemu opens (block/qcow2.h MAX_CLUSTER_BITS).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table qemu accepts (block/qcow2.h QCOW_MAX_L1_SIZE): 32 MiB.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table qemu accepts (QCOW_MAX_REFTABLE_SIZE): 8 MiB.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;

/// Header extension type: end of the extension area (qcow2.rst).
pub const EXT_END: u32 = 0;
/// Header extension type: feature name table (qcow2.rst).
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

/// Compression types (qcow2.rst, byte 104).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    /// 0: raw deflate.
    Deflate,
    /// 1: zstd.
    Zstd,
}

/// The header fields this crate uses, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Virtual size in bytes.
    pub size: u64,
    /// Number of L1 entries.
    pub l1_size: u32,
    /// File offset of the L1 table.
    pub l1_table_offset: u64,
    /// File offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots (ignored when reading the active layer).
    pub nb_snapshots: u32,
    /// File offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// log2 of refcount_bits.
    pub refcount_order: u32,
    /// Header length in bytes.
    pub header_length: u32,
    /// Cluster compression.
    pub compression: CompressionType,
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// Encodes a v3 header followed by the feature-name table and the end
    /// marker; the result fits in one 512-byte cluster.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LENGTH_V3 as usize];
        b[0..4].copy_from_slice(&MAGIC);
        put32(&mut b, 4, self.version);
        // 8 backing_file_offset, 16 backing_file_size: 0 (no backing file).
        put32(&mut b, 20, self.cluster_bits);
        put64(&mut b, 24, self.size);
        // 32 crypt_method: 0.
        put32(&mut b, 36, self.l1_size);
        put64(&mut b, 40, self.l1_table_offset);
        put64(&mut b, 48, self.refcount_table_offset);
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 60, self.nb_snapshots);
        put64(&mut b, 64, self.snapshots_offset);
        put64(&mut b, 72, self.incompatible_features);
        put64(&mut b, 80, self.compatible_features);
        put64(&mut b, 88, self.autoclear_features);
        put32(&mut b, 96, self.refcount_order);
        put32(&mut b, 100, self.header_length);
        b[104] = match self.compression {
            CompressionType::Deflate => 0,
            CompressionType::Zstd => 1,
        };
        encode_feature_table(&mut b);
        // End of header extensions: type 0, length 0.
        b.extend_from_slice(&[0u8; 8]);
        b
    }

    /// Decodes and validates a header. `head` holds the file's first bytes
    /// (up to one maximum cluster); `file_len` bounds every offset.
    pub fn decode(head: &[u8], file_len: u64) -> Result<Header> {
        need(head, HEADER_LENGTH_V2 as usize, file_len)?;
        if head[0..4] != MAGIC {
            return Err(corrupt(
                "header",
                0,
                format!("magic is {:02x?}, expected \"QFI\\xfb\"", &head[0..4]),
            ));
        }
        let version = be32(head, 4);
        if version != 2 && version != 3 {
            return Err(unsupported(format!(
                "version {version} (only 2 and 3 exist)"
            )));
        }
        let cluster_bits = be32(head, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(corrupt(
                "header",
                20,
                format!("cluster_bits {cluster_bits} outside 9..=21"),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            cluster_bits,
            size: be64(head, 24),
            l1_size: be32(head, 36),
            l1_table_offset: be64(head, 40),
            refcount_table_offset: be64(head, 48),
            refcount_table_clusters: be32(head, 56),
            nb_snapshots: be32(head, 60),
            snapshots_offset: be64(head, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: HEADER_LENGTH_V2,
            compression: CompressionType::Deflate,
        };
        if version == 3 {
            need(head, HEADER_LENGTH_V3_MIN as usize, file_len)?;
            h.incompatible_features = be64(head, 72);
            h.compatible_features = be64(head, 80);
            h.autoclear_features = be64(head, 88);
            h.refcount_order = be32(head, 96);
            h.header_length = be32(head, 100);
            h.decode_v3_tail(head, file_len)?;
        }
        let backing_file_offset = be64(head, 8);
        if backing_file_offset != 0 {
            return Err(unsupported(format!(
                "backing file (backing_file_offset {backing_file_offset})"
            )));
        }
        let crypt_method = be32(head, 32);
        if crypt_method != 0 {
            return Err(unsupported(format!(
                "encryption (crypt_method {crypt_method})"
            )));
        }
        h.validate_tables(cluster_size, file_len)?;
        Ok(h)
    }

    fn decode_v3_tail(&mut self, head: &[u8], file_len: u64) -> Result<()> {
        let len = self.header_length;
        if len < HEADER_LENGTH_V3_MIN
            || !len.is_multiple_of(8)
            || u64::from(len) > self.cluster_size()
        {
            return Err(corrupt(
                "header",
                100,
                format!(
                    "header_length {len} must be >= 104, a multiple of 8 and <= the cluster size"
                ),
            ));
        }
        if self.refcount_order > 6 {
            return Err(corrupt(
                "header",
                96,
                format!("refcount_order {} > 6", self.refcount_order),
            ));
        }
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        let unknown = self.incompatible_features & !known;
        if unknown != 0 {
            return Err(unsupported(format!(
                "unknown incompatible feature bits {unknown:#x}"
            )));
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(unsupported(
                "external data file (incompatible bit 2)".into(),
            ));
        }
        if self.incompatible_features & INCOMPAT_EXTL2 != 0 {
            return Err(unsupported(
                "extended L2 entries (incompatible bit 4)".into(),
            ));
        }
        let ctype = if len > 104 {
            need(head, 105, file_len)?;
            head[104]
        } else {
            0
        };
        self.compression = match ctype {
            0 => CompressionType::Deflate,
            1 => CompressionType::Zstd,
            t => return Err(unsupported(format!("compression_type {t}"))),
        };
        let bit = self.incompatible_features & INCOMPAT_COMPRESSION != 0;
        if bit != (ctype != 0) {
            return Err(corrupt(
                "header",
                72,
                format!(
                    "incompatible bit 3 is {} but compression_type is {ctype}",
                    u8::from(bit)
                ),
            ));
        }
        Ok(())
    }

    /// Alignment, size limits and file bounds of the L1, refcount and
    /// snapshot tables (qemu block/qcow2.c qcow2_do_open, validate_table_offset).
    fn validate_tables(&self, cluster_size: u64, file_len: u64) -> Result<()> {
        let l2_entries = cluster_size / 8;
        let needed = self.size.div_ceil(cluster_size).div_ceil(l2_entries);
        if u64::from(self.l1_size) < needed {
            return Err(corrupt(
                "header",
                36,
                format!(
                    "l1_size {} too small for virtual size {} (needs {needed})",
                    self.l1_size, self.size
                ),
            ));
        }
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(corrupt(
                "header",
                36,
                format!("l1_size {} exceeds qemu's 32 MiB L1 limit", self.l1_size),
            ));
        }
        check_table(
            "L1 table",
            40,
            self.l1_table_offset,
            l1_bytes,
            cluster_size,
            file_len,
        )?;
        if self.refcount_table_clusters == 0 {
            return Err(corrupt("header", 56, "refcount_table_clusters is 0".into()));
        }
        let rt_bytes = u64::from(self.refcount_table_clusters) * cluster_size;
        if rt_bytes > MAX_REFTABLE_BYTES {
            return Err(corrupt(
                "header",
                56,
                format!("refcount table of {rt_bytes} bytes exceeds qemu's 8 MiB limit"),
            ));
        }
        check_table(
            "refcount table",
            48,
            self.refcount_table_offset,
            rt_bytes,
            cluster_size,
            file_len,
        )?;
        if self.nb_snapshots > 0 {
            // A snapshot table entry is at least 40 bytes (qcow2.rst, Snapshots).
            let min = u64::from(self.nb_snapshots) * 40;
            check_table(
                "snapshot table",
                64,
                self.snapshots_offset,
                min,
                cluster_size,
                file_len,
            )?;
        }
        Ok(())
    }
}

/// Fails unless `len` bytes at cluster-aligned `offset` lie inside the file.
fn check_table(
    what: &'static str,
    field: u64,
    offset: u64,
    len: u64,
    cluster_size: u64,
    file_len: u64,
) -> Result<()> {
    if !offset.is_multiple_of(cluster_size) {
        return Err(corrupt(
            "header",
            field,
            format!("{what} offset {offset:#x} is not cluster aligned"),
        ));
    }
    if len > 0 && offset == 0 {
        return Err(corrupt(
            "header",
            field,
            format!("{what} overlaps the header at offset 0"),
        ));
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(truncated(what, offset, len, file_len)),
    }
}

fn need(head: &[u8], n: usize, file_len: u64) -> Result<()> {
    if head.len() < n {
        return Err(truncated("header", 0, n as u64, file_len));
    }
    Ok(())
}

/// Feature name table (qcow2.rst, "Feature name table"): 48-byte entries of
/// type (0 incompatible, 1 compatible, 2 autoclear), bit, 46-byte name.
const FEATURE_NAMES: [(u8, u8, &str); 6] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
];

fn encode_feature_table(b: &mut Vec<u8>) {
    let len = FEATURE_NAMES.len() * 48;
    b.extend_from_slice(&EXT_FEATURE_NAMES.to_be_bytes());
    b.extend_from_slice(&u32::try_from(len).expect("small table").to_be_bytes());
    for (kind, bit, name) in FEATURE_NAMES {
        let mut entry = [0u8; 48];
        entry[0] = kind;
        entry[1] = bit;
        entry[2..2 + name.len()].copy_from_slice(name.as_bytes());
        b.extend_from_slice(&entry);
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn sample() -> Header {
        Header {
            version: 3,
            cluster_bits: 16,
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: 0x10000,
            refcount_table_offset: 0x20000,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: HEADER_LENGTH_V3,
            compression: CompressionType::Deflate,
        }
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[0..4], b"QFI\xfb");
        assert_eq!(be32(&b, 100), 112, "header_length");
        assert_eq!(
            be32(&b, 112),
            EXT_FEATURE_NAMES,
            "feature table follows the header"
        );
        assert!(b.len() <= 512, "fits the smallest cluster");
        assert_eq!(Header::decode(&b, 0x30000).unwrap(), h);
    }

    #[test]
    fn decode_rejects_each_bad_field() {
        let cases: [(&str, usize, &[u8]); 8] = [
            ("magic", 0, b"QFI\0"),
            ("version", 4, &[0, 0, 0, 4]),
            ("cluster_bits", 20, &[0, 0, 0, 22]),
            ("crypt_method", 32, &[0, 0, 0, 2]),
            ("l1_size", 36, &[0, 0, 0, 1]),
            ("l1_table_offset", 40, &[0, 0, 0, 0, 0, 0, 0x10, 1]),
            ("incompatible", 72, &[0, 0, 0, 0, 0, 0, 0, 0x20]),
            ("header_length", 100, &[0, 0, 0, 100]),
        ];
        for (name, at, bytes) in cases {
            let mut b = sample().encode();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            assert!(Header::decode(&b, 0x30000).is_err(), "{name}: accepted");
        }
    }

    #[test]
    fn decode_rejects_tables_past_end_of_file() {
        let b = sample().encode();
        let err = Header::decode(&b, 0x20000).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    structure: "refcount table",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn decode_rejects_backing_file() {
        let mut b = sample().encode();
        b[15] = 0x80;
        assert!(matches!(
            Header::decode(&b, 0x30000),
            Err(Error::Unsupported { .. })
        ));
    }
}
