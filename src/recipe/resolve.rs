//! [`Document`] → [`Plan`]: defaults, sizes, paths, epoch, seed, input
//! digests, and every check that needs no OS tree. All problems are
//! collected; no output is opened.
//!
//! Choices (documented in the README's recipe section too):
//! - **Paths** in the recipe are relative to the recipe's directory, never
//!   to the current directory.
//! - **Epoch**: `[image] epoch`, else `SOURCE_DATE_EPOCH`, else
//!   [`DEFAULT_EPOCH`]. An explicit recipe value wins because it is part of
//!   the recipe's meaning; the environment variable is the reproducible-builds
//!   convention for "instead of the current time", and we never use the
//!   current time.
//! - **Seed**: `[image] seed` hashed, else SHA-256 over the recipe's bytes
//!   and each input's role and content id (CRC-32C per 64 KiB fed to
//!   SHA-256: ten times faster than the input's SHA-256, which the build
//!   then computes while writing the images). A `dir` source is not hashed
//!   (walking a tree to hash it costs as much as the build); only its written path
//!   enters the seed, through the recipe bytes. mmdebstrap output is not an
//!   input either: pin a snapshot mirror for reproducible bootstraps.
//! - **ESP**: [`DEFAULT_ESP_SIZE`] (256 MiB), at least [`MIN_ESP_SIZE`]
//!   (64 MiB, comfortably above FAT32's 65525-cluster floor at 512-byte
//!   clusters, ~32 MiB), whole MiB, from 1 MiB (the BIOS boot partition
//!   holds the rest of the first MiB; see `layout`).

use std::ops::Range;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::{
    resolve_config, resolve_source, Document, Firmware, FormatName, Hypervisor, Loader, Spanned,
    Target,
};
use crate::diagnostic::{Diagnostic, SourceMap};
use crate::ids::{hex, Seed};
use crate::plan::{BootPlan, EpochSource, FirmwareModes, Input, LayoutPlan, Plan, TargetPlan};
use crate::size::parse_size;
use crate::source::digest::{digest_file, DigestJob, FileDigest, Want};
use crate::source::zeros::ZeroMap;
use imgbuild_formats::package::{OvfController, OvfSettings, Package};

/// The epoch used when neither the recipe nor `SOURCE_DATE_EPOCH` gives one:
/// 2023-11-14T22:13:20Z.
pub const DEFAULT_EPOCH: u64 = 1_700_000_000;
/// Default EFI system partition size.
pub const DEFAULT_ESP_SIZE: u64 = 256 << 20;
/// Smallest EFI system partition accepted.
pub const MIN_ESP_SIZE: u64 = 64 << 20;
const MIB: u64 = 1 << 20;
/// GPT and alignment: 1 MiB before the first partition, 1 MiB for the
/// backup table at the end.
const LAYOUT_OVERHEAD: u64 = 2 * MIB;

/// The only outside state `resolve` reads, passed in so that tests (and
/// the pipeline after it) never read the process environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// The value of `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<String>,
    /// Directories outside the recipe's own that its files may come from
    /// (`--allow-path`): the build's explicit opt-in. Everything else a
    /// recipe names must resolve, symlinks followed, inside its directory.
    pub allowed_paths: Vec<PathBuf>,
}

impl Environment {
    /// Reads `SOURCE_DATE_EPOCH` from the process environment; no path
    /// outside the recipe's directory is allowed.
    pub fn from_process() -> Self {
        Environment {
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
            allowed_paths: Vec::new(),
        }
    }

    /// The epoch outside a recipe (`imgbuild make-fs`): `SOURCE_DATE_EPOCH`,
    /// else [`DEFAULT_EPOCH`]; an error says what is wrong with the variable.
    pub fn epoch(&self) -> Result<u64, String> {
        match self.source_date_epoch.as_deref() {
            None => Ok(DEFAULT_EPOCH),
            Some(v) => v.trim().parse::<u32>().map(u64::from).map_err(|_| {
                format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds from 0 to 4294967295")
            }),
        }
    }
}

