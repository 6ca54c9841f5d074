//! Recipe loading, resolution and diagnostics, asserted as the exact text a
//! person sees (just-style). Oracles: `sha256sum` for digests, GNU `tar` for
//! the tar fixture, the `jsonschema` crate for the schema.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::plan::{Content, EpochSource, NetworkPlan, OsPlan, Plan};
use imgbuild::recipe::{
    self, check_source, render_all, Environment, FileKind, Hypervisor, SourceMap,
};
use imgbuild_formats::Format;

use crate::support;
use crate::support::{require_tool, run_ok, tempdir};

/// The recipe file's display name in every diagnostic below.
const FILE: &str = "recipe.toml";

fn source_map(dir: &Path, text: &str) -> SourceMap {
    SourceMap {
        file: PathBuf::from(FILE),
        dir: dir.to_path_buf(),
        text: text.to_string(),
    }
}

/// Loads and resolves `text` as if it were `dir/recipe.toml`.
fn check_in(dir: &Path, text: &str, env: &Environment) -> Result<Plan, String> {
    check_source(&source_map(dir, text), env).map_err(|d| render_all(&d))
}

fn errors_in(dir: &Path, text: &str) -> String {
    match check_in(dir, text, &Environment::default()) {
        Ok(plan) => panic!("expected errors, got a plan: {plan:#?}"),
        Err(text) => text,
    }
}

fn errors(text: &str) -> String {
    errors_in(Path::new("/nonexistent-recipe-dir"), text)
}

/// A small valid recipe (mmdebstrap: no input files), with `extra` appended.
fn minimal(extra: &str) -> String {
    format!(
        "[image]\nname = \"golden\"\nsize = \"4GiB\"\n\n[os]\nsource = {{ mmdebstrap = \"bookworm\" }}\n\n[targets.kvm]\n{extra}"
    )
}

fn sha256sum(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string()
}

#[test]
fn unknown_key_suggests_the_closest_and_lists_valid_keys() {
    let text = minimal("\n[config]\nhostnme = \"golden\"\n");
    assert_eq!(
        errors(&text),
        r#"error: unknown key `hostnme` in `config`
  --> recipe.toml:11:1
   |
11 | hostnme = "golden"
   | ^^^^^^^
   |
   = help: did you mean `hostname`?
           valid keys: `hostname`, `timezone`, `locale`, `users`, `files`, `services`, `network`, `cloud_init`
"#
    );
}

#[test]
fn size_as_an_integer_says_a_string_with_a_unit_is_expected() {
    let text = minimal("").replace("size = \"4GiB\"", "size = 4");
    assert_eq!(
        errors(&text),
        r#"error: wrong type for `image.size`: expected a string, found integer `4`
 --> recipe.toml:3:8
  |
3 | size = 4
  |        ^
  |
  = help: write sizes as strings with a binary unit, like "4GiB" (units: KiB, MiB, GiB, TiB)
"#
    );
}

#[test]
fn size_with_a_decimal_unit_lists_the_valid_units() {
    let text = minimal("").replace("4GiB", "4GB");
    assert_eq!(
        errors(&text),
        r#"error: invalid size `4GB` for `image.size`
 --> recipe.toml:3:8
  |
3 | size = "4GB"
  |        ^^^^^
  |
  = help: valid units: KiB, MiB, GiB, TiB (K, M, G, T mean the same; none or B means bytes), like "4GiB"
"#
    );
}

#[test]
fn mode_with_a_non_octal_digit_is_rejected() {
    let text =
        minimal("\n[[config.files]]\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\nmode = \"0999\"\n");
    assert_eq!(
        errors(&text),
        r#"error: invalid mode `0999`
  --> recipe.toml:13:8
   |
13 | mode = "0999"
   |        ^^^^^^
   |
   = help: modes are octal: digits 0-7, up to "7777", like "0644" or "0755"
"#
    );
}

#[test]
fn missing_tar_and_file_source_are_reported_at_their_values() {
    let dir = tempdir();
    let text = "[image]\nname = \"g\"\nsize = \"1GiB\"\n[os]\nsource = { tar = \"rootfs.tar\" }\n[[config.files]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\n[targets.kvm]\n";
    let d = dir.path().display();
    assert_eq!(
        errors_in(dir.path(), text),
        format!(
            r#"error: cannot read `rootfs.tar`: no such file
 --> recipe.toml:5:18
  |
5 | source = {{ tar = "rootfs.tar" }}
  |                  ^^^^^^^^^^^^
  |
  = help: paths are relative to the recipe's directory; this one is {d}/rootfs.tar

error: cannot read `files/motd`: no such file
 --> recipe.toml:8:10
  |
8 | source = "files/motd"
  |          ^^^^^^^^^^^^
  |
  = help: paths are relative to the recipe's directory; this one is {d}/files/motd
"#
        )
    );
}

#[test]
fn sha256_mismatch_names_expected_and_found() {
    if !require_tool("sha256sum") {
        return;
    }
    // Small inputs are hashed while resolving; large ones on threads, the
    // pin checked when their SHA-256 is done: the same diagnostic either way.
    for len in [22, 17 << 20] {
        let dir = tempdir();
        let mut content = b"not the tar you pinned".to_vec();
        content.resize(len, 7);
        std::fs::write(dir.path().join("rootfs.tar"), &content).expect("write");
        let found = sha256sum(&dir.path().join("rootfs.tar"));
        let want = "0".repeat(64);
        let text = format!("[image]\nname = \"g\"\nsize = \"1GiB\"\n[os]\nsource = {{ tar = \"rootfs.tar\", sha256 = \"{want}\" }}\n[targets.kvm]\n");
        assert_eq!(
            errors_in(dir.path(), &text),
            format!(
                r#"error: sha256 mismatch for `rootfs.tar`
 --> recipe.toml:5:41
  |
5 | source = {{ tar = "rootfs.tar", sha256 = "{want}" }}
  |                                         {carets}
  |
  = help: expected {want}
             found {found}
          the file changed, or the recipe's digest is stale
"#,
                carets = "^".repeat(66)
            ),
            "{len} bytes"
        );
    }
}

