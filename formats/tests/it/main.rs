//! The integration tests of imgbuild-formats, one binary: one module per
//! format or concern, sharing `common` (tool helpers, generated disks) and
//! `common_vhdx` (write, read back, compare with qemu-img and libvhdi).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common_vhdx/mod.rs"]
mod common_vhdx;

mod convert_once;
mod package_oracle;
mod qcow2_oracle;
mod sink_outputs;
mod vhd_oracle;
mod vhdx_oracle;
mod vmdk_oracle;
