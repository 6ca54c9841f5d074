//! Reading an input file front to back for its SHA-256, its content id and
//! its zero sectors, on threads of their own so that the build can read and
//! configure the OS tree meanwhile. The content id (fast) names the input in
//! the seed; the SHA-256 (slow) is needed only for the `sha256` pins and the
//! manifest, so it may run on while the images are written.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use imgbuild_formats::hash::ContentId;
use sha2::{Digest, Sha256};

use super::zeros::{ZeroMap, ZeroScan};

/// What to measure in one read of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// Its SHA-256 (for pins and the manifest; 2 GB/s with SHA-NI).
    pub sha256: bool,
    /// Its content id: hardware CRC-32C per 64 KiB fed to SHA-256
    /// ([`ContentId`]), about ten times faster. Names the input in the seed,
    /// so that the build need not wait for the SHA-256 to draw its ids.
    pub content_id: bool,
}

/// What one read of a file measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    /// SHA-256 of the bytes, lowercase hex (empty when not asked for).
    pub sha256: String,
    /// The content id (when asked for).
    pub content_id: Option<[u8; 32]>,
    /// Length in bytes.
    pub len: u64,
}

/// Reads `path` whole, measuring what `want` says, and its zero sectors into
/// `zeros` when given (set even on failure, to "unknown").
pub fn digest_file(path: &Path, want: Want, zeros: Option<Arc<ZeroMap>>) -> io::Result<FileDigest> {
    let mut scan = zeros.map(ZeroScan::new);
    let result = read_all(path, want, scan.as_mut());
    match (result, scan) {
        (Ok(d), Some(s)) => {
            s.finish();
            Ok(d)
        }
        (Err(e), Some(s)) => {
            s.fail();
            Err(e)
        }
        (r, None) => r,
    }
}

fn read_all(path: &Path, want: Want, mut scan: Option<&mut ZeroScan>) -> io::Result<FileDigest> {
    let mut f = std::fs::File::open(path)?;
    let mut sha = want.sha256.then(Sha256::new);
    let mut id = want
        .content_id
        .then(|| ContentId::new(b"imgbuild-input-v1\0"));
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let piece = &buf[..n];
        if let Some(h) = sha.as_mut() {
            h.update(piece);
        }
        if let Some(c) = id.as_mut() {
            c.data(len, piece);
        }
        if let Some(s) = scan.as_deref_mut() {
            s.update(piece);
        }
        len = len.saturating_add(n as u64);
    }
    Ok(FileDigest {
        sha256: sha
            .map(|h| crate::ids::hex(&h.finalize()))
            .unwrap_or_default(),
        content_id: id.map(|mut c| {
            c.meta(&len.to_le_bytes());
            c.finish()
        }),
        len,
    })
}

/// [`digest_file`] running on its own thread.
#[derive(Debug)]
pub struct DigestJob {
    path: PathBuf,
    state: Job,
}

#[derive(Debug)]
enum Job {
    Running(JoinHandle<io::Result<FileDigest>>),
    /// No thread could be started: the work was done on the caller's.
    Done(io::Result<FileDigest>),
}

impl DigestJob {
    /// Starts reading `path`. A `background` job runs at the lowest
    /// priority: for results needed only at the end (the input's SHA-256,
    /// awaited before the outputs are renamed), so that it takes the CPU
    /// the build leaves idle rather than slowing what everything waits for.
    pub fn spawn(path: PathBuf, want: Want, zeros: Option<Arc<ZeroMap>>, background: bool) -> Self {
        let (p, z) = (path.clone(), zeros.clone());
        // If the thread dies, its `ZeroScan` unwinds and marks the map
        // "unknown": nobody waits forever.
        let state = match std::thread::Builder::new()
            .name("digest".into())
            .spawn(move || {
                if background {
                    // Linux nice values are per thread: this one yields to
                    // the build's critical path. Failing changes only speed.
                    let _ =
                        rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
                }
                digest_file(&p, want, z)
            }) {
            Ok(h) => Job::Running(h),
            Err(_) => Job::Done(digest_file(&path, want, zeros.clone())),
        };
        Self { path, state }
    }

    /// Waits for the result.
    pub fn join(self) -> io::Result<FileDigest> {
        match self.state {
            Job::Done(r) => r,
            Job::Running(h) => h.join().unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "reading {} failed (thread panicked)",
                    self.path.display()
                )))
            }),
        }
    }
}