#[test]
fn build_with_a_stale_pin_on_a_large_tar_fails_as_a_recipe_error_and_writes_nothing() {
    // The OS tar is read while its SHA-256 runs on another thread; this one
    // is not even a tar, but the stale pin is the cause worth reporting.
    let dir = tempdir();
    std::fs::write(dir.path().join("rootfs.tar"), vec![1u8; 17 << 20]).expect("write");
    let text = format!(
        "[image]\nname = \"g\"\nsize = \"1GiB\"\n[os]\nsource = {{ tar = \"rootfs.tar\", sha256 = \"{}\" }}\n[targets.kvm]\n",
        "0".repeat(64)
    );
    std::fs::write(dir.path().join("recipe.toml"), text).expect("write");
    let out_dir = dir.path().join("out");
    let out = support::imgbuild()
        .arg("build")
        .arg(dir.path().join("recipe.toml"))
        .arg("-o")
        .arg(&out_dir)
        .arg("--quiet")
        .output()
        .expect("run imgbuild");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: sha256 mismatch for `rootfs.tar`"),
        "{stderr}"
    );
    assert!(stderr.contains("recipe.toml:5:41"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing written: {left:?}");
}

#[test]
fn unknown_target_format_suggests_a_known_one() {
    let text = minimal("format = \"qcow\"\n");
    assert_eq!(
        errors(&text),
        r#"error: unknown value `qcow` for `targets.kvm.format`
 --> recipe.toml:9:10
  |
9 | format = "qcow"
  |          ^^^^^^
  |
  = help: did you mean `qcow2`?
          valid values: `qcow2`, `vhdx`, `vhd`, `raw`, `vmdk`, `ova`, `tar.gz`, `oci-archive`
"#
    );
}

#[test]
fn errors_of_loading_and_resolving_are_reported_together() {
    let text = r#"[image]
name = "golden"
size = "4GB"
colour = "blue"

[os]
source = { mmdebstrap = "bookworm", sha265 = "x" }

[config]
hostname = "-bad-"
network = 5

[[config.files]]
path = "etc/motd"
content = "hi"
mode = "0999"

[targets.kvm]
format = "vhdx"
cluster_size = "64KiB"

[targets.hyperv]
format = "qcow3"
"#;
    let out = errors(text);
    let heads: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        heads,
        [
            "error: invalid size `4GB` for `image.size`",
            "error: unknown key `colour` in `image`",
            "error: unknown key `sha265` in `os.source`",
            "error: invalid hostname `-bad-`",
            r#"error: wrong type for `config.network`: expected "dhcp", "none" or a table like { dhcp = true }, found integer `5`"#,
            "error: invalid file path `etc/motd`",
            "error: invalid mode `0999`",
            "error: `cluster_size` applies only to qcow2 targets",
            "error: unknown value `qcow3` for `targets.hyperv.format`",
        ],
        "{out}"
    );
    let places: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("--> "))
        .map(str::trim)
        .collect();
    assert_eq!(
        places,
        [
            "--> recipe.toml:3:8",
            "--> recipe.toml:4:1",
            "--> recipe.toml:7:37",
            "--> recipe.toml:10:12",
            "--> recipe.toml:11:11",
            "--> recipe.toml:14:8",
            "--> recipe.toml:16:8",
            "--> recipe.toml:20:16",
            "--> recipe.toml:23:10",
        ]
    );
}

#[test]
fn a_missing_section_does_not_hide_other_errors() {
    let text = "[image]\nname = \"g\"\n\n[targets.kvm]\nformat = \"qcow3\"\n";
    let out = errors(text);
    let heads: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        heads,
        [
            "error: missing key `size` in `image`",
            "error: missing key `os` at the top level",
            "error: unknown value `qcow3` for `targets.kvm.format`"
        ],
        "{out}"
    );
}

#[test]
fn invalid_toml_is_reported_with_its_place() {
    let out = errors("[image\nname = \"g\"\n");
    assert!(out.starts_with("error: invalid TOML: "), "{out}");
    assert!(out.contains(" --> recipe.toml:1:"), "{out}");
}

