//! A build directory is untrusted input (issue 24): `imgbuild test`, `boot`
//! and `verify` refuse a manifest whose outputs name an absolute path, `..`,
//! a separator or a symbolic link leading out, before reading or writing
//! anything on its word. Before the fix, a resealed manifest whose gce
//! output named `/elsewhere/evil.tar.gz` made `imgbuild test` boot that file
//! and write a 4 GiB `/elsewhere/evil.tar.gz.raw` and console logs beside it.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{beside, debian_tar, imgbuild, run_ok, tempdir};

/// A build of a kvm and a gce target over the test rootfs:
/// (its temp dir, the output directory).
fn built() -> Option<(tempfile::TempDir, PathBuf)> {
    let tar = debian_tar()?;
    let d = tempdir();
    let r = d.path().join("r");
    let name = beside(&r, &tar);
    let rec = r.join("recipe.toml");
    std::fs::write(
        &rec,
        format!(
            "[image]\nname = \"h\"\nsize = \"2GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n[targets.kvm]\n\n[targets.gce]\n"
        ),
    )
    .unwrap();
    let out = d.path().join("out");
    support::build_quiet(&rec, &out);
    Some((d, out))
}

/// Rewrites the gce output's `file` in the manifest to `file` and reseals
/// it (its seal is only a digest of itself: anyone can reseal).
fn point_gce_at(out: &Path, file: &str) {
    let path = out.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let outputs = m["outputs"].as_array_mut().unwrap();
    let gce = outputs
        .iter_mut()
        .find(|o| o["package"] == "tar.gz")
        .expect("a gce output");
    gce["file"] = file.into();
    m["self_sha256"] = imgbuild::record::ZEROS.into();
    let text = serde_json::to_string_pretty(&m).unwrap() + "\n";
    std::fs::write(&path, imgbuild::record::seal(&text)).unwrap();
}

/// Every file and directory under `dir`, recursively, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        // Other tests of this process come and go in the temp dir: what
        // vanishes while we look is skipped.
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Runs `cmd` with a deadline (a boot that should never start must not
/// hang the test if it does).
fn run_bounded(cmd: &mut std::process::Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{cmd:?} still runs after 120 s: it started a boot");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Sets up one hostile case, then runs `test`, `boot` and `verify` on the
/// build directory: each must fail saying `want`, and nothing may appear
/// outside the build directory (where `elsewhere/` holds the real target
/// of the hostile name, a copy of the gce archive).
fn refused(case: &str, setup: impl Fn(&Path, &Path) -> String, want: &str, verify_want: &str) {
    let Some((d, out)) = built() else {
        return;
    };
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let gce = out.join("h-gce.tar.gz");
    std::fs::copy(&gce, elsewhere.join("evil.tar.gz")).unwrap();
    let name = setup(&out, &elsewhere);
    point_gce_at(&out, &name);
    let before = listing(d.path());
    let tmp_before = listing(&std::env::temp_dir());
    let kvm = out.join("h-kvm.qcow2");
    for (what, mut cmd, want) in [
        ("test", imgbuild(), want),
        ("boot", imgbuild(), want),
        ("verify", imgbuild(), verify_want),
    ] {
        match what {
            "test" => cmd.args(["test", "--accel", "tcg"]).arg(&out),
            "boot" => cmd.args(["boot", "--accel", "tcg"]).arg(&kvm),
            _ => cmd.arg("verify").arg(&out),
        };
        let o = run_bounded(&mut cmd);
        assert!(!o.status.success(), "{case}: {what} passed: {}", text(&o));
        assert!(text(&o).contains(want), "{case}: {what}: {}", text(&o));
        assert_eq!(
            listing(d.path()),
            before,
            "{case}: {what} wrote beside or outside the build directory"
        );
    }
    // No unpacked disk or console log in or beside a scratch directory
    // either (other tests of this process make their own `evil.tar.gz`).
    let new: Vec<PathBuf> = listing(&std::env::temp_dir())
        .into_iter()
        .filter(|p| !tmp_before.contains(p))
        .filter(|p| {
            let p = p.to_string_lossy();
            p.contains("evil") && (p.ends_with(".raw") || p.ends_with(".log"))
        })
        .collect();
    assert!(new.is_empty(), "{case}: {new:?}");
}

#[test]
fn an_absolute_path_is_refused() {
    refused(
        "absolute",
        |_, elsewhere| elsewhere.join("evil.tar.gz").display().to_string(),
        "an absolute path: refused",
        "an absolute path: refused",
    );
}

#[test]
fn a_path_with_dot_dot_is_refused() {
    refused(
        "..",
        |_, _| "../elsewhere/evil.tar.gz".to_string(),
        "a path with `..`: refused",
        "a path with `..`: refused",
    );
}

#[test]
fn a_path_with_a_separator_is_refused() {
    refused(
        "separator",
        |out, _| {
            std::fs::create_dir(out.join("sub")).unwrap();
            std::fs::rename(out.join("h-gce.tar.gz"), out.join("sub/h-gce.tar.gz")).unwrap();
            "sub/h-gce.tar.gz".to_string()
        },
        "a path with a separator, not a file in the directory: refused",
        "a path with a separator, not a file in the directory: refused",
    );
}

#[test]
fn a_symlink_leading_out_is_refused() {
    refused(
        "symlink",
        |out, elsewhere| {
            let link = out.join("h-gce.tar.gz");
            std::fs::remove_file(&link).unwrap();
            symlink(elsewhere.join("evil.tar.gz"), &link).unwrap();
            "h-gce.tar.gz".to_string()
        },
        "a symbolic link (an output is a regular file in the directory): refused",
        // verify reports the link as itself, never opening it.
        "h-gce.tar.gz: is a symbolic link, not a regular file; not opened",
    );
}

/// The same directory, untouched, is accepted: the checks above fail for
/// the hostile names, not for every manifest.
#[test]
fn an_intact_build_passes_verify_and_resealing_alone_is_not_refused() {
    let Some((_d, out)) = built() else {
        return;
    };
    run_ok(imgbuild().arg("verify").arg(&out));
    point_gce_at(&out, "h-gce.tar.gz");
    run_ok(imgbuild().arg("verify").arg(&out));
}
