//! Filesystem writers: a [`crate::tree::Tree`] in, a partition-relative
//! [`imgbuild_formats::VirtualDisk`] out (metadata in memory, file contents by
//! reference).

pub mod ext4;
pub mod fat;