#[test]
fn a_full_recipe_resolves_to_the_expected_plan() {
    if !require_tool("tar") || !require_tool("sha256sum") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir_all(d.join("files")).expect("mkdir");
    std::fs::write(d.join("files/issue"), "Welcome\n").expect("write");
    std::fs::write(d.join("files/user-data"), "#cloud-config\n{}\n").expect("write");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(d.join("rootfs.tar"))
            .arg("-C")
            .arg(d)
            .arg("files"),
    );
    let tar_sha = sha256sum(&d.join("rootfs.tar"));
    let text = format!(
        r#"[image]
name = "golden"
size = "4GiB"
epoch = 1234567890
esp_size = "128MiB"
root_label = "rootfs"

[os]
source = {{ tar = "rootfs.tar", sha256 = "{}" }}

[boot]
cmdline = "console=tty0"

[config]
hostname = "golden"
timezone = "Europe/Paris"
locale = "C.UTF-8"
network = {{ dhcp = false }}
cloud_init = {{ user_data_file = "files/user-data" }}

[[config.users]]
name = "ops"
groups = ["sudo"]
ssh_authorized_keys = ["ssh-ed25519 AAAA ops"]
uid = 1001

[[config.files]]
path = "/etc/issue"
source = "files/issue"
mode = "0600"

[[config.files]]
path = "/etc/ssh/sshd_config.d"
kind = "dir"

[[config.files]]
path = "/etc/localtime.link"
kind = "symlink"
target = "/usr/share/zoneinfo/UTC"

[config.services]
enable = ["ssh", "systemd-networkd.service"]
mask = ["apt-daily.timer"]

[targets.kvm]
cluster_size = "2MiB"
compress = "zstd"
cmdline = "console=ttyS0"

[targets.hyperv]
block_size = "32MiB"
subformat = "fixed"

[targets.azure]

[targets.local]
hypervisor = "kvm"
format = "raw"
"#,
        tar_sha.to_uppercase()
    );
    let plan = check_in(
        d,
        &text,
        &Environment {
            source_date_epoch: Some("99".into()),
            ..Environment::default()
        },
    )
    .expect("valid recipe");
    assert_eq!((plan.name.as_str(), plan.size), ("golden", 4 << 30));
    assert_eq!(
        (plan.epoch, plan.epoch_source),
        (1234567890, EpochSource::Recipe)
    );
    assert_eq!(
        (plan.layout.esp_size, plan.layout.root_label.as_str()),
        (128 << 20, "rootfs")
    );
    match &plan.os {
        OsPlan::Tar { path, sha256, .. } => {
            assert_eq!(path, &d.join("rootfs.tar"));
            assert_eq!(sha256, &tar_sha);
        }
        other => panic!("expected a tar source, got {other:?}"),
    }
    // The OS tar's read also maps its zero sectors (for ext4 holes); no
    // other input needs that.
    for input in &plan.inputs {
        assert_eq!(
            input.zeros.is_some(),
            input.role == "os.source.tar",
            "{}",
            input.role
        );
    }
    assert_eq!(plan.config.network, NetworkPlan::None);
    assert_eq!(plan.config.timezone.as_deref(), Some("Europe/Paris"));
    let user = &plan.config.users[0];
    assert_eq!((user.name.as_str(), user.uid), ("ops", Some(1001)));
    assert_eq!(user.groups, ["sudo"]);
    // Unset: the tree step picks defaults from what the tree has.
    assert_eq!(
        (&user.home, &user.shell, &user.password_hash),
        (&None, &None, &None)
    );
    let spec = user.to_spec();
    assert_eq!(
        (spec.name.as_str(), spec.uid, spec.ssh_authorized_keys.len()),
        ("ops", Some(1001), 1)
    );
    let files = &plan.config.files;
    assert_eq!((files[0].kind, files[0].mode), (FileKind::File, 0o600));
    let Some(Content::File(i)) = files[0].content else {
        panic!("issue comes from a file: {:?}", files[0])
    };
    assert_eq!(plan.inputs[i].sha256, sha256sum(&d.join("files/issue")));
    assert_eq!(plan.inputs[i].path, d.join("files/issue"));
    let spec = files[0].to_spec(&plan.inputs).expect("source readable");
    assert!(
        matches!(
            spec.kind,
            imgbuild::tree::config::FileKind::File(imgbuild::tree::FileData::Source { len: 8, .. })
        ),
        "the file's bytes are referenced, not copied: {:?}",
        spec.kind
    );
    assert_eq!(spec.mode, Some(0o600));
    assert_eq!((files[1].kind, files[1].mode), (FileKind::Dir, 0o755));
    assert_eq!(
        (files[2].kind, files[2].target.as_deref()),
        (FileKind::Symlink, Some("/usr/share/zoneinfo/UTC"))
    );
    assert_eq!(
        plan.config.services.enable,
        ["ssh.service", "systemd-networkd.service"]
    );
    assert_eq!(plan.config.services.mask, ["apt-daily.timer"]);
    let ci = plan.config.cloud_init.as_ref().expect("cloud-init seed");
    assert_eq!(
        ci.meta_data,
        Content::Inline("instance-id: iid-golden\nlocal-hostname: golden\n".into())
    );
    assert!(matches!(ci.user_data, Content::File(_)));
    let nocloud = ci.to_nocloud(&plan.inputs).expect("seed files readable");
    assert_eq!(nocloud.user_data, "#cloud-config\n{}\n");
    assert_eq!(nocloud.network_config, None);
    let targets: Vec<(&str, &str, Format, Hypervisor, &str)> = plan
        .targets
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.output.as_str(),
                t.format,
                t.hypervisor,
                t.cmdline.as_str(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            (
                "azure",
                "golden-azure.vhd",
                Format::Vhd,
                Hypervisor::Azure,
                "console=tty0"
            ),
            (
                "hyperv",
                "golden-hyperv.vhdx",
                Format::Vhdx,
                Hypervisor::Hyperv,
                "console=tty0"
            ),
            (
                "kvm",
                "golden-kvm.qcow2",
                Format::Qcow2,
                Hypervisor::Kvm,
                "console=tty0 console=ttyS0"
            ),
            (
                "local",
                "golden-local.raw",
                Format::Raw,
                Hypervisor::Kvm,
                "console=tty0"
            ),
        ]
    );
    let kvm = &plan.targets[2];
    assert_eq!(
        (kvm.cluster_size, kvm.compression),
        (Some(2 << 20), Some(imgbuild_formats::Compression::Zstd))
    );
    let hyperv = &plan.targets[1];
    assert_eq!(
        (hyperv.block_size, hyperv.subformat),
        (Some(32 << 20), Some(imgbuild_formats::Subformat::Fixed))
    );
    // The plan serializes (manifest.json) without machine-specific paths.
    let json = serde_json::to_string(&plan).expect("plan serializes");
    assert!(!json.contains(&d.display().to_string()), "{json}");
    assert!(json.contains(&tar_sha));
}

