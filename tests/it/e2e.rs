//! End to end: a recipe over a real Debian rootfs becomes a qcow2 for KVM and
//! a VHDX for Hyper-V; QEMU (TCG) boots each with its platform's default
//! firmware (the qcow2 with SeaBIOS, the VHDX with OVMF and Secure Boot) to
//! the recipe's hostname at the login prompt, with the recipe's unit's
//! output on the serial console; and the disk read back holds the
//! configuration.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::ext4::{debugfs, e2fsck_clean};
use crate::support::*;

const HELLO: &str = "IMGBUILD-E2E-HELLO";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGolden0000000000000000000000000000000000000 ops@example";

fn recipe(tar: &Path) -> String {
    format!(
        r##"[image]
name = "golden"
size = "3GiB"

[os]
source = {{ tar = "{tar}" }}

[boot]
cmdline = "console=ttyS0,115200"

[config]
hostname = "e2e-golden"
timezone = "UTC"

[[config.users]]
name = "ops"
groups = ["sudo"]
ssh_authorized_keys = ["{KEY}"]

[[config.users]]
name = "alice"
uid = 1500
shell = "/bin/sh"

[[config.files]]
path = "/etc/motd"
content = "built by imgbuild\n"

[[config.files]]
path = "/usr/local/bin/hello"
content = "#!/bin/sh\necho {HELLO} > /dev/ttyS0\n"
mode = "0755"

[[config.files]]
path = "/etc/systemd/system/hello.service"
content = "[Unit]\nDescription=imgbuild e2e\nAfter=systemd-user-sessions.service\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/hello\n[Install]\nWantedBy=multi-user.target\n"

[config.services]
enable = ["hello.service"]

[targets.kvm]

[targets.hyperv]
"##,
        tar = tar.display()
    )
}

/// Builds the recipe once for every test in this file.
fn built() -> Option<&'static PathBuf> {
    static OUT: OnceLock<Option<PathBuf>> = OnceLock::new();
    OUT.get_or_init(|| {
        let tar = debian_tar()?;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tar = PathBuf::from(beside(&dir, &tar));
        write_recipe(&dir, "recipe.toml", &recipe(&tar));
        run_ok(
            imgbuild()
                .arg("build")
                .arg(dir.join("recipe.toml"))
                .arg("-o")
                .arg(dir.join("out"))
                .arg("--quiet"),
        );
        Some(dir.join("out"))
    })
    .as_ref()
}

#[test]
fn qcow2_and_vhdx_boot_to_login_with_the_enabled_unit() {
    if !require_tool("qemu-system-x86_64") {
        return;
    }
    let Some(out) = built() else { return };
    let patterns = [HELLO, "e2e-golden login:"];
    let boots: Vec<_> = [
        ("golden-kvm.qcow2", "qcow2", qemu::Firmware::Bios),
        ("golden-hyperv.vhdx", "vhdx", qemu::Firmware::SecureBoot),
    ]
    .into_iter()
    .map(|(file, fmt, firmware)| {
        let image = out.join(file);
        std::thread::spawn(move || {
            (
                file,
                qemu::Boot::new(&image, fmt, firmware, &patterns).run(),
            )
        })
    })
    .collect();
    for b in boots {
        let (file, result) = b.join().unwrap();
        if let Err(log) = result {
            panic!("{file} did not boot to the login prompt with {HELLO}:\n{log}");
        }
    }
}

/// The root partition of an output, copied to a raw file for debugfs.
fn root_partition(image: &Path, dir: &Path) -> PathBuf {
    let img = imgbuild_formats::open(image, None).unwrap();
    let parts = imgbuild::layout::gpt::read_partitions(&*img)
        .unwrap()
        .unwrap();
    let root = parts
        .iter()
        .find(|p| p.type_name == "root-x86-64")
        .expect("a root partition");
    // Named for the image, so that a failure message says which.
    let name = image.file_name().expect("an image file").to_string_lossy();
    let out = dir.join(format!("{name}.root.ext4"));
    let f = std::fs::File::create(&out).unwrap();
    f.set_len(root.end - root.start).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for r in img.allocated().unwrap() {
        let (a, b) = (r.start.max(root.start), r.end.min(root.end));
        let mut at = a;
        while at < b {
            let n = ((b - at) as usize).min(buf.len());
            img.read_exact_at(&mut buf[..n], at).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &buf[..n], at - root.start).unwrap();
            at += n as u64;
        }
    }
    out
}

