//! KubeVirt containerDisk: an OCI image layout (image-spec v1.1) in a tar,
//! whose one uncompressed layer holds the disk as qcow2 under `disk/`,
//! owned by UID/GID 107 (qemu in KubeVirt's launcher), as
//! `ADD --chown=107:107 x.qcow2 /disk/` builds it.
//!
//! ```text
//! oci-layout                 {"imageLayoutVersion":"1.0.0"}
//! blobs/ blobs/sha256/
//! blobs/sha256/<layer>       tar: disk/ (0555), disk/<name>.qcow2 (0440), both 107:107
//! blobs/sha256/<config>      architecture, os, rootfs.diff_ids = [layer digest], created
//! blobs/sha256/<manifest>    config + layer descriptors
//! index.json                 the manifest, ref.name "latest"
//! ```
//!
//! The qcow2 writer places its clusters at absolute offsets and sizes its
//! file, so it writes into an unlinked scratch file next to the output;
//! `finish` copies it into the layer while hashing it (the layer's digest
//! names its blob and goes into the config), then writes the JSON blobs,
//! which depend on that digest, and patches the layer's member name. JSON is
//! compact with keys in sorted order (struct fields are declared sorted).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{tar, Member};
use crate::io::ReadAt;
use crate::qcow2::Qcow2Writer;
use crate::{Error, Format, ImageSink, ImageSummary, Result, WriteOptions};

/// OCI image index media type.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed layer media type.
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation that names a manifest's tag in an index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// KubeVirt's qemu user and group.
const QEMU_ID: u32 = 107;

/// A content descriptor (image-spec descriptor.md); fields in key order.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Descriptor {
    /// Annotations (only on the index's manifest entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
}

/// `index.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Index {
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// [`INDEX`].
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

/// An image manifest.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// [`MANIFEST`].
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

#[derive(serde::Serialize)]
struct Config<'a> {
    architecture: &'a str,
    config: BTreeMap<String, String>,
    created: String,
    os: &'a str,
    rootfs: RootFs,
}

#[derive(serde::Serialize)]
struct RootFs {
    diff_ids: Vec<String>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Writes a containerDisk OCI archive.
pub struct OciWriter {
    out: File,
    /// The scratch file the qcow2 goes to (a second handle, for reading).
    scratch: File,
    qcow2: Box<Qcow2Writer>,
    /// `disk/<name>.qcow2`.
    disk_name: String,
    mtime: u64,
}

impl OciWriter {
    /// A writer into `out`; the qcow2 inside is written with `write`.
    pub fn new(out: File, name: &str, mtime: u64, write: &WriteOptions) -> Result<Self> {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(Error::InvalidOption {
                option: "package name",
                detail: format!("{name:?} cannot name the containerDisk's file"),
            });
        }
        let disk_name = format!("disk/{name}.qcow2");
        // Fail now rather than after the whole disk is written.
        tar::ustar(&tar::Entry::file(&disk_name, 0, mtime))?;
        let scratch = tempfile::tempfile_in(scratch_dir(&out))
            .map_err(|e| Error::io("creating the scratch file for the qcow2", e))?;
        let handle = scratch
            .try_clone()
            .map_err(|e| Error::io("duplicating the scratch file handle", e))?;
        // The caller hashes the archive; the scratch qcow2 need not be hashed.
        let opts = WriteOptions {
            hash: false,
            ..write.clone()
        };
        Ok(Self {
            out,
            scratch,
            qcow2: Box::new(Qcow2Writer::new(handle, &opts)?),
            disk_name,
            mtime,
        })
    }
}

