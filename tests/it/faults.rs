//! Faults (issue 14): a build killed with SIGKILL at each step leaves the
//! output directory holding the complete old set or the complete new one,
//! `verify` reports what it left, and the next build cleans up and
//! succeeds; two builds into one directory: one wins, the other fails at
//! once naming the first, and the result verifies.
//!
//! Builds stop at a known step through `IMGBUILD_FAULT_PAUSE`
//! (`imgbuild::outdir::fault_point`): before writing, while writing, with
//! everything written but not yet swapped in, and swapped in but the
//! previous set not yet removed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use std::time::{Duration, Instant};

use crate::support;
use crate::support::{beside, debian_tar, imgbuild, run, run_ok, tempdir};

/// A small recipe over the test rootfs: `host` makes sets differ.
fn recipe(dir: &Path, tar: &Path, host: &str) -> PathBuf {
    let name = beside(dir, tar);
    support::write_recipe(
        dir,
        &format!("{host}.toml"),
        &format!(
            "[image]\nname = \"f\"\nsize = \"2GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n\
             [config]\nhostname = \"{host}\"\n\n[targets.kvm]\nformat = \"qcow2\"\n\n[targets.hyperv]\n"
        ),
    )
}

fn build(recipe: &Path, out: &Path) -> std::process::Output {
    run(imgbuild()
        .arg("build")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .arg("-q"))
}

/// Starts a build that stops at `point`; returns once it says so.
fn paused(recipe: &Path, out: &Path, point: &str) -> Child {
    let mut child = imgbuild()
        .arg("build")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .arg("-q")
        .env("IMGBUILD_FAULT_PAUSE", point)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let want = format!("paused at {point}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&want) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the build never reached {point}"));
    child
}

/// The set the output directory holds: its SHA256SUMS, once every listed
/// file and the manifest verify (leftovers of a killed build aside).
fn set(out: &Path) -> String {
    let v = imgbuild::verify::verify_dir(out).unwrap();
    let real: Vec<_> = v
        .problems
        .iter()
        .filter(|p| !p.message.contains("left by an interrupted build"))
        .collect();
    assert!(
        real.is_empty(),
        "{} is not a complete set: {real:?}",
        out.display()
    );
    std::fs::read_to_string(out.join("SHA256SUMS")).unwrap()
}

#[test]
fn a_build_killed_at_any_step_leaves_the_old_or_the_new_set_and_the_next_cleans_up() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let (a, b) = (
        recipe(d.path(), &tar, "alpha"),
        recipe(d.path(), &tar, "beta"),
    );
    let out = d.path().join("out");
    support::build_quiet(&a, &out);
    let mut sets = [set(&out), String::new()];
    let mut current = 0; // index of the set the directory holds (0: alpha, 1: beta)
    for (point, expect_new) in [
        ("before-write", false),
        ("while-write", false),
        ("before-swap", false),
        ("after-swap", true),
    ] {
        let next = 1 - current;
        let recipe_next = if next == 0 { &a } else { &b };
        let mut child = paused(recipe_next, &out, point);
        // Paused: still the old set (after the swap: already the new one).
        let mid = set(&out);
        child.kill().unwrap();
        child.wait().unwrap();
        let after = set(&out);
        assert_eq!(
            mid, after,
            "{point}: the set changed while the build was dead"
        );
        if expect_new {
            assert_ne!(after, sets[current], "{point}: the new set is in place");
            sets[next] = after.clone();
        } else {
            assert_eq!(after, sets[current], "{point}: the old set, whole");
        }
        // verify names the leftover.
        let v = run(imgbuild().arg("verify").arg(&out));
        assert_eq!(v.status.code(), Some(1), "{point}: {v:?}");
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(
            err.contains("left by an interrupted build"),
            "{point}: {err}"
        );
        // The next build removes it, says so and succeeds.
        let o = build(recipe_next, &out);
        assert!(o.status.success(), "{point}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("removed what an interrupted build left"),
            "{point}: {err}"
        );
        run_ok(imgbuild().arg("verify").arg(&out));
        sets[next] = set(&out);
        current = next;
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".out"))
            .collect();
        assert_eq!(
            names,
            [".out.imgbuild.lock"],
            "{point}: nothing but the lock beside out"
        );
    }
}

#[test]
fn two_builds_into_one_directory_one_wins_the_other_fails_at_once() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let (a, b) = (
        recipe(d.path(), &tar, "alpha"),
        recipe(d.path(), &tar, "beta"),
    );
    let out = d.path().join("out");
    // The first takes the directory; stopped (SIGSTOP) once it holds it.
    let mut first = imgbuild()
        .arg("build")
        .arg(&a)
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .spawn()
        .unwrap();
    let staging = d.path().join(format!(".out.imgbuild-new-{}", first.id()));
    let waited = Instant::now();
    while !staging.exists() {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the first build never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_child(&first);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let started = Instant::now();
    let second = build(&b, &out);
    let took = started.elapsed();
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "another imgbuild (PID {}) is writing to",
            first.id()
        )),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(5),
        "failed at once, not after {took:?}"
    );
    // The first wins: it finishes, and its outputs verify.
    assert!(first.wait().unwrap().success());
    run_ok(imgbuild().arg("verify").arg(&out));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"name\": \"f\""), "{manifest}");
    assert!(set(&out).contains("f-kvm.qcow2"));
}
