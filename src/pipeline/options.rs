//! [`BuildOptions`]: where and how to build. The caller decides every
//! path; the pipeline reads no environment variable.

use std::path::PathBuf;

/// Where and how to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Cache for bootstrapped trees.
    pub cache_dir: PathBuf,
    /// Where compressed tars are unpacked (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
    /// mmdebstrap sources: check the archives for newer Release files and
    /// bootstrap again when there are (`--refresh`).
    pub refresh: bool,
}

impl BuildOptions {
    /// Build into `out_dir`, bootstraps cached in `cache_dir` (the CLI's
    /// default is `$IMGBUILD_CACHE`, `$XDG_CACHE_HOME/imgbuild` or
    /// `~/.cache/imgbuild`), unpacking in the system temp directory, and
    /// reusing a cached bootstrap as its `max_age` allows.
    pub fn new(out_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        BuildOptions {
            out_dir: out_dir.into(),
            cache_dir: cache_dir.into(),
            temp_dir: None,
            refresh: false,
        }
    }
}
