//! The boot matrix (issue 10): the shipped recipes' outputs boot where their
//! platforms boot by default, under QEMU (TCG), to the recipe's hostname at
//! the login prompt, and the guest itself reports the firmware it saw.
//!
//! | output | SeaBIOS | OVMF | OVMF + Secure Boot (Microsoft keys) |
//! |---|---|---|---|
//! | `kvm.qcow2` (hybrid) | virtio | virtio | virtio |
//! | `hyperv.vhdx` (Gen2: UEFI + Secure Boot) | | virtio | virtio |
//! | `hyperv-gen1.vhdx` (Gen1: BIOS) | IDE | | |
//! | `azure.vhd` (Gen1 + Gen2; bookworm only) | IDE | | |
//! | `vmware.ova` (its VMDK in place; bookworm only) | PVSCSI | virtio (Debian's OVMF has no PVSCSI driver) | |
//! | `gce.tar.gz` (disk.raw unpacked; bookworm only) | | virtio-scsi | |
//! | `kubevirt.oci.tar` (its qcow2 in place; bookworm only) | virtio | | |
//!
//! for `recipes/debian-bookworm.toml` and `recipes/debian-trixie.toml`, each
//! built once (bootstrapped with mmdebstrap, cached) with one unit added: it
//! prints `IMGBUILD-REPORT firmware=<bios|uefi> secureboot=<the SecureBoot
//! EFI variable's value, or none> rootsize=<bytes>` on the serial console,
//! and powers the guest off when the SMBIOS serial number says
//! `imgbuild-poweroff`. And: an image enlarged to twice its size before
//! boot grows its root online on first boot (issue 10), clean by e2fsck.
//! Every boot is a snapshot: the built images never change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support;
use crate::support::qemu::{Boot, Bus, Firmware};
use crate::support::{require_tool, run, run_ok};

/// The guest's report: firmware, Secure Boot state, root filesystem size;
/// then a power-off when the host asked for one.
const REPORT: &str = r##"
[[config.files]]
path = "/usr/local/sbin/imgbuild-report"
mode = "0755"
content = """#!/bin/sh
var=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
sb=none
[ -e "$var" ] && sb=$(od -An -j4 -N1 -tu1 "$var" | tr -d ' ')
fw=bios
[ -d /sys/firmware/efi ] && fw=uefi
size=$(df -B1 --output=size / | tail -n 1 | tr -d ' ')
echo "IMGBUILD-REPORT firmware=$fw secureboot=$sb rootsize=$size" > /dev/ttyS0
if grep -qs imgbuild-poweroff /sys/class/dmi/id/product_serial; then
    systemctl --no-block poweroff
fi
"""

[[config.files]]
path = "/etc/systemd/system/imgbuild-report.service"
content = """[Unit]
Description=imgbuild boot report
After=local-fs.target systemd-growfs@-.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/imgbuild-report
[Install]
WantedBy=multi-user.target
"""

[[config.files]]
path = "/etc/systemd/system/multi-user.target.wants/imgbuild-report.service"
kind = "symlink"
target = "/etc/systemd/system/imgbuild-report.service"
"##;

/// A shipped recipe and what its guest calls itself.
struct Release {
    name: &'static str,
    hostname: &'static str,
}

const BOOKWORM: Release = Release {
    name: "bookworm",
    hostname: "bookworm",
};
const TRIXIE: Release = Release {
    name: "trixie",
    hostname: "trixie",
};

/// Builds `recipes/debian-<release>.toml` plus [`REPORT`] once per test
/// process; `None` when a tool is missing (a skip, recorded).
fn built(release: &Release) -> Option<PathBuf> {
    static BOOKWORM_OUT: OnceLock<Option<PathBuf>> = OnceLock::new();
    static TRIXIE_OUT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let cell = match release.name {
        "bookworm" => &BOOKWORM_OUT,
        _ => &TRIXIE_OUT,
    };
    cell.get_or_init(|| {
        if !require_tool("mmdebstrap") || !require_tool(support::qemu::QEMU) {
            return None;
        }
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("recipes/debian-{}.toml", release.name));
        let text = std::fs::read_to_string(&shipped).expect("shipped recipe");
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("boot-matrix-{}", release.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let recipe = dir.join("recipe.toml");
        std::fs::write(&recipe, format!("{text}\n{REPORT}")).expect("write recipe");
        let out = dir.join("out");
        support::build_quiet(&recipe, &out);
        Some(out)
    })
    .clone()
}

