//! Atomic outputs: write to a temporary name beside the destination, fsync,
//! rename when complete. Dropping an uncommitted file removes the temporary,
//! so a failed build never leaves a half-written image nor touches an
//! existing output.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Temporaries alive right now, removed by [`remove_temporaries`].
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
/// Temporary directories alive right now (a build's staging directory, a
/// rebuild's scratch directory), removed with all they hold by
/// [`remove_temporaries`].
static LIVE_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
/// What [`remove_temporaries`] returns: while it lives, no output is
/// committed and no temporary is created or removed by a build.
pub struct Cleanup {
    _files: std::sync::MutexGuard<'static, BTreeSet<PathBuf>>,
    _dirs: std::sync::MutexGuard<'static, BTreeSet<PathBuf>>,
}

/// Removes every temporary output alive right now (images being written,
/// staging and rebuild directories) and returns a guard that holds back
/// every build until it is dropped: a commit in progress finishes first,
/// none starts after. For a program's signal handler, which exits while
/// holding it (the `imgbuild` command does this on SIGINT, SIGTERM and
/// SIGHUP). The library installs no handler of its own.
pub fn remove_temporaries() -> Cleanup {
    let files = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for p in files.iter() {
        let _ = std::fs::remove_file(p);
    }
    let dirs = LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    for d in dirs.iter() {
        let _ = std::fs::remove_dir_all(d);
    }
    Cleanup {
        _files: files,
        _dirs: dirs,
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

/// Registers a temporary directory for removal (with its content) on
/// SIGINT/SIGTERM/SIGHUP.
pub fn register_dir(p: &Path) {
    LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(p.to_path_buf());
}

/// The directory is no longer temporary (or is gone).
pub fn unregister_dir(p: &Path) {
    LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(p);
}

/// While the guard lives, a signal's cleanup waits: for a step (renaming a
/// registered directory) that must not be cut in half.
pub fn hold_cleanup() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner())
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

/// Commits several files as one: all are flushed and every destination is
/// checked first, then each is renamed into place; if a rename fails, the
/// ones already renamed are rolled back to the previous files (kept as hard
/// links until the end), so the destinations hold either all the new files
/// or all the old ones. SIGINT/SIGTERM cannot interrupt the renames: the
/// signal handler waits for them (they hold the lock of live temporaries).
pub fn commit_all(files: Vec<AtomicFile>) -> Result<()> {
    let mut files = files;
    for f in &files {
        let file = f.file.as_ref().expect("file is present until commit");
        file.sync_all()
            .with_context(|| format!("cannot flush {}", f.tmp.display()))?;
    }
    let pairs: Vec<(PathBuf, PathBuf)> = files
        .iter()
        .map(|f| (f.tmp.clone(), f.dst.clone()))
        .collect();
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let result = rename_all_locked(&pairs);
    drop(live);
    for f in &mut files {
        if result.is_err() {
            let _ = std::fs::remove_file(&f.tmp);
        }
        f.file = None;
        unregister(&f.tmp);
    }
    result
}

/// Renames each `(from, to)`, all or nothing: every destination is checked
/// first (a directory in the way fails before any rename); the previous
/// files are kept as hard links until the end, so a failed rename rolls the
/// renamed ones back. The caller holds whatever lock keeps a signal handler
/// from running meanwhile.
pub fn rename_all(pairs: &[(PathBuf, PathBuf)]) -> Result<()> {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let r = rename_all_locked(pairs);
    drop(live);
    r
}

fn rename_all_locked(pairs: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (_, dst) in pairs {
        if let Ok(m) = std::fs::symlink_metadata(dst) {
            if m.is_dir() {
                anyhow::bail!(
                    "cannot replace {}: it is a directory; nothing was written",
                    dst.display()
                );
            }
        }
    }
    // Previous outputs, kept under a second name until every rename is done.
    let mut backups = Vec::new();
    for (tmp, dst) in pairs {
        let name = tmp
            .file_name()
            .expect("temporaries have a file name")
            .to_string_lossy()
            .into_owned();
        let backup = dst.with_file_name(if name.contains(".tmp-imgbuild-") {
            name.replace(".tmp-imgbuild-", ".old-imgbuild-")
        } else {
            format!(".{name}.old-imgbuild-{}", std::process::id())
        });
        let _ = std::fs::remove_file(&backup);
        backups.push(match std::fs::hard_link(dst, &backup) {
            Ok(()) => Backup::Link(backup),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Backup::NoPrevious,
            // No hard links here: the previous file cannot be kept aside.
            Err(_) => Backup::Unavailable,
        });
    }
    let mut failed = None;
    let mut renamed = 0;
    for (tmp, dst) in pairs {
        if let Err(e) = std::fs::rename(tmp, dst) {
            failed = Some(anyhow::Error::new(e).context(format!(
                "cannot rename {} to {}",
                tmp.display(),
                dst.display()
            )));
            break;
        }
        renamed += 1;
    }
    if failed.is_some() {
        for ((_, dst), backup) in pairs.iter().zip(&backups).take(renamed) {
            let _ = match backup {
                Backup::Link(b) => std::fs::rename(b, dst),
                Backup::NoPrevious => std::fs::remove_file(dst),
                Backup::Unavailable => Ok(()),
            };
        }
    }
    for b in &backups {
        if let Backup::Link(b) = b {
            let _ = std::fs::remove_file(b);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => {
            if let Some((_, dst)) = pairs.first() {
                let dir = dst
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            Ok(())
        }
    }
}

/// What [`commit_all`] kept of a destination's previous file.
enum Backup {
    /// A hard link to it.
    Link(PathBuf),
    /// There was none.
    NoPrevious,
    /// It exists but could not be linked.
    Unavailable,
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            unregister(&self.tmp);
        }
    }
}

/// Writes `text` to `path` atomically: complete or not at all.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    let out = AtomicFile::create(path)?;
    std::fs::write(out.temp_path(), text)
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit()?;
    Ok(())
}

