//! Each recipe shipped in `recipes/` is built by the tests.
//!
//! - `debian-tarball.toml`, next to the cached Debian rootfs tar made the way
//!   its header says (scripts/debian-rootfs.sh): kvm, hyperv and azure.
//!   Oracles: `qemu-img check`, `qemu-img compare` (the three disks share
//!   their root partition; the VHDX, UEFI-only, lacks the BIOS boot code;
//!   the azure VHD's menu carries Azure's command line), `imgbuild verify`.
//! - `debian-bookworm.toml` and `debian-trixie.toml` are bootstrapped,
//!   built and booted in every firmware mode by tests/it/boot_matrix.rs.
//! - `examples/recipes/*.toml` (a minimal server, a cloud-init guest, a
//!   Hyper-V-only guest) are bootstrapped and built; every output passes
//!   `qemu-img check` and the build passes `imgbuild verify`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::layout::gpt;

use crate::support;
use crate::support::{debian_tar, imgbuild, require_tool, run, run_ok, tempdir};

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
    // A hard link: a recipe reads only inside its directory (issue 14).
    std::fs::hard_link(&tar, d.path().join("debian-bookworm.tar")).expect("link tar");
    let out = d.path().join("out");
    support::build_quiet(&recipe, &out);
    let (qcow2, vhdx, vhd) = (
        out.join("debian-tarball-kvm.qcow2"),
        out.join("debian-tarball-hyperv.vhdx"),
        out.join("debian-tarball-azure.vhd"),
    );
    qemu_img_check(&qcow2, "qcow2");
    qemu_img_check(&vhdx, "vhdx");
    run_ok(imgbuild().arg("verify").arg(&out));

    let disk = imgbuild_formats::open(&qcow2, None).expect("open qcow2");
    let parts = gpt::read_partitions(&*disk)
        .expect("read GPT")
        .expect("GPT");
    let types: Vec<&str> = parts.iter().map(|p| p.type_guid.as_str()).collect();
    assert_eq!(
        types,
        [
            gpt::types::BIOS_BOOT,
            gpt::types::ESP,
            gpt::types::ROOT_X86_64
        ]
    );
    let (bios, esp, root) = (&parts[0], &parts[1], &parts[2]);
    // Three disks: kvm (hybrid), hyperv (UEFI only: no BIOS code) and
    // azure (hybrid, with Azure's command line in the ESP's menu). The root
    // partition is the same in all; each pair differs only where its boot
    // differs.
    let regions = [
        ("the MBR and the BIOS boot partition", 0, bios.end),
        ("the ESP", esp.start, esp.end - esp.start),
        ("the root partition", root.start, root.end - root.start),
    ];
    for (other, format, differs) in [(&vhdx, "vhdx", 0), (&vhd, "vpc", 1)] {
        for (i, (what, start, len)) in regions.iter().enumerate() {
            let out = compare_range(&qcow2, "qcow2", other, format, *start, *len);
            assert_eq!(
                out.status.code(),
                Some(if i == differs { 1 } else { 0 }),
                "kvm vs {}: {what}: {}",
                other.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// Builds `examples/recipes/<name>` and checks what it wrote: the outputs
/// its targets name, each sound for qemu-img (`check`; `info` for a VHD,
/// which it does not check), the whole verified.
fn builds_example(name: &str, outputs: &[&str]) {
    if !require_tool("mmdebstrap") || !require_tool("qemu-img") {
        return;
    }
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/recipes")
        .join(name);
    let d = tempdir();
    let out = d.path().join("out");
    support::build_quiet(&recipe, &out);
    for file in outputs {
        let format = match file.rsplit('.').next() {
            Some("vhd") => "vpc",
            Some(ext) => ext,
            None => "raw",
        };
        if format == "vpc" {
            // qemu-img checks no VHD: it must open and read as one.
            run_ok(
                Command::new("qemu-img")
                    .args(["info", "-f", format])
                    .arg(out.join(file)),
            );
        } else {
            qemu_img_check(&out.join(file), format);
        }
    }
    run_ok(imgbuild().arg("verify").arg(&out));
}

#[test]
fn example_minimal_server_builds() {
    builds_example("minimal-server.toml", &["server-kvm.qcow2"]);
}

#[test]
fn example_cloud_init_guest_builds() {
    builds_example("cloud-init.toml", &["cloud-kvm.qcow2", "cloud-azure.vhd"]);
}

#[test]
fn example_hyperv_only_guest_builds() {
    builds_example(
        "hyperv-only.toml",
        &["hyperv-guest-gen2.vhdx", "hyperv-guest-gen1.vhdx"],
    );
}
