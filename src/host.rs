//! The host's defaults, for callers at the edge (the CLI, a program that
//! embeds the library): nothing inside the library calls them, so no step
//! of a build reads the environment itself.

use std::path::{Path, PathBuf};

/// The cache directory: `$IMGBUILD_CACHE`, else `$XDG_CACHE_HOME/imgbuild`,
/// else `~/.cache/imgbuild`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGBUILD_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("imgbuild");
    }
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".cache/imgbuild"),
        |h| Path::new(&h).join(".cache/imgbuild"),
    )
}