/// The resolution context: the source map, collected diagnostics and the
/// inputs hashed so far.
pub(super) struct Cx<'a> {
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
pub(super) struct PendingDigest {
    input: usize,
    job: DigestJob,
    /// Located where the recipe names the file; its message is filled in if
    /// reading fails.
    on_error: Diagnostic,
}

/// A recipe's `sha256` for an input.
pub(super) struct Pin {
    input: usize,
    want: String,
    /// Located at the pin; its help gets the digest found.
    mismatch: Diagnostic,
}

/// Inputs at least this large are hashed on a thread of their own while the
/// build reads and configures the OS tree; smaller ones right away.
const DEFER_HASH_BYTES: u64 = 16 << 20;

impl Cx<'_> {
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
fn check_pins(pins: Vec<Pin>, inputs: &[Input], diags: &mut Vec<Diagnostic>) {
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

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

impl PendingDigest {
    /// Waits for the job: the input's index and its digest, or the
    /// diagnostic saying why the file could not be read.
    fn wait(self, inputs: &[Input]) -> (usize, Result<FileDigest, Diagnostic>) {
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
pub(super) const OS_TAR_ROLE: &str = "os.source.tar";

/// Resolves a loaded recipe into the final [`Plan`], or every problem
/// found. The inputs' content ids are read here (a fast pass) and the seed
/// drawn from them; the SHA-256s of large inputs go on computing on their
/// own threads, their `sha256` pins checked by the build before it puts its
/// outputs in place ([`Plan::inputs_checked`]).
pub fn resolve(
    recipe: &Document,
    map: &SourceMap,
    env: &Environment,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut cx = Cx {
        map,
        diags: Vec::new(),
        inputs: Vec::new(),
        id_jobs: Vec::new(),
        sha_jobs: Vec::new(),
        pins: Vec::new(),
        allowed: env
            .allowed_paths
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect(),
    };
    let image = &recipe.image;
    let name = check_name(&mut cx, &image.name);
    let layout = layout(&mut cx, recipe);
    let size = disk_size(&mut cx, recipe, layout.esp_size);
    let (epoch, epoch_source) = epoch(&mut cx, recipe, env);
    let os = resolve_source::os(&mut cx, &recipe.os.source);
    let boot = boot(&mut cx, recipe);
    let config = resolve_config::config(&mut cx, &recipe.config, &name);
    let targets = targets(&mut cx, recipe, &name, &boot.cmdline);
    let test = test(&mut cx, &recipe.test, config.hostname.as_deref());
    // Pins of inputs already hashed are checked now, with the rest.
    let (now, later): (Vec<Pin>, Vec<Pin>) = std::mem::take(&mut cx.pins)
        .into_iter()
        .partition(|p| !cx.inputs[p.input].sha256.is_empty());
    check_pins(now, &cx.inputs, &mut cx.diags);
    if !cx.diags.is_empty() {
        let mut diags = cx.diags;
        diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        return Err(diags);
    }
    let recipe_sha256 = hex(&Sha256::digest(map.text.as_bytes()));
    // The content ids (and so the seed): waited for now.
    let mut inputs = cx.inputs;
    let mut failed = Vec::new();
    for j in cx.id_jobs {
        match j.wait(&inputs) {
            (i, Ok(d)) => inputs[i].content_id = d.content_id.unwrap_or_default(),
            (_, Err(d)) => failed.push(d),
        }
    }
    if !failed.is_empty() {
        failed.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        return Err(failed);
    }
    let seed = match seed(recipe, map) {
        SeedState::Known(s) => s,
        SeedState::Hashing(mut h) => {
            for i in &inputs {
                h.update([0]);
                h.update(i.role.as_bytes());
                h.update([0]);
                h.update(i.content_id);
            }
            Seed(h.finalize().into())
        }
    };
    let jobs = cx
        .sha_jobs
        .into_iter()
        .map(|j| crate::plan::PendingSha {
            input: j.input,
            job: j.job,
            on_error: j.on_error,
        })
        .collect();
    let pins = later
        .into_iter()
        .map(|p| crate::plan::PendingPin {
            input: p.input,
            want: p.want,
            mismatch: p.mismatch,
        })
        .collect();
    Ok(Plan {
        recipe: map.file.clone(),
        recipe_sha256,
        name,
        size,
        epoch,
        epoch_source,
        seed,
        layout,
        os,
        boot,
        config,
        targets,
        test,
        inputs,
        checks: crate::plan::InputChecks::new(jobs, pins),
    })
}

/// `[test]`: every pattern must compile; the timeout is positive.
fn test(cx: &mut Cx, t: &super::TestTable, hostname: Option<&str>) -> crate::plan::TestPlan {
    let mut plan = crate::plan::TestPlan::defaults(hostname);
    let patterns = |cx: &mut Cx, list: &[Spanned<String>], key: &str| -> Vec<String> {
        for p in list {
            if let Err(e) = regex::Regex::new(p.get_ref()) {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("invalid").trim().to_string();
                cx.error(
                    p.span(),
                    format!("[test] {key}: `{}` is not a regular expression: {first}", p.get_ref()),
                    Some("Rust regex syntax; escape `( ) [ ] { } . * + ? | \\ ^ $` with a backslash to match them literally".into()),
                );
            }
        }
        list.iter().map(|p| p.get_ref().clone()).collect()
    };
    if let Some(expect) = &t.expect {
        if expect.is_empty() {
            let d = cx
                .map
                .error_file("[test] expect is empty: a boot would pass before it starts");
            cx.diags.push(
                d.with_help("list at least one pattern, or leave expect out for the login prompt"),
            );
        }
        plan.expect = patterns(cx, expect, "expect");
    }
    plan.fail.extend(patterns(cx, &t.fail, "fail"));
    if let Some(timeout) = &t.timeout {
        match u64::try_from(*timeout.get_ref()) {
            Ok(s) if (1..=86_400).contains(&s) => plan.timeout = s,
            _ => cx.error(
                timeout.span(),
                format!("[test] timeout {} is out of range", timeout.get_ref()),
                Some("seconds, from 1 to 86400".into()),
            ),
        }
    }
    plan
}

/// The seed, or its hash state before the inputs' content ids.
enum SeedState {
    Known(Seed),
    /// SHA-256 fed with everything but the inputs' content ids.
    Hashing(Sha256),
}

fn check_name(cx: &mut Cx, name: &Spanned<String>) -> String {
    let n = name.get_ref();
    let ok = n.len() <= 128
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        let help = "the name becomes part of file names: use letters, digits, '.', '_' and '-', starting with a letter or digit";
        cx.error(
            name.span(),
            format!("invalid image name `{n}`"),
            Some(help.into()),
        );
    }
    n.clone()
}

fn layout(cx: &mut Cx, recipe: &Document) -> LayoutPlan {
    let image = &recipe.image;
    let mut esp_size = DEFAULT_ESP_SIZE;
    if let Some(s) = &image.esp_size {
        if let Some(n) = cx.size(s, "image.esp_size") {
            if n < MIN_ESP_SIZE || n % MIB != 0 {
                let help = "FAT32 needs at least 64 MiB here; use whole MiB, like \"256MiB\"";
                cx.error(
                    s.span(),
                    format!("ESP size `{}` is too small or not whole MiB", s.get_ref()),
                    Some(help.into()),
                );
            }
            esp_size = n;
        }
    }
    let mut root_label = "root".to_string();
    if let Some(l) = &image.root_label {
        if l.get_ref().is_empty() || l.get_ref().len() > 16 || l.get_ref().contains('\0') {
            cx.error(l.span(), "ext4 labels are 1 to 16 bytes".into(), None);
        }
        root_label = l.get_ref().clone();
    }
    LayoutPlan {
        esp_size,
        esp_label: "ESP".into(),
        root_label,
        grow_root: image.grow_root.as_ref().is_none_or(|g| *g.get_ref()),
    }
}

fn disk_size(cx: &mut Cx, recipe: &Document, esp_size: u64) -> u64 {
    let s = &recipe.image.size;
    let Some(n) = cx.size(s, "image.size") else {
        return 0;
    };
    if n % 512 != 0 {
        cx.error(
            s.span(),
            format!("image size {n} is not a multiple of 512 bytes"),
            Some("use a unit, like \"4GiB\"".into()),
        );
    } else if n <= esp_size.saturating_add(LAYOUT_OVERHEAD) {
        let help = format!(
            "the ESP takes {} and the GPT 2 MiB; the root filesystem needs the rest",
            crate::size::human(esp_size)
        );
        cx.error(
            s.span(),
            format!(
                "image size `{}` leaves no room for the root filesystem",
                s.get_ref()
            ),
            Some(help),
        );
    }
    n
}

fn epoch(cx: &mut Cx, recipe: &Document, env: &Environment) -> (u64, EpochSource) {
    if let Some(e) = &recipe.image.epoch {
        return match u32::try_from(*e.get_ref()) {
            Ok(v) => (u64::from(v), EpochSource::Recipe),
            Err(_) => {
                let help = "seconds since 1970-01-01 UTC, from 0 to 4294967295";
                cx.error(
                    e.span(),
                    format!("epoch {} is out of range", e.get_ref()),
                    Some(help.into()),
                );
                (DEFAULT_EPOCH, EpochSource::Recipe)
            }
        };
    }
    match env.source_date_epoch.as_deref() {
        None => (DEFAULT_EPOCH, EpochSource::Default),
        Some(_) => match env.epoch() {
            Ok(n) => (n, EpochSource::SourceDateEpoch),
            Err(message) => {
                let d = cx.map.error_file(message);
                cx.diags
                    .push(d.with_help("unset it, fix it, or set [image] epoch in the recipe"));
                (DEFAULT_EPOCH, EpochSource::SourceDateEpoch)
            }
        },
    }
}

/// The seed, or its hash state before the inputs' content ids (fed in
/// input order by [`resolve`]).
fn seed(recipe: &Document, map: &SourceMap) -> SeedState {
    let mut h = Sha256::new();
    if let Some(s) = &recipe.image.seed {
        h.update(b"imgbuild-seed-v1\0user\0");
        h.update(s.get_ref().as_bytes());
        SeedState::Known(Seed(h.finalize().into()))
    } else {
        h.update(b"imgbuild-seed-v1\0recipe\0");
        h.update(map.text.as_bytes());
        SeedState::Hashing(h)
    }
}

fn boot(cx: &mut Cx, recipe: &Document) -> BootPlan {
    let cmdline = match &recipe.boot.cmdline {
        Some(c) => {
            check_cmdline(cx, c.get_ref(), c.span());
            c.get_ref().trim().to_string()
        }
        None => String::new(),
    };
    let loader = recipe
        .boot
        .loader
        .as_ref()
        .map_or(Loader::Grub, |l| *l.get_ref());
    BootPlan { loader, cmdline }
}

fn check_cmdline(cx: &mut Cx, c: &str, span: Range<usize>) {
    if c.split_whitespace().any(|w| w.starts_with("root=")) {
        cx.error(
            span,
            "the command line must not set `root=`".into(),
            Some("imgbuild adds root=PARTUUID=... itself".into()),
        );
    } else if c.contains(['\n', '\0']) {
        cx.error(span, "the command line must be one line".into(), None);
    }
}

fn targets(cx: &mut Cx, recipe: &Document, name: &str, cmdline: &str) -> Vec<TargetPlan> {
    if recipe.targets.is_empty() {
        let d = cx.map.error_file("the recipe has no targets");
        cx.diags
            .push(d.with_help("add one, like:\n[targets.kvm]\nformat = \"qcow2\""));
    }
    let mut out = Vec::new();
    for (tname, t) in &recipe.targets {
        if let Some(plan) = target(cx, recipe, tname, t, name, cmdline) {
            out.push(plan);
        }
    }
    out
}

fn target(
    cx: &mut Cx,
    recipe: &Document,
    tname: &str,
    t: &Spanned<Target>,
    name: &str,
    cmdline: &str,
) -> Option<TargetPlan> {
    let span = t.span();
    let t = t.get_ref();
    if tname.is_empty()
        || !tname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    {
        let help = "target names become part of file names: use letters, digits, '_' and '-'";
        cx.error(
            span.clone(),
            format!("invalid target name `{tname}`"),
            Some(help.into()),
        );
    }
    let hypervisor = match (&t.hypervisor, tname) {
        (Some(h), _) => *h.get_ref(),
        (None, "kvm") => Hypervisor::Kvm,
        (None, "hyperv") => Hypervisor::Hyperv,
        (None, "hyperv-gen1") => Hypervisor::HypervGen1,
        (None, n) if Hypervisor::from_name(n).is_some() => {
            Hypervisor::from_name(n).expect("just checked")
        }
        (None, _) => {
            let names: Vec<String> = Hypervisor::ALL
                .iter()
                .map(|h| format!("\"{}\"", h.name()))
                .collect();
            let help = format!(
                "only a target named after a hypervisor implies it; add hypervisor = {}",
                names.join(", ")
            );
            cx.error(
                span,
                format!("target `{tname}` does not say its hypervisor"),
                Some(help),
            );
            return None;
        }
    };
    let format = match &t.format {
        Some(f) => *f.get_ref(),
        None => match hypervisor {
            Hypervisor::Kvm => FormatName::Qcow2,
            Hypervisor::Hyperv | Hypervisor::HypervGen1 => FormatName::Vhdx,
            Hypervisor::Azure => FormatName::Vhd,
            Hypervisor::Vmware => FormatName::Ova,
            Hypervisor::Gce => FormatName::TarGz,
            Hypervisor::Kubevirt => FormatName::OciArchive,
        },
    };
    let (firmware, secure_boot) = firmware(cx, recipe, tname, &span, t, hypervisor);
    if hypervisor == Hypervisor::Azure {
        check_azure(cx, recipe, t, format);
    }
    if hypervisor == Hypervisor::Gce {
        check_gce(cx, recipe, t, format);
    }
    let mut plan = TargetPlan {
        name: tname.to_string(),
        output: String::new(),
        format: imgbuild_formats::Format::Raw,
        package: None,
        hypervisor,
        cmdline: cmdline.to_string(),
        firmware,
        secure_boot,
        cluster_size: None,
        compression: None,
        block_size: None,
        subformat: None,
        vmdk_subformat: None,
        logical_sector_size: None,
    };
    plan.package = match format {
        FormatName::Ova => Some(Package::Ova(ovf_settings(
            cx,
            t,
            name,
            hypervisor,
            firmware,
            secure_boot,
        ))),
        FormatName::TarGz => Some(Package::GceTarGz),
        FormatName::OciArchive => Some(Package::OciArchive),
        _ => None,
    };
    plan.format = match format {
        FormatName::Qcow2 => imgbuild_formats::Format::Qcow2,
        FormatName::Vhdx => imgbuild_formats::Format::Vhdx,
        FormatName::Vhd => imgbuild_formats::Format::Vhd,
        FormatName::Raw => imgbuild_formats::Format::Raw,
        FormatName::Vmdk => imgbuild_formats::Format::Vmdk,
        FormatName::Ova | FormatName::TarGz | FormatName::OciArchive => plan
            .package
            .as_ref()
            .expect("set above for packages")
            .disk_format(),
    };
    let extension = plan
        .package
        .as_ref()
        .map_or(plan.format.extension(), |p| p.extension());
    plan.output = format!("{name}-{tname}.{extension}");
    // A package names its tar members after `<name>-<target>`
    // (`….ovf`, `…-disk1.vmdk`, `disk/….qcow2`): a ustar name holds 100 bytes.
    let stem = name.len() + 1 + tname.len();
    if plan.package.is_some() && stem > MAX_PACKAGE_STEM {
        cx.error(
            span.clone(),
            format!(
                "`{name}-{tname}` ({stem} bytes) is too long to name the members of a {} package",
                plan.package.as_ref().map_or("", |p| p.name())
            ),
            Some(format!(
                "`<image.name>-<target>` may have at most {MAX_PACKAGE_STEM} bytes here (tar member names hold 100)"
            )),
        );
    }
    if format != FormatName::Ova {
        for (key, span) in [
            ("cpus", t.cpus.as_ref().map(|c| c.span())),
            ("memory", t.memory.as_ref().map(|m| m.span())),
        ] {
            if let Some(span) = span {
                cx.error(
                    span,
                    format!("`{key}` applies only to ova targets"),
                    Some(
                        "only an OVA declares virtual hardware; other formats carry the disk alone"
                            .into(),
                    ),
                );
            }
        }
    }
    if let Some(extra) = &t.cmdline {
        check_cmdline(cx, extra, span.clone());
        let extra = extra.trim();
        if !extra.is_empty() {
            plan.cmdline = if cmdline.is_empty() {
                extra.to_string()
            } else {
                format!("{cmdline} {extra}")
            };
        }
    }
    target_options(cx, t, format, &mut plan);
    Some(plan)
}

/// The target's firmware and Secure Boot requirement: the recipe's, else
/// the platform's default ([`Hypervisor::default_firmware`]); refuses what
/// the platform or the loader cannot boot.
fn firmware(
    cx: &mut Cx,
    recipe: &Document,
    tname: &str,
    span: &Range<usize>,
    t: &Target,
    hypervisor: Hypervisor,
) -> (FirmwareModes, bool) {
    let (default_fw, default_sb) = hypervisor.default_firmware();
    let fw = t.firmware.as_ref().map_or(default_fw, |f| *f.get_ref());
    let modes = FirmwareModes::from_recipe(fw);
    let fw_span = t.firmware.as_ref().map_or(span.clone(), |f| f.span());
    let platform_only = match hypervisor {
        Hypervisor::Hyperv => Some((Firmware::Uefi, "Hyper-V Generation 2 boots UEFI only; for BIOS use hypervisor = \"hyperv-gen1\" (Generation 1)")),
        Hypervisor::HypervGen1 => Some((Firmware::Bios, "Hyper-V Generation 1 boots BIOS only; for UEFI use hypervisor = \"hyperv\" (Generation 2)")),
        _ => None,
    };
    if let Some((only, help)) = platform_only {
        if fw != only {
            cx.error(
                fw_span.clone(),
                format!(
                    "target `{tname}`: firmware `{}` cannot boot on {}",
                    modes.name(),
                    hypervisor.name()
                ),
                Some(help.into()),
            );
        }
    }
    let sb = match &t.secure_boot {
        Some(s) => {
            if *s.get_ref() && !modes.uefi {
                cx.error(
                    s.span(),
                    format!(
                        "target `{tname}`: Secure Boot needs UEFI, but its firmware is `{}`",
                        modes.name()
                    ),
                    Some("set firmware = \"uefi\" or \"hybrid\", or leave secure_boot out".into()),
                );
            }
            *s.get_ref()
        }
        None => default_sb && modes.uefi,
    };
    let systemd_boot = recipe
        .boot
        .loader
        .as_ref()
        .filter(|l| *l.get_ref() == Loader::SystemdBoot);
    if let Some(loader) = systemd_boot {
        let default = |explicit: bool| {
            if explicit {
                String::new()
            } else {
                format!(" (the {} default)", hypervisor.name())
            }
        };
        if modes.bios {
            cx.error(
                fw_span,
                format!(
                    "target `{tname}`: firmware `{}`{} needs BIOS boot code, and loader \"systemd-boot\" is UEFI-only",
                    modes.name(),
                    default(t.firmware.is_some())
                ),
                Some(format!(
                    "use loader = \"grub\" (packages grub-pc-bin for BIOS, shim-signed and grub-efi-amd64-signed for UEFI), or set firmware = \"uefi\" on target `{tname}`"
                )),
            );
        }
        if sb {
            let at = t.secure_boot.as_ref().map_or(loader.span(), |s| s.span());
            cx.error(
                at,
                format!(
                    "target `{tname}`: Secure Boot{} cannot work with loader \"systemd-boot\": imgbuild installs it unsigned, and Debian 12 ships no systemd-boot signed for shim",
                    default(t.secure_boot.is_some())
                ),
                Some(format!(
                    "use loader = \"grub\" with the packages shim-signed (signed by the Microsoft UEFI CA) and grub-efi-amd64-signed, or set secure_boot = false on target `{tname}`"
                )),
            );
        }
    }
    (modes, sb)
}

fn check_azure(cx: &mut Cx, recipe: &Document, t: &Target, format: FormatName) {
    if format != FormatName::Vhd {
        if let Some(f) = &t.format {
            cx.error(
                f.span(),
                "Azure takes fixed VHD images only".into(),
                Some("use format = \"vhd\" or leave it out".into()),
            );
        }
    }
    if let Ok(n) = parse_size(recipe.image.size.get_ref()) {
        if n % MIB != 0 {
            let help = "Azure requires the virtual size to be a whole number of MiB";
            cx.error(
                recipe.image.size.span(),
                format!("image size {n} is not whole MiB"),
                Some(help.into()),
            );
        }
    }
}

/// Longest `<name>-<target>` a package's members can be named after:
/// `<stem>-disk1.vmdk` and `disk/<stem>.qcow2` must fit tar's 100 bytes.
const MAX_PACKAGE_STEM: usize = 89;

/// The OVA's virtual hardware: the recipe's CPUs and memory (defaults 2
/// and 2 GiB), the firmware the target boots (EFI when it boots UEFI,
/// which is what vSphere gives new VMs), the disk on PVSCSI for the vmware
/// profile (its initramfs is checked for `vmw_pvscsi`), else on LSI Logic.
fn ovf_settings(
    cx: &mut Cx,
    t: &Target,
    name: &str,
    hypervisor: Hypervisor,
    firmware: FirmwareModes,
    secure_boot: bool,
) -> OvfSettings {
    let cpus = match &t.cpus {
        Some(c) => match u32::try_from(*c.get_ref()) {
            Ok(n @ 1..=768) => n,
            _ => {
                cx.error(
                    c.span(),
                    format!("cpus = {} is not from 1 to 768", c.get_ref()),
                    Some("vSphere 8 allows up to 768 virtual CPUs".into()),
                );
                1
            }
        },
        None => 2,
    };
    let memory_mib = match &t.memory {
        Some(m) => match cx.size(m, "memory") {
            Some(n) if n % MIB == 0 && n >= 4 * MIB => n / MIB,
            Some(n) => {
                cx.error(
                    m.span(),
                    format!("memory {n} bytes is not a whole number of MiB of at least 4 MiB"),
                    Some("write it as e.g. \"2GiB\" or \"512MiB\"".into()),
                );
                2048
            }
            None => 2048,
        },
        None => 2048,
    };
    OvfSettings {
        name: name.to_string(),
        cpus,
        memory_mib,
        efi: firmware.uefi,
        secure_boot,
        controller: if hypervisor == Hypervisor::Vmware {
            OvfController::Pvscsi
        } else {
            OvfController::LsiLogic
        },
    }
}

/// Compute Engine imports a `disk.raw` whose size is a whole number of GiB.
fn check_gce(cx: &mut Cx, recipe: &Document, t: &Target, format: FormatName) {
    if !matches!(format, FormatName::TarGz | FormatName::Raw) {
        if let Some(f) = &t.format {
            cx.error(
                f.span(),
                "Compute Engine imports a raw disk in a tar.gz".into(),
                Some("use format = \"tar.gz\" or leave it out".into()),
            );
        }
    }
    if let Ok(n) = parse_size(recipe.image.size.get_ref()) {
        if n % (1 << 30) != 0 {
            let help = "Compute Engine requires the disk size to be a whole number of GiB";
            cx.error(
                recipe.image.size.span(),
                format!("image size {n} is not whole GiB"),
                Some(help.into()),
            );
        }
    }
}

/// Format-specific options, each allowed only with its format.
fn target_options(cx: &mut Cx, t: &Target, format: FormatName, plan: &mut TargetPlan) {
    // The disk inside a package takes its format's options.
    let format = match format {
        FormatName::Ova => FormatName::Vmdk,
        FormatName::TarGz => FormatName::Raw,
        FormatName::OciArchive => FormatName::Qcow2,
        f => f,
    };
    let only = |cx: &mut Cx, span: Range<usize>, key: &str, fmt: &str| {
        cx.error(
            span,
            format!("`{key}` applies only to {fmt} targets"),
            Some(format!("this target's format is {}", plan.format)),
        );
    };
    if let Some(c) = &t.cluster_size {
        if format != FormatName::Qcow2 {
            only(cx, c.span(), "cluster_size", "qcow2");
        } else {
            plan.cluster_size = power_of_two(cx, c, "cluster_size", 512, 2 * MIB);
        }
    }
    if let Some(c) = &t.compress {
        if format != FormatName::Qcow2 {
            only(cx, c.span(), "compress", "qcow2");
        }
        plan.compression = Some(match c.get_ref() {
            super::Compression::Zlib => imgbuild_formats::Compression::Zlib,
            super::Compression::Zstd => imgbuild_formats::Compression::Zstd,
        });
    }
    if let Some(b) = &t.block_size {
        if format != FormatName::Vhdx {
            only(cx, b.span(), "block_size", "vhdx");
        } else {
            plan.block_size = power_of_two(cx, b, "block_size", MIB, 256 * MIB);
        }
    }
    if let Some(s) = &t.subformat {
        use super::Subformat as S;
        match (format, s.get_ref()) {
            (FormatName::Vhdx, S::Dynamic) => {
                plan.subformat = Some(imgbuild_formats::Subformat::Dynamic)
            }
            (FormatName::Vhdx, S::Fixed) => {
                plan.subformat = Some(imgbuild_formats::Subformat::Fixed)
            }
            (FormatName::Vmdk, S::StreamOptimized) => {
                plan.vmdk_subformat = Some(imgbuild_formats::VmdkSubformat::StreamOptimized)
            }
            (FormatName::Vmdk, S::MonolithicSparse) if plan.package.is_none() => {
                plan.vmdk_subformat = Some(imgbuild_formats::VmdkSubformat::MonolithicSparse)
            }
            (FormatName::Vhdx | FormatName::Vmdk, _) => {
                let help = if plan.package.is_some() {
                    "an OVA carries a streamOptimized VMDK; for monolithicSparse use format = \"vmdk\""
                } else {
                    "vhdx takes \"dynamic\" or \"fixed\", vmdk \"streamOptimized\" or \"monolithicSparse\""
                };
                cx.error(
                    s.span(),
                    format!(
                        "subformat does not apply to this target's format ({})",
                        plan.format
                    ),
                    Some(help.into()),
                );
            }
            _ => only(cx, s.span(), "subformat", "vhdx and vmdk"),
        }
    }
    if let Some(l) = &t.logical_sector_size {
        if format != FormatName::Vhdx {
            only(cx, l.span(), "logical_sector_size", "vhdx");
        } else if !matches!(l.get_ref(), 512 | 4096) {
            cx.error(
                l.span(),
                format!("logical sector size {} is not 512 or 4096", l.get_ref()),
                None,
            );
        }
        plan.logical_sector_size = u32::try_from(*l.get_ref()).ok();
    }
}

fn power_of_two(cx: &mut Cx, s: &Spanned<String>, key: &str, min: u64, max: u64) -> Option<u32> {
    let n = cx.size(s, key)?;
    if !n.is_power_of_two() || n < min || n > max {
        let (lo, hi) = (crate::size::human(min), crate::size::human(max));
        cx.error(
            s.span(),
            format!("`{key}` must be a power of two from {lo} to {hi}"),
            None,
        );
        return None;
    }
    u32::try_from(n).ok()
}
