use super::*;
use crate::ids::Guid;

const UUID: &str = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0";

fn opts() -> BootOptions {
    BootOptions {
        loader: LoaderKind::SystemdBoot,
        bios: false,
        uefi: true,
        secure_boot: false,
        root_fs_uuid: Guid::from_text("01234567-89ab-cdef-0123-456789abcdef"),
        esp_partition: 2,
        bios_boot_lba: 40,
        entry_id: "debian".into(),
        title: "Debian GNU/Linux 12 (bookworm)".into(),
        root_partuuid: Guid::from_text(UUID),
        cmdline: "quiet".into(),
        extra_cmdline: "console=ttyS0".into(),
        timeout: 0,
        epoch: 1_700_000_000,
        host_systemd_boot: None,
    }
}

fn file(tree: &mut Tree, path: &str, content: &str) {
    let inode = Inode {
        meta: Meta::default(),
        kind: Kind::File(FileData::Bytes(content.as_bytes().into())),
    };
    tree.insert(path.as_bytes(), inode).unwrap();
}

fn symlink(tree: &mut Tree, path: &str, target: &str) {
    let inode = Inode {
        meta: Meta::default(),
        kind: Kind::Symlink(target.as_bytes().to_vec()),
    };
    tree.insert(path.as_bytes(), inode).unwrap();
}

/// A Debian-like tree: two kernels (the newer one has the lower string
/// order), merged /usr with /lib a symlink, systemd-boot installed.
fn debian() -> Tree {
    let mut t = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    file(&mut t, "/boot/vmlinuz-6.1.0-9-cloud-amd64", "old kernel");
    file(&mut t, "/boot/initrd.img-6.1.0-9-cloud-amd64", "old initrd");
    file(&mut t, "/boot/vmlinuz-6.1.0-40-cloud-amd64", "new kernel");
    file(
        &mut t,
        "/boot/initrd.img-6.1.0-40-cloud-amd64",
        "new initrd",
    );
    file(&mut t, "/boot/config-6.1.0-40-cloud-amd64", "config");
    symlink(&mut t, "/vmlinuz", "boot/vmlinuz-6.1.0-40-cloud-amd64");
    symlink(&mut t, "/lib", "usr/lib");
    file(
        &mut t,
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "MZ systemd-boot",
    );
    t
}

