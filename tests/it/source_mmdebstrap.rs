//! mmdebstrap bootstrapping (issue 16): atomic cache entries; the host's
//! archives with -updates and -security; exactly the recipe's archives when
//! it names them; every archive's Release date and every package's archive
//! recorded; the cache reused, refreshed only when the archives changed
//! (`--refresh`), bootstrapped again past the recipe's `max_age`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use imgbuild::source::archives::{Archive, HostChoice};
use imgbuild::source::mmdebstrap::{BootstrapInfo, CacheAction};
use imgbuild::source::{
    bootstrap, default_mirror, read_tar, CachePolicy, DebootstrapSpec, SourceError, Sources,
    TarOptions,
};
use imgbuild::tree::{Meta, Tree};

use crate::support::{imgbuild, require_tool, run_ok, tempdir};

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
        sources: Sources::Listed(vec![Archive {
            uri: "http://127.0.0.1:9/debian".into(),
            suite: "bookworm".into(),
            components: vec!["main".into()],
        }]),
        epoch: Some(1_700_000_000),
        ..DebootstrapSpec::default()
    };
    let err = bootstrap(&spec, cache.path(), CachePolicy::default())
        .expect_err("no mirror at 127.0.0.1:9");
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

fn record(cache: &Path) -> (std::path::PathBuf, BootstrapInfo) {
    let path = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a record");
    let info = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (path, info)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Real bootstraps (minbase + kmod, ~20 s each) from the host's archives:
/// the record lists the suite, -updates and -security with their Release
/// dates and each installed package's archive; a second build reuses the
/// tarball untouched; `--refresh` with unchanged archives reuses it too;
/// past `max_age` it is bootstrapped again.
#[test]
fn cache_is_reused_refreshed_only_when_changed_and_rebuilt_past_max_age() {
    if !require_tool("mmdebstrap") || !require_tool("/usr/lib/apt/apt-helper") {
        return;
    }
    let cache = tempdir();
    let spec = DebootstrapSpec {
        suite: "bookworm".into(),
        variant: "minbase".into(),
        sources: Sources::Host(HostChoice {
            updates: true,
            security: true,
        }),
        components: vec!["main".into()],
        packages: vec!["kmod".into()],
        epoch: Some(1_700_000_000),
    };
    let first = bootstrap(&spec, cache.path(), CachePolicy::default()).unwrap();
    assert_eq!(first.action, CacheAction::Built);
    let suites: Vec<&str> = first
        .info
        .archives
        .iter()
        .map(|a| a.archive.suite.as_str())
        .collect();
    assert_eq!(
        suites,
        ["bookworm", "bookworm-updates", "bookworm-security"]
    );
    assert!(
        first.info.archives.iter().all(|a| a.date.is_some()),
        "{:?}",
        first.info.archives
    );
    assert!(
        first.info.origins.keys().any(|k| k.starts_with("kmod ")),
        "{:?}",
        first.info.origins
    );
    let name = first.tar.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("mmdebstrap-") && name.ends_with(".tar"),
        "{name}"
    );
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let built_at = mtime(&first.tar);

    let again = bootstrap(&spec, cache.path(), CachePolicy::default()).unwrap();
    assert_eq!(again.action, CacheAction::Reused);
    assert_eq!((&again.tar, mtime(&again.tar)), (&first.tar, built_at));

    let refresh = CachePolicy {
        refresh: true,
        max_age: None,
    };
    let refreshed = bootstrap(&spec, cache.path(), refresh).unwrap();
    assert_eq!(refreshed.action, CacheAction::ReusedUnchanged);
    assert_eq!(
        (&refreshed.tar, mtime(&refreshed.tar)),
        (&first.tar, built_at)
    );
    assert_eq!(refreshed.info.created, first.info.created);

    // Ten days old now; the recipe allows seven.
    let (path, mut info) = record(cache.path());
    info.created = now() - 10 * 86_400;
    std::fs::write(&path, serde_json::to_string(&info).unwrap()).unwrap();
    let week = CachePolicy {
        refresh: false,
        max_age: Some(7 * 86_400),
    };
    let rebuilt = bootstrap(&spec, cache.path(), week).unwrap();
    assert_eq!(rebuilt.action, CacheAction::RebuiltTooOld);
    assert!(
        rebuilt.info.created + 600 > now(),
        "{:?}",
        rebuilt.info.created
    );
    assert_ne!(mtime(&rebuilt.tar), built_at, "bootstrapped again");
    // Within the age now: reused.
    let reused = bootstrap(&spec, cache.path(), week).unwrap();
    assert_eq!(reused.action, CacheAction::Reused);
    // One tarball in the cache, the record's.
    let tars: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert_eq!(tars, std::slice::from_ref(&reused.info.tar));

    let mut tree = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    let stats = read_tar(&reused.tar, &mut tree, &TarOptions::default()).unwrap();
    assert!(tree.lookup(b"etc/debian_version").is_some(), "{stats:?}");
    assert!(tree.lookup(b"usr/bin/kmod").is_some(), "--include=kmod");
}

/// A recipe naming its own mirror gets exactly that archive and suite: no
/// -updates, no -security added, and the manifest records it, with every
/// package from it.
#[test]
fn a_recipe_s_own_mirror_is_used_alone_and_recorded() {
    if !require_tool("mmdebstrap") {
        return;
    }
    let mirror = default_mirror().expect("the host has a Debian mirror");
    let d = tempdir();
    let recipe = d.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"[image]
name = "own"
size = "2GiB"

[os]
source = {{ mmdebstrap = "bookworm", mirror = "{mirror}", packages = [
    "linux-image-cloud-amd64", "initramfs-tools", "systemd-sysv", "udev", "kmod", "grub-pc-bin",
] }}

[targets.kvm]
firmware = "bios"
format = "raw"
"#
        ),
    )
    .unwrap();
    let out = d.path().join("out");
    run_ok(
        imgbuild()
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(&out)
            .arg("--cache-dir")
            .arg(d.path().join("cache"))
            .arg("--quiet"),
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let archives = m["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert_eq!(archives[0]["uri"], mirror.as_str());
    assert_eq!(archives[0]["suite"], "bookworm");
    assert_eq!(archives[0]["components"], serde_json::json!(["main"]));
    assert!(archives[0]["date"].is_string(), "{archives:?}");
    let packages = m["packages"].as_array().unwrap();
    assert!(packages.iter().any(|p| p["name"] == "kmod"));
    for p in packages {
        assert_eq!(p["archive"], "bookworm", "{p}");
    }
    // `imgbuild check` on the same cache: how old it is, and per archive
    // whether a newer Release file is out (minutes later: not).
    let check = run_ok(
        imgbuild()
            .arg("check")
            .arg(&recipe)
            .arg("--cache-dir")
            .arg(d.path().join("cache")),
    );
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("  os: bootstrapped "), "{text}");
    assert!(
        text.contains(", cached), archives last found current"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  archive {mirror} bookworm: Release unchanged since "
        )),
        "{text}"
    );
    assert!(!text.contains("--refresh"), "{text}");
}
