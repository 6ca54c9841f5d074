//! Atomic outputs: write to a temporary name beside the destination, fsync,
//! rename when complete. Dropping an uncommitted file removes the temporary,
//! so a failed build never leaves a half-written image nor touches an
//! existing output.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use anyhow::{Context, Result};

/// Temporaries alive right now, removed by the signal handler.
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static HANDLER: Once = Once::new();

/// Installs (once) a SIGINT/SIGTERM/SIGHUP handler thread that removes every
/// live temporary output and exits with 128 + the signal number.
pub fn install_signal_cleanup() {
    HANDLER.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                remove_live();
                eprintln!("imgbuild: interrupted (signal {sig}); temporary outputs removed");
                std::process::exit(128 + sig);
            }
        });
    });
}

fn remove_live() {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for p in live.iter() {
        let _ = std::fs::remove_file(p);
    }
}

fn register(p: &Path) {
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(p.to_path_buf());
}

fn unregister(p: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(p);
}

/// A file being written under a temporary name.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: PathBuf,
    dst: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates `.<name>.tmp-imgbuild-<pid>` in `dst`'s directory.
    pub fn create(dst: &Path) -> Result<Self> {
        let name = dst
            .file_name()
            .with_context(|| format!("{} has no file name", dst.display()))?;
        let dir = dst
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp-imgbuild-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        register(&tmp);
        Ok(Self {
            tmp,
            dst: dst.to_path_buf(),
            file: Some(file),
        })
    }

    /// A handle to the temporary file.
    pub fn file(&self) -> Result<File> {
        let f = self.file.as_ref().expect("file is present until commit");
        f.try_clone()
            .with_context(|| format!("cannot reopen {}", self.tmp.display()))
    }

    /// The temporary path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.dst
    }

    /// fsyncs and renames to the final name.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all()
            .with_context(|| format!("cannot flush {}", self.tmp.display()))?;
        drop(file);
        let renamed = std::fs::rename(&self.tmp, &self.dst).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.dst.display()
            )
        });
        if renamed.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        unregister(&self.tmp);
        renamed
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            unregister(&self.tmp);
        }
    }
}
