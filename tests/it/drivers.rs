//! Driver check and initramfs reader against a real Debian bookworm rootfs
//! (linux-image-cloud-amd64 + initramfs-tools, made by
//! scripts/debian-rootfs.sh), with `lsinitramfs` and `cpio -t` as oracles
//! and `cpio -o -H newc`, gzip, zstd, xz and `lz4 -l` as independent writers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use imgbuild::tree::cpio;
use imgbuild::tree::drivers::{self, DriverError, Found, Hypervisor};
use imgbuild::tree::{FileData, Inode, Kind, Meta, Tree};

use crate::support::{debian_tar, require_tool, run_ok, tempdir};

/// The parts of the rootfs the driver check reads, extracted with `tar -x`
/// once per tar (a stamp names its size and mtime) under the target's test
/// temp dir: /lib (a symlink), /boot and /usr/lib/modules.
struct Rootfs {
    root: PathBuf,
    version: String,
    initrd: PathBuf,
}

fn extract() -> Option<&'static Rootfs> {
    static ROOTFS: OnceLock<Option<Rootfs>> = OnceLock::new();
    ROOTFS.get_or_init(extract_once).as_ref()
}

fn extract_once() -> Option<Rootfs> {
    if !require_tool("tar") {
        return None;
    }
    let tar = debian_tar()?;
    let meta = fs::metadata(&tar).expect("stat tar");
    let stamp = format!("{} {:?}\n", meta.len(), meta.modified().expect("mtime"));
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("drivers-debian-rootfs");
    let root = base.join("root");
    if fs::read_to_string(base.join("stamp")).ok().as_deref() != Some(stamp.as_str()) {
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&root).expect("mkdir");
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&root)
                .args(["./lib", "./boot", "./usr/lib/modules"]),
        );
        fs::write(base.join("stamp"), &stamp).expect("stamp");
    }
    let initrd = fs::read_dir(root.join("boot"))
        .expect("boot dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("initrd.img-"))
        })
        .expect("initramfs-tools made /boot/initrd.img-*");
    let name = initrd
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    let version = name.trim_start_matches("initrd.img-").to_string();
    Some(Rootfs {
        root,
        version,
        initrd,
    })
}

/// A `Tree` of a directory: module files as empty files (only their names
/// matter to the check), other files with their contents, symlinks as they are.
fn tree_of(root: &Path) -> Tree {
    let meta = Meta {
        mode: 0o755,
        ..Meta::default()
    };
    let mut tree = Tree::new(meta.clone());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_str()
                .expect("utf-8")
                .as_bytes()
                .to_vec();
            let ft = fs::symlink_metadata(&path).expect("lstat").file_type();
            let kind = if ft.is_symlink() {
                Kind::Symlink(
                    fs::read_link(&path)
                        .expect("readlink")
                        .to_str()
                        .expect("utf-8")
                        .as_bytes()
                        .to_vec(),
                )
            } else if ft.is_dir() {
                stack.push(path.clone());
                Kind::Dir(BTreeMap::new())
            } else if drivers::module_name(&rel).is_some() {
                Kind::File(FileData::Bytes(Vec::new().into()))
            } else {
                Kind::File(FileData::Bytes(fs::read(&path).expect("read").into()))
            };
            tree.insert(
                &rel,
                Inode {
                    meta: meta.clone(),
                    kind,
                },
            )
            .expect("insert");
        }
    }
    tree
}

fn bytes(path: &Path) -> FileData {
    FileData::Bytes(fs::read(path).expect("read initrd").into())
}

fn our_names(data: &FileData) -> Vec<String> {
    let listing = cpio::list(data).expect("our reader reads it");
    listing
        .entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect()
}

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `cpio -t` of an uncompressed archive stream given on stdin.
fn cpio_t(raw: &Path) -> Vec<String> {
    let out = run_ok(
        Command::new("cpio")
            .arg("--quiet")
            .arg("-t")
            .stdin(fs::File::open(raw).expect("open")),
    );
    lines(&out.stdout)
}

fn sh(script: &str) {
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null()),
    );
}

