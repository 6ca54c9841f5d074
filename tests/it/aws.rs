//! The `aws` target (issue 21) over the tests' Debian rootfs: built as each
//! format EC2 imports (`aws ec2 import-snapshot --disk-container
//! Format=VMDK|VHD|RAW`), in one build whose three targets share one disk.
//! Oracles: `qemu-img info` names each format (the VMDK streamOptimized,
//! which VM Import requires) and the same virtual size, `qemu-img compare`
//! finds the VMDK and the VHD equal to the raw disk, and the manifest
//! records EC2's boot: BIOS, UEFI and Secure Boot from one disk, with the
//! serial console on ttyS0. (The boots themselves, on NVMe, are
//! `imgbuild test` of the shipped recipe: tests/it/test_command.rs.)

use std::path::Path;
use std::process::Command;

use crate::support;
use crate::support::{debian_tar, require_tool, run, run_ok, tempdir};

/// `qemu-img info --output=json` of `image`, read as `format` (`None`:
/// as qemu-img detects it).
fn info(image: &Path, format: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "--output=json"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    let out = run_ok(cmd.arg(image));
    serde_json::from_slice(&out.stdout).expect("qemu-img info prints JSON")
}

#[test]
fn aws_output_imports_as_vmdk_vhd_and_raw_each_equal_to_the_raw_disk() {
    let Some(tar) = debian_tar() else { return };
    if !require_tool("qemu-img") {
        return;
    }
    let d = tempdir();
    let tar = support::beside(d.path(), &tar);
    let recipe = support::write_recipe(
        d.path(),
        "recipe.toml",
        &format!(
            "[image]\nname = \"ec2\"\nsize = \"3GiB\"\n\n[os]\nsource = {{ tar = \"{tar}\" }}\n\n\
             [boot]\ncmdline = \"console=tty0\"\n\n[config]\nhostname = \"ec2\"\n\n\
             [targets.aws]\n\n\
             [targets.aws-vhd]\nhypervisor = \"aws\"\nformat = \"vhd\"\n\n\
             [targets.aws-raw]\nhypervisor = \"aws\"\nformat = \"raw\"\n"
        ),
    );
    let out = d.path().join("out");
    support::build_quiet(&recipe, &out);
    let (vmdk, vhd, raw) = (
        out.join("ec2-aws.vmdk"),
        out.join("ec2-aws-vhd.vhd"),
        out.join("ec2-aws-raw.raw"),
    );

    // Each file is the format it claims, as qemu-img reads it.
    let raw_info = info(&raw, None);
    assert_eq!(raw_info["format"], "raw", "{raw_info}");
    let size = raw_info["virtual-size"].as_u64().expect("virtual size");
    assert_eq!(size, 3 << 30, "{raw_info}");
    let vmdk_info = info(&vmdk, None);
    assert_eq!(vmdk_info["format"], "vmdk", "{vmdk_info}");
    assert_eq!(
        vmdk_info["format-specific"]["data"]["create-type"], "streamOptimized",
        "the default, and the only VMDK VM Import takes: {vmdk_info}"
    );
    assert_eq!(vmdk_info["virtual-size"], size, "{vmdk_info}");
    // A fixed VHD has its footer at the end only, so qemu-img does not
    // detect it: `-f vpc` (QEMU's name for VHD) reads the footer.
    let vhd_info = info(&vhd, Some("vpc"));
    assert_eq!(vhd_info["format"], "vpc", "{vhd_info}");
    assert_eq!(vhd_info["virtual-size"], size, "{vhd_info}");
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&vmdk),
    );

    // The same disk, byte for byte.
    for (image, format) in [(&vmdk, "vmdk"), (&vhd, "vpc")] {
        let out = run(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", format])
            .arg(&raw)
            .arg(image));
        assert!(
            out.status.success(),
            "{format} differs from the raw disk: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // EC2's boot, as the manifest records it for `imgbuild test`.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("JSON");
    for o in manifest["outputs"].as_array().expect("outputs") {
        assert_eq!(o["hypervisor"], "aws", "{o}");
        assert_eq!(
            o["firmware"],
            serde_json::json!(["bios", "uefi", "secure-boot"]),
            "{o}"
        );
    }
    let boot = manifest["boot"].as_array().expect("boot records");
    assert_eq!(boot.len(), 1, "the three targets share one disk: {boot:?}");
    let cmdline = boot[0]["cmdline"].as_str().expect("cmdline");
    assert!(
        cmdline.split(' ').any(|w| w == "console=ttyS0,115200n8"),
        "EC2's serial console: {cmdline}"
    );
}
