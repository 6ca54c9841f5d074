//! `imgbuild test`, `imgbuild build --test` and the example CI files.
//!
//! - The `imgbuild` lines of `examples/ci/*.yml` (each file parsed as YAML)
//!   are run exactly as written, in a workspace holding the shipped
//!   recipes: build, test (every output in every firmware mode, under QEMU),
//!   verify --rebuild. The JUnit file they write is read by an independent
//!   JUnit parser: one passing test case per output and firmware mode.
//! - A `[test]` expecting what the guest never prints fails with the
//!   timeout, naming the output, the firmware and the console's last lines.
//! - A kernel that cannot mount its root (`rdinit=` pointing nowhere, so the
//!   kernel looks for the root itself, without the initramfs's drivers)
//!   panics, and the boot fails at once on `Kernel panic`.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::support;
use crate::support::{beside, debian_tar, imgbuild, require_tool, run, run_ok, tempdir};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every string under a `run` key (GitHub steps) or in a `script` list
/// (GitLab jobs), in document order.
fn shell_blocks(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("run"), serde_yaml::Value::String(s)) => out.push(s.clone()),
                    (Some("script"), serde_yaml::Value::Sequence(lines)) => {
                        out.extend(lines.iter().filter_map(|l| l.as_str().map(String::from)));
                    }
                    _ => shell_blocks(v, out),
                }
            }
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| shell_blocks(v, out)),
        _ => {}
    }
}

/// The `imgbuild` command lines of an example CI file, parsed as YAML.
fn imgbuild_lines(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("example CI file");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut blocks = Vec::new();
    shell_blocks(&yaml, &mut blocks);
    blocks
        .iter()
        .flat_map(|b| b.lines())
        .map(str::trim)
        .filter(|l| l.starts_with("imgbuild "))
        .map(String::from)
        .collect()
}

/// A directory holding just the `imgbuild` binary, to put first on PATH.
fn bin_dir(d: &Path) -> PathBuf {
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_imgbuild"), bin.join("imgbuild"))
        .expect("symlink");
    bin
}

#[test]
fn example_ci_files_run_as_written_and_their_junit_has_a_case_per_output_and_firmware() {
    let files = [
        repo().join("examples/ci/github-actions.yml"),
        repo().join("examples/ci/gitlab-ci.yml"),
    ];
    let per_file: Vec<Vec<String>> = files.iter().map(|f| imgbuild_lines(f)).collect();
    for (f, lines) in files.iter().zip(&per_file) {
        assert!(
            lines.iter().any(|l| l.starts_with("imgbuild test "))
                && lines
                    .iter()
                    .any(|l| l.starts_with("imgbuild verify --rebuild ")),
            "{}: {lines:?}",
            f.display()
        );
    }
    if !require_tool("mmdebstrap") || !require_tool(support::qemu::QEMU) {
        return;
    }
    // The workspace of a CI job: the recipes at the root of the checkout.
    let d = tempdir();
    let work = d.path().join("checkout");
    std::fs::create_dir_all(work.join("recipes")).expect("mkdir");
    let shipped = "debian-bookworm.toml";
    std::fs::copy(
        repo().join("recipes").join(shipped),
        work.join("recipes").join(shipped),
    )
    .expect("copy recipe");
    let path = format!(
        "{}:{}",
        bin_dir(d.path()).display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // Each distinct line once, in order: the two files run the same steps.
    let mut done = BTreeSet::new();
    let mut test_stdout = String::new();
    for line in per_file.iter().flatten() {
        if !done.insert(line.clone()) {
            continue;
        }
        let start = Instant::now();
        let out = run(Command::new("sh")
            .arg("-c")
            .arg(line)
            .current_dir(&work)
            .env("PATH", &path));
        assert!(
            out.status.success(),
            "`{line}` failed ({:.0} s): {}\nstdout:\n{}\nstderr:\n{}",
            start.elapsed().as_secs_f64(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "`{line}`: {:.0} s\n{}",
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout)
        );
        if line.starts_with("imgbuild test ") {
            test_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }

    // The JUnit summary, as a CI system reads it.
    let junit = std::fs::File::open(work.join("junit.xml")).expect("junit.xml written");
    let suites = junit_parser::from_reader(std::io::BufReader::new(junit)).expect("JUnit XML");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("out/manifest.json")).expect("manifest"),
    )
    .expect("json");
    // Test case name -> class (the target).
    let mut want = std::collections::BTreeMap::new();
    for o in manifest["outputs"].as_array().expect("outputs") {
        for m in o["firmware"].as_array().expect("firmware") {
            want.insert(
                format!(
                    "{} [{}]",
                    o["file"].as_str().expect("file"),
                    m.as_str().expect("mode")
                ),
                format!("imgbuild.{}", o["target"].as_str().expect("target")),
            );
        }
    }
    let cases: Vec<_> = suites.suites.iter().flat_map(|s| &s.cases).collect();
    let got: BTreeSet<String> = cases.iter().map(|c| c.original_name.clone()).collect();
    assert_eq!(
        got,
        want.keys().cloned().collect(),
        "one case per output and firmware mode"
    );
    assert_eq!(cases.len(), want.len(), "no case twice");
    assert_eq!(
        want.len(),
        21,
        "kvm, azure, vmware, gce, kubevirt and aws in 3 modes, hyperv in 2, gen1 in 1"
    );
    // EC2's boot disk is NVMe in every mode (issue 21): the table's rows.
    let aws_rows: Vec<&str> = test_stdout
        .lines()
        .filter(|l| l.starts_with("debian-bookworm-aws.vmdk "))
        .collect();
    assert_eq!(aws_rows.len(), 3, "{test_stdout}");
    for mode in ["bios", "uefi", "secure-boot"] {
        assert!(
            aws_rows.iter().any(|r| {
                let w: Vec<&str> = r.split_whitespace().collect();
                w.get(1..4) == Some(&[mode, "nvme", "pass"][..])
            }),
            "aws {mode} on nvme: {test_stdout}"
        );
    }
    for c in &cases {
        assert!(
            c.status.is_success(),
            "{} did not pass: {:?}",
            c.name,
            c.status
        );
        assert_eq!(
            c.classname.as_ref(),
            want.get(&c.original_name),
            "{}",
            c.name
        );
    }
    // Each console is kept beside the outputs, not among them.
    let logs = std::fs::read_dir(work.join("out.console"))
        .expect("console logs")
        .count();
    assert_eq!(logs, want.len());
}