#[test]
fn debian_cloud_kernel_passes_every_target() {
    let Some(r) = extract() else { return };
    let tree = tree_of(&r.root);
    assert_eq!(
        drivers::kernel_versions(&tree),
        std::slice::from_ref(&r.version)
    );
    let initrd = bytes(&r.initrd);
    for target in Hypervisor::ALL {
        let report = drivers::check(&tree, &r.version, target, Some(&initrd))
            .unwrap_or_else(|e| panic!("stock Debian cloud kernel fails {target}: {e}"));
        assert_eq!(report.kernel_version, r.version);
        eprintln!(
            "{target}: {:?}",
            report
                .modules
                .iter()
                .map(|m| (&m.name, &m.found))
                .collect::<Vec<_>>()
        );
    }
    let hv = drivers::check(&tree, &r.version, Hypervisor::Hyperv, Some(&initrd))
        .expect("checked above");
    let storvsc = hv
        .modules
        .iter()
        .find(|m| m.name == "hv_storvsc")
        .expect("reported");
    assert!(storvsc.found.contains(&Found::Initramfs), "{storvsc:?}");
}

#[test]
fn debian_initrd_listing_matches_lsinitramfs_and_cpio() {
    let Some(r) = extract() else { return };
    if !require_tool("lsinitramfs") || !require_tool("cpio") || !require_tool("gzip") {
        return;
    }
    let data = bytes(&r.initrd);
    let t = Instant::now();
    let ours = our_names(&data);
    let ours_time = t.elapsed();
    let t = Instant::now();
    let lsinitramfs = lines(&run_ok(Command::new("lsinitramfs").arg(&r.initrd)).stdout);
    eprintln!(
        "listing {} bytes: imgbuild {ours_time:?}, lsinitramfs {:?}",
        data.len(),
        t.elapsed()
    );
    assert_eq!(ours, lsinitramfs, "our listing differs from lsinitramfs");
    let dir = tempdir();
    let raw = dir.path().join("raw.cpio");
    sh(&format!(
        "gzip -dc '{}' > '{}'",
        r.initrd.display(),
        raw.display()
    ));
    assert_eq!(ours, cpio_t(&raw), "our listing differs from cpio -t");
    assert!(
        ours.len() > 100,
        "a real initramfs has hundreds of entries, got {}",
        ours.len()
    );
}

/// Builds an uncompressed early-microcode archive with `cpio -o -H newc`
/// (as initramfs-tools' early hooks do) at `out`.
fn microcode_cpio(dir: &Path, out: &Path) {
    let early = dir.join("early");
    fs::create_dir_all(early.join("kernel/x86/microcode")).expect("mkdir");
    fs::write(
        early.join("kernel/x86/microcode/GenuineIntel.bin"),
        [0x55u8; 3000],
    )
    .expect("write");
    sh(&format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio --quiet -o -H newc > '{}'",
        early.display(),
        out.display()
    ));
}

#[test]
fn recompressed_debian_initrd_with_microcode_prefix_matches_oracles() {
    let Some(r) = extract() else { return };
    for tool in ["cpio", "gzip", "zstd", "xz", "lz4", "lsinitramfs"] {
        if !require_tool(tool) {
            return;
        }
    }
    let dir = tempdir();
    let d = dir.path();
    let (raw, early) = (d.join("raw.cpio"), d.join("early.cpio"));
    sh(&format!(
        "gzip -dc '{}' > '{}'",
        r.initrd.display(),
        raw.display()
    ));
    microcode_cpio(d, &early);
    let mut want = cpio_t(&early);
    want.extend(cpio_t(&raw));
    for (name, compress) in [
        ("none", "cat"),
        ("zstd", "zstd -q -1 -c"),
        ("xz", "xz -0 --check=crc32 -c"),
        ("lz4", "lz4 -q -l -c"),
        ("gzip", "gzip -1 -c"),
    ] {
        let img = d.join(format!("initrd-{name}"));
        // early cpio, 512 zero bytes of padding, then the main archive.
        sh(&format!(
            "{{ cat '{e}'; head -c 512 /dev/zero; {compress} '{raw}'; }} > '{img}'",
            e = early.display(),
            raw = raw.display(),
            img = img.display()
        ));
        let data = bytes(&img);
        assert_eq!(
            our_names(&data),
            want,
            "{name}: our listing differs from cpio -t of the parts"
        );
        if name != "lz4" && name != "none" {
            // unmkinitramfs cannot read lz4 legacy, and fails ("premature end
            // of archive") on an uncompressed main archive after an early one,
            // which the kernel accepts; cpio -t of the parts is the oracle there.
            let ls = lines(&run_ok(Command::new("lsinitramfs").arg(&img)).stdout);
            assert_eq!(
                our_names(&data),
                ls,
                "{name}: our listing differs from lsinitramfs"
            );
        }
        let listing = cpio::list(&data).expect("read");
        assert_eq!(
            listing.segments[0].compression,
            cpio::Compression::None,
            "{name}: early segment"
        );
        assert!(
            listing.segments.len() == 2,
            "{name}: two segments, got {:?}",
            listing.segments
        );
    }
}

