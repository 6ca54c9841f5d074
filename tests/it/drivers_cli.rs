//! The driver check through `imgbuild check` / `imgbuild build`: a small
//! synthetic rootfs (made at test time with `cpio -o -H newc`, `gzip` and
//! `tar`) whose initramfs lacks `hv_storvsc` fails for Hyper-V before
//! anything is written and passes for KVM; one lacking `nvme` in the
//! initramfs or `ena` fails for aws; the stock Debian cloud kernel
//! passes for kvm, hyperv and azure. Also: each target's loader entry on the
//! ESP carries its hypervisor profile's command line (Azure's serial console
//! and earlyprintk), read back from the written images with `mtype`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imgbuild::layout::gpt;
use imgbuild_formats::ReadAt;

use crate::support;
use crate::support::synthetic::{synthetic_rootfs, synthetic_rootfs_with, tools, VERSION};
use crate::support::{debian_tar, imgbuild, require_tool, run, run_ok, tempdir};

/// A recipe over the synthetic tree: its loader is a stand-in
/// systemd-boot (UEFI only, unsigned), so every target boots UEFI without
/// Secure Boot, and it has no systemd-repart, so the root does not grow.
fn recipe(dir: &Path, tar: &Path, targets: &str) -> PathBuf {
    // Beside the recipe: a recipe reads only inside its directory (issue 14).
    let tar = dir.join(support::beside(dir, tar));
    let targets = targets.replace("]\n", "]\nfirmware = \"uefi\"\nsecure_boot = false\n");
    let text = format!(
        "[image]\nname = \"synthetic\"\nsize = \"320MiB\"\nesp_size = \"64MiB\"\ngrow_root = false\n\n\
         [os]\nsource = {{ tar = \"{}\" }}\n\n\
         [boot]\ncmdline = \"quiet\"\nloader = \"systemd-boot\"\n\n\
         [config]\nhostname = \"synthetic\"\nnetwork = \"none\"\n\n{targets}",
        tar.display()
    );
    support::write_recipe(dir, "recipe.toml", &text)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn hyperv_without_storvsc_fails_check_and_build_before_writing() {
    if !tools() {
        return;
    }
    let d = tempdir();
    let tar = synthetic_rootfs(d.path(), false);
    let work = d.path().join("work");
    fs::create_dir(&work).expect("mkdir");
    let r = recipe(&work, &tar, "[targets.hyperv]\n");
    let before = names(&work);

    let out = run(imgbuild().current_dir(&work).arg("check").arg(&r));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for needle in ["hv_storvsc", "hyperv", VERSION, "initramfs"] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    }
    // hv_vmbus and sd_mod are built in: only storvsc is missing.
    assert!(!stderr.contains("hv_vmbus"), "{stderr}");
    assert!(!stderr.contains("sd_mod ("), "{stderr}");
    assert_eq!(
        names(&work),
        before,
        "check wrote into the current directory"
    );

    let dest = work.join("out");
    let out = run(imgbuild()
        .current_dir(&work)
        .arg("build")
        .arg(&r)
        .arg("-o")
        .arg(&dest)
        .arg("--quiet"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hv_storvsc"),
        "{}",
        text(&out)
    );
    assert!(!dest.exists(), "a failed build created {}", dest.display());
    // Only the output directory's lock file (it stays: removing it could
    // let two builds take two locks).
    let mut expected = before.clone();
    expected.insert(0, ".out.imgbuild.lock".to_string());
    assert_eq!(names(&work), expected, "a failed build left files behind");
}

#[test]
fn kvm_only_passes_check_on_the_same_kernel() {
    if !tools() {
        return;
    }
    let d = tempdir();
    let tar = synthetic_rootfs(d.path(), false);
    let r = recipe(d.path(), &tar, "[targets.kvm]\n");
    let out = run(imgbuild().arg("check").arg(&r));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(VERSION),
        "{}",
        text(&out)
    );
}

const NVME: &str = "kernel/drivers/nvme/host/nvme.ko";
const ENA: &str = "kernel/drivers/net/ethernet/amazon/ena/ena.ko";

