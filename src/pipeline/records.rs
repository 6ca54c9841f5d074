//! What the pipeline hands on: the prepared disks and what they record
//! for the manifest ([`Prepared`], [`Disk`]; the records themselves are
//! [`crate::record`]'s), and what a build wrote ([`BuildReport`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgbuild_formats::VirtualDisk;

use crate::layout::LayoutPlan;
use crate::plan::TargetPlan;
pub use crate::record::{BiosRecord, BootRecord, OutputRecord};
use crate::source;
use crate::tree::drivers;

/// One disk to write and the targets that share it.
pub struct Disk {
    /// The assembled disk.
    pub disk: VirtualDisk,
    /// Targets written from it.
    pub targets: Vec<TargetPlan>,
    /// How it boots (for the manifest).
    pub boot: BootRecord,
}

/// Everything checked and assembled, nothing written yet.
pub struct Prepared {
    /// Disks, one per distinct content.
    pub disks: Vec<Disk>,
    /// The partition layout.
    pub layout: LayoutPlan,
    /// Kernel version booted.
    pub kernel_version: String,
    /// Installed packages (dpkg), sorted: name, version, and for an
    /// mmdebstrap source the suite of the archive it came from.
    pub packages: Vec<(String, String, Option<String>)>,
    /// An mmdebstrap source's bootstrap: the archives and their Release
    /// dates, and what was done with the cache.
    pub bootstrap: Option<(
        source::mmdebstrap::BootstrapInfo,
        source::mmdebstrap::CacheAction,
    )>,
    /// Bytes of file data in the root filesystem.
    pub root_min_size: u64,
    /// Per target (plan order): where each module it needs was found.
    pub drivers: Vec<(String, drivers::DriverReport)>,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}

/// What a build wrote.
#[derive(Debug, serde::Serialize)]
pub struct BuildReport {
    /// Output directory.
    pub out_dir: PathBuf,
    /// The images.
    pub outputs: Vec<OutputRecord>,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}
