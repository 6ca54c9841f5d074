//! Each recipe shipped in `recipes/` is built by the tests.
//!
//! - `debian-tarball.toml`, next to the cached Debian rootfs tar made the way
//!   its header says (scripts/debian-rootfs.sh): kvm, hyperv and azure.
//!   Oracles: `qemu-img check`, `qemu-img compare` (qcow2 and VHDX hold the
//!   same disk; the azure VHD differs from them only inside the ESP, whose
//!   loader entry carries Azure's command line), `imgbuild verify`.
//! - `debian-bookworm.toml`, bootstrapped for real with mmdebstrap (cached
//!   by input hash, so only the first run downloads), then its qcow2 booted
//!   under QEMU to the login prompt.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use imgbuild::layout::gpt;
use support::{debian_tar, imgbuild, qemu, require_tool, run, run_ok, tempdir};

fn repo_recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes")
        .join(name)
}

fn qemu_img_check(image: &Path, format: &str) {
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", format])
            .arg(image),
    );
}

/// `qemu-img compare` of two images' contents (not strict: the formats
/// allocate differently), after checking their virtual sizes agree.
fn compare(a: &Path, fa: &str, b: &Path, fb: &str) -> std::process::Output {
    let size = |p: &Path| {
        imgbuild_formats::open(p, None)
            .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
            .virtual_size()
    };
    assert_eq!(size(a), size(b), "{} vs {}", a.display(), b.display());
    run(Command::new("qemu-img")
        .args(["compare", "-f", fa, "-F", fb])
        .arg(a)
        .arg(b))
}

/// `qemu-img compare` of one byte range of two images (a raw node with
/// offset and size over each format driver).
fn compare_range(
    a: &Path,
    fa: &str,
    b: &Path,
    fb: &str,
    start: u64,
    len: u64,
) -> std::process::Output {
    let opts = |p: &Path, f: &str| {
        format!(
            "driver=raw,offset={start},size={len},file.driver={f},file.file.driver=file,file.file.filename={}",
            p.display()
        )
    };
    run(Command::new("qemu-img")
        .args(["compare", "--image-opts"])
        .arg(opts(a, fa))
        .arg(opts(b, fb)))
}

#[test]
fn debian_tarball_recipe_builds_for_kvm_hyperv_and_azure() {
    if !require_tool("qemu-img") {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let recipe = d.path().join("debian-tarball.toml");
    fs::copy(repo_recipe("debian-tarball.toml"), &recipe).expect("copy recipe");
    std::os::unix::fs::symlink(&tar, d.path().join("debian-bookworm.tar")).expect("symlink tar");
    let out = d.path().join("out");
    run_ok(
        imgbuild()
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(&out)
            .arg("--quiet"),
    );
    let (qcow2, vhdx, vhd) = (
        out.join("debian-tarball-kvm.qcow2"),
        out.join("debian-tarball-hyperv.vhdx"),
        out.join("debian-tarball-azure.vhd"),
    );
    qemu_img_check(&qcow2, "qcow2");
    qemu_img_check(&vhdx, "vhdx");
    run_ok(imgbuild().arg("verify").arg(&out));

    let same = compare(&qcow2, "qcow2", &vhdx, "vhdx");
    assert!(
        same.status.success(),
        "qcow2 and vhdx differ:\n{}",
        String::from_utf8_lossy(&same.stdout)
    );
    // The VHD differs, and only inside the ESP (its loader entry).
    let differ = compare(&qcow2, "qcow2", &vhd, "vpc");
    assert_eq!(
        differ.status.code(),
        Some(1),
        "the azure VHD should differ in its ESP: {differ:?}"
    );
    let disk = imgbuild_formats::open(&qcow2, None).expect("open qcow2");
    let parts = gpt::read_partitions(&*disk)
        .expect("read GPT")
        .expect("GPT");
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].type_guid, gpt::types::ESP);
    let stdout = String::from_utf8_lossy(&differ.stdout);
    let offset: u64 = stdout
        .split("offset ")
        .nth(1)
        .and_then(|s| s.trim_end_matches(['!', '\n']).trim().parse().ok())
        .unwrap_or_else(|| panic!("no offset in {stdout:?}"));
    assert!(
        (parts[0].start..parts[0].end).contains(&offset),
        "first difference at {offset}, outside the ESP {:?}",
        parts[0]
    );
    // Everything before the ESP (GPT) and the whole root partition agree;
    // the ESP alone differs.
    let root = &parts[1];
    let esp = &parts[0];
    for (what, start, len, same) in [
        ("before the ESP", 0, esp.start, true),
        ("the ESP", esp.start, esp.end - esp.start, false),
        (
            "the root partition",
            root.start,
            root.end - root.start,
            true,
        ),
    ] {
        let out = compare_range(&qcow2, "qcow2", &vhd, "vpc", start, len);
        assert_eq!(
            out.status.code(),
            Some(if same { 0 } else { 1 }),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The bootstrap reaches the network (the Debian mirror of the host's apt
/// sources); a failing mmdebstrap run fails the test with its output.
#[test]
fn debian_bookworm_recipe_bootstraps_builds_and_boots() {
    if !require_tool("mmdebstrap") || !require_tool("qemu-system-x86_64") {
        return;
    }
    let d = tempdir();
    let out = d.path().join("out");
    let result = run(imgbuild()
        .arg("build")
        .arg(repo_recipe("debian-bookworm.toml"))
        .arg("-o")
        .arg(&out)
        .arg("--quiet"));
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        panic!("building recipes/debian-bookworm.toml failed:\n{stderr}");
    }
    let qcow2 = out.join("debian-bookworm-kvm.qcow2");
    let vhdx = out.join("debian-bookworm-hyperv.vhdx");
    qemu_img_check(&qcow2, "qcow2");
    qemu_img_check(&vhdx, "vhdx");
    let same = compare(&qcow2, "qcow2", &vhdx, "vhdx");
    // The kvm target adds console=hvc0: the two differ in the ESP only.
    assert_eq!(same.status.code(), Some(1), "{same:?}");
    let start = std::time::Instant::now();
    match qemu::boot_until(
        &qcow2,
        "qcow2",
        &["bookworm login:"],
        Duration::from_secs(600),
    ) {
        Ok(log) => {
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            eprintln!(
                "debian-bookworm-kvm.qcow2 reached the login prompt in {:?}: {tail:?}",
                start.elapsed()
            );
        }
        Err(log) => {
            panic!("debian-bookworm-kvm.qcow2 did not boot to the login prompt:\n{log}")
        }
    }
}
