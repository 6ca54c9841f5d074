//! Writing a set of outputs all-or-nothing: every image goes to a temporary
//! name in the output directory, one pass over the disk feeds all of them
//! (one thread per image), each is hashed (while written when the writer goes
//! front to back, else by reading it back), all are fsynced at once, and only
//! when all are complete are they renamed. An error
//! anywhere (or SIGINT/SIGTERM) removes the temporaries and leaves earlier
//! outputs byte-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use imgbuild_formats::package::{self, PackageOptions};
use imgbuild_formats::{
    shared_data_len, write_disks_with_progress, write_images_with_progress, Format, VirtualDisk,
    WriteOptions,
};

use crate::output::AtomicFile;
use crate::progress::Progress;
use crate::record::{hex, sha256_file, OutputRecord};

/// One image to write.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    /// Target name (`kvm`, `hyperv`, ...).
    pub target: String,
    /// Its hypervisor profile (`kvm`, `hyperv`, `hyperv-gen1`, `azure`).
    pub hypervisor: String,
    /// File name inside the output directory.
    pub file_name: String,
    /// Format.
    pub format: Format,
    /// Format options.
    pub options: WriteOptions,
    /// Firmware modes the disk boots in (`bios`, `uefi`, `secure-boot`).
    pub firmware: Vec<String>,
    /// The package the disk goes in (then `format` is the disk's inside it).
    pub package: Option<PackageOptions>,
}

/// Images written to temporary names, not yet renamed.
#[derive(Debug, Default)]
pub struct Pending {
    files: Vec<(AtomicFile, OutputRecord)>,
    /// Seconds spent per phase (`write_images`, `hash_readback`, `fsync`),
    /// summed over calls to [`Pending::write`].
    pub timings: BTreeMap<String, f64>,
}

/// A file under a temporary name and its sink for each spec (the sink
/// hashes while writing where its format allows).
type Sinks = Vec<(usize, Box<dyn imgbuild_formats::ImageSink>)>;

fn open_sinks(dir: &Path, specs: &[(usize, &OutputSpec)]) -> Result<(Vec<AtomicFile>, Sinks)> {
    let mut files = Vec::new();
    let mut sinks = Vec::new();
    for &(disk, s) in specs {
        let f = AtomicFile::create(&dir.join(&s.file_name))?;
        // SHA256SUMS needs every hash: take it while writing where the
        // format allows (the rest is read back, see `hash_all`).
        let options = WriteOptions {
            hash: true,
            ..s.options.clone()
        };
        let sink = match &s.package {
            Some(p) => package::sink(p, f.file()?, &options),
            None => s.format.sink(f.file()?, &options),
        }
        .with_context(|| format!("cannot write {}", s.file_name))?;
        sinks.push((disk, sink));
        files.push(f);
    }
    Ok((files, sinks))
}

