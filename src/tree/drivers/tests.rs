use std::collections::BTreeMap;

use super::*;
use crate::tree::testing::{link, meta, put};

const VER: &str = "6.1.0-test";

/// A merged-/usr tree (`/lib -> usr/lib`) whose kernel builds virtio in and
/// ships the Hyper-V drivers as modules, like Debian's cloud kernel.
fn tree() -> Tree {
    let mut t = Tree::new(meta(0o755));
    link(&mut t, "lib", "usr/lib");
    let m = format!("usr/lib/modules/{VER}");
    put(
        &mut t,
        &format!("{m}/modules.builtin"),
        "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/drivers/scsi/virtio_scsi.ko\n\
         kernel/drivers/scsi/sd_mod.ko\nkernel/drivers/net/virtio_net.ko\nkernel/drivers/char/virtio_console.ko\n",
    );
    put(
        &mut t,
        &format!("{m}/modules.dep"),
        "kernel/drivers/hv/hv_vmbus.ko.xz:\n\
         kernel/drivers/scsi/hv_storvsc.ko.xz: kernel/drivers/scsi/scsi_transport_fc.ko.xz kernel/drivers/hv/hv_vmbus.ko.xz\n\
         kernel/drivers/scsi/scsi_transport_fc.ko.xz:\n",
    );
    for f in [
        "hv/hv_vmbus.ko.xz",
        "scsi/hv_storvsc.ko.xz",
        "scsi/scsi_transport_fc.ko.xz",
        "net/hyperv/hv_netvsc.ko.xz",
        "hv/hv_utils.ko.xz",
        "input/serio/hyperv-keyboard.ko.xz",
        "hid/hid-hyperv.ko.xz",
        "video/fbdev/hyperv_fb.ko.xz",
    ] {
        put(&mut t, &format!("{m}/kernel/drivers/{f}"), "");
    }
    t
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn module_name_strips_extensions_and_normalises_dashes() {
    let cases: [(&[u8], Option<&str>); 7] = [
        (b"kernel/drivers/scsi/hv_storvsc.ko", Some("hv_storvsc")),
        (b"hid-hyperv.ko.xz", Some("hid_hyperv")),
        (b"a/virtio_blk.ko.zst", Some("virtio_blk")),
        (b"x.ko.gz", Some("x")),
        (b"modules.dep", None),
        (b".ko", None),
        (b"foo.ko.bz2", None),
    ];
    for (file, want) in cases {
        assert_eq!(
            module_name(file).as_deref(),
            want,
            "case {:?}",
            String::from_utf8_lossy(file)
        );
    }
}

#[test]
fn kernel_versions_follow_the_lib_symlink() {
    let mut t = tree();
    put(&mut t, "usr/lib/modules/5.10.0-old/modules.dep", "");
    assert_eq!(kernel_versions(&t), ["5.10.0-old", VER]);
}

#[test]
fn kernel_modules_reads_builtin_dep_and_files() {
    let k = KernelModules::read(&tree(), VER).expect("modules dir");
    assert!(k.builtin.contains("virtio_blk") && k.builtin.contains("sd_mod"));
    assert_eq!(
        k.installed.get("hid_hyperv").map(Vec::as_slice),
        Some(&b"kernel/drivers/hid/hid-hyperv.ko.xz"[..])
    );
    assert_eq!(
        k.dependencies("hv_storvsc"),
        ["hv_vmbus", "scsi_transport_fc"]
    );
}

#[test]
fn kernel_modules_rejects_missing_dir_and_bad_versions() {
    assert!(matches!(
        KernelModules::read(&tree(), "9.9"),
        Err(DriverError::NoModules { .. })
    ));
    for bad in ["", "..", "a/b"] {
        assert!(
            matches!(
                KernelModules::read(&tree(), bad),
                Err(DriverError::BadVersion { .. })
            ),
            "case {bad:?}"
        );
    }
}

#[test]
fn kvm_passes_with_builtin_virtio_and_no_initramfs() {
    let k = KernelModules::read(&tree(), VER).expect("modules dir");
    let r = check_modules(&k, &BTreeSet::new(), Hypervisor::Kvm).expect("all built in");
    let got: Vec<_> = r
        .modules
        .iter()
        .map(|m| (m.name.as_str(), m.found.clone()))
        .collect();
    let builtin = vec![Found::Builtin];
    assert_eq!(
        got,
        [
            ("virtio_pci", builtin.clone()),
            ("virtio_blk", builtin.clone()),
            ("virtio_scsi", builtin.clone()),
            ("sd_mod", builtin.clone()),
            ("virtio_net", builtin.clone()),
            ("virtio_console", builtin)
        ]
    );
}

#[test]
fn hyperv_passes_when_the_initramfs_has_storvsc_and_its_deps() {
    let k = KernelModules::read(&tree(), VER).expect("modules dir");
    let initramfs = set(&["hv_vmbus", "hv_storvsc", "scsi_transport_fc"]);
    let r = check_modules(&k, &initramfs, Hypervisor::Hyperv).expect("complete");
    let storvsc = r
        .modules
        .iter()
        .find(|m| m.name == "hv_storvsc")
        .expect("reported");
    assert_eq!(storvsc.found, [Found::Initramfs, Found::Installed]);
    let fc = r
        .modules
        .iter()
        .find(|m| m.name == "scsi_transport_fc")
        .expect("dependency reported");
    assert_eq!(fc.required_by.as_deref(), Some("hv_storvsc"));
    let video = r
        .modules
        .iter()
        .find(|m| m.name == "hyperv_fb")
        .expect("the alternative present is chosen");
    assert_eq!(video.found, [Found::Installed]);
}

#[test]
fn hyperv_fails_naming_storvsc_target_and_kernel() {
    // Regression: an Azure Linux Hyper-V image shipped without hv_storvsc in
    // its initramfs and hung waiting for its root device.
    let k = KernelModules::read(&tree(), VER).expect("modules dir");
    let err = check_modules(
        &k,
        &set(&["hv_vmbus", "scsi_transport_fc"]),
        Hypervisor::Hyperv,
    )
    .expect_err("missing");
    let DriverError::Missing {
        target,
        kernel_version,
        missing,
    } = &err
    else {
        panic!("expected Missing, got {err:?}")
    };
    assert_eq!(
        (*target, kernel_version.as_str()),
        (Hypervisor::Hyperv, VER)
    );
    assert_eq!(
        missing
            .iter()
            .map(|m| m.names.join("|"))
            .collect::<Vec<_>>(),
        ["hv_storvsc"]
    );
    let msg = err.to_string();
    for want in [
        "target hyperv",
        VER,
        "hv_storvsc",
        "/etc/initramfs-tools/modules",
        "update-initramfs -u -k",
    ] {
        assert!(msg.contains(want), "message lacks {want:?}:\n{msg}");
    }
}

#[test]
fn missing_dependency_of_a_root_module_fails() {
    let k = KernelModules::read(&tree(), VER).expect("modules dir");
    let err = check_modules(&k, &set(&["hv_vmbus", "hv_storvsc"]), Hypervisor::Hyperv)
        .expect_err("dep missing");
    let DriverError::Missing { missing, .. } = &err else {
        panic!("expected Missing, got {err:?}")
    };
    assert_eq!(missing.len(), 1);
    assert_eq!(
        (
            missing[0].names[0].as_str(),
            missing[0].required_by.as_deref()
        ),
        ("scsi_transport_fc", Some("hv_storvsc"))
    );
    assert!(err.to_string().contains("needed by hv_storvsc"));
}

#[test]
fn missing_runtime_module_and_both_video_alternatives_are_reported() {
    let mut t = tree();
    let m = format!("usr/lib/modules/{VER}/kernel/drivers");
    t.remove(format!("{m}/video/fbdev/hyperv_fb.ko.xz").as_bytes())
        .expect("exists");
    t.remove(format!("{m}/net/hyperv/hv_netvsc.ko.xz").as_bytes())
        .expect("exists");
    let k = KernelModules::read(&t, VER).expect("modules dir");
    let err = check_modules(
        &k,
        &set(&["hv_vmbus", "hv_storvsc", "scsi_transport_fc"]),
        Hypervisor::Azure,
    )
    .expect_err("missing");
    let msg = err.to_string();
    assert!(
        msg.contains("hv_netvsc") && msg.contains("hyperv_drm or hyperv_fb"),
        "{msg}"
    );
    assert!(
        msg.contains("installed under /lib/modules") && msg.contains("target azure"),
        "{msg}"
    );
}

#[test]
fn check_reads_the_initramfs_for_this_kernel_only() {
    // Modules of another kernel version inside the initramfs do not count.
    let mut cpio = Vec::new();
    for name in [
        format!("usr/lib/modules/{VER}/kernel/drivers/hv/hv_vmbus.ko.xz"),
        format!("lib/modules/{VER}/kernel/drivers/scsi/scsi_transport_fc.ko.xz"),
        "usr/lib/modules/5.10/kernel/drivers/scsi/hv_storvsc.ko".to_string(),
        "TRAILER!!!".to_string(),
    ] {
        let mode = if name.starts_with('T') { 0 } else { 0o100644 };
        cpio.extend(
            format!(
                "070701{:08x}{mode:08x}{}{:08x}{:08x}",
                1,
                "0".repeat(8 * 9),
                name.len() + 1,
                0
            )
            .as_bytes(),
        );
        cpio.extend(name.as_bytes());
        cpio.push(0);
        while cpio.len() % 4 != 0 {
            cpio.push(0);
        }
    }
    let data = FileData::Bytes(cpio.into());
    let listing = cpio::list(&data).expect("valid cpio");
    assert_eq!(
        initramfs_modules(&listing, VER),
        set(&["hv_vmbus", "scsi_transport_fc"])
    );
    let err =
        check(&tree(), VER, Hypervisor::Hyperv, Some(&data)).expect_err("storvsc is for 5.10 only");
    assert!(err.to_string().contains("hv_storvsc"), "{err}");
}

#[test]
fn profiles_cmdline_and_names() {
    assert_eq!(Hypervisor::from_name("hyperv"), Some(Hypervisor::Hyperv));
    assert_eq!(Hypervisor::from_name("vmware"), Some(Hypervisor::Vmware));
    assert_eq!(Hypervisor::from_name("esxi"), None);
    assert!(Hypervisor::Kvm.platform().cmdline.is_empty());
    // Compute Engine's serial console; VMware's and KubeVirt's none.
    assert!(Hypervisor::Gce
        .platform()
        .cmdline
        .contains(&"console=ttyS0,115200n8"));
    assert!(Hypervisor::Vmware.platform().cmdline.is_empty());
    let names = |h: Hypervisor| -> Vec<&str> {
        h.drivers()
            .modules
            .iter()
            .flat_map(|m| m.any_of.iter().copied())
            .collect()
    };
    for (h, needs) in [
        (
            Hypervisor::Vmware,
            &["vmw_pvscsi", "vmxnet3", "vmw_balloon"][..],
        ),
        (Hypervisor::Gce, &["virtio_scsi", "virtio_net", "gve"][..]),
        (Hypervisor::Kubevirt, &["virtio_blk", "virtio_net"][..]),
        (Hypervisor::Aws, &["nvme", "ena"][..]),
    ] {
        for m in needs {
            assert!(names(h).contains(m), "{h} lacks {m}");
        }
    }
    let agents =
        |h: Hypervisor| -> Vec<&str> { h.drivers().agents.iter().map(|a| a.package).collect() };
    assert_eq!(agents(Hypervisor::Vmware), ["open-vm-tools"]);
    assert_eq!(agents(Hypervisor::Gce), ["google-guest-agent"]);
    assert_eq!(agents(Hypervisor::Kubevirt), ["qemu-guest-agent"]);
    assert!(agents(Hypervisor::Aws).is_empty());
    // EC2's serial console; the root on NVMe, so nvme reaches the initramfs.
    assert!(Hypervisor::Aws
        .platform()
        .cmdline
        .contains(&"console=ttyS0,115200n8"));
    let stage = |h: Hypervisor, name: &str| {
        h.drivers()
            .modules
            .iter()
            .find(|m| m.any_of.contains(&name))
            .map(|m| m.stage)
    };
    assert_eq!(stage(Hypervisor::Aws, "nvme"), Some(Stage::Initramfs));
    assert_eq!(stage(Hypervisor::Aws, "ena"), Some(Stage::Installed));
    assert!(Hypervisor::Azure
        .platform()
        .cmdline
        .contains(&"console=ttyS0,115200n8"));
    let azure: Vec<_> = Hypervisor::Azure
        .drivers()
        .modules
        .iter()
        .flat_map(|m| m.any_of)
        .collect();
    for m in Hypervisor::Hyperv
        .drivers()
        .modules
        .iter()
        .flat_map(|m| m.any_of)
    {
        assert!(azure.contains(&m), "azure lacks {m}");
    }
}

fn files(t: &Tree) -> BTreeMap<String, String> {
    t.walk()
        .into_iter()
        .filter_map(|(p, id)| match &t.inode(id).kind {
            Kind::File(d) => Some((
                String::from_utf8_lossy(&p).into_owned(),
                String::from_utf8_lossy(&d.read_all().ok()?).into_owned(),
            )),
            Kind::Symlink(s) => Some((
                String::from_utf8_lossy(&p).into_owned(),
                format!("-> {}", String::from_utf8_lossy(s)),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn write_config_for_hyperv_on_initramfs_tools() {
    let mut t = tree();
    put(
        &mut t,
        "etc/initramfs-tools/modules",
        "# user list\nhv-vmbus\nloop\n",
    );
    put(
        &mut t,
        "usr/lib/systemd/system/hv-kvp-daemon.service",
        "[Unit]\n[Install]\nWantedBy=multi-user.target\n",
    );
    let before = files(&t);
    let changed = write_config(&mut t, Hypervisor::Hyperv, &meta(0)).expect("writes");
    assert_eq!(
        changed,
        [
            "/etc/initramfs-tools/modules",
            "/etc/modules-load.d/imgbuild-hyperv.conf",
            "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service"
        ]
    );
    let after = files(&t);
    assert_eq!(
        after["etc/initramfs-tools/modules"],
        "# user list\nhv-vmbus\nloop\n# Added by imgbuild: modules the hyperv target needs to reach its root filesystem.\nhv_storvsc\nsd_mod\n"
    );
    assert_eq!(
        after["etc/modules-load.d/imgbuild-hyperv.conf"],
        "# Written by imgbuild: modules the hyperv target uses once booted.\nhv_netvsc\nhv_utils\nhyperv_keyboard\nhid_hyperv\nhyperv_fb\n"
    );
    assert_eq!(
        after["etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service"],
        "-> /lib/systemd/system/hv-kvp-daemon.service"
    );
    assert_eq!(
        after.len(),
        before.len() + 2,
        "two files and one link added, one file changed"
    );
    let id = t
        .lookup(b"etc/modules-load.d/imgbuild-hyperv.conf")
        .expect("written");
    assert_eq!(t.inode(id).meta.mode, 0o644);
}

#[test]
fn write_config_is_idempotent() {
    let mut t = tree();
    write_config(&mut t, Hypervisor::Kvm, &meta(0)).expect("first");
    let once = files(&t);
    assert_eq!(
        write_config(&mut t, Hypervisor::Kvm, &meta(0)).expect("second"),
        Vec::<String>::new()
    );
    assert_eq!(files(&t), once);
}

#[test]
fn write_config_uses_dracut_when_its_directory_exists() {
    let mut t = tree();
    t.insert(
        b"etc/dracut.conf.d",
        Inode {
            meta: meta(0o755),
            kind: Kind::Dir(BTreeMap::new()),
        },
    )
    .expect("dir");
    let changed = write_config(&mut t, Hypervisor::Kvm, &meta(0)).expect("writes");
    // virtio is built into this kernel, so modules-load.d gets nothing.
    assert_eq!(changed, ["/etc/dracut.conf.d/imgbuild-kvm.conf"]);
    assert_eq!(
        files(&t)["etc/dracut.conf.d/imgbuild-kvm.conf"],
        "# Written by imgbuild: modules the kvm target needs to reach its root filesystem.\nadd_drivers+=\" virtio_pci virtio_blk virtio_scsi sd_mod \"\n"
    );
}

#[test]
fn write_config_refuses_a_directory_where_a_file_goes() {
    let mut t = tree();
    let d = Inode {
        meta: meta(0o755),
        kind: Kind::Dir(BTreeMap::new()),
    };
    t.insert(b"etc/modules-load.d/imgbuild-hyperv.conf", d)
        .expect("dir");
    assert!(matches!(
        write_config(&mut t, Hypervisor::Hyperv, &meta(0)),
        Err(DriverError::NotAFile { .. })
    ));
}

#[test]
fn dependency_shared_by_two_root_modules_is_reported_once() {
    let mut t = tree();
    let m = format!("usr/lib/modules/{VER}");
    put(&mut t, &format!("{m}/modules.builtin"), "");
    put(
        &mut t,
        &format!("{m}/modules.dep"),
        "kernel/drivers/hv/hv_vmbus.ko.xz:\n\
         kernel/drivers/scsi/hv_storvsc.ko.xz: kernel/drivers/scsi/scsi_mod.ko.xz kernel/drivers/hv/hv_vmbus.ko.xz\n\
         kernel/drivers/scsi/sd_mod.ko.xz: kernel/drivers/scsi/scsi_mod.ko.xz\n",
    );
    let k = KernelModules::read(&t, VER).expect("modules dir");
    let err = check_modules(
        &k,
        &set(&["hv_vmbus", "hv_storvsc", "sd_mod"]),
        Hypervisor::Hyperv,
    )
    .expect_err("scsi_mod");
    let DriverError::Missing { missing, .. } = &err else {
        panic!("expected Missing, got {err:?}")
    };
    let root: Vec<_> = missing
        .iter()
        .filter(|m| m.stage == Stage::Initramfs)
        .map(|m| m.names.join("|"))
        .collect();
    assert_eq!(root, ["scsi_mod"]);
}

/// Regression (issue 10's boot matrix): `rootdelay=300` made every Azure
/// image sleep five minutes in Debian's initramfs before looking for its root.
#[test]
fn azure_profile_has_no_rootdelay() {
    let words = Hypervisor::Azure.platform().cmdline;
    assert!(words.contains(&"console=ttyS0,115200n8"), "{words:?}");
    assert!(
        !words.iter().any(|w| w.starts_with("rootdelay=")),
        "{words:?}"
    );
}