/// One case of the aws check: its name, the modules in the initramfs (and
/// installed), those installed only, and the missing-module lines expected.
struct Case(
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// `imgbuild check` of an aws target over a synthetic kernel with `nvme`
/// and `ena` where the case puts them: the exit code and stderr.
fn check_aws(initramfs: &[&str], installed: &[&str]) -> (Option<i32>, String) {
    let d = tempdir();
    let tar = synthetic_rootfs_with(d.path(), initramfs, installed);
    let r = recipe(d.path(), &tar, "[targets.aws]\n");
    let out = run(imgbuild().arg("check").arg(&r));
    (out.status.code(), text(&out))
}

/// EC2 (issue 21): the root is on NVMe, so `nvme` must be built in or in
/// the initramfs; the network is ENA, so `ena` must be installed. A kernel
/// lacking either fails `check` naming the module, the aws target and the
/// kernel; with both it passes.
#[test]
fn aws_fails_check_without_nvme_in_the_initramfs_or_without_ena() {
    if !tools() {
        return;
    }
    const NVME_LINE: &str =
        "nvme (NVMe disk (EBS volumes)): neither built in (modules.builtin) nor in the initramfs";
    const ENA_LINE: &str = "ena (Elastic Network Adapter (ENA)): neither built in (modules.builtin) nor installed under /lib/modules";
    let header = format!("target aws, kernel {VERSION}: missing kernel modules:");
    // (case, modules in the initramfs, installed only, lines expected)
    let cases: [Case; 4] = [
        Case("neither", &[], &[], &[NVME_LINE, ENA_LINE]),
        // On disk but not in the initramfs: the root cannot be reached.
        Case("nvme installed only", &[], &[NVME, ENA], &[NVME_LINE]),
        Case("no ena", &[NVME], &[], &[ENA_LINE]),
        Case("both", &[NVME], &[ENA], &[]),
    ];
    for Case(case, initramfs, installed, missing) in cases {
        let (code, out) = check_aws(initramfs, installed);
        if missing.is_empty() {
            assert_eq!(code, Some(0), "{case}: {out}");
            continue;
        }
        assert_eq!(code, Some(1), "{case}: {out}");
        assert!(out.contains(&header), "{case}: {out}");
        for line in [NVME_LINE, ENA_LINE] {
            assert_eq!(
                out.contains(line),
                missing.contains(&line),
                "{case}: {line:?}\n{out}"
            );
        }
    }
}

/// The per-target findings `imgbuild check` can print say where each module
/// was found, matching how the synthetic tree was made.
#[test]
fn driver_findings_name_where_each_module_was_found() {
    if !tools() {
        return;
    }
    let d = tempdir();
    let tar = synthetic_rootfs(d.path(), true);
    let r = recipe(d.path(), &tar, "[targets.hyperv]\n\n[targets.kvm]\n");
    let plan = imgbuild::recipe::check(&r).expect("recipe resolves");
    let opts = imgbuild::pipeline::BuildOptions {
        out_dir: d.path().join("never-written"),
        cache_dir: d.path().join("cache"),
        temp_dir: None,
        refresh: false,
    };
    let prepared =
        imgbuild::pipeline::prepare(&plan, &opts, &imgbuild::progress::Silent).expect("prepare");
    assert_eq!(prepared.kernel_version, VERSION);
    let lines = prepared.driver_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let hyperv = lines
        .iter()
        .find(|l| l.starts_with("hyperv: "))
        .expect("hyperv line");
    let kvm = lines
        .iter()
        .find(|l| l.starts_with("kvm: "))
        .expect("kvm line");
    for want in [
        "hv_vmbus (builtin)",
        "hv_storvsc (initramfs+installed)",
        "sd_mod (builtin)",
        "hv_netvsc (installed)",
        "hyperv_keyboard (installed)",
        "hyperv_drm (installed)",
    ] {
        assert!(hyperv.contains(want), "{want:?} not in {hyperv}");
    }
    for want in [
        "virtio_pci (initramfs+installed)",
        "virtio_blk (initramfs+installed)",
        "virtio_ring (initramfs+installed, for virtio_pci)",
        "virtio_net (installed)",
    ] {
        assert!(kvm.contains(want), "{want:?} not in {kvm}");
    }
    assert!(!opts.out_dir.exists());
}

/// The loader entry (`loader/entries/*.conf`) of the ESP of `image`.
fn esp_entry(image: &Path, dir: &Path) -> String {
    let disk = imgbuild_formats::open(image, None).expect("open image");
    let parts = gpt::read_partitions(&*disk)
        .expect("read GPT")
        .expect("has a GPT");
    let esp = &parts[1];
    assert_eq!(esp.type_guid, gpt::types::ESP, "{parts:?}");
    let mut bytes = vec![0u8; usize::try_from(esp.end - esp.start).expect("fits")];
    disk.read_exact_at(&mut bytes, esp.start).expect("read ESP");
    let part = dir.join(format!(
        "{}.esp",
        image.file_name().expect("name").to_string_lossy()
    ));
    fs::write(&part, bytes).expect("write ESP");
    let out = run_ok(
        Command::new("mtype")
            .arg("-i")
            .arg(&part)
            .arg("::/loader/entries/synthetic.conf"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn options_line(entry: &str) -> Vec<String> {
    entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap_or_else(|| panic!("no options line in {entry}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn azure_entry_carries_its_profile_cmdline_and_kvm_does_not() {
    if !tools() || !require_tool("mtype") {
        return;
    }
    let d = tempdir();
    let tar = synthetic_rootfs(d.path(), true);
    let r = recipe(
        d.path(),
        &tar,
        "[targets.kvm]\n\n[targets.hyperv]\n\n[targets.azure]\n",
    );
    let out = d.path().join("out");
    support::build_quiet(&r, &out);
    let azure_words = imgbuild::Hypervisor::Azure.platform().cmdline;
    assert!(!azure_words.is_empty());
    let kvm = options_line(&esp_entry(&out.join("synthetic-kvm.qcow2"), d.path()));
    let hyperv = options_line(&esp_entry(&out.join("synthetic-hyperv.vhdx"), d.path()));
    let azure = options_line(&esp_entry(&out.join("synthetic-azure.vhd"), d.path()));
    assert!(kvm.iter().any(|w| w == "quiet"), "{kvm:?}");
    assert!(
        kvm.iter().any(|w| w.starts_with("root=PARTUUID=")),
        "{kvm:?}"
    );
    assert_eq!(kvm, hyperv, "kvm and hyperv boot the same way");
    for w in azure_words {
        assert!(azure.iter().any(|a| a == w), "{w} not in azure {azure:?}");
        assert!(!kvm.iter().any(|a| a == w), "{w} in kvm {kvm:?}");
    }
    // The profile's words come after the recipe's, as additions.
    assert_eq!(&azure[..kvm.len()], &kvm[..], "{azure:?}");
    assert_eq!(azure.len(), kvm.len() + azure_words.len(), "{azure:?}");
    // The manifest records each disk's command line as the ESP has it.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("JSON");
    let boot = manifest["boot"].as_array().expect("boot records");
    assert_eq!(boot.len(), 2, "kvm+hyperv share a disk, azure has its own");
    for (target, words) in [("kvm", &kvm), ("hyperv", &hyperv), ("azure", &azure)] {
        let record = boot
            .iter()
            .find(|b| b["targets"].as_array().unwrap().iter().any(|t| t == target))
            .unwrap_or_else(|| panic!("no boot record for {target}: {boot:?}"));
        let recorded: Vec<&str> = record["cmdline"].as_str().unwrap().split(' ').collect();
        assert_eq!(recorded, *words, "{target}");
        assert!(
            record["kernel"].as_str().unwrap().contains("vmlinuz"),
            "{record}"
        );
        assert_eq!(record["loader"], "systemd-boot", "{record}");
        assert_eq!(record["firmware"], serde_json::json!(["uefi"]), "{record}");
        let efi = record["efi"].as_array().unwrap();
        assert_eq!(efi[0]["path"], "/EFI/BOOT/BOOTX64.EFI", "{record}");
        assert_eq!(
            efi[0]["source"], "tree:/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            "{record}"
        );
        assert_eq!(efi[0]["signed"], false, "{record}");
    }
}

/// The stock Debian cloud kernel (scripts/debian-rootfs.sh) passes the
/// check for every hypervisor.
#[test]
fn debian_cloud_kernel_passes_check_for_kvm_hyperv_and_azure() {
    let Some(tar) = debian_tar() else { return };
    let d = tempdir();
    let r = d.path().join("recipe.toml");
    let tar = support::beside(d.path(), &tar);
    fs::write(
        &r,
        format!(
            "[image]\nname = \"deb\"\nsize = \"3GiB\"\n\n[os]\nsource = {{ tar = \"{tar}\" }}\n\n\
             [targets.kvm]\n\n[targets.hyperv]\n\n[targets.azure]\nformat = \"vhd\"\n",
        ),
    )
    .expect("write recipe");
    let out = run(imgbuild().current_dir(d.path()).arg("check").arg(&r));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cloud-amd64"), "{stdout}");
    assert!(stdout.contains("3 target(s)"), "{stdout}");
    assert_eq!(names(d.path()), vec![tar, "recipe.toml".to_string()]);
}
