//! [`Recipe`] → [`Plan`]: defaults, sizes, paths, epoch, seed, input
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
//!   and each input's role and digest. A `dir` source is not hashed (walking
//!   a tree to hash it costs as much as the build); only its written path
//!   enters the seed, through the recipe bytes. mmdebstrap output is not an
//!   input either: pin a snapshot mirror for reproducible bootstraps.
//! - **ESP**: [`DEFAULT_ESP_SIZE`] (256 MiB), at least [`MIN_ESP_SIZE`]
//!   (64 MiB, comfortably above FAT32's 65525-cluster floor at 512-byte
//!   clusters, ~32 MiB), whole MiB.

use std::io::Read;
use std::ops::Range;

use sha2::{Digest, Sha256};

use super::diagnostic::{Diagnostic, SourceMap};
use super::{
    resolve_config, resolve_source, FormatName, Hypervisor, Loader, Recipe, Spanned, Target,
};
use crate::ids::Seed;
use crate::plan::{hex, BootPlan, EpochSource, Input, LayoutPlan, Plan, TargetPlan};
use crate::size::parse_size;

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
}

impl Environment {
    /// Reads `SOURCE_DATE_EPOCH` from the process environment.
    pub fn from_process() -> Self {
        Environment {
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
        }
    }
}

/// The resolution context: the source map, collected diagnostics and the
/// inputs hashed so far.
pub(super) struct Cx<'a> {
    pub map: &'a SourceMap,
    pub diags: Vec<Diagnostic>,
    pub inputs: Vec<Input>,
}

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

    /// Checks that the file at `written` exists, hashes it and records it
    /// as an input; returns its index in `inputs`.
    pub fn input(&mut self, role: String, written: &Spanned<String>) -> Option<usize> {
        let path = self.map.path(written.get_ref());
        let result = std::fs::metadata(&path).and_then(|m| {
            if m.is_file() {
                hash_file(&path)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        match result {
            Ok((sha256, len)) => {
                self.inputs.push(Input {
                    role,
                    written: written.get_ref().clone(),
                    path,
                    sha256,
                    len,
                });
                Some(self.inputs.len() - 1)
            }
            Err(e) => {
                let msg = format!("cannot read `{}`: {}", written.get_ref(), io_reason(&e));
                let help = format!(
                    "paths are relative to the recipe's directory; this one is {}",
                    path.display()
                );
                self.error(written.span(), msg, Some(help));
                None
            }
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// SHA-256 (hex) and length of a file, read in 1 MiB pieces.
pub(super) fn hash_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len = len.saturating_add(n as u64);
    }
    Ok((hex(&h.finalize()), len))
}

/// Resolves a loaded recipe into a plan, or every problem found.
pub fn resolve(
    recipe: &Recipe,
    map: &SourceMap,
    env: &Environment,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut cx = Cx {
        map,
        diags: Vec::new(),
        inputs: Vec::new(),
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
    if !cx.diags.is_empty() {
        let mut diags = cx.diags;
        diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        return Err(diags);
    }
    let recipe_sha256 = hex(&Sha256::digest(map.text.as_bytes()));
    let seed = seed(recipe, map, &cx.inputs);
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
        inputs: cx.inputs,
    })
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

fn layout(cx: &mut Cx, recipe: &Recipe) -> LayoutPlan {
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
    }
}

fn disk_size(cx: &mut Cx, recipe: &Recipe, esp_size: u64) -> u64 {
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

fn epoch(cx: &mut Cx, recipe: &Recipe, env: &Environment) -> (u64, EpochSource) {
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
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) => (u64::from(n), EpochSource::SourceDateEpoch),
            Err(_) => {
                let d = cx.map.error_file(format!(
                    "SOURCE_DATE_EPOCH=`{v}` is not a number of seconds from 0 to 4294967295"
                ));
                cx.diags
                    .push(d.with_help("unset it, fix it, or set [image] epoch in the recipe"));
                (DEFAULT_EPOCH, EpochSource::SourceDateEpoch)
            }
        },
    }
}

fn seed(recipe: &Recipe, map: &SourceMap, inputs: &[Input]) -> Seed {
    let mut h = Sha256::new();
    if let Some(s) = &recipe.image.seed {
        h.update(b"imgbuild-seed-v1\0user\0");
        h.update(s.get_ref().as_bytes());
    } else {
        h.update(b"imgbuild-seed-v1\0recipe\0");
        h.update(map.text.as_bytes());
        for i in inputs {
            h.update([0]);
            h.update(i.role.as_bytes());
            h.update([0]);
            h.update(i.sha256.as_bytes());
        }
    }
    Seed(h.finalize().into())
}

fn boot(cx: &mut Cx, recipe: &Recipe) -> BootPlan {
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
        .map_or(Loader::SystemdBoot, |l| *l.get_ref());
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

fn targets(cx: &mut Cx, recipe: &Recipe, name: &str, cmdline: &str) -> Vec<TargetPlan> {
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
    recipe: &Recipe,
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
        (None, "azure") => Hypervisor::Azure,
        (None, _) => {
            let help = "only targets named kvm, hyperv or azure imply their hypervisor; add hypervisor = \"kvm\", \"hyperv\" or \"azure\"";
            cx.error(
                span,
                format!("target `{tname}` does not say its hypervisor"),
                Some(help.into()),
            );
            return None;
        }
    };
    let format = match &t.format {
        Some(f) => *f.get_ref(),
        None => match hypervisor {
            Hypervisor::Kvm => FormatName::Qcow2,
            Hypervisor::Hyperv => FormatName::Vhdx,
            Hypervisor::Azure => FormatName::Vhd,
        },
    };
    if hypervisor == Hypervisor::Azure {
        check_azure(cx, recipe, t, format);
    }
    let mut plan = TargetPlan {
        name: tname.to_string(),
        output: String::new(),
        format: imgbuild_formats::Format::Raw,
        hypervisor,
        cmdline: cmdline.to_string(),
        cluster_size: None,
        compression: None,
        block_size: None,
        subformat: None,
        logical_sector_size: None,
    };
    plan.format = match format {
        FormatName::Qcow2 => imgbuild_formats::Format::Qcow2,
        FormatName::Vhdx => imgbuild_formats::Format::Vhdx,
        FormatName::Vhd => imgbuild_formats::Format::Vhd,
        FormatName::Raw => imgbuild_formats::Format::Raw,
    };
    plan.output = format!("{name}-{tname}.{}", plan.format.extension());
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

fn check_azure(cx: &mut Cx, recipe: &Recipe, t: &Target, format: FormatName) {
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

/// Format-specific options, each allowed only with its format.
fn target_options(cx: &mut Cx, t: &Target, format: FormatName, plan: &mut TargetPlan) {
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
        if format != FormatName::Vhdx {
            only(cx, s.span(), "subformat", "vhdx");
        }
        plan.subformat = Some(match s.get_ref() {
            super::Subformat::Dynamic => imgbuild_formats::Subformat::Dynamic,
            super::Subformat::Fixed => imgbuild_formats::Subformat::Fixed,
        });
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