/// Boots `file` of `release` and checks the login prompt and the guest's report.
fn boots(release: &Release, file: &str, format: &str, firmware: Firmware, bus: Bus) {
    let Some(out) = built(release) else { return };
    let image = out.join(format!("debian-{}-{file}", release.name));
    let (fw, sb) = match firmware {
        Firmware::Bios => ("bios", "none"),
        Firmware::Uefi => ("uefi", "0"),
        Firmware::SecureBoot => ("uefi", "1"),
    };
    let report = format!("IMGBUILD-REPORT firmware={fw} secureboot={sb} ");
    let login = format!("{} login:", release.hostname);
    // A package is booted as its platform gets it: the VMDK inside the OVA
    // and the qcow2 inside the containerDisk's layer in place (where the
    // manifest says they lie), GCE's disk.raw unpacked from its tar.gz.
    let record = imgbuild::record::read_manifest(&out)
        .unwrap()
        .outputs
        .into_iter()
        .find(|o| out.join(&o.file) == image)
        .unwrap_or_else(|| panic!("{} is not in the manifest", image.display()));
    let unpacked = tempfile::tempdir().unwrap();
    let image = if record.package.as_deref() == Some("tar.gz") {
        let raw = unpacked.path().join("disk.raw");
        imgbuild::run::test::unpack_gce(&image, &raw).unwrap();
        raw
    } else {
        image
    };
    assert_eq!(record.format.name(), format);
    let member = record.member.as_ref().map(|m| (m.offset, m.size));
    assert_eq!(
        member.is_some(),
        record.package.is_some() && format != "raw"
    );
    let log = Boot::new(&image, format, firmware, &[&report, &login])
        .bus(bus)
        .member(member)
        .run()
        .unwrap_or_else(|e| panic!("{e}"));
    if firmware == Firmware::SecureBoot {
        // The kernel saw it too (Debian's lockdown patches).
        assert!(log.contains("secureboot: Secure boot enabled"), "{log}");
    }
}

macro_rules! matrix {
    ($release:ident, $($test:ident: $file:literal, $format:literal, $fw:ident, $bus:ident;)*) => {
        $(
            #[test]
            fn $test() {
                boots(&$release, $file, $format, Firmware::$fw, Bus::$bus);
            }
        )*
    };
}

matrix! { BOOKWORM,
    bookworm_kvm_qcow2_boots_with_seabios: "kvm.qcow2", "qcow2", Bios, Virtio;
    bookworm_hyperv_gen1_vhdx_boots_with_seabios_from_ide: "hyperv-gen1.vhdx", "vhdx", Bios, Ide;
    bookworm_azure_vhd_boots_with_seabios_from_ide: "azure.vhd", "vhd", Bios, Ide;
    bookworm_vmware_ova_boots_with_seabios_from_pvscsi: "vmware.ova", "vmdk", Bios, Pvscsi;
    bookworm_vmware_ova_boots_with_uefi: "vmware.ova", "vmdk", Uefi, Virtio;
    bookworm_gce_tar_gz_boots_with_uefi_from_virtio_scsi: "gce.tar.gz", "raw", Uefi, Scsi;
    bookworm_kubevirt_containerdisk_boots_with_seabios: "kubevirt.oci.tar", "qcow2", Bios, Virtio;
    bookworm_kvm_qcow2_boots_with_uefi: "kvm.qcow2", "qcow2", Uefi, Virtio;
    bookworm_hyperv_vhdx_boots_with_uefi: "hyperv.vhdx", "vhdx", Uefi, Virtio;
    bookworm_hyperv_vhdx_boots_with_secure_boot: "hyperv.vhdx", "vhdx", SecureBoot, Virtio;
    bookworm_kvm_qcow2_boots_with_secure_boot: "kvm.qcow2", "qcow2", SecureBoot, Virtio;
}