/// Each file's SHA-256: the one its writer took, else read back (writers
/// that cannot go front to back: compressed qcow2, VHDX without a seed),
/// those in parallel.
fn hash_all(
    files: &[AtomicFile],
    summaries: &[imgbuild_formats::ImageSummary],
) -> Vec<Result<String>> {
    std::thread::scope(|scope| {
        let jobs: Vec<_> = files
            .iter()
            .zip(summaries)
            .map(|(f, sum)| {
                let known = sum.sha256.map(|h| hex(&h));
                let path = f.temp_path();
                scope.spawn(move || known.map_or_else(|| sha256_file(path), Ok))
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .map(|r| r.map_err(anyhow::Error::from))
            .collect()
    })
}

/// fsyncs every file at once (the kernel writes them back in parallel), so
/// that commit's own fsync has nothing left to flush.
fn fsync_all(files: &[AtomicFile]) -> Result<()> {
    std::thread::scope(|scope| -> Result<()> {
        let jobs: Vec<_> = files
            .iter()
            .map(|f| {
                let file = f.file();
                let path = f.temp_path();
                scope.spawn(move || -> Result<()> {
                    file?
                        .sync_all()
                        .with_context(|| format!("cannot flush {}", path.display()))
                })
            })
            .collect();
        for j in jobs {
            j.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(())
    })
}

impl Pending {
    /// Writes each disk into each of its specs, all in one pass (an extent
    /// the disks share is read once: `write_disks`), hashes each result and
    /// keeps them pending.
    pub fn write(
        &mut self,
        dir: &Path,
        disks: &[(&VirtualDisk, Vec<OutputSpec>)],
        progress: &dyn Progress,
    ) -> Result<()> {
        let specs: Vec<(usize, &OutputSpec)> = disks
            .iter()
            .enumerate()
            .flat_map(|(i, (_, specs))| specs.iter().map(move |s| (i, s)))
            .collect();
        let (files, sinks) = open_sinks(dir, &specs)?;
        let names: Vec<&str> = specs.iter().map(|(_, s)| s.file_name.as_str()).collect();
        let refs: Vec<&VirtualDisk> = disks.iter().map(|(d, _)| *d).collect();
        let step = progress.bytes(
            &format!("writing {}", names.join(", ")),
            shared_data_len(&refs),
        );
        let t = Instant::now();
        let handles = files
            .iter()
            .map(AtomicFile::file)
            .collect::<Result<Vec<_>>>()?;
        let total = shared_data_len(&refs);
        let mut progress = |done: u64| {
            step.set(done);
            if done > total / 2 {
                crate::outdir::fault_point("while-write");
            }
        };
        let summaries = with_early_writeback(&handles, || {
            if let [(disk, _)] = disks {
                let sinks = sinks.into_iter().map(|(_, s)| s).collect();
                write_images_with_progress(disk, sinks, &mut progress)
            } else {
                write_disks_with_progress(&refs, sinks, &mut progress)
            }
        })
        .with_context(|| format!("cannot write {}", names.join(", ")))?;
        drop(step);
        self.lap("write_images", t);
        // Writers that cannot go front to back (compressed qcow2, VHDX without
        // a seed) leave the hash to us: read those files back, in parallel.
        let t = Instant::now();
        let hashes = hash_all(&files, &summaries);
        self.lap("hash_readback", t);
        // fsync every image at once (the kernel writes them back in parallel);
        // commit's own fsync then has nothing left to flush.
        let t = Instant::now();
        fsync_all(&files)?;
        self.lap("fsync", t);
        for (((f, (_, s)), sum), sha256) in files.into_iter().zip(specs).zip(summaries).zip(hashes)
        {
            let info = OutputRecord {
                target: s.target.clone(),
                hypervisor: s.hypervisor.clone(),
                file: s.file_name.clone(),
                format: s.format,
                package: s.package.as_ref().map(|p| p.package.name().to_string()),
                member: sum.member,
                virtual_size: sum.virtual_size,
                file_size: sum.file_size,
                sha256: sha256?,
                firmware: s.firmware.clone(),
            };
            self.files.push((f, info));
        }
        Ok(())
    }

    fn lap(&mut self, phase: &str, since: Instant) {
        *self.timings.entry(phase.to_string()).or_default() += since.elapsed().as_secs_f64();
    }

    /// Adds a small text output (SHA256SUMS, manifest.json), written now.
    pub fn text(&mut self, dir: &Path, name: &str, text: &str) -> Result<()> {
        let f = AtomicFile::create(&dir.join(name))?;
        std::fs::write(f.temp_path(), text).with_context(|| format!("cannot write {name}"))?;
        let info = OutputRecord {
            target: String::new(),
            hypervisor: String::new(),
            file: name.to_string(),
            format: Format::Raw,
            package: None,
            member: None,
            virtual_size: 0,
            file_size: text.len() as u64,
            sha256: String::new(),
            firmware: Vec::new(),
        };
        self.files.push((f, info));
        Ok(())
    }

    /// The images written so far.
    pub fn images(&self) -> Vec<OutputRecord> {
        self.files
            .iter()
            .filter(|(_, i)| !i.sha256.is_empty())
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// Renames everything into place, all or nothing (see
    /// [`crate::output::commit_all`]).
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        let out = self
            .files
            .iter()
            .map(|(f, _)| f.path().to_path_buf())
            .collect();
        crate::output::commit_all(self.files.into_iter().map(|(f, _)| f).collect())?;
        Ok(out)
    }
}

/// Runs `write` while a thread starts the kernel's writeback of what it has
/// written so far, every [`WRITEBACK_EVERY`]: the disk then works while we
/// compute, and the fsync before the renames finds little left to flush.
/// (`POSIX_FADV_DONTNEED` queues dirty pages for writeback without waiting,
/// and drops the clean ones: the images are not read again.)
fn with_early_writeback<T>(files: &[std::fs::File], write: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(WRITEBACK_EVERY);
                for f in files {
                    // Advice only: a failure changes nothing but speed.
                    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
                }
            }
        });
        let r = write();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })
}

/// How often [`with_early_writeback`] kicks the writeback.
const WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(40);
