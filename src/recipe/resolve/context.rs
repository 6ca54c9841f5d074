//! The resolution context every step of [`super::resolve`] writes into: the
//! source map, the diagnostics collected so far, and the inputs hashed (or
//! still hashing on their threads).

use std::ops::Range;
use std::path::PathBuf;

use crate::diagnostic::{Diagnostic, SourceMap};
use crate::plan::Input;
use crate::recipe::Spanned;
use crate::size::parse_size;
use crate::source::digest::{digest_file, DigestJob, FileDigest, Want};
use crate::source::zeros::ZeroMap;

pub(super) const MIB: u64 = 1 << 20;

/// The resolution context: the source map, collected diagnostics and the
/// inputs hashed so far.
pub(crate) struct Cx<'a> {
    pub map: &'a SourceMap,
    pub diags: Vec<Diagnostic>,
    pub inputs: Vec<Input>,
    /// Large inputs still being read on their own threads: content ids
    /// (needed for the seed) and SHA-256s (needed for pins and manifest).
    pub id_jobs: Vec<PendingDigest>,
    pub sha_jobs: Vec<PendingDigest>,
    /// `sha256` pins to compare once their input's digest is known.
    pub pins: Vec<Pin>,
    /// [`Environment::allowed_paths`], symlinks resolved.
    pub allowed: Vec<PathBuf>,
}

/// An input whose digest a thread is computing.
pub(crate) struct PendingDigest {
    pub input: usize,
    pub job: DigestJob,
    /// Located where the recipe names the file; its message is filled in if
    /// reading fails.
    pub on_error: Diagnostic,
}

/// A recipe's `sha256` for an input.
pub(crate) struct Pin {
    pub input: usize,
    pub want: String,
    /// Located at the pin; its help gets the digest found.
    pub mismatch: Diagnostic,
}

/// Inputs at least this large are hashed on a thread of their own while the
/// build reads and configures the OS tree; smaller ones right away.
const DEFER_HASH_BYTES: u64 = 16 << 20;

impl<'a> Cx<'a> {
    /// A context with nothing collected yet; `allowed` are the directories
    /// outside the recipe's that its files may come from.
    pub fn new(map: &'a SourceMap, allowed: &[PathBuf]) -> Self {
        Cx {
            map,
            diags: Vec::new(),
            inputs: Vec::new(),
            id_jobs: Vec::new(),
            sha_jobs: Vec::new(),
            pins: Vec::new(),
            allowed: allowed
                .iter()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                .collect(),
        }
    }

    /// Records an error at `span`, with an optional help text.
    pub fn error(&mut self, span: Range<usize>, message: String, help: Option<String>) {
        let mut d = self.map.error(span, message);
        d.help = help;
        self.diags.push(d);
    }

    /// Parses a size string, recording an error when it is not one.
    pub fn size(&mut self, s: &Spanned<String>, key: &str) -> Option<u64> {
        match parse_size(s.get_ref()) {
            Ok(n) => Some(n),
            Err(_) => {
                let help = "valid units: KiB, MiB, GiB, TiB (K, M, G, T mean the same; none or B means bytes), like \"4GiB\"";
                self.error(
                    s.span(),
                    format!("invalid size `{}` for `{key}`", s.get_ref()),
                    Some(help.into()),
                );
                None
            }
        }
    }

