//! Hostile inputs and faults (issue 14), one test per finding of the issue
//! that lives outside the tar reader and the ext4 writer (those are in
//! tests/it/source_tar.rs and tests/it/ext4_oracle.rs; killed builds and two
//! builds into one directory in tests/it/faults.rs).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{beside, debian_tar, imgbuild, run, run_ok, tempdir};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A recipe that needs no OS source to be read (`--recipe-only`), with `extra`.
fn recipe(dir: &Path, extra: &str) -> PathBuf {
    support::write_recipe(
        dir,
        "recipe.toml",
        &format!(
            "[image]\nname = \"h\"\nsize = \"1GiB\"\n\n[os]\nsource = {{ mmdebstrap = \"bookworm\" }}\n\n[targets.kvm]\n{extra}"
        ),
    )
}

fn check(recipe: &Path) -> Output {
    run(imgbuild().arg("check").arg("--recipe-only").arg(recipe))
}

/// A small build over the test rootfs: (its temp dir, recipe, output dir).
fn built() -> Option<(tempfile::TempDir, PathBuf, PathBuf)> {
    let tar = debian_tar()?;
    let d = tempdir();
    let r = d.path().join("r");
    let name = beside(&r, &tar);
    let rec = r.join("recipe.toml");
    std::fs::write(
        &rec,
        format!("[image]\nname = \"h\"\nsize = \"2GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n[targets.kvm]\n"),
    )
    .unwrap();
    let out = d.path().join("out");
    support::build_quiet(&rec, &out);
    Some((d, rec, out))
}

/// Finding 1: a recipe names host files outside its directory (absolute,
/// `..`, a symlink beside it pointing out, a cloud-init file): each is
/// refused at its file:line:col, with the way to allow it; nothing of the
/// host file is read.
#[test]
fn finding_1_files_outside_the_recipe_s_directory_are_refused() {
    let d = tempdir();
    let r = d.path().join("r");
    std::fs::create_dir(&r).unwrap();
    symlink("/etc/passwd", r.join("passwd-link")).unwrap();
    for (extra, written, line) in [
        (
            "\n[[config.files]]\npath = \"/x\"\nsource = \"/etc/shadow\"\n",
            "/etc/shadow",
            12,
        ),
        (
            "\n[[config.files]]\npath = \"/x\"\nsource = \"../../../../../../etc/passwd\"\n",
            "../../../../../../etc/passwd",
            12,
        ),
        (
            "\n[[config.files]]\npath = \"/x\"\nsource = \"passwd-link\"\n",
            "passwd-link",
            12,
        ),
        (
            "\n[config.cloud_init]\nuser_data_file = \"/etc/shadow\"\n",
            "/etc/shadow",
            11,
        ),
    ] {
        let rec = recipe(&r, extra);
        let o = check(&rec);
        assert_eq!(o.status.code(), Some(2), "{written}: {}", text(&o));
        let err = text(&o);
        assert!(
            err.contains(&format!(
                "error: `{written}` is outside the recipe's directory"
            )),
            "{written}: {err}"
        );
        assert!(
            err.contains(&format!("recipe.toml:{line}:")),
            "{written}: {err}"
        );
        assert!(err.contains("pass --allow-path DIR"), "{written}: {err}");
    }
    // A tar source through a symlink out of the directory, and a dir source.
    for extra in ["tar = \"out.tar\"", "dir = \"/etc\""] {
        let _ = symlink("/etc/hostname", r.join("out.tar"));
        let rec = r.join("recipe.toml");
        std::fs::write(
            &rec,
            format!("[image]\nname = \"h\"\nsize = \"1GiB\"\n\n[os]\nsource = {{ {extra} }}\n\n[targets.kvm]\n"),
        )
        .unwrap();
        let o = check(&rec);
        assert_eq!(o.status.code(), Some(2), "{extra}: {}", text(&o));
        assert!(
            text(&o).contains("is outside the recipe's directory"),
            "{extra}: {}",
            text(&o)
        );
    }
}

/// Finding 1, the opt-in: `--allow-path` lets a build read a file outside
/// the recipe's directory, and the manifest records the opt-in, never the
/// host path.
#[test]
fn finding_1_allow_path_opts_in_and_the_manifest_records_no_host_path() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let (r, elsewhere) = (d.path().join("r"), d.path().join("elsewhere"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("motd"), "from elsewhere\n").unwrap();
    let name = beside(&r, &tar);
    let rec = r.join("recipe.toml");
    let motd = elsewhere.join("motd");
    std::fs::write(
        &rec,
        format!(
            "[image]\nname = \"h\"\nsize = \"2GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n\
             [[config.files]]\npath = \"/etc/motd\"\nsource = \"{}\"\n\n[targets.kvm]\n",
            motd.display()
        ),
    )
    .unwrap();
    let out = d.path().join("out");
    let refused = run(imgbuild()
        .arg("build")
        .arg(&rec)
        .arg("-o")
        .arg(&out)
        .arg("-q"));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(!out.exists(), "nothing written");
    run_ok(
        imgbuild()
            .arg("build")
            .arg(&rec)
            .arg("-o")
            .arg(&out)
            .arg("-q")
            .arg("--allow-path")
            .arg(&elsewhere),
    );
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        !manifest.contains(&elsewhere.display().to_string()),
        "{manifest}"
    );
    assert!(
        manifest.contains(imgbuild::recipe::OUTSIDE),
        "the opt-in is recorded: {manifest}"
    );
}