fn stat_field(stat: &str, field: &str) -> String {
    let at = stat
        .find(field)
        .unwrap_or_else(|| panic!("{field} not in\n{stat}"));
    stat[at + field.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_disk_read_back_holds_the_configuration() {
    if !require_tool("debugfs") || !require_tool("e2fsck") {
        return;
    }
    let Some(out) = built() else { return };
    let d = tempdir();
    for image in ["golden-kvm.qcow2", "golden-hyperv.vhdx"] {
        let root = root_partition(&out.join(image), d.path());
        e2fsck_clean(&root);

        let passwd = debugfs(&root, "cat /etc/passwd");
        let ops = passwd
            .lines()
            .find(|l| l.starts_with("ops:"))
            .expect("ops in /etc/passwd");
        let f: Vec<&str> = ops.split(':').collect();
        assert_eq!(
            (f[2], f[3], f[5], f[6]),
            ("1000", "1000", "/home/ops", "/bin/bash"),
            "{ops}"
        );
        assert!(
            passwd.contains("alice:x:1500:1500::/home/alice:/bin/sh"),
            "{passwd}"
        );
        let group = debugfs(&root, "cat /etc/group");
        let sudo = group.lines().find(|l| l.starts_with("sudo:")).unwrap();
        assert!(sudo.ends_with(":ops"), "{sudo}");
        assert!(group.lines().any(|l| l == "ops:x:1000:"), "{group}");
        let shadow = debugfs(&root, "cat /etc/shadow");
        let sh = shadow.lines().find(|l| l.starts_with("ops:")).unwrap();
        assert!(sh.starts_with("ops:*:"), "ops has no usable password: {sh}");
        assert!(debugfs(&root, "cat /etc/gshadow")
            .lines()
            .any(|l| l.starts_with("ops:")));
        let shadow_stat = debugfs(&root, "stat /etc/shadow");
        assert_eq!(stat_field(&shadow_stat, "Mode:"), "0640", "{shadow_stat}");

        let home = debugfs(&root, "stat /home/ops");
        assert_eq!(
            (stat_field(&home, "User:"), stat_field(&home, "Group:")),
            ("1000".into(), "1000".into())
        );
        let keys = debugfs(&root, "stat /home/ops/.ssh/authorized_keys");
        assert_eq!(stat_field(&keys, "Mode:"), "0600", "{keys}");
        assert_eq!(stat_field(&keys, "User:"), "1000");
        assert_eq!(
            debugfs(&root, "cat /home/ops/.ssh/authorized_keys"),
            format!("{KEY}\n")
        );

        let link = debugfs(
            &root,
            "stat /etc/systemd/system/multi-user.target.wants/hello.service",
        );
        assert!(link.contains("Type: symlink"), "{link}");
        assert!(link.contains("/etc/systemd/system/hello.service"), "{link}");

        let fstab = debugfs(&root, "cat /etc/fstab");
        let parts = imgbuild::layout::gpt::read_partitions(
            &*imgbuild_formats::open(&out.join(image), None).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert!(
            fstab.contains(&format!(
                "PARTUUID={}\t/\text4\trw,discard,errors=remount-ro,x-systemd.growfs\t",
                parts[2].guid
            )),
            "{fstab}"
        );
        assert!(
            fstab.contains(&format!("PARTUUID={}\t/boot/efi\tvfat", parts[1].guid)),
            "{fstab}"
        );
        assert!(
            debugfs(&root, "cat /etc/repart.d/50-imgbuild-root.conf")
                .contains("Type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709\n"),
            "the root grows on first boot"
        );

        let mid = debugfs(&root, "stat /etc/machine-id");
        assert_eq!(stat_field(&mid, "Size:"), "0", "{mid}");
        assert_eq!(debugfs(&root, "cat /etc/hostname"), "e2e-golden\n");
    }
}

#[test]
fn outputs_are_listed_in_sha256sums_and_verify_passes() {
    let Some(out) = built() else { return };
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let sha = Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(out)
        .output()
        .unwrap();
    assert!(
        sha.status.success(),
        "sha256sum -c:\n{}",
        String::from_utf8_lossy(&sha.stdout)
    );
    assert_eq!(sums.lines().count(), 2, "{sums}");
    run_ok(imgbuild().arg("verify").arg(out));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["kernel_version"]
        .as_str()
        .unwrap()
        .contains("cloud-amd64"));
    assert!(manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "systemd"));
    assert_eq!(manifest["outputs"].as_array().unwrap().len(), 2);
}
