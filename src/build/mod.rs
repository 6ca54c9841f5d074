//! The build pipeline: a resolved plan in, images out.

pub mod outputs;