matrix! { TRIXIE,
    trixie_kvm_qcow2_boots_with_seabios: "kvm.qcow2", "qcow2", Bios, Virtio;
    trixie_hyperv_gen1_vhdx_boots_with_seabios_from_ide: "hyperv-gen1.vhdx", "vhdx", Bios, Ide;
    trixie_kvm_qcow2_boots_with_uefi: "kvm.qcow2", "qcow2", Uefi, Virtio;
    trixie_hyperv_vhdx_boots_with_uefi: "hyperv.vhdx", "vhdx", Uefi, Virtio;
    trixie_hyperv_vhdx_boots_with_secure_boot: "hyperv.vhdx", "vhdx", SecureBoot, Virtio;
    trixie_kvm_qcow2_boots_with_secure_boot: "kvm.qcow2", "qcow2", SecureBoot, Virtio;
}

/// The manifest says, per output, the firmware modes the matrix boots it
/// in, and records every EFI binary with its signature.
#[test]
fn manifest_records_each_output_s_firmware_and_signed_binaries() {
    for release in [&BOOKWORM, &TRIXIE] {
        let Some(out) = built(release) else { return };
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        let modes = |target: &str| {
            let o = m["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["target"] == target)
                .unwrap_or_else(|| panic!("no output {target}"));
            o["firmware"].clone()
        };
        let all = serde_json::json!(["bios", "uefi", "secure-boot"]);
        assert_eq!(modes("kvm"), all, "{}", release.name);
        assert_eq!(modes("azure"), all, "{}", release.name);
        assert_eq!(modes("hyperv"), serde_json::json!(["uefi", "secure-boot"]));
        assert_eq!(modes("hyperv-gen1"), serde_json::json!(["bios"]));
        if release.name == "bookworm" {
            for t in ["vmware", "gce", "kubevirt", "aws"] {
                assert_eq!(modes(t), all, "{t}");
            }
        }
        for b in m["boot"].as_array().unwrap() {
            assert_eq!(b["loader"], "grub");
            assert_eq!(b["kernel_signed"], true, "{b}");
            let efi = b["efi"].as_array().unwrap();
            if b["firmware"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "uefi")
            {
                let first = efi
                    .iter()
                    .find(|e| e["path"] == "/EFI/BOOT/BOOTX64.EFI")
                    .unwrap();
                assert_eq!(first["source"], "tree:/usr/lib/shim/shimx64.efi.signed");
                assert_eq!(first["microsoft_uefi_ca"], true, "{first}");
                assert!(efi.iter().all(|e| e["signed"] == true), "{b}");
            } else {
                assert!(efi.is_empty(), "{b}");
                assert!(b["bios"]["core_size"].as_u64().unwrap() > 0, "{b}");
            }
        }
    }
}

/// `qemu-img resize` to twice the size, then one boot (SeaBIOS, written to
/// a copy): the guest reports a root filesystem of about the new size, the
/// partition table is whole again (backup GPT at the new end), and after
/// the guest powers itself off e2fsck finds the grown filesystem clean.
#[test]
fn bookworm_root_grows_online_to_fill_a_disk_twice_the_size() {
    let Some(out) = built(&BOOKWORM) else { return };
    for tool in ["qemu-img", "e2fsck", "sgdisk"] {
        if !require_tool(tool) {
            return;
        }
    }
    let d = support::tempdir();
    let image = d.path().join("grow.qcow2");
    std::fs::copy(out.join("debian-bookworm-kvm.qcow2"), &image).unwrap();
    let before = imgbuild_formats::open(&image, None).unwrap().virtual_size();
    let after = 2 * before;
    run_ok(
        Command::new("qemu-img")
            .arg("resize")
            .arg(&image)
            .arg(after.to_string()),
    );

    let patterns = ["IMGBUILD-REPORT", "reboot: Power down"];
    let boot = Boot {
        snapshot: false,
        ..Boot::new(&image, "qcow2", Firmware::Bios, &patterns)
    };
    let log = boot.poweroff().run().unwrap_or_else(|e| panic!("{e}"));
    let line = log
        .lines()
        .find(|l| l.contains("IMGBUILD-REPORT"))
        .unwrap_or_else(|| panic!("no report in\n{log}"));
    let size: u64 = line
        .rsplit("rootsize=")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // The root partition now ends 1 MiB or less before the disk's end; ext4's
    // own metadata takes a few percent of it.
    let root_part = after - (257 << 20) - (1 << 20);
    assert!(
        size > root_part / 100 * 95 && size <= root_part,
        "root {size} bytes on a disk of {after}: {line}"
    );
    assert!(size > before, "it grew: {line}");

    let raw = d.path().join("grown.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&image)
            .arg(&raw),
    );
    let v = run(Command::new("sgdisk").arg("-v").arg(&raw));
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains("No problems found"),
        "sgdisk -v after growth:\n{text}"
    );
    let disk = imgbuild_formats::open(&raw, None).unwrap();
    let parts = imgbuild::layout::gpt::read_partitions(&*disk)
        .unwrap()
        .unwrap();
    let root = &parts[2];
    assert_eq!(root.type_name, "root-x86-64");
    assert!(
        root.end + (1 << 20) >= after - 33 * 512,
        "partition grew: {root:?}"
    );
    let fs = d.path().join("root.ext4");
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", fs.display()))
            .arg("bs=1M")
            .arg(format!("skip={}", root.start >> 20))
            .arg(format!("count={}", (root.end - root.start) >> 20))
            .arg("conv=sparse")
            .arg("status=none"),
    );
    // The grown root: a filesystem a kernel has mounted, grown and
    // unmounted, so e2fsck -fn must exit 0 (nothing to fix); unlike
    // `support::ext4::e2fsck_clean` for the filesystems we write, it may
    // print notes of a used filesystem.
    let fsck = run(Command::new("e2fsck").arg("-fn").arg(&fs));
    assert!(
        fsck.status.success(),
        "e2fsck -fn on the grown root:\n{}\n{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}

/// Issue 16: the shipped bookworm recipe installs from the host's archives
/// with -updates and -security, so its kernel is the candidate apt computes
/// from those same sources (fetched afresh into a scratch state directory),
/// and the manifest lists bookworm-security with a package taken from it.
#[test]
fn bookworm_image_carries_the_candidate_kernel_and_security_updates() {
    if !require_tool("apt-get") || !require_tool("apt-cache") {
        return;
    }
    let Some(out) = built(&BOOKWORM) else { return };
    let d = support::tempdir();
    let state = d.path().join("state");
    let cache = d.path().join("cache");
    std::fs::create_dir_all(state.join("lists/partial")).unwrap();
    std::fs::create_dir_all(cache.join("archives/partial")).unwrap();
    let apt = |tool: &str| {
        let mut c = Command::new(tool);
        c.arg("-o")
            .arg(format!("Dir::State={}", state.display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", cache.display()))
            .args(["-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]);
        c
    };
    run_ok(apt("apt-get").args(["update", "-qq"]));
    let policy = run_ok(apt("apt-cache").args(["policy", "linux-image-cloud-amd64"]));
    let policy = String::from_utf8_lossy(&policy.stdout).into_owned();
    let candidate = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .unwrap_or_else(|| panic!("no candidate in\n{policy}"))
        .to_string();

    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let packages = m["packages"].as_array().unwrap();
    let kernel = packages
        .iter()
        .find(|p| p["name"] == "linux-image-cloud-amd64")
        .expect("the kernel metapackage");
    assert_eq!(
        kernel["version"],
        candidate.as_str(),
        "the image's kernel is the host apt's candidate:\n{policy}"
    );
    let suites: Vec<&str> = m["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["suite"].as_str().unwrap())
        .collect();
    assert_eq!(
        suites,
        ["bookworm", "bookworm-updates", "bookworm-security"]
    );
    assert!(
        m["archives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["date"].is_string()),
        "{}",
        m["archives"]
    );
    let from_security: Vec<&str> = packages
        .iter()
        .filter(|p| p["archive"] == "bookworm-security")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        !from_security.is_empty(),
        "no package from bookworm-security"
    );
    eprintln!("from bookworm-security: {from_security:?}; kernel {candidate}");
}