/// Finding 4: SIGINT during `verify --rebuild` removes the rebuild's
/// directory (it used to leave ~760 MB behind).
#[test]
fn finding_4_sigint_during_verify_rebuild_leaves_nothing() {
    let Some((d, rec, out)) = built() else { return };
    let mut child = imgbuild()
        .arg("verify")
        .arg(&out)
        .arg("--rebuild")
        .arg(&rec)
        .arg("-q")
        .env("IMGBUILD_FAULT_PAUSE", "while-write")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let rebuild_dir = || {
        std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with(".imgbuild-rebuild-"))
    };
    // Paused mid-write: the rebuild directory holds data now.
    loop {
        let busy = rebuild_dir().is_some_and(|n| {
            std::fs::read_dir(d.path().join(&n)).is_ok_and(|mut e| e.next().is_some())
        });
        if busy {
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no rebuild started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(rebuild_dir(), None, "the rebuild's directory is gone");
}

/// Finding 6: `verify` fails on a missing manifest, a file nobody listed, a
/// stale temporary, and an output that is a symlink; a FIFO in an output's
/// place is refused at once by verify, inspect and convert (they hung).
#[test]
fn finding_6_verify_catches_what_it_missed_and_nothing_hangs_on_a_fifo() {
    let Some((d, _rec, out)) = built() else {
        return;
    };
    run_ok(imgbuild().arg("verify").arg(&out));
    let fails = |what: &str, want: &str| {
        let o = run(imgbuild().arg("verify").arg(&out));
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        assert!(text(&o).contains(want), "{what}: {}", text(&o));
    };
    let image = out.join("h-kvm.qcow2");
    let saved = d.path().join("saved.qcow2");
    std::fs::rename(out.join("manifest.json"), d.path().join("manifest.json")).unwrap();
    fails("missing manifest", "manifest.json: missing");
    std::fs::rename(d.path().join("manifest.json"), out.join("manifest.json")).unwrap();
    std::fs::write(out.join("extra.img"), "x").unwrap();
    fails("extra file", "extra.img: not listed in SHA256SUMS");
    std::fs::remove_file(out.join("extra.img")).unwrap();
    std::fs::write(out.join(".h-kvm.qcow2.tmp-imgbuild-4242"), "x").unwrap();
    fails("stale temporary", "left by an interrupted build");
    std::fs::remove_file(out.join(".h-kvm.qcow2.tmp-imgbuild-4242")).unwrap();
    std::fs::rename(&image, &saved).unwrap();
    symlink(&saved, &image).unwrap();
    fails(
        "symlinked output",
        "h-kvm.qcow2: is a symbolic link, not a regular file; not opened",
    );
    std::fs::remove_file(&image).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &image,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let start = Instant::now();
    fails(
        "FIFO output",
        "h-kvm.qcow2: is a FIFO, not a regular file; not opened",
    );
    for args in [
        vec!["inspect".to_string(), image.display().to_string()],
        vec![
            "convert".to_string(),
            image.display().to_string(),
            d.path().join("x.raw").display().to_string(),
        ],
    ] {
        let o = run(imgbuild().args(&args));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("not a regular file (a device or FIFO); pass --allow-special"),
            "{}",
            text(&o)
        );
    }
    assert!(start.elapsed() < Duration::from_secs(20), "nothing hung");
}

/// Finding 7: a huge recipe is refused before it is parsed (it took 48×
/// its size in memory); a FIFO as the recipe does not hang; a user's home
/// with `..` is refused like a file path; an output directory that is a
/// file, or cannot be written, fails before anything is built.
#[test]
fn finding_7_big_recipes_bad_homes_and_unusable_output_directories_fail_early() {
    let d = tempdir();
    let big = d.path().join("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(50 << 20).unwrap();
    let o = check(&big);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the recipe is 52428800 bytes; a recipe may be at most 4194304"),
        "{}",
        text(&o)
    );
    let fifo = d.path().join("fifo.toml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let o = check(&fifo);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));

    let rec = recipe(
        d.path(),
        "\n[[config.users]]\nname = \"ops\"\nhome = \"/home/../../etc\"\n",
    );
    let o = check(&rec);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("home `/home/../../etc` must be an absolute path"),
        "{}",
        text(&o)
    );

    // The output directory is a file: refused before the (slow) bootstrap.
    let rec = recipe(d.path(), "");
    let file_out = d.path().join("out-file");
    std::fs::write(&file_out, "").unwrap();
    let start = Instant::now();
    let o = run(imgbuild()
        .arg("build")
        .arg(&rec)
        .arg("-o")
        .arg(&file_out)
        .arg("--cache-dir")
        .arg(d.path().join("cache")));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("exists and is not a directory"),
        "{}",
        text(&o)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!d.path().join("cache").exists(), "nothing bootstrapped");
    // Read-only: a read-only tmpfs mounted on the output directory.
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let m = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&ro));
    if !m.status.success() {
        support::skip(&format!(
            "cannot mount a tmpfs (run the tests as root): {}",
            text(&m).trim()
        ));
        return;
    }
    let o = run(imgbuild()
        .arg("build")
        .arg(&rec)
        .arg("-o")
        .arg(&ro)
        .arg("--cache-dir")
        .arg(d.path().join("cache")));
    let _ = Command::new("umount").arg(&ro).status();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "cannot write to the output directory {}",
            ro.display()
        )),
        "{}",
        text(&o)
    );
    assert!(!d.path().join("cache").exists(), "nothing bootstrapped");
}