#[test]
fn epoch_comes_from_the_recipe_then_source_date_epoch_then_the_default() {
    let dir = Path::new("/nonexistent-recipe-dir");
    let sde = |v: &str| Environment {
        source_date_epoch: Some(v.into()),
        ..Environment::default()
    };
    let with_epoch = minimal("").replace("size = \"4GiB\"", "size = \"4GiB\"\nepoch = 5");
    let plan = check_in(dir, &with_epoch, &sde("7")).expect("valid");
    assert_eq!((plan.epoch, plan.epoch_source), (5, EpochSource::Recipe));
    let plan = check_in(dir, &minimal(""), &sde("7")).expect("valid");
    assert_eq!(
        (plan.epoch, plan.epoch_source),
        (7, EpochSource::SourceDateEpoch)
    );
    let plan = check_in(dir, &minimal(""), &Environment::default()).expect("valid");
    assert_eq!(
        (plan.epoch, plan.epoch_source),
        (recipe::DEFAULT_EPOCH, EpochSource::Default)
    );
    let err = check_in(dir, &minimal(""), &sde("yesterday")).expect_err("bad SOURCE_DATE_EPOCH");
    assert_eq!(
        err,
        "error: SOURCE_DATE_EPOCH=`yesterday` is not a number of seconds from 0 to 4294967295\n --> recipe.toml\n  = help: unset it, fix it, or set [image] epoch in the recipe\n"
    );
}

#[test]
fn seed_follows_the_recipe_and_its_inputs_unless_given() {
    let dir = tempdir();
    let d = dir.path();
    let text = "[image]\nname = \"g\"\nsize = \"1GiB\"\n[os]\nsource = { tar = \"r.tar\" }\n[targets.kvm]\n";
    let env = Environment::default();
    std::fs::write(d.join("r.tar"), b"one").expect("write");
    let first = check_in(d, text, &env).expect("valid").seed;
    assert_eq!(
        check_in(d, text, &env).expect("valid").seed,
        first,
        "same inputs, same seed"
    );
    std::fs::write(d.join("r.tar"), b"two").expect("write");
    let second = check_in(d, text, &env).expect("valid").seed;
    assert_ne!(second, first, "the tar's digest enters the seed");
    let pinned = text.replace("size = \"1GiB\"", "size = \"1GiB\"\nseed = \"fixed\"");
    let a = check_in(d, &pinned, &env).expect("valid").seed;
    std::fs::write(d.join("r.tar"), b"three").expect("write");
    assert_eq!(
        check_in(d, &pinned, &env).expect("valid").seed,
        a,
        "image.seed pins the seed"
    );
}

#[test]
fn shipped_mmdebstrap_recipes_resolve_with_each_platform_s_firmware() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (release, suite) in [("bookworm", "bookworm"), ("trixie", "trixie")] {
        let path = root.join(format!("recipes/debian-{release}.toml"));
        let plan = recipe::check(&path).expect("shipped recipe is valid");
        let targets: Vec<(&str, &str, bool)> = plan
            .targets
            .iter()
            .map(|t| (t.output.as_str(), t.firmware.name(), t.secure_boot))
            .collect();
        let name = |ext: &str| format!("debian-{release}-{ext}");
        let mut want = vec![
            (name("azure.vhd"), "hybrid", true),
            (name("hyperv.vhdx"), "uefi", true),
            (name("hyperv-gen1.vhdx"), "bios", false),
            (name("kvm.qcow2"), "hybrid", false),
        ];
        if release == "bookworm" {
            // Every platform (issue 12).
            want.insert(1, (name("gce.tar.gz"), "hybrid", false));
            want.insert(4, (name("kubevirt.oci.tar"), "hybrid", false));
            want.push((name("vmware.ova"), "hybrid", false));
            // Amazon EC2 (issue 21): BIOS and UEFI, Secure Boot off by default.
            want.insert(0, (name("aws.vmdk"), "hybrid", false));
        }
        let want: Vec<(&str, &str, bool)> =
            want.iter().map(|(n, f, s)| (n.as_str(), *f, *s)).collect();
        assert_eq!(targets, want, "{release}");
        assert_eq!(plan.boot.loader, recipe::Loader::Grub);
        assert!(plan.layout.grow_root);
        let OsPlan::Mmdebstrap {
            suite: s, packages, ..
        } = &plan.os
        else {
            panic!("mmdebstrap source: {:?}", plan.os)
        };
        assert_eq!(s, suite);
        for p in [
            "openssh-server",
            "grub-pc-bin",
            "grub-efi-amd64-signed",
            "shim-signed",
        ] {
            assert!(packages.iter().any(|x| x == p), "{release}: {p}");
        }
    }
}

