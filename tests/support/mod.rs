//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod ext4;
pub mod qemu;
pub mod rootfs;
pub mod synthetic;
pub mod tarbuild;

use std::path::{Path, PathBuf};
use std::process::Command;

// `require_tool`, `run` and `run_ok` are the formats crate's test helpers:
// one definition of "a missing tool fails in CI, skips locally".
#[path = "../../formats/tests/common/mod.rs"]
mod common;
#[allow(unused_imports)] // each test binary uses its own subset
pub use common::{has_tool, require_tool, run, run_ok, skip};

/// The imgbuild binary built for these tests.
pub fn imgbuild() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imgbuild"))
}

/// `imgbuild test RECIPE -o OUT --accel tcg` (builds, then boots every
/// output), however it ends.
pub fn test_tcg(recipe: &Path, out: &Path) -> std::process::Output {
    run(imgbuild()
        .arg("test")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .args(["--accel", "tcg"]))
}

/// `imgbuild build RECIPE -o OUT --quiet`, which must succeed.
pub fn build_quiet(recipe: &Path, out: &Path) -> std::process::Output {
    run_ok(
        imgbuild()
            .arg("build")
            .arg(recipe)
            .arg("-o")
            .arg(out)
            .arg("--quiet"),
    )
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A path inside `dir`.
pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The cached Debian bookworm rootfs tarball ([`rootfs::BOOKWORM`]), made
/// or remade by [`rootfs::ensure`] when it is missing or not whole (once per
/// test binary). `None` only when mmdebstrap is not installed outside CI:
/// then the test is skipped out loud.
pub fn debian_tar() -> Option<PathBuf> {
    static TAR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let tar = TAR.get_or_init(|| {
        has_tool("mmdebstrap").then(|| rootfs::ensure(&rootfs::BOOKWORM, &rootfs::cache_dir()))
    });
    if tar.is_none() {
        skip("mmdebstrap is not installed, so there is no Debian rootfs (scripts/install-deps.sh installs it)");
    }
    tar.clone()
}

/// Writes the recipe `text` to `dir/name` (making `dir`) and returns that
/// path: the one way the tests' recipe formatters put a recipe on disk.
pub fn write_recipe(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir for the recipe");
    let path = dir.join(name);
    std::fs::write(&path, text)
        .unwrap_or_else(|e| panic!("writing the recipe {}: {e}", path.display()));
    path
}

/// Puts `file` into `dir` under its own name as a hard link (a copy where
/// links are impossible) and returns that name, for a recipe in `dir`: a
/// recipe reads files inside its own directory only (issue 14), and a
/// hard link, unlike a symlink, is inside.
pub fn beside(dir: &Path, file: &Path) -> String {
    let name = file
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let to = dir.join(&name);
    let same = |a: &Path, b: &Path| {
        std::fs::canonicalize(a)
            .ok()
            .is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a))
    };
    if same(file, &to) {
        return name;
    }
    let _ = std::fs::remove_file(&to);
    std::fs::create_dir_all(dir).expect("mkdir");
    if std::fs::hard_link(file, &to).is_err() {
        std::fs::copy(file, &to).expect("copy beside the recipe");
    }
    name
}

/// Runs the test `test` of module `module` (`module_path!()`) alone in a
/// child process of this test binary, in `cwd`, with `env` added to its
/// environment, and panics unless it ran and passed. The integration tests
/// are one binary whose tests run as threads of one process (tests/it), so
/// a test that needs its own current directory or environment does its
/// work in such a child: the test calls `in_child` and, when it finds the
/// variable it set in `env`, it is the child and does the work.
pub fn in_child(module: &str, test: &str, cwd: &Path, env: &[(&str, &std::ffi::OsStr)]) {
    // libtest names a test by its path without the crate's name.
    let module = module.split_once("::").map_or("", |(_crate, m)| m);
    let name = format!("{module}::{test}");
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", &name, "--test-threads=1"])
        .current_dir(cwd)
        .envs(env.iter().copied());
    let out = run_ok(&mut cmd);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("test result: ok. 1 passed;"),
        "{name} did not run in the child:\n{said}"
    );
}
