//! The library API as a program embedding imgbuild uses it: plans from a
//! string and from code, `build` with a progress of its own, and every
//! `BuildError` a bad input can produce, matched by its variant. The
//! example `examples/build_from_code.rs` is built, run, and its images
//! verified by `imgbuild verify`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use imgbuild::plan::InputProblem;
use imgbuild::progress::Step;
use imgbuild::{build, BuildError, BuildOptions, Hypervisor, PlanBuilder, Progress, Recipe};

use crate::support::synthetic::{synthetic_rootfs, tools, VERSION};
use crate::support::{beside, debian_tar, imgbuild, run_ok, tempdir};

const MIB: u64 = 1 << 20;

/// Records the steps it is told of.
#[derive(Default)]
struct Steps(Mutex<Vec<String>>);

impl Progress for Steps {
    fn step(&self, msg: &str) -> Step {
        self.0.lock().expect("not poisoned").push(msg.to_string());
        Step::none()
    }
}

/// A plan over the synthetic tree in `dir` (UEFI, unsigned stand-in
/// systemd-boot, no root growth), with `target`.
fn synthetic_plan(dir: &Path, tar: &str, target: (&str, Hypervisor)) -> PlanBuilder {
    PlanBuilder::new("synthetic")
        .dir(dir)
        .os_tar(tar)
        .size("320MiB")
        .set(&["image", "esp_size"], "64MiB")
        .set(&["image", "grow_root"], false)
        .set(&["boot", "loader"], "systemd-boot")
        .set(&["config", "network"], "none")
        .target(target.0, target.1)
        .set(&["targets", target.0, "firmware"], "uefi")
        .set(&["targets", target.0, "secure_boot"], false)
}

fn options(dir: &Path) -> BuildOptions {
    BuildOptions::new(dir.join("out"), dir.join("cache"))
}

/// The files in `dir`, sorted (none if it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_recipe_from_a_string_resolves_and_its_errors_are_located() {
    let plan = "[image]\nname = \"s\"\nsize = \"1GiB\"\n[os]\nsource = { mmdebstrap = \"bookworm\" }\n[targets.kvm]\n"
        .parse::<Recipe>()
        .expect("parses")
        .plan()
        .expect("resolves");
    assert_eq!(plan.targets[0].output, "s-kvm.qcow2");

    let err = "[image]\nname = \"s\"\nsize = \"4 potatoes\"\n[os]\nsource = { mmdebstrap = \"bookworm\" }\n[targets.kvm]\n"
        .parse::<Recipe>()
        .and_then(|r| r.plan())
        .expect_err("a bad size");
    let text = err.to_string();
    assert!(text.contains("recipe.toml:3:8"), "{text}");
}

#[test]
fn a_plan_built_in_code_is_the_plan_of_its_recipe_text() {
    let d = tempdir();
    let builder = PlanBuilder::new("code")
        .dir(d.path())
        .os_mmdebstrap("bookworm", &["linux-image-cloud-amd64"])
        .size("2GiB")
        .epoch(1_700_000_000)
        .hostname("code")
        .user("ops", &["sudo"], &[])
        .file("/etc/motd", "hi\n")
        .enable("ssh.service")
        .target("kvm", Hypervisor::Kvm)
        .target("hyperv", Hypervisor::Hyperv);
    let plan = builder.build().expect("resolves");
    // Saved beside, the same text is a recipe file with the same plan
    // (what `imgbuild verify --rebuild` needs).
    let file = d.path().join("code.plan.toml");
    std::fs::write(&file, builder.recipe_text()).expect("write");
    let again = Recipe::load(&file)
        .expect("loads")
        .plan()
        .expect("resolves");
    assert_eq!(plan, again);
    let names: Vec<&str> = plan.targets.iter().map(|t| t.output.as_str()).collect();
    assert_eq!(names, ["code-hyperv.vhdx", "code-kvm.qcow2"]);
    assert_eq!(plan.config.hostname.as_deref(), Some("code"));

    let err = builder
        .set(&["targets", "kvm", "format"], "floppy")
        .build()
        .expect_err("not a format");
    assert!(
        err.to_string().contains("code.plan.toml:") && err.to_string().contains("floppy"),
        "{err}"
    );
}

#[test]
fn a_missing_input_is_missing_input() {
    if !tools() {
        return;
    }
    let d = tempdir();
    let tar = synthetic_rootfs(d.path(), true);
    let plan = synthetic_plan(d.path(), "rootfs.tar", ("kvm", Hypervisor::Kvm))
        .build()
        .expect("resolves");
    // Gone between the plan and the build.
    std::fs::remove_file(&tar).expect("rm");

    let err = build(&plan, &options(d.path()), &imgbuild::Silent).expect_err("no tar");

    match err {
        BuildError::MissingInput { path, .. } => assert_eq!(path, tar),
        e => panic!("expected MissingInput, got {e:?}"),
    }
    assert_eq!(listing(&d.path().join("out")), Vec::<String>::new());
}

