//! End to end without our ext4 writer: a Debian rootfs tar → its kernel and
//! systemd-boot through `tree::boot::esp_tree` → our FAT32 writer → our GPT
//! with the root made by the reference `mke2fs -d` → a raw disk that OVMF
//! must boot to a `login:` prompt on the serial console.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgbuild::fs::fat::{self, FatOptions};
use imgbuild::ids::Seed;
use imgbuild::layout::{self, assemble};
use imgbuild::tree::boot::{esp_tree, BootOptions, LoaderKind};
use imgbuild::tree::{FileData, Inode, Kind, Meta, Timestamp, Tree};
use imgbuild_formats::raw::RawWriter;
use imgbuild_formats::{disk_from_image, write_images, Format, ImageSink, ReadAt};

use crate::support::{debian_tar, qemu, require_tool, run_ok, tempdir};

const MIB: u64 = 1 << 20;
const EPOCH: i64 = 1_700_000_000;

fn octal(field: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(field);
    u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

fn cstr(field: &[u8]) -> Vec<u8> {
    field.iter().copied().take_while(|&b| b != 0).collect()
}

/// Reads a tar (ustar, GNU long names, pax path/linkpath) into a Tree of
/// directories, regular files (by reference into the tar), symlinks and
/// hard links; other kinds are left out (the boot step needs none).
fn tree_from_tar(path: &Path) -> Tree {
    let tar: Arc<File> = Arc::new(File::open(path).unwrap());
    let len = ReadAt::len(&*tar);
    let meta = |mode: u64, mtime: u64| Meta {
        mode: (mode & 0o7777) as u16,
        mtime: Timestamp::from_secs(mtime as i64),
        ..Meta::default()
    };
    let mut tree = Tree::new(meta(0o755, EPOCH as u64));
    let (mut at, mut long_name, mut long_link) = (0u64, None::<Vec<u8>>, None::<Vec<u8>>);
    let mut h = [0u8; 512];
    while at + 512 <= len {
        tar.read_exact_at(&mut h, at).unwrap();
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = octal(&h[124..136]);
        let data = at + 512;
        at = data + size.div_ceil(512) * 512;
        let read_data = || {
            let mut v = vec![0u8; size as usize];
            tar.read_exact_at(&mut v, data).unwrap();
            v
        };
        let mut name = cstr(&h[0..100]);
        if &h[257..263] == b"ustar\0" && h[345] != 0 {
            name = [cstr(&h[345..500]), b"/".to_vec(), name].concat();
        }
        let mut link = cstr(&h[157..257]);
        match h[156] {
            b'L' => {
                long_name = Some(cstr(&read_data()));
                continue;
            }
            b'K' => {
                long_link = Some(cstr(&read_data()));
                continue;
            }
            b'x' => {
                let records = pax_records(&read_data());
                long_name = records.get(&b"path"[..]).cloned().or(long_name);
                long_link = records.get(&b"linkpath"[..]).cloned().or(long_link);
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        name = long_name.take().unwrap_or(name);
        link = long_link.take().unwrap_or(link);
        let m = meta(octal(&h[100..108]), octal(&h[136..148]));
        let kind = match h[156] {
            b'0' | 0 | b'7' => Kind::File(FileData::Source {
                source: tar.clone(),
                offset: data,
                len: size,
            }),
            b'5' => Kind::Dir(BTreeMap::new()),
            b'2' => Kind::Symlink(link),
            b'1' => {
                tree.link(&name, &link).unwrap();
                continue;
            }
            _ => continue,
        };
        tree.insert(&name, Inode { meta: m, kind }).unwrap();
    }
    tree
}

fn pax_records(data: &[u8]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut rest = data;
    while let Some(sp) = rest.iter().position(|&b| b == b' ') {
        let n: usize = String::from_utf8_lossy(&rest[..sp]).parse().unwrap_or(0);
        if n == 0 || n > rest.len() {
            break;
        }
        let record = &rest[sp + 1..n - 1]; // without the trailing newline
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            out.insert(record[..eq].to_vec(), record[eq + 1..].to_vec());
        }
        rest = &rest[n..];
    }
    out
}

#[test]
fn debian_boots_from_our_esp_and_gpt_under_ovmf() {
    if !require_tool(qemu::QEMU) || !require_tool("mke2fs") {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    let dir = tempdir();
    let started = Instant::now();

    let seed = Seed::from_bytes(b"imgbuild esp_boot test");
    let (size, esp_size) = (1280 * MIB, 128 * MIB);
    let plan = layout::plan(size, esp_size, &seed).unwrap();
    let (bios_part, esp_part, root_part) = (
        &plan.partitions[0],
        &plan.partitions[1],
        &plan.partitions[2],
    );

    let os = tree_from_tar(&tar);
    let opts = BootOptions {
        loader: LoaderKind::SystemdBoot,
        bios: false,
        uefi: true,
        secure_boot: false,
        root_fs_uuid: imgbuild::ids::Guid([0; 16]),
        esp_partition: layout::ESP_ENTRY,
        bios_boot_lba: bios_part.start / 512,
        entry_id: "debian".into(),
        title: "Debian GNU/Linux 12 (bookworm)".into(),
        root_partuuid: root_part.guid,
        cmdline: "console=ttyS0".into(),
        extra_cmdline: String::new(),
        timeout: 0,
        epoch: EPOCH,
        host_systemd_boot: None,
    };
    let (esp, info) = esp_tree(&os, &opts).unwrap();
    let fat_opts = FatOptions {
        size: esp_part.size,
        volume_id: seed.u32("esp.volume_id"),
        label: fat::DEFAULT_LABEL.into(),
        epoch: EPOCH,
        hidden_sectors: u32::try_from(esp_part.start / 512).unwrap(),
    };
    let esp_disk = fat::write(&esp, &fat_opts).unwrap();

    // The root by the reference tool (only for this test): mke2fs -d tar.
    let root_img = dir.path().join("root.ext4");
    run_ok(
        Command::new("mke2fs")
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&tar)
            .arg(&root_img)
            .arg(format!("{}k", root_part.size / 1024)),
    );
    let root_disk =
        disk_from_image(imgbuild_formats::open(&root_img, Some(Format::Raw)).unwrap()).unwrap();
    let no_bios = imgbuild_formats::VirtualDiskBuilder::new(bios_part.size)
        .build()
        .unwrap();
    let disk = assemble(&plan, &[&no_bios, &esp_disk, &root_disk], None).unwrap();
    let image = dir.path().join("disk.raw");
    let sink: Box<dyn ImageSink> = Box::new(RawWriter::new(File::create(&image).unwrap()));
    write_images(&disk, vec![sink]).unwrap();
    let built = started.elapsed();

    let boot_start = Instant::now();
    let log = qemu::boot_until(&image, "raw", &["login:"], Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    let booted = boot_start.elapsed();
    // The kernel that booted is the one the boot step chose.
    assert!(
        log.contains(&format!("Linux version {}", info.kernel_version)),
        "kernel {} not in log",
        info.kernel_version
    );
    assert!(
        log.contains(&format!("root=PARTUUID={}", root_part.guid)),
        "cmdline not in log"
    );
    eprintln!(
        "built in {built:?}, booted to login: in {booted:?} (kernel {})",
        info.kernel_version
    );
}
