//! The rootfs fixture (`tests/support/rootfs.rs`) never reuses a cache entry
//! that is not a whole tarball: a directory (what mmdebstrap makes from an
//! output name it does not know), an empty file and a truncated tar planted
//! at the cache path are each removed and rebuilt, and the rebuilt tar is
//! complete (our walk, and GNU tar's listing as the oracle). Regression test
//! for issue 15 (`tests/it/esp_boot.rs` once renamed a mmdebstrap directory
//! into the cache, and every later run failed with `IsADirectory`).
//!
//! It uses a small spec (minbase + kmod, ~20 s per bootstrap) in a cache of
//! its own, through the same code as the Debian rootfs every test reads.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::rootfs::{ensure, validate, Problem, RootfsSpec};
use crate::support::tarbuild;
use crate::support::{require_tool, run_ok, tempdir};

const SMALL: RootfsSpec = RootfsSpec {
    suite: "bookworm",
    label: "fixture-selftest",
    packages: &["kmod"],
};

/// `tar -tf` lists the whole archive and exits 0.
fn gnu_tar_lists(path: &Path) -> usize {
    let out = run_ok(Command::new("tar").arg("-tf").arg(path));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn assert_complete(path: &Path, case: &str) {
    assert!(path.is_file(), "{case}: {} is not a file", path.display());
    assert_eq!(validate(path, &SMALL), Ok(()), "{case}");
    let members = gnu_tar_lists(path);
    assert!(members > 1000, "{case}: only {members} members");
}

#[test]
fn a_directory_an_empty_file_and_a_truncated_tar_are_rebuilt() {
    if !require_tool("mmdebstrap") || !require_tool("tar") {
        return;
    }
    let cache = tempdir();
    let path = cache.path().join(SMALL.file_name());

    // A directory, as mmdebstrap makes from an unknown extension.
    fs::create_dir_all(path.join("etc")).unwrap();
    fs::write(path.join("etc/hostname"), "x\n").unwrap();
    assert_eq!(validate(&path, &SMALL), Err(Problem::NotAFile));
    assert_eq!(ensure(&SMALL, cache.path()), path);
    assert_complete(&path, "directory");
    let whole = fs::metadata(&path).unwrap().len();

    // An empty file.
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"").unwrap();
    assert_eq!(validate(&path, &SMALL), Err(Problem::Empty));
    ensure(&SMALL, cache.path());
    assert_complete(&path, "empty file");

    // The rebuilt tar cut at two thirds (an interrupted copy or download).
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(whole / 3 * 2).unwrap();
    drop(f);
    assert!(
        matches!(validate(&path, &SMALL), Err(Problem::Damaged(..))),
        "{:?}",
        validate(&path, &SMALL)
    );
    ensure(&SMALL, cache.path());
    assert_complete(&path, "truncated tar");

    // Nothing else is left in the cache: no temporary, no directory.
    let mut names: Vec<String> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    names.sort();
    assert_eq!(names, [SMALL.file_name()]);
}

/// A tar whose members are all there but that lacks a package the spec
/// names is not reused either (a cache made by an older package list).
#[test]
fn a_tar_without_a_listed_package_is_not_whole() {
    let d = tempdir();
    let tar = d.path().join("t.tar");
    let mut b = tarbuild::TarBuf::default();
    let status = b"Package: other\nStatus: install ok installed\n\n";
    b.entry(
        &tarbuild::Hdr::file("./var/lib/dpkg/status", status.len() as u64),
        status,
    );
    fs::write(&tar, b.finish()).unwrap();
    assert_eq!(
        validate(&tar, &SMALL),
        Err(Problem::MissingPackages(vec!["kmod".into()]))
    );
}