/// Every platform (issue 12): vmware, gce and kubevirt imply their
/// hypervisor and their package, the OVA takes the recipe's CPUs and memory
/// and the target's firmware, the disk inside takes its format's options.
#[test]
fn vmware_gce_and_kubevirt_targets_resolve_to_their_packages() {
    use imgbuild_formats::package::{OvfController, OvfSettings, Package};
    use imgbuild_formats::Format;
    let text = minimal(
        "
[targets.vmware]
cpus = 4
memory = \"8GiB\"

[targets.vmware-bios]
hypervisor = \"vmware\"
firmware = \"bios\"

[targets.gce]

[targets.kubevirt]
compress = \"zstd\"

[targets.workstation]
hypervisor = \"vmware\"
format = \"vmdk\"
subformat = \"monolithicSparse\"
",
    );
    let plan = check_in(Path::new("/nonexistent"), &text, &Environment::default()).unwrap();
    let t = |name: &str| plan.targets.iter().find(|t| t.name == name).unwrap();
    let ova = |cpus, memory_mib, efi| {
        Some(Package::Ova(OvfSettings {
            name: "golden".into(),
            cpus,
            memory_mib,
            efi,
            secure_boot: false,
            controller: OvfController::Pvscsi,
        }))
    };
    assert_eq!(t("vmware").output, "golden-vmware.ova");
    assert_eq!(t("vmware").format, Format::Vmdk);
    assert_eq!(t("vmware").package, ova(4, 8192, true));
    assert_eq!(t("vmware").hypervisor, Hypervisor::Vmware);
    assert_eq!(t("vmware-bios").package, ova(2, 2048, false));
    assert_eq!(t("vmware-bios").output_stem(), "golden-vmware-bios");
    assert_eq!(t("gce").output, "golden-gce.tar.gz");
    assert_eq!(t("gce").format, Format::Raw);
    assert_eq!(t("gce").package, Some(Package::GceTarGz));
    assert_eq!(t("kubevirt").output, "golden-kubevirt.oci.tar");
    assert_eq!(t("kubevirt").format, Format::Qcow2);
    assert_eq!(t("kubevirt").package, Some(Package::OciArchive));
    assert_eq!(
        t("kubevirt").compression,
        Some(imgbuild_formats::Compression::Zstd)
    );
    assert_eq!(t("workstation").output, "golden-workstation.vmdk");
    assert_eq!(t("workstation").package, None);
    assert_eq!(
        t("workstation").write_options(&plan.seed).vmdk_subformat,
        imgbuild_formats::VmdkSubformat::MonolithicSparse
    );
    assert_eq!(
        t("vmware").write_options(&plan.seed).vmdk_subformat,
        imgbuild_formats::VmdkSubformat::StreamOptimized
    );
    for name in ["vmware", "gce", "kubevirt"] {
        assert_eq!(t(name).firmware.name(), "hybrid", "{name}");
        assert!(!t(name).secure_boot, "{name}");
    }
}

/// Amazon EC2 (issue 21): a streamOptimized VMDK by default, VHD and raw
/// on request, both firmware modes from one disk, Secure Boot off (EC2
/// starts an AMI without `--uefi-data` in Setup Mode).
#[test]
fn aws_target_defaults_to_a_stream_optimized_vmdk_booting_bios_and_uefi() {
    use imgbuild_formats::Format;
    let text = minimal(
        "
[targets.aws]

[targets.ec2-vhd]
hypervisor = \"aws\"
format = \"vhd\"

[targets.ec2-raw]
hypervisor = \"aws\"
format = \"raw\"
",
    );
    let plan = check_in(Path::new("/nonexistent"), &text, &Environment::default()).unwrap();
    let t = |name: &str| plan.targets.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t("aws").output, "golden-aws.vmdk");
    assert_eq!(t("aws").format, Format::Vmdk);
    assert_eq!(t("aws").package, None);
    assert_eq!(
        t("aws").write_options(&plan.seed).vmdk_subformat,
        imgbuild_formats::VmdkSubformat::StreamOptimized
    );
    assert_eq!(t("ec2-vhd").output, "golden-ec2-vhd.vhd");
    assert_eq!(t("ec2-raw").output, "golden-ec2-raw.raw");
    for name in ["aws", "ec2-vhd", "ec2-raw"] {
        assert_eq!(t(name).hypervisor, Hypervisor::Aws, "{name}");
        assert_eq!(t(name).firmware.name(), "hybrid", "{name}");
        assert!(!t(name).secure_boot, "{name}");
    }
}

/// The formats EC2 does not import, and a VMDK that is not
/// streamOptimized, fail `check` at the recipe's key.
#[test]
fn aws_refuses_formats_ec2_does_not_import() {
    for format in ["qcow2", "vhdx", "ova", "tar.gz", "oci-archive"] {
        let e = errors(&minimal(&format!(
            "\n[targets.aws]\nformat = \"{format}\"\n"
        )));
        assert!(
            e.contains("EC2 imports (import-snapshot, import-image) streamOptimized VMDK, VHD and raw disks only"),
            "{format}: {e}"
        );
        assert!(e.contains("recipe.toml:11:10"), "{format}: {e}");
        assert!(
            e.contains("use format = \"vmdk\" (the default), \"vhd\" or \"raw\""),
            "{format}: {e}"
        );
    }
    let e = errors(&minimal(
        "\n[targets.aws]\nformat = \"vmdk\"\nsubformat = \"monolithicSparse\"\n",
    ));
    assert!(
        e.contains("EC2 imports a VMDK only as streamOptimized"),
        "{e}"
    );
    assert!(e.contains("recipe.toml:12:13"), "{e}");
}

