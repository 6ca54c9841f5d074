//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::Command;

// `require_tool`, `run` and `run_ok` are the formats crate's test helpers:
// one definition of "a missing tool fails in CI, skips locally".
#[path = "../../formats/tests/common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test binary uses its own subset
pub use common::{require_tool, run, run_ok};

/// The imgbuild binary built for these tests.
pub fn imgbuild() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A path inside `dir`.
pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The cached Debian bookworm rootfs tarball made by `scripts/debian-rootfs.sh`.
/// Missing: fails with `CI=true`, else `None` with a printed reason.
pub fn debian_tar() -> Option<PathBuf> {
    let cache = std::env::var_os("IMGBUILD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/imgbuild")
        });
    let tar = cache.join("debian-bookworm-test.tar");
    if tar.exists() {
        return Some(tar);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} is missing: CI runs scripts/debian-rootfs.sh first",
            tar.display()
        );
    }
    eprintln!(
        "SKIPPED: {} is missing (run scripts/debian-rootfs.sh)",
        tar.display()
    );
    None
}
