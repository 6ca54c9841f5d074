//! Builds a Debian guest for KVM and Hyper-V through imgbuild's library API,
//! without a recipe file: the plan is made in code, progress goes to a
//! reporter of our own, and every failure is matched by its stage.
//!
//! ```text
//! cargo run --example build_from_code -- [--tar ROOTFS.tar] [--out DIR]
//! imgbuild verify DIR
//! ```
//!
//! Without `--tar` the OS is bootstrapped with mmdebstrap (Debian 12, the
//! packages `recipes/debian-bookworm.toml` lists, cached like any build's).

use std::path::PathBuf;
use std::process::ExitCode;

use imgbuild::progress::Step;
use imgbuild::{build, BuildError, BuildOptions, Hypervisor, PlanBuilder, Progress};

/// Prints each step on stderr as it begins.
struct Log;

impl Progress for Log {
    fn step(&self, msg: &str) -> Step {
        eprintln!("build_from_code: {msg}");
        Step::none()
    }
}

fn main() -> ExitCode {
    let mut tar = None;
    let mut out = PathBuf::from("out-from-code");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--tar", Some(v)) => tar = Some(PathBuf::from(v)),
            ("--out", Some(v)) => out = PathBuf::from(v),
            _ => {
                eprintln!("usage: build_from_code [--tar ROOTFS.tar] [--out DIR]");
                return ExitCode::from(2);
            }
        }
    }

    let mut plan = PlanBuilder::new("from-code")
        .size("3GiB")
        .epoch(1_700_000_000)
        .cmdline("console=tty0 console=ttyS0,115200")
        .hostname("fromcode")
        .timezone("UTC")
        .dhcp()
        .user("ops", &["sudo"], &[])
        .file("/etc/motd", "Built through the imgbuild library API.\n")
        .enable("systemd-networkd.service")
        .target("kvm", Hypervisor::Kvm)
        .target("hyperv", Hypervisor::Hyperv)
        // Any recipe key the builder has no method for:
        .set(&["targets", "kvm", "compress"], "zstd");
    plan = match &tar {
        // The plan reads only inside its directory: the tarball's.
        Some(t) => {
            let t = std::path::absolute(t).unwrap_or_else(|_| t.clone());
            let dir = t.parent().map(PathBuf::from).unwrap_or_default();
            plan.dir(dir).os_tar(t.file_name().unwrap_or_default())
        }
        None => plan.os_mmdebstrap(
            "bookworm",
            &[
                "linux-image-cloud-amd64",
                "initramfs-tools",
                "systemd-sysv",
                "udev",
                "grub-pc-bin",
                "grub-efi-amd64-signed",
                "shim-signed",
                "login",
                "sudo",
                "iproute2",
            ],
        ),
    };
    let plan = match plan.build() {
        Ok(p) => p,
        Err(e) => {
            // Located diagnostics, pointing into the plan's recipe text.
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };

    let opts = BuildOptions::new(&out, imgbuild::host::default_cache_dir());
    match build(&plan, &opts, &Log) {
        Ok(report) => {
            for o in &report.outputs {
                println!("{}  {}", o.sha256, report.out_dir.join(&o.file).display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let what = match &e {
                BuildError::MissingInput { path, .. } => format!("missing {}", path.display()),
                BuildError::Inputs(problems) => format!("{} input problem(s)", problems.len()),
                BuildError::TooLarge { min_disk_size, .. } => {
                    format!("needs a disk of {min_disk_size} bytes")
                }
                BuildError::Drivers { target, .. } => format!("target {target} lacks a driver"),
                _ => "build failed".to_string(),
            };
            // `{:#}` through anyhow prints the causes too.
            eprintln!("build_from_code: {what}: {:#}", anyhow::Error::new(e));
            ExitCode::from(1)
        }
    }
}
