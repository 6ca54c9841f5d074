//! `manifest.json`: what was built from what. Deterministic: no times, no
//! host paths, sorted keys and lists.

use serde::Serialize;

use super::outputs::OutputInfo;
use super::Prepared;
use crate::layout::LayoutPlan;
use crate::plan::{Input, Plan};

/// File name of the manifest.
pub const FILE: &str = "manifest.json";

/// The manifest's content.
#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    /// Manifest format version.
    pub version: u32,
    /// Image name.
    pub name: &'a str,
    /// SHA-256 of the recipe file.
    pub recipe_sha256: &'a str,
    /// Epoch used for every timestamp.
    pub epoch: u64,
    /// The build seed (hex).
    pub seed: String,
    /// Every input with its digest.
    pub inputs: &'a [Input],
    /// Partition layout with GUIDs.
    pub layout: &'a LayoutPlan,
    /// The kernel booted.
    pub kernel_version: &'a str,
    /// Per distinct disk: its targets, kernel, initrd, loader source and
    /// kernel command line.
    pub boot: Vec<&'a super::BootRecord>,
    /// An mmdebstrap source's archives, in apt's order, each with the
    /// `Date` of its Release file when the tree was bootstrapped: how fresh
    /// the image's packages are.
    pub archives: Vec<&'a crate::source::mmdebstrap::ArchiveState>,
    /// Installed packages (dpkg status), sorted by name.
    pub packages: Vec<Package<'a>>,
    /// The images.
    pub outputs: &'a [OutputInfo],
    /// What `imgbuild test` checks on each output's serial console.
    pub test: &'a crate::plan::TestPlan,
    /// SHA-256 of this file with this value set to 64 zeros
    /// (`imgbuild verify` checks it: any changed byte shows).
    pub self_sha256: &'static str,
}

/// One installed package.
#[derive(Debug, Serialize)]
pub struct Package<'a> {
    /// Name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// The suite of the archive it came from (mmdebstrap sources): the
    /// first of the archives that publishes this version, as apt chooses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<&'a str>,
}

impl<'a> Manifest<'a> {
    /// The manifest of a build.
    pub fn new(
        plan: &'a Plan,
        inputs: &'a [crate::plan::Input],
        prepared: &'a Prepared,
        outputs: &'a [OutputInfo],
    ) -> Self {
        Manifest {
            version: 1,
            name: &plan.name,
            recipe_sha256: &plan.recipe_sha256,
            epoch: plan.epoch,
            seed: crate::ids::hex(&plan.seed.0),
            inputs,
            layout: &prepared.layout,
            kernel_version: &prepared.kernel_version,
            boot: prepared.disks.iter().map(|d| &d.boot).collect(),
            archives: prepared
                .bootstrap
                .iter()
                .flat_map(|(info, _)| &info.archives)
                .collect(),
            packages: prepared
                .packages
                .iter()
                .map(|(n, v, a)| Package {
                    name: n,
                    version: v,
                    archive: a.as_deref(),
                })
                .collect(),
            outputs,
            test: &plan.test,
            self_sha256: crate::record::ZEROS,
        }
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(crate::record::seal(
            &(serde_json::to_string_pretty(self)? + "\n"),
        ))
    }
}
