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

mod boot_test;
mod config;
mod context;
mod environment;
mod firmware;
mod image;
mod options;
mod source;
mod target;

use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, SourceMap};
use crate::ids::{hex, Seed};
use crate::plan::{Input, InputChecks, PendingPin, PendingSha, Plan};
use crate::recipe::Document;
pub use context::OUTSIDE;
use context::{check_pins, Cx, PendingDigest, Pin};
pub use environment::{Environment, DEFAULT_EPOCH};
use image::SeedState;
pub use image::{DEFAULT_ESP_SIZE, MIN_ESP_SIZE};

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
    let mut cx = Cx::new(map, &env.allowed_paths);
    let image = &recipe.image;
    let name = image::check_name(&mut cx, &image.name);
    let layout = image::layout(&mut cx, recipe);
    let size = image::disk_size(&mut cx, recipe, layout.esp_size);
    let (epoch, epoch_source) = image::epoch(&mut cx, recipe, env);
    let os = source::os(&mut cx, &recipe.os.source);
    let boot = image::boot(&mut cx, recipe);
    let config = config::config(&mut cx, &recipe.config, &name);
    let targets = target::targets(&mut cx, recipe, &name, &boot.cmdline);
    let test = boot_test::test(&mut cx, &recipe.test, config.hostname.as_deref());
    // Pins of inputs already hashed are checked now, with the rest.
    let (now, later): (Vec<Pin>, Vec<Pin>) = std::mem::take(&mut cx.pins)
        .into_iter()
        .partition(|p| !cx.inputs[p.input].sha256.is_empty());
    check_pins(now, &cx.inputs, &mut cx.diags);
    if !cx.diags.is_empty() {
        return Err(sorted(cx.diags));
    }
    let recipe_sha256 = hex(&Sha256::digest(map.text.as_bytes()));
    let inputs = content_ids(cx.inputs, cx.id_jobs)?;
    let seed = seed(recipe, map, &inputs);
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
        checks: input_checks(cx.sha_jobs, later),
    })
}

/// Diagnostics in the order of their place in the recipe.
fn sorted(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    diags
}

/// The inputs with the content ids their threads computed (needed for the
/// seed, so waited for now), or why a file could not be read.
fn content_ids(
    mut inputs: Vec<Input>,
    jobs: Vec<PendingDigest>,
) -> Result<Vec<Input>, Vec<Diagnostic>> {
    let mut failed = Vec::new();
    for j in jobs {
        match j.wait(&inputs) {
            (i, Ok(d)) => inputs[i].content_id = d.content_id.unwrap_or_default(),
            (_, Err(d)) => failed.push(d),
        }
    }
    if failed.is_empty() {
        Ok(inputs)
    } else {
        Err(sorted(failed))
    }
}

/// The seed: the recipe's, else hashed from the recipe and each input's
/// role and content id, in input order.
fn seed(recipe: &Document, map: &SourceMap, inputs: &[Input]) -> Seed {
    match image::seed(recipe, map) {
        SeedState::Known(s) => s,
        SeedState::Hashing(mut h) => {
            for i in inputs {
                h.update([0]);
                h.update(i.role.as_bytes());
                h.update([0]);
                h.update(i.content_id);
            }
            Seed(h.finalize().into())
        }
    }
}

/// What the build checks later: the SHA-256s still computing and the pins
/// waiting for them.
fn input_checks(jobs: Vec<PendingDigest>, pins: Vec<Pin>) -> InputChecks {
    let jobs = jobs
        .into_iter()
        .map(|j| PendingSha {
            input: j.input,
            job: j.job,
            on_error: j.on_error,
        })
        .collect();
    let pins = pins
        .into_iter()
        .map(|p| PendingPin {
            input: p.input,
            want: p.want,
            mismatch: p.mismatch,
        })
        .collect();
    InputChecks::new(jobs, pins)
}
