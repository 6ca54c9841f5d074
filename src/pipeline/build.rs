//! `build`: prepare, write every image in one pass into a staging
//! directory, check the inputs, record `SHA256SUMS` and `manifest.json`,
//! and put the new set in place at once.

use std::path::Path;
use std::time::Instant;

use imgbuild_formats::package::PackageOptions;
use imgbuild_formats::VirtualDisk;

use super::error::{BuildError, Result};
use super::manifest;
use super::options::BuildOptions;
use super::outputs::{OutputSpec, Pending};
use super::prepare::prepare;
use super::records::{BuildReport, Disk, Prepared};
use crate::outdir::OutDir;
use crate::plan::{Input, Plan};
use crate::progress::Progress;
use crate::record::OutputRecord;

/// Builds the plan into `opts.out_dir`: all outputs or none. The output
/// directory is taken first (locked, checked); the images are written into
/// a staging directory in one pass; the inputs' SHA-256s and pins are
/// checked; then the new set replaces the old at once.
pub fn build(plan: &Plan, opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport> {
    // First: the output directory is usable, and ours alone until the end.
    let out = OutDir::open(&opts.out_dir).map_err(output_directory(&opts.out_dir))?;
    let staging = out.staging().to_path_buf();
    let mut prepared = match prepare(plan, opts, progress) {
        Ok(p) => p,
        // A recipe problem the digests find (a stale `sha256` pin) explains
        // more than whatever it made fail meanwhile: it wins.
        Err(e) => {
            plan.inputs_checked().map_err(BuildError::Inputs)?;
            return Err(e);
        }
    };
    crate::outdir::fault_point("before-write");
    let mut pending = Pending::default();
    write_images(plan, &mut prepared, &staging, &mut pending, progress)?;
    // The inputs' SHA-256s ran beside the writing; a pin that does not match
    // fails the build here, before anything is put in place.
    let t = Instant::now();
    let inputs = plan.inputs_checked().map_err(BuildError::Inputs)?;
    prepared
        .timings
        .insert("input_sha256_wait".into(), t.elapsed().as_secs_f64());
    let images = pending.images();
    let names = write_records(plan, &inputs, &prepared, &images, &staging, pending)?;
    out.commit(&names)
        .map_err(output_directory(&opts.out_dir))?;
    Ok(BuildReport {
        out_dir: opts.out_dir.clone(),
        outputs: images,
        timings: prepared.timings,
    })
}

/// Every disk in one pass (they share their root filesystem, read once),
/// timed as a whole and by its parts.
fn write_images(
    plan: &Plan,
    prepared: &mut Prepared,
    staging: &Path,
    pending: &mut Pending,
    progress: &dyn Progress,
) -> Result<()> {
    let start = Instant::now();
    let disks: Vec<(&VirtualDisk, Vec<OutputSpec>)> = prepared
        .disks
        .iter()
        .map(|d| (&d.disk, output_specs(plan, d)))
        .collect();
    pending
        .write(staging, &disks, progress)
        .map_err(BuildError::write)?;
    prepared
        .timings
        .insert("write_outputs".into(), start.elapsed().as_secs_f64());
    // Its parts: the one pass writing every image, reading back the images
    // not hashed while written, fsync.
    for (phase, secs) in &pending.timings {
        prepared
            .timings
            .insert(format!("write_outputs.{phase}"), *secs);
    }
    Ok(())
}

/// What each target of a disk writes: file name, format, options, package.
fn output_specs(plan: &Plan, d: &Disk) -> Vec<OutputSpec> {
    d.targets
        .iter()
        .map(|t| OutputSpec {
            target: t.name.clone(),
            hypervisor: t.hypervisor.name().to_string(),
            file_name: t.output.clone(),
            format: t.format,
            options: t.write_options(&plan.seed),
            firmware: d.boot.firmware.clone(),
            package: t.package.clone().map(|package| PackageOptions {
                package,
                name: t.output_stem().to_string(),
                mtime: plan.epoch,
            }),
        })
        .collect()
}

/// `SHA256SUMS` and `manifest.json` beside the images, then every staged
/// file under its final name; returns the names.
fn write_records(
    plan: &Plan,
    inputs: &[Input],
    prepared: &Prepared,
    images: &[OutputRecord],
    staging: &Path,
    mut pending: Pending,
) -> Result<Vec<String>> {
    let sums: Vec<(String, String)> = images
        .iter()
        .map(|o| (o.sha256.clone(), o.file.clone()))
        .collect();
    let json = manifest::of(plan, inputs, prepared, images)
        .to_json()
        .map_err(|e| BuildError::manifest(e.into()))?;
    let write = |pending: &mut Pending| -> anyhow::Result<Vec<String>> {
        pending.text(
            staging,
            crate::record::SUMS,
            &crate::record::write_sums(&sums),
        )?;
        pending.text(staging, crate::record::MANIFEST, &json)?;
        Ok(std::mem::take(pending)
            .commit()?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    };
    write(&mut pending).map_err(BuildError::write)
}

/// [`BuildError::OutputDirectory`] for `path`, its cause kept.
fn output_directory(path: &Path) -> impl FnOnce(anyhow::Error) -> BuildError + '_ {
    move |e| BuildError::OutputDirectory {
        path: path.to_path_buf(),
        source: e.into(),
    }
}
