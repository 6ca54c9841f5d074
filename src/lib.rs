//! imgbuild: one TOML recipe in, byte-identical disk images for several
//! hypervisors out (qcow2 for KVM, VHDX for Hyper-V, fixed VHD for Azure),
//! offline, rootless, in one pass.
//!
//! ```text
//! recipe.toml ─► Recipe ─resolve─► Plan ─► pipeline::build
//!   PlanBuilder ─┘                          source ─► Tree ─► config, drivers, boot ─► Tree
//!                                           fs::ext4 / fs::fat ─► VirtualDisk per filesystem
//!                                           layout (GPT) ─► VirtualDisk of the whole disk
//!                                           output formats, one pass ─► .qcow2 .vhdx .vhd .raw
//!                                           record ─► SHA256SUMS, manifest.json
//! ```
//!
//! # Embedding
//!
//! A program gets a [`Plan`] from a recipe ([`Recipe::load`], or
//! [`Recipe`]'s `FromStr`) or from code ([`PlanBuilder`]), and gives it to
//! [`build`] with [`BuildOptions`] and a [`Progress`] of its own (or
//! [`Silent`]). [`build`] writes every output or none; its [`BuildError`]
//! says which stage failed, with what a program needs to act on it. The
//! library never exits the process nor handles signals: a program that
//! wants temporaries removed on a signal calls
//! [`output::remove_temporaries`] from its handler (the `imgbuild` command
//! does).
//!
//! ```no_run
//! use imgbuild::{build, BuildOptions, Hypervisor, PlanBuilder, Silent};
//!
//! let plan = PlanBuilder::new("demo")
//!     .os_tar("rootfs.tar")
//!     .size("3GiB")
//!     .hostname("demo")
//!     .target("kvm", Hypervisor::Kvm)
//!     .target("hyperv", Hypervisor::Hyperv)
//!     .build()?;
//! let opts = BuildOptions::new("out", imgbuild::host::default_cache_dir());
//! let report = build(&plan, &opts, &Silent)?;
//! println!("{} images in {}", report.outputs.len(), report.out_dir.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `docs/architecture.md` follows the data from the recipe to the bytes and
//! names the module that owns each step.

pub mod date;
pub mod diagnostic;
pub mod fs;
pub mod host;
pub mod ids;
pub mod inspect;
pub mod layout;
pub mod outdir;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod progress;
pub mod recipe;
pub mod record;
pub mod run;
pub mod size;
pub mod source;
pub mod tree;
pub mod verify;

pub use pipeline::{build, prepare, BuildError, BuildOptions, BuildReport};
pub use plan::{Hypervisor, Plan};
pub use progress::{Progress, Silent};
pub use recipe::api::{PlanBuilder, Recipe, RecipeError};
pub use recipe::Environment;