    /// Checks that the file at `written` exists, hashes it (a large one on a
    /// thread, see [`Deferred`]) and records it as an input; returns its
    /// index in `inputs`. With `zeros`, the read also maps the file's zero
    /// sectors ([`ZeroMap`]).
    pub fn input(&mut self, role: String, written: &Spanned<String>, zeros: bool) -> Option<usize> {
        let (path, outside) = self.confine(written)?;
        let help = || {
            format!(
                "paths are relative to the recipe's directory; this one is {}",
                path.display()
            )
        };
        let len = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => {
                let msg = format!("cannot read `{}`: not a regular file", written.get_ref());
                self.error(written.span(), msg, Some(help()));
                return None;
            }
            Err(e) => {
                let msg = format!("cannot read `{}`: {}", written.get_ref(), io_reason(&e));
                self.error(written.span(), msg, Some(help()));
                return None;
            }
        };
        let zeros = zeros.then(ZeroMap::new);
        let index = self.inputs.len();
        let mut input = Input {
            role,
            // A host path reaches no manifest: an allowed file outside the
            // recipe's directory is recorded as the opt-in it is.
            written: if outside {
                OUTSIDE.to_string()
            } else {
                written.get_ref().clone()
            },
            path: path.clone(),
            sha256: String::new(),
            content_id: [0; 32],
            len,
            zeros: zeros.clone(),
        };
        let both = Want {
            sha256: true,
            content_id: true,
        };
        if len >= DEFER_HASH_BYTES {
            let mut on_error = self.map.error(written.span(), String::new());
            on_error.help = Some(help());
            let id = Want {
                sha256: false,
                content_id: true,
            };
            let sha = Want {
                sha256: true,
                content_id: false,
            };
            self.id_jobs.push(PendingDigest {
                input: index,
                job: DigestJob::spawn(path.clone(), id, zeros, false),
                on_error: on_error.clone(),
            });
            self.sha_jobs.push(PendingDigest {
                input: index,
                job: DigestJob::spawn(path, sha, None, true),
                on_error,
            });
        } else {
            match digest_file(&path, both, zeros) {
                Ok(d) => {
                    input.sha256 = d.sha256;
                    input.content_id = d.content_id.unwrap_or_default();
                    input.len = d.len;
                }
                Err(e) => {
                    let msg = format!("cannot read `{}`: {}", written.get_ref(), io_reason(&e));
                    self.error(written.span(), msg, Some(help()));
                    return None;
                }
            }
        }
        self.inputs.push(input);
        Some(index)
    }

    /// Requires input `input` to have the SHA-256 `want` (lowercase hex),
    /// pinned at `span` in the recipe.
    pub fn pin(&mut self, input: usize, want: String, span: Range<usize>) {
        let written = &self.inputs[input].written;
        let mismatch = self
            .map
            .error(span, format!("sha256 mismatch for `{written}`"));
        self.pins.push(Pin {
            input,
            want,
            mismatch,
        });
    }
}

/// Compares the pins with the digests found; one diagnostic per mismatch.
pub(super) fn check_pins(pins: Vec<Pin>, inputs: &[Input], diags: &mut Vec<Diagnostic>) {
    for p in pins {
        let found = &inputs[p.input].sha256;
        // An input that could not be read already has its diagnostic.
        if found.is_empty() || *found == p.want {
            continue;
        }
        let mut d = p.mismatch;
        d.help = Some(format!(
            "expected {}\n   found {found}\nthe file changed, or the recipe's digest is stale",
            p.want
        ));
        diags.push(d);
    }
}

pub(super) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

impl PendingDigest {
    /// Waits for the job: the input's index and its digest, or the
    /// diagnostic saying why the file could not be read.
    pub(super) fn wait(self, inputs: &[Input]) -> (usize, Result<FileDigest, Diagnostic>) {
        let result = self.job.join().map_err(|e| {
            let mut d = self.on_error;
            d.message = format!(
                "cannot read `{}`: {}",
                inputs[self.input].written,
                io_reason(&e)
            );
            d
        });
        (self.input, result)
    }
}

/// What the manifest records for a file taken from outside the recipe's
/// directory under `--allow-path`, instead of its host path.
pub const OUTSIDE: &str = "(outside the recipe's directory, allowed by --allow-path)";

impl Cx<'_> {
    /// The host path a recipe path names, confined (issue 14): resolved
    /// against the recipe's directory with every symlink followed, it must
    /// lie inside that directory or inside a directory of
    /// [`Environment::allowed_paths`] (then the second value is true).
    /// Anything else is an error at the path's place. A path that does not
    /// exist is returned as written, for the caller's own error.
    pub fn confine(&mut self, written: &Spanned<String>) -> Option<(PathBuf, bool)> {
        let path = self.map.path(written.get_ref());
        let Ok(real) = std::fs::canonicalize(&path) else {
            return Some((path, false));
        };
        let home = std::fs::canonicalize(&self.map.dir).unwrap_or_else(|_| self.map.dir.clone());
        if real.starts_with(&home) {
            return Some((real, false));
        }
        if self.allowed.iter().any(|a| real.starts_with(a)) {
            return Some((real, true));
        }
        self.error(
            written.span(),
            format!(
                "`{}` is outside the recipe's directory (it resolves to {})",
                written.get_ref(),
                real.display()
            ),
            Some(format!(
                "a recipe reads files below its own directory only ({}), symlinks followed; to allow another directory, pass --allow-path DIR to imgbuild",
                home.display()
            )),
        );
        None
    }
}

/// The role of the OS tarball among the inputs.
pub(crate) const OS_TAR_ROLE: &str = "os.source.tar";
