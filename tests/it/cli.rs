//! CLI behaviour: exit codes, exact messages, no output left on failure.

use crate::support::*;

#[test]
fn convert_of_missing_source_fails_and_leaves_nothing() {
    let d = tempdir();
    let out = run(imgbuild()
        .args(["convert"])
        .arg(p(d.path(), "nope.raw"))
        .arg(p(d.path(), "x.raw")));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot read "), "{err}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn convert_with_unknown_extension_names_the_valid_ones() {
    let d = tempdir();
    std::fs::write(p(d.path(), "a.raw"), vec![1u8; 4096]).unwrap();
    let out = run(imgbuild()
        .args(["convert"])
        .arg(p(d.path(), "a.raw"))
        .arg(p(d.path(), "b.xyz")));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("use a .raw/.img, .qcow2, .vhdx, .vhd or .vmdk name, or --format"),
        "{err}"
    );
    assert!(!p(d.path(), "b.xyz").exists());
}

#[test]
fn usage_errors_exit_2() {
    let out = run(imgbuild().args(["convert"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn raw_convert_keeps_holes_and_bytes() {
    let d = tempdir();
    let src = p(d.path(), "a.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"hello", 10 << 20).unwrap();
    let dst = p(d.path(), "b.img");
    run_ok(imgbuild().arg("convert").arg(&src).arg(&dst));
    assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    use std::os::unix::fs::MetadataExt;
    assert!(
        std::fs::metadata(&dst).unwrap().blocks() * 512 < 1 << 20,
        "output is not sparse"
    );
}

#[test]
fn verify_catches_a_changed_byte() {
    let d = tempdir();
    std::fs::write(p(d.path(), "a.qcow2"), b"abc").unwrap();
    let sum = imgbuild::verify::sha256_file(&p(d.path(), "a.qcow2")).unwrap();
    std::fs::write(p(d.path(), "SHA256SUMS"), format!("{sum}  a.qcow2\n")).unwrap();
    // A manifest too: verify requires one (issue 14).
    // Every field record::Manifest requires, with small values.
    let manifest = format!(
        "{{\n  \"version\": 1, \"name\": \"a\", \"recipe_sha256\": \"{sum}\", \"epoch\": 0,\n  \
         \"seed\": \"00\", \"inputs\": [], \"kernel_version\": \"\", \"boot\": [], \"packages\": [],\n  \
         \"layout\": {{\"size\": 0, \"disk_guid\": \"00000000-0000-0000-0000-000000000000\", \"partitions\": []}},\n  \
         \"outputs\": [{{\"target\": \"kvm\", \"file\": \"a.qcow2\", \"format\": \"qcow2\", \"virtual_size\": 0, \
         \"sha256\": \"{sum}\", \"file_size\": 3}}],\n  \"self_sha256\": \"{}\"\n}}\n",
        imgbuild::verify::ZEROS
    );
    std::fs::write(
        p(d.path(), "manifest.json"),
        imgbuild::verify::seal(&manifest),
    )
    .unwrap();
    run_ok(imgbuild().arg("verify").arg(d.path()));
    std::fs::write(p(d.path(), "a.qcow2"), b"abd").unwrap();
    let out = run(imgbuild().arg("verify").arg(d.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MISMATCH a.qcow2"));
}

/// A small sparse raw disk with data at a few places (not cluster aligned).
fn sample_raw(dir: &std::path::Path) -> std::path::PathBuf {
    let src = p(dir, "src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len((64 << 20) + 4096).unwrap();
    for (i, at) in [0u64, 12345, 5 << 20, (33 << 20) + 777, 64 << 20]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..70_000u32)
            .map(|x| (x.wrapping_mul(31) as u8) ^ i as u8)
            .collect();
        let n = data.len().min(((64u64 << 20) + 4096 - at) as usize);
        std::os::unix::fs::FileExt::write_all_at(&f, &data[..n], at).unwrap();
    }
    src
}

#[test]
fn converting_twice_gives_identical_files_for_every_format() {
    let d = tempdir();
    let src = sample_raw(d.path());
    for (name, extra) in [
        ("a.qcow2", &[][..]),
        ("z.qcow2", &["--compress", "zlib"][..]),
        ("s.qcow2", &["--compress", "zstd"][..]),
        ("a.vhdx", &[][..]),
        ("f.vhdx", &["--subformat", "fixed"][..]),
        ("a.vhd", &[][..]),
        ("a.vmdk", &[][..]),
        ("m.vmdk", &["--subformat", "monolithicSparse"][..]),
        ("a.img", &[][..]),
    ] {
        let (one, two) = (
            p(d.path(), &format!("1-{name}")),
            p(d.path(), &format!("2-{name}")),
        );
        run_ok(imgbuild().arg("convert").arg(&src).arg(&one).args(extra));
        run_ok(
            imgbuild()
                .arg("convert")
                .arg(&src)
                .arg(&two)
                .args(extra)
                .args(["--threads", "1"]),
        );
        assert!(
            std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
            "{name} differs between runs"
        );
        // And it reads back as the source.
        let back = p(d.path(), &format!("back-{name}.raw"));
        run_ok(
            imgbuild()
                .arg("convert")
                .arg(&one)
                .arg(&back)
                .args(["--format", "raw"]),
        );
        let mut want = std::fs::read(&src).unwrap();
        let got = std::fs::read(&back).unwrap();
        want.resize(got.len().max(want.len()), 0); // VHD pads to a whole MiB
        assert!(got == want, "{name} does not read back as its source");
    }
}

#[test]
fn hostile_images_give_errors_and_no_output() {
    let d = tempdir();
    let src = sample_raw(d.path());
    let good = p(d.path(), "good.qcow2");
    run_ok(imgbuild().arg("convert").arg(&src).arg(&good));
    let bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![("truncated-header", bytes[..50].to_vec())];
    cases.push(("truncated-data", bytes[..bytes.len() / 2].to_vec()));
    let mut huge = bytes.clone();
    huge[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes()); // virtual size
    cases.push(("huge-size", huge));
    let mut l1 = bytes.clone();
    l1[40..48].copy_from_slice(&(1u64 << 50).to_be_bytes()); // L1 table offset past EOF
    cases.push(("l1-past-eof", l1));
    let mut bits = bytes.clone();
    bits[20..24].copy_from_slice(&40u32.to_be_bytes()); // cluster_bits
    cases.push(("cluster-bits", bits));
    let good_vhdx = p(d.path(), "good.vhdx");
    run_ok(imgbuild().arg("convert").arg(&src).arg(&good_vhdx));
    let vhdx = std::fs::read(&good_vhdx).unwrap();
    let mut vhdx_cases: Vec<(&str, Vec<u8>)> =
        vec![("vhdx-truncated", vhdx[..vhdx.len() - (1 << 20)].to_vec())];
    let mut crc = vhdx.clone();
    crc[(192 << 10) + 4] ^= 0xff; // region table 1 checksum
    crc[(256 << 10) + 4] ^= 0xff; // region table 2 checksum
    vhdx_cases.push(("vhdx-region-checksums", crc));
    let all = cases.into_iter().map(|(n, d)| (n, d, "qcow2"));
    let all = all.chain(vhdx_cases.into_iter().map(|(n, d)| (n, d, "vhdx")));
    for (name, data, ext) in all {
        let bad = p(d.path(), &format!("{name}.{ext}"));
        std::fs::write(&bad, &data).unwrap();
        let out = p(d.path(), &format!("{name}-out.qcow2"));
        let r = run(imgbuild().arg("convert").arg(&bad).arg(&out));
        assert_eq!(
            r.status.code(),
            Some(1),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(
            String::from_utf8_lossy(&r.stderr).starts_with("error: "),
            "{name}"
        );
        assert!(!out.exists(), "{name}: output left behind");
        let r = run(imgbuild().arg("inspect").arg(&bad));
        assert_eq!(
            r.status.code(),
            Some(1),
            "{name}: inspect: {}",
            String::from_utf8_lossy(&r.stdout)
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp-imgbuild"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `imgbuild check` on the shipped bookworm recipe asking for Secure Boot on
/// its hyperv target with systemd-boot: exit 2, the loader named, the fix
/// given, at the recipe's line and column; nothing bootstrapped (issue 10).
#[test]
fn check_refuses_secure_boot_with_systemd_boot_naming_the_loader_and_the_fix() {
    let d = tempdir();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/debian-bookworm.toml"),
    )
    .unwrap();
    let text = shipped
        .replace(
            "loader = \"grub\"",
            "loader = \"systemd-boot\"",
        )
        .replace(
            "[targets.hyperv]                # debian-bookworm-hyperv.vhdx: Generation 2, UEFI + Secure Boot\nformat = \"vhdx\"",
            "[targets.hyperv]\nformat = \"vhdx\"\nsecure_boot = true",
        );
    assert_ne!(text, shipped);
    let recipe = p(d.path(), "bookworm-sb.toml");
    std::fs::write(&recipe, &text).unwrap();
    let cache = p(d.path(), "cache");
    let out = run(imgbuild()
        .arg("check")
        .arg(&recipe)
        .arg("--cache-dir")
        .arg(&cache));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .position(|l| l == "secure_boot = true")
        .unwrap()
        + 1;
    assert!(
        err.contains(
            "error: target `hyperv`: Secure Boot cannot work with loader \"systemd-boot\""
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!("bookworm-sb.toml:{line}:15")),
        "{err}"
    );
    assert!(
        err.contains("use loader = \"grub\" with the packages shim-signed (signed by the Microsoft UEFI CA) and grub-efi-amd64-signed, or set secure_boot = false on target `hyperv`"),
        "{err}"
    );
    // The kvm and azure targets' defaults (BIOS) are refused too, and nothing was bootstrapped.
    assert!(
        err.contains("target `kvm`: firmware `hybrid` (the kvm default) needs BIOS boot code"),
        "{err}"
    );
    assert!(!cache.exists());
}

#[test]
fn convert_to_vmdk_reads_back_in_qemu_and_inspect_names_it() {
    if !require_tool("qemu-img") {
        return;
    }
    let d = tempdir();
    let src = sample_raw(d.path());
    let vmdk = p(d.path(), "disk.vmdk");

    run_ok(imgbuild().arg("convert").arg(&src).arg(&vmdk));

    run_ok(
        std::process::Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&vmdk),
    );
    let same = run_ok(
        std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&src)
            .arg(&vmdk),
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("Images are identical"));
    let info = run_ok(imgbuild().arg("inspect").arg(&vmdk));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("format:        vmdk"), "{info}");
    assert!(info.contains("streamOptimized"), "{info}");
}

#[test]
fn convert_to_monolithic_sparse_vmdk_reads_back_in_qemu_and_inspect_names_it() {
    if !require_tool("qemu-img") {
        return;
    }
    let d = tempdir();
    let src = sample_raw(d.path());
    let vmdk = p(d.path(), "disk.vmdk");

    run_ok(
        imgbuild()
            .arg("convert")
            .arg(&src)
            .arg(&vmdk)
            .args(["--subformat", "monolithicSparse"]),
    );

    run_ok(
        std::process::Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&vmdk),
    );
    let same = run_ok(
        std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&src)
            .arg(&vmdk),
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("Images are identical"));
    let info = run_ok(imgbuild().arg("inspect").arg(&vmdk));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("monolithicSparse"), "{info}");
}

#[test]
fn convert_refuses_a_subformat_of_another_format() {
    let d = tempdir();
    let src = sample_raw(d.path());
    let out = run(imgbuild()
        .arg("convert")
        .arg(&src)
        .arg(p(d.path(), "a.vmdk"))
        .args(["--subformat", "fixed"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: --subformat fixed does not apply to vmdk: VHDX takes dynamic or fixed, VMDK streamOptimized or monolithicSparse\n"
    );
    assert!(!p(d.path(), "a.vmdk").exists());
}
