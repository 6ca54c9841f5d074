//! The build pipeline: a resolved [`Plan`](crate::plan::Plan) in, images,
//! `SHA256SUMS` and `manifest.json` out. One file per step, read in this
//! order:
//!
//! ```text
//! prepare.rs   read_os.rs:   read_os (tar, directory, mmdebstrap through the cache)
//!              configure.rs: configure ─► check_drivers ─► write_driver_config
//!                            ─► layout ─► finish_tree (grow_root, fstab, hygiene)
//!              assemble.rs:  root_filesystem (ext4) ─► per distinct (cmdline,
//!                            firmware): boot_files ─► fat ─► assemble ─► VirtualDisk
//! build.rs     prepare ─► write_images (every target of every disk in one pass)
//!              ─► inputs checked ─► write_records (SHA256SUMS, manifest.json) ─► swap
//! ```
//! Everything that can fail on the recipe's content (drivers, the content not
//! fitting the disk) fails in `prepare`, before any output file exists. The
//! pipeline reads no environment variable and no clock but the timer of its
//! stages: the caller passes the cache directory ([`BuildOptions`]).

mod assemble;
mod build;
mod check;
mod configure;
mod error;
mod make_fs;
pub mod manifest;
mod options;
pub mod outputs;
mod prepare;
mod read_os;
mod records;

pub use build::build;
pub use error::{BuildError, Cause, Result};
pub use make_fs::{make_fs, MakeFs, MakeFsError};
pub use options::BuildOptions;
pub use prepare::prepare;
pub use read_os::debootstrap_spec;
pub use records::{BiosRecord, BootRecord, BuildReport, Disk, Prepared};
