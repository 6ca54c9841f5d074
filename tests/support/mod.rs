//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// True when the tool is on PATH. With `CI=true` a missing tool fails the
/// test (so CI cannot go green without running it); locally it skips with a
/// printed reason.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required in CI (scripts/install-deps.sh installs it)");
        }
        eprintln!("SKIPPED: {tool} is not installed (run scripts/install-deps.sh)");
    }
    found
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

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
