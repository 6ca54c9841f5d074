//! `[image]` and `[boot]`: the name, the partition layout, the disk size,
//! the epoch, the seed and the kernel command line.

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::context::{Cx, MIB};
use super::environment::{Environment, DEFAULT_EPOCH};
use crate::diagnostic::SourceMap;
use crate::ids::Seed;
use crate::plan::{BootPlan, EpochSource, LayoutPlan};
use crate::recipe::{Document, Loader, Spanned};

/// Default EFI system partition size.
pub const DEFAULT_ESP_SIZE: u64 = 256 << 20;
/// Smallest EFI system partition accepted.
pub const MIN_ESP_SIZE: u64 = 64 << 20;
/// GPT and alignment: 1 MiB before the first partition, 1 MiB for the
/// backup table at the end.
const LAYOUT_OVERHEAD: u64 = 2 * MIB;

/// The seed, or its hash state before the inputs' content ids.
pub(super) enum SeedState {
    Known(Seed),
    /// SHA-256 fed with everything but the inputs' content ids.
    Hashing(Sha256),
}

pub(super) fn check_name(cx: &mut Cx, name: &Spanned<String>) -> String {
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

pub(super) fn layout(cx: &mut Cx, recipe: &Document) -> LayoutPlan {
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

pub(super) fn disk_size(cx: &mut Cx, recipe: &Document, esp_size: u64) -> u64 {
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

pub(super) fn epoch(cx: &mut Cx, recipe: &Document, env: &Environment) -> (u64, EpochSource) {
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
pub(super) fn seed(recipe: &Document, map: &SourceMap) -> SeedState {
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

pub(super) fn boot(cx: &mut Cx, recipe: &Document) -> BootPlan {
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

pub(super) fn check_cmdline(cx: &mut Cx, c: &str, span: Range<usize>) {
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
