//! mmdebstrap bootstrapping: cache naming, atomic cache entries, reuse.

mod support;

use imgbuild::source::{
    bootstrap, default_mirror, read_tar, DebootstrapSpec, SourceError, TarOptions,
};
use imgbuild::tree::{Meta, Tree};
use support::{require_tool, tempdir};

/// A run that fails (nothing listens on the discard port) leaves neither a
/// cache entry nor a partial file behind, and reports mmdebstrap's stderr.
#[test]
fn failed_bootstrap_leaves_no_cache_entry() {
    if !require_tool("mmdebstrap") {
        return;
    }
    let cache = tempdir();
    let spec = DebootstrapSpec {
        suite: "bookworm".into(),
        variant: "minbase".into(),
        mirror: Some("http://127.0.0.1:9/debian".into()),
        epoch: Some(1_700_000_000),
        ..DebootstrapSpec::default()
    };
    let err = bootstrap(&spec, cache.path()).expect_err("no mirror at 127.0.0.1:9");
    assert!(
        matches!(
            err,
            SourceError::Tool {
                tool: "mmdebstrap",
                ..
            }
        ),
        "{err:?}"
    );
    let left: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Real bootstrap (network, ~1-2 minutes): `cargo test --test source_mmdebstrap -- --ignored`.
#[test]
#[ignore = "downloads a Debian base system"]
fn bootstrap_caches_and_reuses_the_tarball() {
    if !require_tool("mmdebstrap") {
        return;
    }
    let cache = tempdir();
    let spec = DebootstrapSpec {
        suite: "bookworm".into(),
        variant: "minbase".into(),
        mirror: default_mirror(),
        components: vec!["main".into()],
        packages: vec!["kmod".into()],
        epoch: Some(1_700_000_000),
    };
    let first = bootstrap(&spec, cache.path()).unwrap();
    let name = first.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("mmdebstrap-")
            && name.ends_with(".tar")
            && name.len() == "mmdebstrap-.tar".len() + 64,
        "{name}"
    );
    let modified = std::fs::metadata(&first).unwrap().modified().unwrap();
    let second = bootstrap(&spec, cache.path()).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        std::fs::metadata(&second).unwrap().modified().unwrap(),
        modified,
        "the cached tar was rebuilt"
    );
    let mut tree = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    let stats = read_tar(&first, &mut tree, &TarOptions::default()).unwrap();
    assert!(tree.lookup(b"etc/debian_version").is_some(), "{stats:?}");
    assert!(tree.lookup(b"usr/bin/kmod").is_some(), "--include=kmod");
}
