//! The output directory as one transaction (issue 14): at every instant it
//! holds either the complete previous set of outputs or the complete new
//! one, whatever kills the build; one build at a time writes to it; what a
//! killed build leaves is found and removed by the next.
//!
//! ```text
//! <parent>/.<out>.imgbuild.lock          flock, held for the whole build (holder's PID inside)
//! <parent>/.<out>.imgbuild-new-<pid>/    the new set is written here (a fresh directory)
//!     commit: entries of <out> that are not outputs (the user's) are linked
//!             (files) or moved (directories) in; then
//!             renameat2(<out>, staging, RENAME_EXCHANGE): one atomic swap
//! <parent>/.<out>.imgbuild-new-<pid>/    now holds the previous set: removed
//! ```
//! A build killed before the swap leaves the staging directory (the new
//! set, maybe partial) and the output directory untouched; killed after it,
//! the new set in place and the staging directory holding the previous one.
//! Either way the next build, holding the lock, removes what is left and
//! says so; `imgbuild verify` reports it meanwhile. SIGINT, SIGTERM and
//! SIGHUP remove the staging directory at once (see [`crate::output`]).
//!
//! The staging directory is a sibling of the output directory so that the
//! swap is one rename on one filesystem. Where that cannot be (the output
//! directory is a mount point, or its parent is not writable), the staging
//! directory and the lock go inside the output directory and the new files
//! are renamed over the old ones at the end, all or nothing but one at a
//! time ([`crate::output::rename_all`]): a SIGKILL between two of those
//! renames can leave a mixed set, which `verify` then reports.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Marks in the names of what builds leave beside or in the output directory.
const LOCK: &str = ".imgbuild.lock";
const STAGING: &str = ".imgbuild-new-";
/// What earlier versions left inside the output directory when killed.
const LEGACY: [&str; 2] = [".tmp-imgbuild-", ".old-imgbuild-"];

/// An output directory being written: locked, with its staging directory.
#[derive(Debug)]
pub struct OutDir {
    /// The output directory (symlinks resolved).
    path: PathBuf,
    /// Where the new set is written.
    staging: PathBuf,
    /// Held until drop: the lock.
    _lock: File,
    /// Swap the whole directory (else rename the files one by one).
    swap: bool,
    committed: bool,
}

/// `(parent, name)` of the output directory, symlinks resolved where it exists.
fn split(out: &Path) -> Result<(PathBuf, OsString)> {
    let out = match fs::canonicalize(out) {
        Ok(real) => real,
        Err(_) => {
            std::path::absolute(out).with_context(|| format!("cannot resolve {}", out.display()))?
        }
    };
    let name = out
        .file_name()
        .with_context(|| format!("{} cannot be an output directory", out.display()))?
        .to_os_string();
    let parent = out
        .parent()
        .with_context(|| format!("{} cannot be an output directory", out.display()))?
        .to_path_buf();
    Ok((parent, name))
}

fn sibling(parent: &Path, name: &OsString, mark: &str) -> PathBuf {
    parent.join(format!(".{}{mark}", name.to_string_lossy()))
}