/// Writes `disk` to `path` as one image in `format`, atomically: the file
/// appears complete or not at all, and an existing one is replaced only
/// then (`imgbuild convert` and `make-fs`).
pub fn write_image(
    disk: &imgbuild_formats::VirtualDisk,
    path: &Path,
    format: imgbuild_formats::Format,
    opts: &imgbuild_formats::WriteOptions,
) -> Result<()> {
    let out = AtomicFile::create(path)?;
    let sink = format
        .sink(out.file()?, opts)
        .with_context(|| format!("cannot write {}", path.display()))?;
    imgbuild_formats::write_images(disk, vec![sink])
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn pending(dir: &Path, name: &str, text: &str) -> AtomicFile {
        let f = AtomicFile::create(&dir.join(name)).unwrap();
        std::fs::write(f.temp_path(), text).unwrap();
        f
    }

    #[test]
    fn commit_all_replaces_every_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "old a").unwrap();
        let files = vec![
            pending(d.path(), "a", "new a"),
            pending(d.path(), "b", "new b"),
        ];
        commit_all(files).unwrap();
        assert_eq!(names(d.path()), ["a", "b"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("a")).unwrap(),
            "new a"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("b")).unwrap(),
            "new b"
        );
    }

    #[test]
    fn a_failed_rename_rolls_back_the_renamed_ones() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "old a").unwrap();
        std::fs::write(d.path().join("c"), "old c").unwrap();
        let a = pending(d.path(), "a", "new a");
        let b = pending(d.path(), "b", "new b");
        let c = pending(d.path(), "c", "new c");
        // The third rename fails: its temporary is gone.
        std::fs::remove_file(c.temp_path()).unwrap();
        let err = commit_all(vec![a, b, c]).unwrap_err();
        assert!(format!("{err:#}").contains("cannot rename"), "{err:#}");
        assert_eq!(names(d.path()), ["a", "c"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("a")).unwrap(),
            "old a"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("c")).unwrap(),
            "old c"
        );
        assert!(LIVE
            .lock()
            .unwrap()
            .iter()
            .all(|p| !p.starts_with(d.path())));
    }

    #[test]
    fn a_directory_in_the_way_fails_before_any_rename() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "old a").unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        let files = vec![
            pending(d.path(), "a", "new a"),
            pending(d.path(), "b", "new b"),
        ];
        let err = commit_all(files).unwrap_err();
        assert!(format!("{err:#}").contains("it is a directory"), "{err:#}");
        assert_eq!(names(d.path()), ["a", "b"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("a")).unwrap(),
            "old a"
        );
    }
}
