//! Our FAT32 writer against independent readers: `fsck.vfat -n` (dosfstools)
//! must find nothing to say, mtools must read back every name and byte,
//! `file -s`/`minfo` must call it FAT32, and `sgdisk -v` must accept the GPT
//! around it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbuild::fs::fat::{self, FatOptions};
use imgbuild::ids::parse_uuid;
use imgbuild::layout::gpt::{self, types, Partition};
use imgbuild::tree::{FileData, Inode, Kind, Meta, Tree};
use imgbuild_formats::raw::RawWriter;
use imgbuild_formats::{write_images, ImageSink, VirtualDisk, VirtualDiskBuilder};

use crate::support::{require_tool, run, run_ok, tempdir};

const MIB: u64 = 1 << 20;
/// 2023-11-14 22:13:20 UTC.
const EPOCH: i64 = 1_700_000_000;

fn opts(size: u64) -> FatOptions {
    FatOptions {
        size,
        volume_id: 0x1234_ABCD,
        label: "ESP".into(),
        epoch: EPOCH,
        hidden_sectors: 0,
    }
}

fn tools() -> bool {
    ["fsck.vfat", "mdir", "mcopy", "mtype", "minfo", "file"]
        .iter()
        .all(|t| require_tool(t))
}

/// Deterministic pseudo-random bytes (an LCG), so content errors show.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

/// A tree with what an ESP and its corner cases hold, and the expected
/// content of every file by path.
struct Fixture {
    tree: Tree,
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
    _backing: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let backing = tempdir();
    let mut tree = Tree::new(Meta {
        mode: 0o755,
        ..Meta::default()
    });
    let mut files = BTreeMap::new();
    let mut add = |tree: &mut Tree, path: &str, data: FileData, content: Vec<u8>| {
        tree.insert(
            path.as_bytes(),
            Inode {
                meta: Meta::default(),
                kind: Kind::File(data),
            },
        )
        .unwrap();
        files.insert(path.to_string(), content);
    };
    let small = |s: &[u8]| (FileData::Bytes(s.into()), s.to_vec());
    // A few MiB by reference from a file on disk, at an offset inside it.
    let big = noise(3 * MIB as usize + 12_345, 7);
    let big_path = backing.path().join("big.bin");
    let mut f = File::create(&big_path).unwrap();
    f.write_all(&[0xEE; 1000]).unwrap();
    f.write_all(&big).unwrap();
    drop(f);
    let source: Arc<dyn imgbuild_formats::ReadAt> = Arc::new(File::open(&big_path).unwrap());
    let big_data = FileData::Source {
        source,
        offset: 1000,
        len: big.len() as u64,
    };
    add(
        &mut tree,
        "EFI/BOOT/BOOTX64.EFI",
        FileData::Bytes(noise(70_000, 1).into()),
        noise(70_000, 1),
    );
    let (d, c) = small(b"systemd-boot\n");
    add(&mut tree, "EFI/systemd/systemd-bootx64.efi", d, c);
    let (d, c) = small(b"default debian.conf\ntimeout 0\n");
    add(&mut tree, "loader/loader.conf", d, c);
    let (d, c) = small(b"title Debian\n");
    add(
        &mut tree,
        "loader/entries/debian-6.1.0-40-cloud-amd64.conf",
        d,
        c,
    );
    add(
        &mut tree,
        "debian/6.1.0-40-cloud-amd64/linux",
        big_data,
        big,
    );
    let (d, c) = small(b"");
    add(&mut tree, "debian/6.1.0-40-cloud-amd64/initrd", d, c);
    let (d, c) = small(b"lower 8.3");
    add(&mut tree, "debian/readme.txt", d, c);
    let (d, c) = small("unicode ✓".as_bytes());
    add(&mut tree, "Ünïcödé/日本語のファイル名.txt", d, c);
    let (d, c) = small(b"deep");
    add(
        &mut tree,
        "a/b/c/d/e/f/g/h/A very long name with spaces and dots.tar.gz",
        d,
        c,
    );
    for i in 0..500u32 {
        let content = noise((i as usize * 37) % 3000, i);
        let data = FileData::Bytes(content.clone().into());
        add(
            &mut tree,
            &format!("many/file number {i:03} with a long name.dat"),
            data,
            content,
        );
    }
    // A hard link: FAT has none, so the writer gives the name its own copy.
    tree.link(b"EFI/BOOT/HARDLINK.EFI", b"EFI/BOOT/BOOTX64.EFI")
        .unwrap();
    files.insert("EFI/BOOT/HARDLINK.EFI".into(), noise(70_000, 1));
    let mut dirs = Vec::new();
    for (path, id) in tree.walk() {
        if matches!(tree.inode(id).kind, Kind::Dir(_)) && !path.is_empty() {
            dirs.push(String::from_utf8(path).unwrap());
        }
    }
    Fixture {
        tree,
        files,
        dirs,
        _backing: backing,
    }
}

fn write_raw(disk: &VirtualDisk, path: &Path) {
    let sink: Box<dyn ImageSink> = Box::new(RawWriter::new(File::create(path).unwrap()));
    write_images(disk, vec![sink]).unwrap();
}

fn mtools(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    // No user configuration; don't insist on CHS-aligned sizes; UTF-8 names.
    c.env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8");
    c
}

/// `fsck.vfat -n` must exit 0 and print only its banner and the summary
/// line; returns the summary.
fn fsck_clean(image: &Path) -> String {
    let out = run(Command::new("fsck.vfat").arg("-n").arg(image));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "fsck.vfat -n failed ({}):\n{text}",
        out.status
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "fsck.vfat -n said more than banner and summary:\n{text}"
    );
    assert!(lines[0].starts_with("fsck.fat "), "{text}");
    lines[1].to_string()
}

