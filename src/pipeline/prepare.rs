//! `prepare`: every check and every disk assembled, no output written; what
//! `imgbuild check` runs after the recipe, and the first half of a build.

use std::collections::BTreeMap;
use std::time::Instant;

use super::assemble::{assemble_disks, root_filesystem};
use super::configure::{
    check_drivers, configure, finish_tree, installed_packages, write_driver_config,
};
use super::error::{BuildError, Result};
use super::options::BuildOptions;
use super::read_os::read_os;
use super::records::Prepared;
use crate::layout;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::tree::boot;

/// Seconds per stage, added up as the stages end.
struct Timer<'a> {
    timings: &'a mut BTreeMap<String, f64>,
    start: Instant,
}

impl Timer<'_> {
    fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        *self.timings.entry(stage.to_string()).or_default() += (now - self.start).as_secs_f64();
        self.start = now;
    }
}

/// Runs every check and assembles the disks without writing any output:
/// what `imgbuild check` does after the recipe.
pub fn prepare(plan: &Plan, opts: &BuildOptions, progress: &dyn Progress) -> Result<Prepared> {
    let mut timings = BTreeMap::new();
    let mut t = Timer {
        timings: &mut timings,
        start: Instant::now(),
    };
    let epoch = i64::try_from(plan.epoch).map_err(|source| BuildError::OutOfRange {
        what: format!("epoch {}", plan.epoch),
        source,
    })?;

    let step = progress.step("reading the OS tree");
    let (mut tree, bootstrap) = read_os(plan, opts, epoch)?;
    drop(step);
    t.lap("read_os");

    let step = progress.step("configuring the tree");
    configure(&mut tree, plan, epoch)?;
    let kernel = boot::find_kernel(&tree).map_err(BuildError::NoKernel)?;
    let driver_reports = check_drivers(&tree, plan, &kernel)?;
    write_driver_config(&mut tree, plan, epoch)?;
    let layout = layout::plan(plan.size, plan.layout.esp_size, &plan.seed)?;
    finish_tree(&mut tree, plan, &layout, epoch)?;
    let packages = installed_packages(&tree, bootstrap.as_ref());
    drop(step);
    t.lap("configure");

    let step = progress.step("laying out the root filesystem");
    let root = root_filesystem(&tree, plan, &layout, epoch)?;
    drop(step);
    t.lap("ext4");

    let step = progress.step("assembling the disks");
    let disks = assemble_disks(&tree, plan, &layout, &root, epoch)?;
    drop(step);
    t.lap("esp_and_gpt");
    Ok(Prepared {
        disks,
        layout,
        kernel_version: kernel.version,
        packages,
        bootstrap,
        root_min_size: root.data_len(),
        drivers: driver_reports,
        timings,
    })
}
