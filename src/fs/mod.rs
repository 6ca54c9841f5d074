//! Filesystem writers: a [`crate::tree::Tree`] in, a
//! [`imgbuild_formats::VirtualDisk`] of one filesystem out.

pub mod ext4;