/// A recipe over the tests' Debian rootfs with one kvm target booting with
/// SeaBIOS, plus `extra` (target keys first, then tables).
fn kvm_recipe(dir: &Path, target_keys: &str, tables: &str) -> PathBuf {
    let tar = debian_tar().expect("checked by the caller");
    let name = beside(dir, &tar);
    let path = dir.join("recipe.toml");
    std::fs::write(
        &path,
        format!(
            "[image]\nname = \"probe\"\nsize = \"3GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n\
             [boot]\ncmdline = \"console=ttyS0,115200\"\n\n[config]\nhostname = \"probe\"\n\n\
             [targets.kvm]\nfirmware = \"bios\"\n{target_keys}\n{tables}"
        ),
    )
    .expect("write recipe");
    path
}

#[test]
fn a_test_expecting_what_the_guest_never_prints_fails_with_the_timeout() {
    if debian_tar().is_none() || !require_tool(support::qemu::QEMU) {
        return;
    }
    let d = tempdir();
    let recipe = kvm_recipe(
        d.path(),
        "",
        "[test]\nexpect = [\"this line is never printed\"]\ntimeout = 45\n",
    );
    let out = d.path().join("out");

    let start = Instant::now();
    let ran = support::test_tcg(&recipe, &out);

    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(ran.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(start.elapsed().as_secs() >= 45, "waited for the timeout");
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("FAILED "))
        .unwrap_or_else(|| panic!("no FAILED line:\n{stdout}"));
    assert_eq!(
        failed,
        "FAILED probe-kvm.qcow2 with bios: timed out after 45 s waiting for `this line is never printed`"
    );
    let console: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  | ")).collect();
    assert!(
        !console.is_empty() && console.len() <= 15,
        "the console's last lines:\n{stdout}"
    );
    assert!(stderr.contains("1 of 1 boots failed"), "{stderr}");
    // The whole console is kept.
    let log = d.path().join("out.console/probe-kvm.qcow2.bios.log");
    let text = String::from_utf8_lossy(&std::fs::read(&log).expect("console log")).into_owned();
    assert!(text.contains("SeaBIOS"), "{text}");
}

