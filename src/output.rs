//! Atomic outputs: write to a temporary name beside the destination, fsync,
//! rename when complete. Dropping an uncommitted file removes the temporary,
//! so a failed build never leaves a half-written image nor touches an
//! existing output.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
        std::fs::rename(&self.tmp, &self.dst).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.dst.display()
            )
        })?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