/// What the new platforms refuse, each at its place in the recipe.
#[test]
fn platform_package_mistakes_are_reported_where_they_are() {
    let e = errors(&minimal(
        "cpus = 2
",
    ));
    assert!(e.contains("`cpus` applies only to ova targets"), "{e}");
    assert!(e.contains("recipe.toml:9:8"), "{e}");
    let e = errors(&minimal(
        "
[targets.vmware]
memory = \"1000KiB\"
cpus = 0
",
    ));
    assert!(e.contains("is not a whole number of MiB"), "{e}");
    assert!(e.contains("cpus = 0 is not from 1 to 768"), "{e}");
    let e = errors(&minimal(
        "\n[targets.vmware]\nsubformat = \"monolithicSparse\"\n",
    ));
    assert!(e.contains("an OVA carries a streamOptimized VMDK"), "{e}");
    let e = errors(&minimal("subformat = \"fixed\"\n"));
    assert!(
        e.contains("`subformat` applies only to vhdx and vmdk targets"),
        "{e}"
    );
    let e = errors(&minimal(
        "\n[targets.hyperv]\nsubformat = \"streamOptimized\"\n",
    ));
    assert!(
        e.contains("subformat does not apply to this target's format (vhdx)"),
        "{e}"
    );
    let e = errors(&minimal(
        "
[targets.vmware]
block_size = \"2MiB\"
",
    ));
    assert!(
        e.contains("`block_size` applies only to vhdx targets"),
        "{e}"
    );
    let text = minimal(
        "
[targets.gce]
",
    )
    .replace("size = \"4GiB\"", "size = \"3584MiB\"");
    let e = errors(&text);
    assert!(e.contains("image size 3758096384 is not whole GiB"), "{e}");
    assert!(e.contains("recipe.toml:3:8"), "{e}");
    // Azure: the VHD's virtual size must be whole MiB; an odd size is refused where it is written.
    let text = minimal(
        "
[targets.azure]
",
    )
    .replace("size = \"4GiB\"", "size = \"4194305KiB\"");
    let e = errors(&text);
    assert!(e.contains("image size 4294968320 is not whole MiB"), "{e}");
    assert!(
        e.contains("Azure requires the virtual size to be a whole number of MiB"),
        "{e}"
    );
    assert!(e.contains("recipe.toml:3:8"), "{e}");
    let long = format!("name = \"{}\"", "n".repeat(81));
    let e = errors(&minimal("\n[targets.kubevirt]\n").replace("name = \"golden\"", &long));
    assert!(
        e.contains("is too long to name the members of a oci-archive package"),
        "{e}"
    );
    assert!(e.contains("at most 89 bytes"), "{e}");
    let e = errors(&minimal(
        "
[targets.gce]
format = \"qcow2\"
",
    ));
    assert!(
        e.contains("Compute Engine imports a raw disk in a tar.gz"),
        "{e}"
    );
    let e = errors(&minimal(
        "
[targets.esxi]
",
    ));
    assert!(
        e.contains("\"vmware\", \"gce\", \"kubevirt\""),
        "the help lists every hypervisor: {e}"
    );
}

/// Each platform's firmware by default (issue 10): KVM hosts boot SeaBIOS
/// or OVMF, Hyper-V Generation 2 UEFI with Secure Boot, Generation 1 BIOS,
/// Azure both generations with Trusted Launch's Secure Boot.
#[test]
fn firmware_defaults_follow_the_platform_and_the_recipe_overrides_them() {
    let text = minimal(
        "
[targets.hyperv]

[targets.hyperv-gen1]

[targets.azure]

[targets.uefi-only]
hypervisor = \"kvm\"
firmware = \"uefi\"

[targets.sb]
hypervisor = \"kvm\"
secure_boot = true
",
    );
    let plan = check_in(Path::new("/nonexistent"), &text, &Environment::default()).unwrap();
    let got: Vec<(&str, Hypervisor, &str, bool)> = plan
        .targets
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.hypervisor,
                t.firmware.name(),
                t.secure_boot,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("azure", Hypervisor::Azure, "hybrid", true),
            ("hyperv", Hypervisor::Hyperv, "uefi", true),
            ("hyperv-gen1", Hypervisor::HypervGen1, "bios", false),
            ("kvm", Hypervisor::Kvm, "hybrid", false),
            ("sb", Hypervisor::Kvm, "hybrid", true),
            ("uefi-only", Hypervisor::Kvm, "uefi", false),
        ]
    );
    let gen1 = plan
        .targets
        .iter()
        .find(|t| t.name == "hyperv-gen1")
        .unwrap();
    assert_eq!(gen1.format, Format::Vhdx);
    assert!(
        !check_in(
            Path::new("/x"),
            &minimal("").replace("size = \"4GiB\"", "size = \"4GiB\"\ngrow_root = false"),
            &Environment::default()
        )
        .unwrap()
        .layout
        .grow_root
    );
}

/// `imgbuild check` refuses Secure Boot with systemd-boot (issue 10): it
/// names the loader and the fix, at the key that asks for it.
#[test]
fn secure_boot_with_systemd_boot_is_refused_naming_the_loader_and_the_fix() {
    let text = minimal("firmware = \"uefi\"\nsecure_boot = true\n").replace(
        "[targets.kvm]",
        "[boot]\nloader = \"systemd-boot\"\n\n[targets.kvm]",
    );
    assert_eq!(
        errors(&text),
        r#"error: target `kvm`: Secure Boot cannot work with loader "systemd-boot": imgbuild installs it unsigned, and Debian 12 ships no systemd-boot signed for shim
  --> recipe.toml:13:15
   |
13 | secure_boot = true
   |               ^^^^
   |
   = help: use loader = "grub" with the packages shim-signed (signed by the Microsoft UEFI CA) and grub-efi-amd64-signed, or set secure_boot = false on target `kvm`
"#
    );
}