#[test]
fn a_kernel_panic_fails_the_boot_at_once() {
    if debian_tar().is_none() || !require_tool(support::qemu::QEMU) {
        return;
    }
    let d = tempdir();
    // No initramfs init: the kernel mounts the root itself and, lacking
    // the virtio driver the initramfs would load, cannot.
    let recipe = kvm_recipe(d.path(), "cmdline = \"rdinit=/nonexistent\"\n", "");
    let out = d.path().join("out");
    let junit = d.path().join("junit.xml");

    let start = Instant::now();
    let ran = run(imgbuild()
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(&out)
        .arg("--test")
        .arg("--junit")
        .arg(&junit));

    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert_eq!(ran.status.code(), Some(1), "{stdout}");
    assert!(
        start.elapsed().as_secs() < 240,
        "failed at the panic, long before the 300 s timeout"
    );
    assert!(
        stdout.contains("FAILED probe-kvm.qcow2 with bios: the console showed `Kernel panic`"),
        "{stdout}"
    );
    // Stopped as the panic is printed (its line may be cut there): the
    // console's last lines show it, after the root the kernel could not open.
    let console: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  | ")).collect();
    assert!(
        console.iter().any(|l| l.contains("Kernel panic")),
        "{stdout}"
    );
    assert!(stdout.contains("Cannot open root device"), "{stdout}");
    // The build itself stands; the JUnit file says what failed.
    run_ok(imgbuild().arg("verify").arg(&out));
    let suites = junit_parser::from_reader(std::io::BufReader::new(
        std::fs::File::open(&junit).expect("junit"),
    ))
    .expect("JUnit XML");
    let cases: Vec<_> = suites.suites.iter().flat_map(|s| &s.cases).collect();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].original_name, "probe-kvm.qcow2 [bios]");
    assert_eq!(cases[0].classname.as_deref(), Some("imgbuild.kvm"));
    assert!(cases[0].status.is_failure(), "{:?}", cases[0].status);
}

#[test]
fn imgbuild_boot_runs_an_image_read_only_with_its_console_on_stdout() {
    if debian_tar().is_none() || !require_tool(support::qemu::QEMU) {
        return;
    }
    let d = tempdir();
    let recipe = kvm_recipe(d.path(), "", "");
    let out = d.path().join("out");
    support::build_quiet(&recipe, &out);
    let image = out.join("probe-kvm.qcow2");
    let before = std::fs::read(&image).expect("image");
    let _slot = imgbuild::run::qemu::Slot::take(imgbuild::run::qemu::Slot::default_jobs());

    // Its own process group, for the cleanup after the test.
    let mut child = imgbuild()
        .arg("boot")
        .arg(&image)
        .args(["--accel", "tcg"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("imgbuild boot");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("probe login:") {
                let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
                return;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
    });
    let console = rx
        .recv_timeout(std::time::Duration::from_secs(600))
        .unwrap_or_default();
    // imgbuild alone: it must stop its QEMU itself.
    run_ok(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string()),
    );
    let status = child.wait().expect("imgbuild boot ends");
    let qemu_left = (0..50).all(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        run(Command::new("pgrep").arg("-f").arg(image.as_os_str()))
            .status
            .success()
    });
    // Whatever happened, no QEMU outlives the test.
    let _ = run(Command::new("kill")
        .args(["-KILL", "--"])
        .arg(format!("-{}", child.id())));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }

    assert!(console.contains("probe login:"), "{console}\n{stderr}");
    assert_eq!(status.code(), Some(128 + 15), "{stderr}");
    assert!(
        !qemu_left,
        "QEMU still runs after imgbuild boot was stopped"
    );
    // The firmware the manifest records for it, said with the accelerator.
    assert!(stderr.contains("QEMU with TCG (--accel tcg)"), "{stderr}");
    assert!(stderr.contains("with bios on virtio"), "{stderr}");
    assert!(
        std::fs::read(&image).expect("image") == before,
        "the image changed: a boot must not write to it"
    );
}

/// A Compute Engine image of a disk over 8 GiB (issue 24): its tar's sizes
/// and sparse offsets are base-256, which `imgbuild test` once read as
/// octal only (`real size is not octal`). It unpacks and boots to `login:`.
#[test]
fn a_gce_image_of_a_disk_over_8_gib_boots_in_imgbuild_test() {
    if debian_tar().is_none() || !require_tool(support::qemu::QEMU) {
        return;
    }
    let d = tempdir();
    let tar = debian_tar().expect("checked above");
    let name = beside(d.path(), &tar);
    let recipe = d.path().join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            "[image]\nname = \"probe\"\nsize = \"9GiB\"\n\n[os]\nsource = {{ tar = \"{name}\" }}\n\n\
             [config]\nhostname = \"probe\"\n\n[targets.gce]\nfirmware = \"bios\"\n"
        ),
    )
    .expect("write recipe");
    let out = d.path().join("out");
    support::build_quiet(&recipe, &out);
    let m = imgbuild::record::read_manifest(&out).expect("manifest");
    assert_eq!(m.outputs.len(), 1);
    assert_eq!(m.outputs[0].virtual_size, 9 << 30);
    let o = run(imgbuild()
        .arg("test")
        .arg(&out)
        .args(["--accel", "tcg", "--json"]));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let cases = report["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 1, "{report}");
    assert_eq!(cases[0]["output"], "probe-gce.tar.gz");
    assert_eq!(cases[0]["bus"], "scsi", "{report}");
    assert_eq!(cases[0]["passed"], true, "{report}");
    let log = std::fs::read_to_string(d.path().join("out.console/probe-gce.tar.gz.bios.log"))
        .expect("console log");
    assert!(log.contains("probe login:"), "{log}");
}
