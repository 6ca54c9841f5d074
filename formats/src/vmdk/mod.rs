//! VMDK hosted sparse extents (VMware "Virtual Disk Format 5.0"), written
//! in two subformats and read in both:
//!
//! - `streamOptimized` ([`VmdkStreamWriter`], `stream.rs`): compressed grains
//!   and markers, what vSphere imports and what an OVA carries. Written
//!   strictly front to back through the file's cursor, in one pass:
//!
//! ```text
//! sector 0      sparse extent header (gdOffset = GD_AT_END)
//! sector 1..21  the embedded descriptor (createType="streamOptimized")
//! overHead      grain: lba u64, size u32, zlib data, padded to 512 …
//!               per grain table with grains: GT marker, 512 × u32 sector offsets
//!               GD marker, grain directory (one u32 per grain table, 0 = none)
//!               footer marker, footer (the header with gdOffset set), end-of-stream marker
//! ```
//!
//! - `monolithicSparse` ([`VmdkSparseWriter`], `sparse.rs`): plain grains
//!   behind a redundant and a primary grain directory, what VMware
//!   Workstation and Fusion create.
//!
//! Grains of all zeros are not written (their table entry stays 0, read as
//! zeros). Every byte follows from the disk and the options: the descriptor's
//! CID comes from the seed (or a constant), compression is zlib at a fixed
//! level, `ddb.adapterType` is `lsilogic` (what vSphere templates use).
//!
//! [`VmdkReader`] (`reader.rs`) reads hosted sparse extents: streamOptimized (compressed
//! grains, the directory found through the footer) and monolithicSparse
//! (plain grains), as qemu-img and VMware write them.

mod reader;
mod sparse;
mod stream;

pub use reader::VmdkReader;
pub use sparse::VmdkSparseWriter;
pub use stream::VmdkStreamWriter;

use crate::{Error, Result};

const FORMAT: &str = "vmdk";
const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB), as VMware and qemu write.
pub const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per table (each table covers 32 MiB).
pub const GTES_PER_GT: u64 = 512;
/// "KDMV" read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// Header flag bits (VMDK 5.0 spec, "Hosted Sparse Extent Header").
const FLAG_NL_DETECT: u32 = 1;
const FLAG_REDUNDANT_GT: u32 = 1 << 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// gdOffset of a stream-optimized header: the directory is at the end,
/// the footer says where.
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;
/// Sectors reserved for the embedded descriptor.
const DESCRIPTOR_SECTORS: u64 = 20;
/// Marker types.
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// The fields of a sparse extent header that differ between our subformats.
#[derive(Clone, Copy, Debug)]
struct Header {
    version: u32,
    flags: u32,
    capacity_sectors: u64,
    /// Redundant grain directory (0: none).
    rgd_offset: u64,
    gd_offset: u64,
    /// Sectors before the first grain.
    overhead: u64,
    compress: u16,
}

impl Header {
    /// A streamOptimized header (or footer, with the directory's offset).
    fn stream(capacity_sectors: u64, gd_offset: u64) -> Self {
        Header {
            version: 3,
            flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity_sectors,
            rgd_offset: 0,
            gd_offset,
            overhead: GRAIN_SECTORS,
            compress: COMPRESS_DEFLATE,
        }
    }

    /// The 512-byte little-endian encoding.
    fn encode(&self) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&self.version.to_le_bytes());
        h[8..12].copy_from_slice(&self.flags.to_le_bytes());
        h[12..20].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptorOffset
        h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        h[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        h[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        h[72] = 0; // uncleanShutdown
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&self.compress.to_le_bytes());
        h
    }
}

/// A marker sector: `value` (sectors of metadata that follow), size 0, type.
fn marker(value: u64, kind: u32) -> [u8; SECTOR as usize] {
    let mut m = [0u8; SECTOR as usize];
    m[0..8].copy_from_slice(&value.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// Cylinders for the descriptor's geometry (16 heads, 63 sectors), as
/// VMware and qemu compute it.
fn cylinders(capacity_sectors: u64) -> u64 {
    (capacity_sectors / (16 * 63)).min(65535)
}

/// The embedded descriptor of a streamOptimized extent.
pub fn descriptor(capacity_sectors: u64, cid: u32, adapter: &str) -> String {
    descriptor_for("streamOptimized", capacity_sectors, cid, adapter)
}

/// The embedded descriptor: `create_type` (`streamOptimized`,
/// `monolithicSparse`), one sparse extent, the DDB qemu-img writes.
pub fn descriptor_for(create_type: &str, capacity_sectors: u64, cid: u32, adapter: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"{create_type}\"\n\n# Extent description\n\
         RW {capacity_sectors} SPARSE \"disk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"{adapter}\"\n",
        cylinders(capacity_sectors)
    )
}

/// The header sector and descriptor sectors that open both subformats.
fn header_and_descriptor(h: &Header, create_type: &str, cid: u32, adapter: &str) -> Vec<u8> {
    let mut out = h.encode().to_vec();
    let mut desc = descriptor_for(create_type, h.capacity_sectors, cid, adapter).into_bytes();
    desc.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    out.extend_from_slice(&desc);
    out
}

/// The descriptor's CID: from the seed, or a constant.
fn cid(seed: Option<[u8; 32]>) -> u32 {
    seed.map_or(0x1d2c_3b4a, |s| {
        u32::from_le_bytes([s[0], s[1], s[2], s[3]])
    })
}

/// Checks a virtual size and gives its grain count (a usize: one grain
/// table entry each is kept in memory).
fn grains_of(size: u64) -> Result<usize> {
    if !size.is_multiple_of(SECTOR) {
        return Err(Error::Unsupported {
            format: FORMAT,
            feature: format!("a size of {size} bytes (not whole 512-byte sectors)"),
        });
    }
    usize::try_from(size.div_ceil(GRAIN)).map_err(|_| Error::Unsupported {
        format: FORMAT,
        feature: "this many grains".into(),
    })
}

/// A sector number as a grain table entry (32 bits).
fn sector_u32(sector: u64) -> Result<u32> {
    u32::try_from(sector).map_err(|_| Error::Unsupported {
        format: FORMAT,
        feature: "files above 2 TiB (grain table entries are 32-bit sectors)".into(),
    })
}