/// The platform defaults count too: a hyperv target (Secure Boot) or a kvm
/// target (BIOS too) cannot boot with systemd-boot unless the recipe says
/// otherwise, and a platform's firmware cannot be swapped for one it lacks.
#[test]
fn firmware_a_loader_or_platform_cannot_boot_is_refused() {
    let text = minimal("\n[targets.hyperv]\n").replace(
        "[targets.kvm]",
        "[boot]\nloader = \"systemd-boot\"\n\n[targets.kvm]",
    );
    let e = errors(&text);
    assert!(e.contains("error: target `hyperv`: Secure Boot (the hyperv default) cannot work with loader \"systemd-boot\""), "{e}");
    assert!(e.contains("error: target `kvm`: firmware `hybrid` (the kvm default) needs BIOS boot code, and loader \"systemd-boot\" is UEFI-only"), "{e}");
    assert!(
        e.contains("or set firmware = \"uefi\" on target `kvm`"),
        "{e}"
    );

    let e = errors(&minimal("\n[targets.hyperv]\nfirmware = \"bios\"\n"));
    assert!(
        e.contains("target `hyperv`: firmware `bios` cannot boot on hyperv"),
        "{e}"
    );
    assert!(e.contains("use hypervisor = \"hyperv-gen1\""), "{e}");
    let e = errors(&minimal("firmware = \"bios\"\nsecure_boot = true\n"));
    assert!(
        e.contains("target `kvm`: Secure Boot needs UEFI, but its firmware is `bios`"),
        "{e}"
    );
}

#[test]
fn shipped_tarball_recipe_resolves_next_to_its_tar() {
    if !require_tool("tar") || !require_tool("sha256sum") {
        return;
    }
    // The recipe names `debian-bookworm.tar` beside itself: copy it into a
    // temporary directory next to a small tar (the real one is hundreds of MiB).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempdir();
    let recipe_path = dir.path().join("debian-tarball.toml");
    std::fs::copy(root.join("recipes/debian-tarball.toml"), &recipe_path).expect("copy recipe");
    std::fs::write(dir.path().join("hostname"), "x\n").expect("write");
    let tar = dir.path().join("debian-bookworm.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(dir.path())
            .arg("hostname"),
    );
    let plan = recipe::check(&recipe_path).expect("shipped recipe is valid");
    assert_eq!(
        plan.os,
        OsPlan::Tar {
            path: tar.clone(),
            written: "debian-bookworm.tar".into(),
            sha256: sha256sum(&tar)
        }
    );
    let outputs: Vec<&str> = plan.targets.iter().map(|t| t.output.as_str()).collect();
    assert_eq!(
        outputs,
        [
            "debian-tarball-azure.vhd",
            "debian-tarball-hyperv.vhdx",
            "debian-tarball-kvm.qcow2"
        ]
    );
}

/// TOML → JSON, the instance a schema-aware editor validates.
fn as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read recipe");
    let value: toml::Value = toml::from_str(&text).expect("valid TOML");
    serde_json::to_value(value).expect("TOML converts to JSON")
}

#[test]
fn schema_is_valid_and_accepts_the_shipped_recipes() {
    let schema = recipe::schema();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "the schema is a valid JSON Schema"
    );
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "recipes/debian-bookworm.toml",
        "recipes/debian-tarball.toml",
    ] {
        let instance = as_json(&root.join(name));
        let errs: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errs.is_empty(), "{name}: {errs:?}");
    }
}

#[test]
fn schema_rejects_typos_wrong_types_and_two_sources() {
    let validator = jsonschema::validator_for(&recipe::schema()).expect("schema compiles");
    let base = toml::from_str::<toml::Value>(&minimal("")).expect("toml");
    let base = serde_json::to_value(base).expect("json");
    assert!(validator.is_valid(&base), "the minimal recipe is accepted");
    let cases = [
        ("typo", serde_json::json!({"config": {"hostnme": "x"}})),
        (
            "size as integer",
            serde_json::json!({"image": {"name": "g", "size": 4}}),
        ),
        (
            "two sources",
            serde_json::json!({"os": {"source": {"tar": "a", "dir": "b"}}}),
        ),
        (
            "unknown format",
            serde_json::json!({"targets": {"kvm": {"format": "qcow3"}}}),
        ),
    ];
    for (case, patch) in cases {
        let mut instance = base.clone();
        merge(&mut instance, &patch);
        assert!(
            !validator.is_valid(&instance),
            "{case}: accepted {instance}"
        );
    }
}