fn content(t: &Tree, path: &str) -> String {
    let id = t
        .lookup(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    match &t.inode(id).kind {
        Kind::File(d) => String::from_utf8(d.read_all().unwrap()).unwrap(),
        k => panic!("{path}: {k:?}"),
    }
}

fn files(t: &Tree) -> Vec<String> {
    t.walk()
        .into_iter()
        .filter(|(_, id)| matches!(t.inode(*id).kind, Kind::File(_)))
        .map(|(p, _)| format!("/{}", String::from_utf8(p).unwrap()))
        .collect()
}

#[test]
fn esp_holds_exactly_loader_config_and_newest_kernel() {
    let (esp, info) = esp_tree(&debian(), &opts()).unwrap();
    assert_eq!(
        files(&esp),
        [
            "/EFI/BOOT/BOOTX64.EFI",
            "/EFI/systemd/systemd-bootx64.efi",
            "/debian/6.1.0-40-cloud-amd64/initrd",
            "/debian/6.1.0-40-cloud-amd64/linux",
            "/loader/entries/debian.conf",
            "/loader/loader.conf",
        ]
    );
    assert_eq!(
        content(&esp, "/debian/6.1.0-40-cloud-amd64/linux"),
        "new kernel"
    );
    assert_eq!(
        content(&esp, "/debian/6.1.0-40-cloud-amd64/initrd"),
        "new initrd"
    );
    assert_eq!(content(&esp, "/EFI/BOOT/BOOTX64.EFI"), "MZ systemd-boot");
    assert_eq!(
        info,
        BootInfo {
            kernel_version: "6.1.0-40-cloud-amd64".into(),
            kernel: "/boot/vmlinuz-6.1.0-40-cloud-amd64".into(),
            initrd: Some("/boot/initrd.img-6.1.0-40-cloud-amd64".into()),
            loader: LoaderSource::Tree("/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into()),
            entry: "/loader/entries/debian.conf".into(),
        }
    );
}

#[test]
fn loader_conf_and_entry_text() {
    let (esp, _) = esp_tree(&debian(), &opts()).unwrap();
    assert_eq!(
        content(&esp, "/loader/loader.conf"),
        "default debian.conf\ntimeout 0\nconsole-mode keep\neditor no\n"
    );
    assert_eq!(
        content(&esp, "/loader/entries/debian.conf"),
        "title Debian GNU/Linux 12 (bookworm)\n\
         version 6.1.0-40-cloud-amd64\n\
         linux /debian/6.1.0-40-cloud-amd64/linux\n\
         initrd /debian/6.1.0-40-cloud-amd64/initrd\n\
         options root=PARTUUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 rw quiet console=ttyS0\n"
    );
}

#[test]
fn kernel_only_reachable_through_vmlinuz_symlink_is_found() {
    let mut t = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    file(&mut t, "/opt/k/vmlinuz-6.12.1-amd64", "k");
    symlink(&mut t, "/vmlinuz", "/opt/k/vmlinuz-6.12.1-amd64");
    file(
        &mut t,
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "MZ",
    );
    let (esp, info) = esp_tree(&t, &opts()).unwrap();
    assert_eq!(info.kernel, "/opt/k/vmlinuz-6.12.1-amd64");
    assert_eq!(info.initrd, None);
    assert!(!content(&esp, "/loader/entries/debian.conf").contains("initrd"));
}

#[test]
fn systemd_boot_reached_through_lib_symlink_only() {
    // /usr/lib is a symlink to /lib here (the reverse of merged /usr).
    let mut t = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    file(&mut t, "/boot/vmlinuz-1", "k");
    file(
        &mut t,
        "/lib/systemd/boot/efi/systemd-bootx64.efi",
        "MZ via /lib",
    );
    symlink(&mut t, "/usr/lib", "../lib");
    let (esp, info) = esp_tree(&t, &opts()).unwrap();
    assert_eq!(
        info.loader,
        LoaderSource::Tree("/lib/systemd/boot/efi/systemd-bootx64.efi".into())
    );
    assert_eq!(
        content(&esp, "/EFI/systemd/systemd-bootx64.efi"),
        "MZ via /lib"
    );
}

#[test]
fn host_fallback_is_used_by_reference_when_the_tree_has_no_loader() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("systemd-bootx64.efi");
    std::fs::write(&host, b"MZ host").unwrap();
    let mut t = Tree::new(Meta::default());
    file(&mut t, "/boot/vmlinuz-1", "k");
    assert!(matches!(esp_tree(&t, &opts()), Err(BootError::NoLoader)));
    let o = BootOptions {
        host_systemd_boot: Some(host.clone()),
        ..opts()
    };
    let (esp, info) = esp_tree(&t, &o).unwrap();
    assert_eq!(info.loader, LoaderSource::Host(host));
    let id = esp.lookup(b"EFI/BOOT/BOOTX64.EFI").unwrap();
    assert!(matches!(
        &esp.inode(id).kind,
        Kind::File(FileData::Source { len: 7, .. })
    ));
}

#[test]
fn missing_kernel_and_bad_options_are_errors() {
    let mut t = Tree::new(Meta::default());
    file(
        &mut t,
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "MZ",
    );
    assert!(matches!(esp_tree(&t, &opts()), Err(BootError::NoKernel)));
    let bad = [
        BootOptions {
            entry_id: "a b".into(),
            ..opts()
        },
        BootOptions {
            entry_id: "EFI".into(),
            ..opts()
        },
        BootOptions {
            title: "x\ninitrd /evil".into(),
            ..opts()
        },
    ];
    for o in bad {
        assert!(
            matches!(esp_tree(&debian(), &o), Err(BootError::BadOption { .. })),
            "{o:?}"
        );
    }
}

/// A Debian-like tree with the GRUB chain: shim (its signature embedding
/// the Microsoft UEFI CA), MokManager and GRUB signed, a signed kernel
/// reached through /vmlinuz, os-release.
fn debian_grub(shim: bool) -> Tree {
    let mut t = debian();
    let signed = pe::fixtures::signed_by;
    let bytes = |t: &mut Tree, path: &str, b: Vec<u8>| {
        let inode = Inode {
            meta: Meta::default(),
            kind: Kind::File(FileData::Bytes(b.into())),
        };
        t.insert(path.as_bytes(), inode).unwrap();
    };
    bytes(
        &mut t,
        "/boot/vmlinuz-6.1.0-40-cloud-amd64",
        signed("Debian Secure Boot Signer"),
    );
    symlink(
        &mut t,
        "/initrd.img",
        "boot/initrd.img-6.1.0-40-cloud-amd64",
    );
    if shim {
        bytes(
            &mut t,
            grub::SHIM,
            signed("Microsoft Corporation UEFI CA 2011"),
        );
        bytes(
            &mut t,
            grub::MOK_MANAGER,
            signed("Debian Secure Boot Signer"),
        );
    }
    bytes(
        &mut t,
        grub::SIGNED_GRUB,
        signed("Debian Secure Boot Signer"),
    );
    file(
        &mut t,
        "/etc/os-release",
        "PRETTY_NAME=\"Debian\"\nID=debian\n",
    );
    t
}

fn grub_opts() -> BootOptions {
    BootOptions {
        loader: LoaderKind::Grub,
        secure_boot: true,
        ..opts()
    }
}

#[test]
fn grub_esp_holds_shim_signed_grub_mok_manager_and_one_menu_twice() {
    let b = boot_files(&debian_grub(true), &grub_opts()).unwrap();
    assert_eq!(
        files(&b.esp),
        [
            "/EFI/BOOT/BOOTX64.EFI",
            "/EFI/BOOT/grub.cfg",
            "/EFI/BOOT/grubx64.efi",
            "/EFI/BOOT/mmx64.efi",
            "/EFI/debian/grub.cfg",
            "/EFI/debian/grubx64.efi",
            "/EFI/debian/mmx64.efi",
            "/EFI/debian/shimx64.efi",
        ]
    );
    assert_eq!(
        content(&b.esp, "/EFI/BOOT/grub.cfg"),
        content(&b.esp, "/EFI/debian/grub.cfg")
    );
    assert_eq!(b.firmware, ["uefi", "secure-boot"]);
    assert!(b.bios.is_none());
    assert!(b.kernel_signed);
    let first = b
        .efi
        .iter()
        .find(|e| e.path == "/EFI/BOOT/BOOTX64.EFI")
        .unwrap();
    assert_eq!(first.source, "tree:/usr/lib/shim/shimx64.efi.signed");
    assert!(first.signed && first.microsoft_uefi_ca);
    assert_eq!(b.efi.len(), 6);
}

#[test]
fn grub_menu_boots_the_kernel_links_with_the_quoted_command_line() {
    let o = BootOptions {
        cmdline: "quiet opt=\"a b\" it's".into(),
        ..grub_opts()
    };
    let b = boot_files(&debian_grub(true), &o).unwrap();
    assert_eq!(
        content(&b.esp, "/EFI/debian/grub.cfg"),
        "# Written by imgbuild. GRUB reads this file for BIOS (core image in the\n\
         # BIOS boot partition) and for UEFI (shim, then the signed GRUB).\n\
         set default=0\n\
         set timeout=0\n\
         if serial --unit=0 --speed=115200; then\n\
         \tterminal_input --append serial\n\
         \tterminal_output --append serial\n\
         fi\n\
         menuentry 'Debian GNU/Linux 12 (bookworm)' --id imgbuild {\n\
         \tsearch --no-floppy --fs-uuid --set=root 01234567-89ab-cdef-0123-456789abcdef\n\
         \tlinux '/vmlinuz' 'root=PARTUUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' 'rw' 'quiet' 'opt=\"a b\"' 'it'\\''s' 'console=ttyS0'\n\
         \tinitrd '/initrd.img'\n\
         }\n"
    );
}

#[test]
fn grub_without_the_links_names_the_kernel_files() {
    let mut t = debian_grub(true);
    t.remove(b"vmlinuz").unwrap();
    t.remove(b"initrd.img").unwrap();
    let b = boot_files(&t, &grub_opts()).unwrap();
    let menu = content(&b.esp, "/EFI/debian/grub.cfg");
    assert!(
        menu.contains("\tlinux '/boot/vmlinuz-6.1.0-40-cloud-amd64' "),
        "{menu}"
    );
    assert!(
        menu.contains("\tinitrd '/boot/initrd.img-6.1.0-40-cloud-amd64'\n"),
        "{menu}"
    );
}

#[test]
fn secure_boot_needs_shim_and_says_which_package() {
    let t = debian_grub(false);
    let err = boot_files(&t, &grub_opts()).unwrap_err().to_string();
    assert!(err.contains("is GRUB itself"), "{err}");
    assert!(err.contains("install the package shim-signed"), "{err}");
    // Without the requirement the disk still boots UEFI, and says it cannot do Secure Boot.
    let b = boot_files(
        &t,
        &BootOptions {
            secure_boot: false,
            ..grub_opts()
        },
    )
    .unwrap();
    assert_eq!(b.firmware, ["uefi"]);
    assert_eq!(
        files(&b.esp),
        [
            "/EFI/BOOT/BOOTX64.EFI",
            "/EFI/BOOT/grub.cfg",
            "/EFI/debian/grub.cfg",
            "/EFI/debian/grubx64.efi"
        ]
    );
}

#[test]
fn an_unsigned_kernel_fails_a_secure_boot_requirement() {
    let mut t = debian_grub(true);
    file(&mut t, "/boot/vmlinuz-6.1.0-40-cloud-amd64", "MZ unsigned");
    let err = boot_files(&t, &grub_opts()).unwrap_err().to_string();
    assert!(
        err.contains("/boot/vmlinuz-6.1.0-40-cloud-amd64 carries no signature"),
        "{err}"
    );
}

#[test]
fn grub_for_uefi_and_bios_name_their_packages() {
    let mut t = debian_grub(true);
    t.remove(b"usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
        .unwrap();
    let err = boot_files(&t, &grub_opts()).unwrap_err().to_string();
    assert!(
        err.contains("install the package grub-efi-amd64-signed"),
        "{err}"
    );
    let o = BootOptions {
        bios: true,
        uefi: false,
        secure_boot: false,
        ..grub_opts()
    };
    let err = boot_files(&debian_grub(true), &o).unwrap_err().to_string();
    assert!(
        err.contains("GRUB for BIOS needs /usr/lib/grub/i386-pc/boot.img"),
        "{err}"
    );
    assert!(err.contains("install the package grub-pc-bin"), "{err}");
}

#[test]
fn systemd_boot_cannot_do_bios_or_secure_boot() {
    let o = BootOptions {
        bios: true,
        ..opts()
    };
    assert!(matches!(
        boot_files(&debian(), &o),
        Err(BootError::BadOption { .. })
    ));
    let o = BootOptions {
        secure_boot: true,
        ..opts()
    };
    let err = boot_files(&debian(), &o).unwrap_err().to_string();
    assert!(err.contains("systemd-boot, unsigned"), "{err}");
    let b = boot_files(&debian(), &opts()).unwrap();
    assert_eq!(b.firmware, ["uefi"]);
    assert_eq!(b.config, "/loader/entries/debian.conf");
}
