//! `manifest.json` of a build: the [`record::Manifest`](crate::record::Manifest)
//! made from the plan, the inputs, what `prepare` found and the outputs.

use super::Prepared;
use crate::plan::{Input, Plan};
use crate::record::{Manifest, OutputRecord, Package};

/// The manifest of a build.
pub fn of(
    plan: &Plan,
    inputs: &[Input],
    prepared: &Prepared,
    outputs: &[OutputRecord],
) -> Manifest {
    Manifest {
        version: 1,
        name: plan.name.clone(),
        recipe_sha256: plan.recipe_sha256.clone(),
        epoch: plan.epoch,
        seed: crate::ids::hex(&plan.seed.0),
        inputs: inputs.to_vec(),
        layout: prepared.layout.clone(),
        kernel_version: prepared.kernel_version.clone(),
        boot: prepared.disks.iter().map(|d| d.boot.clone()).collect(),
        archives: prepared
            .bootstrap
            .iter()
            .flat_map(|(info, _)| info.archives.iter().cloned())
            .collect(),
        packages: prepared
            .packages
            .iter()
            .map(|(name, version, archive)| Package {
                name: name.clone(),
                version: version.clone(),
                archive: archive.clone(),
            })
            .collect(),
        outputs: outputs.to_vec(),
        test: Some(plan.test.clone()),
        self_sha256: crate::record::ZEROS.to_string(),
    }
}