fn merge(into: &mut serde_json::Value, patch: &serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

#[test]
fn schema_shows_spanned_fields_as_their_inner_type() {
    let schema = recipe::schema();
    // Draft 7 ignores siblings of $ref, so schemars wraps it: {"allOf": [{"$ref": ...}], "description": ...}.
    let reference = schema["properties"]["image"]["allOf"][0]["$ref"]
        .as_str()
        .expect("image refers to a definition");
    let image = &schema["definitions"][reference.rsplit('/').next().expect("ref name")];
    assert_eq!(image["properties"]["size"]["type"], "string", "{image:#}");
    assert_eq!(
        image["additionalProperties"], false,
        "deny_unknown_fields reaches the schema"
    );
}

mod no_panic {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Same contract as fuzz/fuzz_targets/recipe_loader.rs: any text
        /// loads to a recipe or to diagnostics that render, never a panic.
        #[test]
        fn any_text_loads_or_fails_cleanly(text in "\\PC{0,200}") {
            let map = source_map(Path::new("/nonexistent-recipe-dir"), &text);
            if let Err(d) = recipe::load_str(&map) {
                prop_assert!(!d.is_empty());
                let _ = render_all(&d);
            }
        }

        #[test]
        fn mutated_recipes_load_or_fail_cleanly(cut in 0usize..400, insert in "[a-z =\\[\\]\"{}0-9.\n]{0,12}") {
            let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/debian-bookworm.toml")).expect("read");
            let mut at = cut.min(base.len());
            while !base.is_char_boundary(at) { at -= 1; }
            let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
            let map = source_map(Path::new("/nonexistent-recipe-dir"), &text);
            if let Err(d) = check_source(&map, &Environment::default()) {
                prop_assert!(!d.is_empty());
                let _ = render_all(&d);
            }
        }
    }
}

/// Issue 16: an mmdebstrap source takes the host's archives with -updates
/// and -security unless told otherwise; `mirror` or `archives` are used
/// exactly as written; `max_age` is days or hours.
#[test]
fn mmdebstrap_archives_default_to_the_host_s_and_the_recipe_s_are_exact() {
    use imgbuild::plan::SourcesPlan;
    let plan = |source: &str| {
        let text = minimal("").replace(
            "source = { mmdebstrap = \"bookworm\" }",
            &format!("source = {{ mmdebstrap = \"bookworm\"{source} }}"),
        );
        match check_in(Path::new("/x"), &text, &Environment::default())
            .unwrap()
            .os
        {
            OsPlan::Mmdebstrap {
                sources, max_age, ..
            } => (sources, max_age),
            os => panic!("{os:?}"),
        }
    };
    assert_eq!(
        plan(""),
        (
            SourcesPlan::Host {
                updates: true,
                security: true
            },
            None
        )
    );
    assert_eq!(
        plan(", updates = false, max_age = \"7d\""),
        (
            SourcesPlan::Host {
                updates: false,
                security: true
            },
            Some(7 * 86_400)
        )
    );
    let archive = |uri: &str, suite: &str, comps: &[&str]| imgbuild::source::archives::Archive {
        uri: uri.into(),
        suite: suite.into(),
        components: comps.iter().map(|c| c.to_string()).collect(),
    };
    assert_eq!(
        plan(", mirror = \"http://m.example/debian\", max_age = \"12h\"").0,
        SourcesPlan::Listed(vec![archive(
            "http://m.example/debian",
            "bookworm",
            &["main"]
        )])
    );
    assert_eq!(
        plan(", components = [\"main\", \"contrib\"], archives = [{ uri = \"http://a.example/debian\", suite = \"bookworm\" }, { uri = \"http://s.example/sec\", suite = \"bookworm-security\", components = [\"main\"] }]").0,
        SourcesPlan::Listed(vec![
            archive("http://a.example/debian", "bookworm", &["main", "contrib"]),
            archive("http://s.example/sec", "bookworm-security", &["main"]),
        ])
    );
    let source = |s: &str| {
        errors(&minimal("").replace(
            "source = { mmdebstrap = \"bookworm\" }",
            &format!("source = {{ mmdebstrap = \"bookworm\"{s} }}"),
        ))
    };
    let e = source(", mirror = \"http://m.example/debian\", security = false");
    assert!(
        e.contains("`security` applies to the host's archives; this source names its own"),
        "{e}"
    );
    let e = source(", mirror = \"http://m.example/debian\", archives = [{ uri = \"http://a.example/debian\", suite = \"bookworm\" }]");
    assert!(e.contains("give `mirror` or `archives`, not both"), "{e}");
    let e = source(", max_age = \"7 weeks\"");
    assert!(e.contains("invalid max_age `7 weeks`"), "{e}");
    let e = errors(&minimal("").replace(
        "source = { mmdebstrap = \"bookworm\" }",
        "source = { tar = \"x.tar\", updates = false }",
    ));
    assert!(
        e.contains("`updates` applies only to `mmdebstrap` sources"),
        "{e}"
    );
}

#[test]
fn test_table_patterns_must_be_regular_expressions_and_the_timeout_positive() {
    let text = errors(&minimal(
        "\n[test]\nexpect = [\"ok (\"]\nfail = [\"[\"]\ntimeout = 0\n",
    ));
    // Line 11: expect, 12: fail, 13: timeout.
    for (at, what) in [
        (
            "recipe.toml:11:11",
            "[test] expect: `ok (` is not a regular expression",
        ),
        (
            "recipe.toml:12:9",
            "[test] fail: `[` is not a regular expression",
        ),
        ("recipe.toml:13:11", "[test] timeout 0 is out of range"),
    ] {
        assert!(
            text.contains(at) && text.contains(what),
            "{at} {what}:\n{text}"
        );
    }
}

#[test]
fn test_table_defaults_expect_the_hostname_s_login_prompt_and_no_kernel_panic() {
    let plan = check_in(
        Path::new("/nonexistent-recipe-dir"),
        &minimal("\n[config]\nhostname = \"web.1\"\n"),
        &Environment::default(),
    )
    .expect("resolves");
    assert_eq!(plan.test.expect, [r"web\.1 login:"]);
    assert_eq!(plan.test.fail, ["Kernel panic"]);
    assert_eq!(plan.test.timeout, 300);
}