/// The output's directory (through /proc/self/fd), so the scratch file is on
/// the same filesystem and sized like the output; else the temp directory.
fn scratch_dir(out: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", out.as_raw_fd()))
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

impl ImageSink for OciWriter {
    fn begin(&mut self, size: u64, allocated: &[Range<u64>]) -> Result<()> {
        self.qcow2.begin(size, allocated)
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.qcow2.write_data(offset, data)
    }

    fn finish(self: Box<Self>) -> Result<ImageSummary> {
        let Self {
            out,
            scratch,
            qcow2,
            disk_name,
            mtime,
        } = *self;
        let inner = qcow2.finish()?;
        let patch = out
            .try_clone()
            .map_err(|e| Error::io("duplicating the OCI archive handle", e))?;
        let mut w = TarOut::new(out, mtime);
        w.member("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        w.dir("blobs/")?;
        w.dir("blobs/sha256/")?;
        let (layer_header, layer) = w.layer(&disk_name, &scratch, inner.file_size)?;
        let config = serde_json::to_vec(&Config {
            architecture: "amd64",
            config: BTreeMap::new(),
            created: rfc3339(mtime),
            os: "linux",
            rootfs: RootFs {
                diff_ids: vec![layer.digest.clone()],
                kind: "layers",
            },
        })
        .map_err(json_error)?;
        let config = w.blob(CONFIG, &config)?;
        let manifest = serde_json::to_vec(&Manifest {
            config,
            layers: vec![layer.clone()],
            media_type: MANIFEST.into(),
            schema_version: 2,
        })
        .map_err(json_error)?;
        let mut manifest = w.blob(MANIFEST, &manifest)?;
        manifest.annotations = Some(BTreeMap::from([(REF_NAME.into(), "latest".into())]));
        let index = serde_json::to_vec(&Index {
            manifests: vec![manifest],
            media_type: INDEX.into(),
            schema_version: 2,
        })
        .map_err(json_error)?;
        w.member("index.json", &index)?;
        let total = w.finish()?;
        let mut header = tar::ustar(&tar::Entry::file("", layer.size, mtime))?;
        tar::set_name(&mut header, &blob_name(&layer.digest))?;
        std::os::unix::fs::FileExt::write_all_at(&patch, &header, layer_header)
            .map_err(|e| Error::io("patching the layer's member header", e))?;
        Ok(ImageSummary {
            format: Format::Qcow2,
            virtual_size: inner.virtual_size,
            file_size: total,
            sha256: None,
            member: Some(Member {
                name: disk_name,
                offset: layer_header + 3 * tar::BLOCK,
                size: inner.file_size,
                format: Format::Qcow2,
            }),
        })
    }
}

fn json_error(e: serde_json::Error) -> Error {
    Error::io("encoding OCI JSON", std::io::Error::other(e))
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn digest_of(sha: Sha256) -> String {
    let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The outer archive, written front to back.
struct TarOut {
    w: BufWriter<File>,
    at: u64,
    mtime: u64,
}

static ZEROS: [u8; 1024] = [0; 1024];

impl TarOut {
    fn new(file: File, mtime: u64) -> Self {
        Self {
            w: BufWriter::with_capacity(1 << 20, file),
            at: 0,
            mtime,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing the OCI archive at byte {}", self.at), e))?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64);
            self.put(&ZEROS[..k as usize])?;
            n -= k;
        }
        Ok(())
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        self.put(&tar::ustar(&tar::Entry::dir(name, self.mtime))?)
    }

    fn member(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        self.put(&tar::ustar(&tar::Entry::file(name, len, self.mtime))?)?;
        self.put(data)?;
        self.zeros(tar::padded(len) - len)
    }

    /// A blob member named by its digest; its descriptor.
    fn blob(&mut self, media_type: &str, data: &[u8]) -> Result<Descriptor> {
        let digest = digest_of(Sha256::new_with_prefix(data));
        self.member(&blob_name(&digest), data)?;
        Ok(Descriptor {
            annotations: None,
            digest,
            media_type: media_type.into(),
            size: data.len() as u64,
        })
    }

    /// The layer blob: a placeholder header (the name waits for the
    /// digest), then the layer tar holding `disk/` and the qcow2 copied from
    /// `scratch`. Gives the header's offset and the layer's descriptor.
    fn layer(&mut self, disk_name: &str, scratch: &File, len: u64) -> Result<(u64, Descriptor)> {
        let size = 2 * tar::BLOCK + tar::padded(len) + 2 * tar::BLOCK;
        let header_at = self.at;
        self.put(&tar::ustar(&tar::Entry::file("", size, self.mtime))?)?;
        let start = self.at;
        let mut sha = Sha256::new();
        let owned = |name, kind, mode, size| tar::Entry {
            name,
            kind,
            mode,
            uid: QEMU_ID,
            gid: QEMU_ID,
            uname: "",
            gname: "",
            size,
            mtime: self.mtime,
        };
        let dir = tar::ustar(&owned("disk/", tar::TYPE_DIR, 0o555, 0))?;
        let file = tar::ustar(&owned(disk_name, tar::TYPE_FILE, 0o440, len))?;
        for h in [dir, file] {
            sha.update(h);
            self.put(&h)?;
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(buf.len() as u64)).expect("at most 1 MiB");
            ReadAt::read_exact_at(scratch, &mut buf[..n], done)
                .map_err(|e| Error::io(format!("reading the scratch qcow2 at {done}"), e))?;
            sha.update(&buf[..n]);
            self.put(&buf[..n])?;
            done += n as u64;
        }
        // Padding to a block, then the layer's two end blocks.
        let tail = usize::try_from(start + size - self.at).expect("under three blocks");
        let zeros = vec![0u8; tail];
        sha.update(&zeros);
        self.put(&zeros)?;
        let layer = Descriptor {
            annotations: None,
            digest: digest_of(sha),
            media_type: LAYER_TAR.into(),
            size,
        };
        Ok((header_at, layer))
    }

    /// Ends the archive; gives its length.
    fn finish(mut self) -> Result<u64> {
        self.zeros(tar::end_padding(self.at))?;
        self.w
            .flush()
            .map_err(|e| Error::io("flushing the OCI archive", e))?;
        Ok(self.at)
    }
}

/// `secs` since the Unix epoch as RFC 3339 UTC (`2023-11-14T22:13:20Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_keys_come_out_sorted() {
        let i = Index {
            manifests: vec![Descriptor {
                annotations: Some(BTreeMap::from([(REF_NAME.into(), "latest".into())])),
                digest: "sha256:00".into(),
                media_type: MANIFEST.into(),
                size: 1,
            }],
            media_type: INDEX.into(),
            schema_version: 2,
        };
        let s = serde_json::to_string(&i).unwrap();
        let keys = [
            "\"annotations\"",
            "\"digest\"",
            "\"mediaType\":\"application/vnd.oci.image.manifest",
            "\"size\"",
            "\"mediaType\":\"application/vnd.oci.image.index",
            "\"schemaVersion\"",
        ];
        let at: Vec<usize> = keys.iter().map(|k| s.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{s}");
    }
}