/// Checks every name and content through mtools: a recursive `mcopy` out,
/// then a comparison with the fixture, plus `mtype` and `mdir` spot checks.
fn read_back(image_spec: &str, fx: &Fixture) {
    let out = tempdir();
    run_ok(mtools("mcopy").args([
        "-s",
        "-n",
        "-i",
        image_spec,
        "::/",
        out.path().to_str().unwrap(),
    ]));
    let mut found_files = BTreeMap::new();
    let mut found_dirs = Vec::new();
    let root = out.path().to_path_buf();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p: PathBuf = entry.unwrap().path();
            let rel = p.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                found_dirs.push(rel);
                stack.push(p);
            } else {
                found_files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    found_dirs.sort();
    let mut want_dirs = fx.dirs.clone();
    want_dirs.sort();
    assert_eq!(found_dirs, want_dirs, "directories read back by mcopy");
    assert_eq!(
        found_files.keys().collect::<Vec<_>>(),
        fx.files.keys().collect::<Vec<_>>(),
        "file names read back"
    );
    for (path, want) in &fx.files {
        assert!(
            found_files[path] == *want,
            "{path}: content differs ({} vs {} bytes)",
            found_files[path].len(),
            want.len()
        );
    }
    let typed = run_ok(mtools("mtype").args(["-i", image_spec, "::/loader/loader.conf"]));
    assert_eq!(typed.stdout, fx.files["loader/loader.conf"]);
    let listing = run_ok(mtools("mdir").args(["-/", "-b", "-i", image_spec, "::/"]));
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.contains("::/EFI/BOOT/BOOTX64.EFI"), "{listing}");
    assert!(
        listing.contains("::/debian/readme.txt"),
        "lower-case 8.3 name via NT case bits:\n{listing}"
    );
}

fn says_fat32(image: &Path, image_spec: &str) {
    let f = run_ok(Command::new("file").arg("-s").arg(image));
    let f = String::from_utf8_lossy(&f.stdout).into_owned();
    assert!(f.contains("FAT (32 bit)"), "file -s: {f}");
    let info = run_ok(mtools("minfo").args(["-i", image_spec, "::"]));
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("disk type=\"FAT32   \""), "minfo: {info}");
    assert!(info.contains("serial number: 1234ABCD"), "minfo: {info}");
    assert!(info.contains("disk label=\"ESP        \""), "minfo: {info}");
}

fn check_size(size: u64) {
    if !tools() {
        return;
    }
    let fx = fixture();
    let disk = fat::write(&fx.tree, &opts(size)).unwrap();
    let dir = tempdir();
    let image = dir.path().join("esp.img");
    write_raw(&disk, &image);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), size);
    let summary = fsck_clean(&image);
    // fsck.fat counts every file and directory, the root included.
    let entries = fx.files.len() + fx.dirs.len() + 1;
    assert!(
        summary.contains(&format!(": {entries} files, ")),
        "{summary}"
    );
    let spec = image.to_str().unwrap();
    says_fat32(&image, spec);
    read_back(spec, &fx);
}

#[test]
fn esp_tree_at_64_mib_passes_fsck_and_reads_back() {
    check_size(64 * MIB);
}

#[test]
fn esp_tree_at_260_mib_passes_fsck_and_reads_back() {
    check_size(260 * MIB);
}

#[test]
fn esp_tree_at_1_gib_passes_fsck_and_reads_back() {
    check_size(1024 * MIB);
}

#[test]
fn same_tree_gives_byte_identical_images() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    write_raw(&fat::write(&fixture().tree, &opts(64 * MIB)).unwrap(), &a);
    write_raw(&fat::write(&fixture().tree, &opts(64 * MIB)).unwrap(), &b);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
}

#[test]
fn fat_inside_gpt_is_clean_for_sgdisk_fsck_and_mtools() {
    if !tools() || !require_tool("sgdisk") {
        return;
    }
    let fx = fixture();
    let (start, esp_size) = (MIB, 64 * MIB);
    let disk_size = start + esp_size + MIB;
    let fs = fat::write(
        &fx.tree,
        &FatOptions {
            hidden_sectors: (start / 512) as u32,
            ..opts(esp_size)
        },
    )
    .unwrap();
    let mut b = VirtualDiskBuilder::new(disk_size);
    let part = Partition {
        type_guid: parse_uuid(types::ESP).unwrap(),
        guid: parse_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap(),
        first_lba: start / 512,
        last_lba: (start + esp_size) / 512 - 1,
        attributes: 0,
        name: "ESP".into(),
    };
    gpt::write(
        &mut b,
        disk_size,
        parse_uuid("11111111-2222-3333-4444-555555555555").unwrap(),
        &[part],
        None,
    )
    .unwrap();
    b.disk(start, &fs);
    let dir = tempdir();
    let image = dir.path().join("disk.img");
    write_raw(&b.build().unwrap(), &image);

    let v = run_ok(Command::new("sgdisk").arg("-v").arg(&image));
    let v = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(v.contains("No problems found."), "sgdisk -v:\n{v}");
    // fsck.fat has no offset option: check the partition's bytes.
    let part_img = dir.path().join("esp.img");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(
        &part_img,
        &bytes[start as usize..(start + esp_size) as usize],
    )
    .unwrap();
    fsck_clean(&part_img);
    let spec = format!("{}@@1M", image.display());
    read_back(&spec, &fx);
    let info = run_ok(mtools("minfo").args(["-i", &spec, "::"]));
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("hidden sectors: 2048"), "minfo: {info}");
}