/// What interrupted builds left for the output directory `out`: staging
/// directories beside it, and (from earlier versions) temporaries inside.
pub fn leftovers(out: &Path) -> Vec<PathBuf> {
    let Ok((parent, name)) = split(out) else {
        return Vec::new();
    };
    let prefix = format!(".{}{STAGING}", name.to_string_lossy());
    let mut found: Vec<PathBuf> = fs::read_dir(&parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.extend(
        fs::read_dir(parent.join(&name))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(STAGING)
                    || (n.starts_with('.') && LEGACY.iter().any(|m| n.contains(m)))
            })
            .map(|e| e.path()),
    );
    found.sort();
    found
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Stops here, when `IMGBUILD_FAULT_PAUSE` names this point, until killed:
/// how the fault tests kill a build at a known step (tests/faults.rs).
pub fn fault_point(name: &str) {
    if std::env::var("IMGBUILD_FAULT_PAUSE").as_deref() == Ok(name) {
        eprintln!("imgbuild: paused at {name} (IMGBUILD_FAULT_PAUSE)");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Fails unless `path` is a directory that can be written, or can be
/// created in `parent`.
fn check_writable(parent: &Path, path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if !m.is_dir() => bail!(
            "the output directory {} exists and is not a directory",
            path.display()
        ),
        _ => {}
    }
    if path.exists() {
        rustix::fs::access(path, rustix::fs::Access::WRITE_OK)
            .with_context(|| format!("cannot write to the output directory {}", path.display()))?;
    } else {
        rustix::fs::access(parent, rustix::fs::Access::WRITE_OK).with_context(|| {
            format!(
                "cannot create the output directory {}: its parent is not writable",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Takes the build lock at `lock_path` and writes our PID in it; fails at
/// once, with the holder's PID, when another build has it.
fn take_lock(lock_path: &Path, path: &Path) -> Result<File> {
    let mut lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .with_context(|| format!("cannot create the lock {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        let mut holder = String::new();
        let _ = lock.read_to_string(&mut holder);
        bail!(
            "another imgbuild (PID {}) is writing to {}: wait for it, or build into another directory",
            holder.trim(),
            path.display()
        );
    }
    lock.set_len(0)?;
    let _ = write!(lock, "{}", std::process::id());
    Ok(lock)
}

/// Removes what interrupted builds left in `path` (and says so).
fn remove_leftovers(path: &Path) -> Result<()> {
    let stale = leftovers(path);
    for p in &stale {
        remove_any(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    if !stale.is_empty() {
        let names: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "imgbuild: removed what an interrupted build left: {}",
            names.join(", ")
        );
    }
    Ok(())
}

impl OutDir {
    /// Takes the output directory `out` for one build, before anything
    /// else: checks it is (or can be) a directory the build can replace,
    /// takes the lock (failing at once, with the holder's PID, when another
    /// build has it), removes what interrupted builds left (and says so),
    /// and creates the staging directory.
    pub fn open(out: &Path) -> Result<Self> {
        let (parent, name) = split(out)?;
        let path = parent.join(&name);
        fs::create_dir_all(&parent).with_context(|| {
            format!(
                "cannot create the output directory's parent {}",
                parent.display()
            )
        })?;
        check_writable(&parent, &path)?;
        // Swap the whole directory unless it is a mount point (a rename
        // cannot move it) or its parent is read-only.
        use std::os::unix::fs::MetadataExt;
        let parent_dev = fs::metadata(&parent).map(|m| m.dev()).ok();
        let mount_point = fs::metadata(&path).is_ok_and(|m| Some(m.dev()) != parent_dev);
        let parent_writable = rustix::fs::access(&parent, rustix::fs::Access::WRITE_OK).is_ok();
        let swap = parent_writable && !mount_point;
        if !swap {
            fs::create_dir_all(&path).with_context(|| {
                format!("cannot create the output directory {}", path.display())
            })?;
        }
        let lock_path = if parent_writable {
            sibling(&parent, &name, LOCK)
        } else {
            path.join(LOCK)
        };
        let lock = take_lock(&lock_path, &path)?;
        remove_leftovers(&path)?;
        let staging = if swap {
            sibling(&parent, &name, &format!("{STAGING}{}", std::process::id()))
        } else {
            path.join(format!("{STAGING}{}", std::process::id()))
        };
        fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        crate::output::register_dir(&staging);
        Ok(Self {
            path,
            staging,
            _lock: lock,
            swap,
            committed: false,
        })
    }

    /// Where the build writes its outputs.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The output directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the staging directory the output directory in one swap (module
    /// docs), keeping entries of the old directory that are not outputs of
    /// this build, then removes the previous set.
    pub fn commit(mut self, outputs: &[String]) -> Result<()> {
        fault_point("before-swap");
        // What the new set replaces must be files: a directory in an
        // output's place is the user's, never swept away with the old set.
        for o in outputs {
            let old = self.path.join(o);
            if fs::symlink_metadata(&old).is_ok_and(|m| m.is_dir()) {
                bail!(
                    "cannot replace {}: it is a directory; nothing was written",
                    old.display()
                );
            }
        }
        if !self.swap {
            let pairs: Vec<(PathBuf, PathBuf)> = outputs
                .iter()
                .map(|o| (self.staging.join(o), self.path.join(o)))
                .collect();
            crate::output::rename_all(&pairs)?;
            self.committed = true;
            fault_point("after-swap");
            remove_any(&self.staging)
                .with_context(|| format!("cannot remove {}", self.staging.display()))?;
            crate::output::unregister_dir(&self.staging);
            return Ok(());
        }
        if let Ok(m) = fs::metadata(&self.path) {
            self.carry_over(outputs)?;
            let _ = fs::set_permissions(&self.staging, m.permissions());
        }
        fsync_dir(&self.staging)?;
        {
            // No signal handler removes the staging directory mid-swap.
            let _guard = crate::output::hold_cleanup();
            if self.path.exists() {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &self.staging,
                    rustix::fs::CWD,
                    &self.path,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .with_context(|| {
                    format!(
                        "cannot swap {} with {}",
                        self.staging.display(),
                        self.path.display()
                    )
                })?;
            } else {
                fs::rename(&self.staging, &self.path).with_context(|| {
                    format!(
                        "cannot rename {} to {}",
                        self.staging.display(),
                        self.path.display()
                    )
                })?;
            }
            self.committed = true;
        }
        if let Some(parent) = self.path.parent() {
            fsync_dir(parent)?;
        }
        fault_point("after-swap");
        // The staging name now holds the previous set (or nothing).
        remove_any(&self.staging).with_context(|| {
            format!(
                "cannot remove the previous outputs {}",
                self.staging.display()
            )
        })?;
        crate::output::unregister_dir(&self.staging);
        Ok(())
    }

    /// Entries of the output directory that the new set does not replace
    /// (files the user keeps there) go into the staging directory: regular
    /// files and symlinks as hard links (they stay in place until the swap),
    /// anything else moved.
    fn carry_over(&self, outputs: &[String]) -> Result<()> {
        for e in fs::read_dir(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()))?
        {
            let e = e?;
            let name = e.file_name();
            if outputs.iter().any(|o| std::ffi::OsStr::new(o) == name) {
                continue;
            }
            let (from, to) = (e.path(), self.staging.join(&name));
            let kind = e.file_type()?;
            let kept = if kind.is_file() || kind.is_symlink() {
                fs::hard_link(&from, &to)
            } else {
                fs::rename(&from, &to)
            };
            kept.with_context(|| {
                format!(
                    "cannot keep {} (not an output of this build) in the new output directory",
                    from.display()
                )
            })?;
        }
        Ok(())
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot flush {}", dir.display()))
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_any(&self.staging);
            crate::output::unregister_dir(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_swaps_the_whole_set_and_keeps_the_user_s_files() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("a.img"), "old a").unwrap();
        fs::write(out.join("notes.txt"), "mine").unwrap();
        fs::create_dir(out.join("keep")).unwrap();
        let o = OutDir::open(&out).unwrap();
        fs::write(o.staging().join("a.img"), "new a").unwrap();
        fs::write(o.staging().join("b.img"), "new b").unwrap();
        o.commit(&["a.img".into(), "b.img".into()]).unwrap();
        assert_eq!(names(&out), ["a.img", "b.img", "keep", "notes.txt"]);
        assert_eq!(fs::read_to_string(out.join("a.img")).unwrap(), "new a");
        assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
        assert!(leftovers(&out).is_empty());
        assert_eq!(names(d.path()), [".out.imgbuild.lock", "out"]);
    }

    #[test]
    fn a_second_build_fails_at_once_naming_the_first() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let first = OutDir::open(&out).unwrap();
        let err = OutDir::open(&out).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "another imgbuild (PID {}) is writing to",
                std::process::id()
            )),
            "{err}"
        );
        drop(first);
        assert!(OutDir::open(&out).is_ok());
    }

    #[test]
    fn an_uncommitted_build_leaves_nothing_and_a_file_in_the_way_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        drop(OutDir::open(&out).unwrap());
        assert_eq!(names(d.path()), [".out.imgbuild.lock"]);
        fs::write(d.path().join("file"), "").unwrap();
        let err = OutDir::open(&d.path().join("file"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists and is not a directory"), "{err}");
    }

    #[test]
    fn leftovers_of_killed_builds_are_found_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(d.path().join(".out.imgbuild-new-99999/x")).unwrap();
        fs::create_dir(&out).unwrap();
        fs::write(out.join(".a.img.tmp-imgbuild-4242"), "half").unwrap();
        fs::write(out.join("a.img"), "kept").unwrap();
        assert_eq!(leftovers(&out).len(), 2);
        drop(OutDir::open(&out).unwrap());
        assert!(leftovers(&out).is_empty());
        assert_eq!(names(&out), ["a.img"]);
    }
}