#[test]
fn a_missing_driver_is_drivers_naming_target_and_kernel() {
    if !tools() {
        return;
    }
    let d = tempdir();
    synthetic_rootfs(d.path(), false); // no hv_storvsc in the initramfs
    let plan = synthetic_plan(d.path(), "rootfs.tar", ("hyperv", Hypervisor::Hyperv))
        .build()
        .expect("resolves");

    let err = build(&plan, &options(d.path()), &imgbuild::Silent).expect_err("no storvsc");

    match &err {
        BuildError::Drivers { target, kernel, .. } => {
            assert_eq!((target.as_str(), kernel.as_str()), ("hyperv", VERSION));
        }
        e => panic!("expected Drivers, got {e:?}"),
    }
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(chain.contains("hv_storvsc"), "{chain}");
}

#[test]
fn an_output_directory_that_is_a_file_is_output_directory() {
    if !tools() {
        return;
    }
    let d = tempdir();
    synthetic_rootfs(d.path(), true);
    let plan = synthetic_plan(d.path(), "rootfs.tar", ("kvm", Hypervisor::Kvm))
        .build()
        .expect("resolves");
    let out = d.path().join("out");
    std::fs::write(&out, b"not a directory").expect("write");

    let err = build(&plan, &options(d.path()), &imgbuild::Silent).expect_err("a file");

    match err {
        BuildError::OutputDirectory { path, .. } => assert_eq!(path, out),
        e => panic!("expected OutputDirectory, got {e:?}"),
    }
    assert_eq!(std::fs::read(&out).expect("kept"), b"not a directory");
}

/// The Debian rootfs, hard-linked into `dir` for a plan there.
fn debian_plan(dir: &Path, tar: &Path) -> PlanBuilder {
    PlanBuilder::new("debian")
        .dir(dir)
        .os_tar(beside(dir, tar))
        .epoch(1_700_000_000)
        .target("kvm", Hypervisor::Kvm)
}

#[test]
fn a_stale_pin_of_a_large_input_is_inputs_with_pin_mismatch_and_writes_nothing() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let wrong = "0".repeat(64);
    // Large inputs hash beside the build: the pin is checked at its end.
    assert!(std::fs::metadata(&tar).expect("tar").len() > 16 * MIB);
    let plan = debian_plan(d.path(), &tar)
        .size("3GiB")
        .set(&["os", "source", "sha256"], wrong.as_str())
        .build()
        .expect("resolves: the digest is not known yet");

    let err = build(&plan, &options(d.path()), &imgbuild::Silent).expect_err("stale pin");

    let BuildError::Inputs(problems) = err else {
        panic!("expected Inputs, got {err:?}");
    };
    let sha = run_ok(Command::new("sha256sum").arg(&tar));
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string();
    match problems.as_slice() {
        [InputProblem::PinMismatch {
            role,
            expected,
            found,
            diagnostic,
        }] => {
            assert_eq!(
                (role.as_str(), expected, found),
                ("os.source.tar", &wrong, &sha)
            );
            assert!(
                diagnostic.render().contains("debian.plan.toml:"),
                "{}",
                diagnostic.render()
            );
        }
        p => panic!("expected one PinMismatch, got {p:?}"),
    }
    assert_eq!(listing(&d.path().join("out")), Vec::<String>::new());
}

#[test]
fn content_too_large_is_too_large_with_a_disk_size_that_fits() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let plan = debian_plan(d.path(), &tar)
        .size("512MiB")
        .build()
        .expect("resolves");

    let err = build(&plan, &options(d.path()), &imgbuild::Silent).expect_err("too small");

    let BuildError::TooLarge {
        needed,
        available,
        min_disk_size,
    } = err
    else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert!(needed > available, "{needed} > {available}");
    assert!(
        min_disk_size > 512 * MIB && min_disk_size % MIB == 0,
        "{min_disk_size}"
    );
    // The size it names is enough.
    let plan = debian_plan(d.path(), &tar)
        .size(&format!("{}MiB", min_disk_size / MIB))
        .build()
        .expect("resolves");
    let steps = Steps::default();
    let report = build(&plan, &options(d.path()), &steps).expect("fits");
    assert_eq!(report.outputs.len(), 1);
    assert!(
        steps.0.lock().expect("not poisoned").len() >= 5,
        "every stage reported"
    );
}

/// `target/<profile>` of this test binary.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

#[test]
fn the_example_builds_from_code_and_its_images_verify() {
    let Some(tar) = debian_tar() else { return };
    let dir = target_dir();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--example", "build_from_code"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    run_ok(&mut cargo);
    let d = tempdir();
    let out = d.path().join("out");

    let ran = run_ok(
        Command::new(dir.join("examples/build_from_code"))
            .arg("--tar")
            .arg(&tar)
            .arg("--out")
            .arg(&out),
    );

    let printed = String::from_utf8_lossy(&ran.stdout);
    assert_eq!(printed.lines().count(), 2, "{printed}");
    assert_eq!(
        listing(&out),
        [
            "SHA256SUMS",
            "from-code-hyperv.vhdx",
            "from-code-kvm.qcow2",
            "manifest.json"
        ]
    );
    let verified = run_ok(imgbuild().arg("verify").arg(&out));
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(said.contains("3 outputs intact"), "{said}");
    let steps = String::from_utf8_lossy(&ran.stderr);
    assert!(steps.contains("build_from_code: writing"), "{steps}");
}