#[test]
fn initramfs_without_storvsc_fails_for_hyperv_and_passes_for_kvm() {
    // Regression (issue 4): a Hyper-V image whose initramfs lacked hv_storvsc
    // built fine and hung at boot waiting for its root device.
    let Some(r) = extract() else { return };
    for tool in ["cpio", "gzip", "lsinitramfs"] {
        if !require_tool(tool) {
            return;
        }
    }
    let dir = tempdir();
    let d = dir.path();
    let (unpacked, early, img) = (
        d.join("unpacked"),
        d.join("early.cpio"),
        d.join("initrd.img"),
    );
    fs::create_dir(&unpacked).expect("mkdir");
    sh(&format!(
        "cd '{u}' && gzip -dc '{i}' | cpio --quiet -id --no-absolute-filenames && \
         find . -name 'hv_storvsc.ko*' -delete",
        u = unpacked.display(),
        i = r.initrd.display()
    ));
    microcode_cpio(d, &early);
    sh(&format!(
        "cd '{u}' && {{ cat '{e}'; find . | LC_ALL=C sort | cpio --quiet -o -H newc | gzip -1; }} > '{img}'",
        u = unpacked.display(),
        e = early.display(),
        img = img.display()
    ));
    let oracle = lines(&run_ok(Command::new("lsinitramfs").arg(&img)).stdout);
    assert!(
        !oracle.iter().any(|l| l.contains("hv_storvsc")),
        "rebuilt initramfs still has hv_storvsc"
    );
    let data = bytes(&img);
    assert_eq!(
        our_names(&data),
        oracle,
        "our listing differs from lsinitramfs"
    );

    let mut tree = tree_of(&r.root);
    // modules.builtin without hv_storvsc (the cloud kernel builds it as a module).
    let builtin = format!("usr/lib/modules/{}/modules.builtin", r.version);
    let text = fs::read_to_string(r.root.join(&builtin)).expect("modules.builtin");
    let filtered: String = text
        .lines()
        .filter(|l| !l.contains("hv_storvsc"))
        .map(|l| format!("{l}\n"))
        .collect();
    let inode = Inode {
        meta: Meta {
            mode: 0o644,
            ..Meta::default()
        },
        kind: Kind::File(FileData::Bytes(filtered.into_bytes().into())),
    };
    tree.insert(builtin.as_bytes(), inode).expect("replace");

    let err = drivers::check(&tree, &r.version, Hypervisor::Hyperv, Some(&data))
        .expect_err("hv_storvsc is missing");
    let DriverError::Missing {
        target, missing, ..
    } = &err
    else {
        panic!("expected Missing, got {err:?}")
    };
    assert_eq!(*target, Hypervisor::Hyperv);
    assert_eq!(
        missing
            .iter()
            .map(|m| m.names.join("|"))
            .collect::<Vec<_>>(),
        ["hv_storvsc"]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("hv_storvsc") && msg.contains("target hyperv") && msg.contains(&r.version),
        "{msg}"
    );
    eprintln!("{msg}");
    drivers::check(&tree, &r.version, Hypervisor::Kvm, Some(&data))
        .expect("kvm does not need hv_storvsc");
}

#[test]
fn write_config_on_the_debian_tree_records_hyperv_modules() {
    let Some(r) = extract() else { return };
    let mut tree = tree_of(&r.root);
    let changed =
        drivers::write_config(&mut tree, Hypervisor::Hyperv, &Meta::default()).expect("write");
    // This extract has no /etc, so initramfs-tools' list is created.
    assert_eq!(
        changed,
        [
            "/etc/initramfs-tools/modules",
            "/etc/modules-load.d/imgbuild-hyperv.conf"
        ]
    );
    let id = tree
        .lookup(b"etc/modules-load.d/imgbuild-hyperv.conf")
        .expect("written");
    let Kind::File(data) = &tree.inode(id).kind else {
        panic!("not a file")
    };
    let text = String::from_utf8(data.read_all().expect("bytes")).expect("utf-8");
    // The cloud kernel has no hyperv_drm, so the fbdev alternative is listed.
    assert!(
        text.ends_with("hv_netvsc\nhv_utils\nhyperv_keyboard\nhid_hyperv\nhyperv_fb\n"),
        "{text}"
    );
}
