//! imgbuild: one TOML recipe in, byte-identical disk images for several
//! hypervisors out (qcow2 for KVM, VHDX for Hyper-V, fixed VHD for Azure).
//!
//! ```text
//! recipe ─► Recipe ─► Plan ─► source ─► Tree ─► config/drivers/boot ─► Tree
//!                                  fs::ext4 / fs::fat ─► VirtualDisk per filesystem
//!                                  layout (GPT) ─► VirtualDisk of the whole disk
//!                                  imgbuild_formats::write_images ─► .qcow2 .vhdx .vhd .raw
//! ```

pub mod build;
pub mod date;
pub mod fs;
pub mod ids;
pub mod inspect;
pub mod layout;
pub mod outdir;
pub mod output;
pub mod plan;
pub mod progress;
pub mod recipe;
pub mod size;
pub mod source;
pub mod tree;
pub mod verify;
