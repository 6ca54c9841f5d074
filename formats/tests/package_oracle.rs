//! Packages against independent readers: GNU tar and gzip for the GCE
//! tar.gz; GNU tar, sha256, an XML parser and qemu-img for the OVA; skopeo
//! and a local registry for the OCI archive. A missing tool fails the test:
//! these packages have no other oracle.

// Shared with the other oracles; `require_tool` (skip when missing) is not used here.
#[allow(unused_imports)]
mod common_vhdx;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common_vhdx::*;
use imgbuild_formats::package::{self, Package, PackageOptions};
use imgbuild_formats::{write_images, ImageSummary, VirtualDisk, WriteOptions};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// 2023-11-14T22:13:20Z.
const MTIME: u64 = 1_700_000_000;

/// Panics unless `tool` is on PATH: without it the package is unchecked.
fn need(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is required (scripts/install-deps.sh installs it)"
    );
}

/// Data at the start, across a MiB boundary, and in the last sector.
fn ends_in_data() -> VirtualDisk {
    let size = 5 * MIB;
    disk(
        size,
        &[(0, 70_000), (MIB - 100, 300_000), (size - 512, 512)],
    )
}

/// Data in the middle only: the disk ends in a hole.
fn ends_in_hole() -> VirtualDisk {
    disk(6 * MIB, &[(4096, 8192), (2 * MIB, 1_500_000)])
}

/// Thirty short runs: a sparse map longer than a header's four entries.
fn many_runs() -> VirtualDisk {
    let runs: Vec<(u64, usize)> = (0..30u64).map(|i| (i * 100_000 + 7, 1000)).collect();
    disk(4 * MIB, &runs)
}

fn write_package(
    disk: &VirtualDisk,
    package: Package,
    write: &WriteOptions,
    path: &Path,
) -> ImageSummary {
    let options = PackageOptions {
        package,
        name: "test-vm".into(),
        mtime: MTIME,
    };
    let file = File::create(path).unwrap();
    let sink = package::sink(&options, file, write).unwrap();
    write_images(disk, vec![sink]).unwrap().remove(0)
}

fn threads(n: usize) -> WriteOptions {
    WriteOptions {
        threads: Some(n),
        hash: true,
        ..WriteOptions::default()
    }
}

/// Writes `disk` as GCE tar.gz and as raw; returns (tar.gz, raw).
fn gce_pair(disk: &VirtualDisk, dir: &Path) -> (PathBuf, PathBuf) {
    let targz = dir.join("image.tar.gz");
    let raw = dir.join("reference.raw");
    let summary = write_package(disk, Package::GceTarGz, &threads(3), &targz);
    let bytes = std::fs::read(&targz).unwrap();
    assert_eq!(summary.file_size, bytes.len() as u64);
    assert_eq!(summary.virtual_size, disk.size());
    assert_eq!(summary.format, imgbuild_formats::Format::Raw);
    assert_eq!(summary.member, None);
    assert_eq!(
        summary.sha256.map(|h| h.to_vec()),
        Some(Sha256::digest(&bytes).to_vec()),
        "the streamed hash is the file's"
    );
    write(
        disk,
        imgbuild_formats::Format::Raw,
        &WriteOptions::default(),
        &raw,
    );
    (targz, raw)
}

/// `gzip -t`, `tar -tvzf` (one member `disk.raw` of the disk's size) and
/// `tar -xzf`, whose `disk.raw` must equal the raw image.
fn check_gce_with_gnu_tar(disk: &VirtualDisk) -> (tempfile::TempDir, PathBuf) {
    need("gzip");
    need("tar");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (targz, raw) = gce_pair(disk, dir);
    run_ok(Command::new("gzip").arg("-t").arg(&targz));
    let list = stdout_of(Command::new("tar").arg("-tvzf").arg(&targz));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "{list}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[0], "-rw-r--r--", "{list}");
    assert_eq!(fields[1], "root/root", "{list}");
    assert_eq!(fields[2], disk.size().to_string(), "{list}");
    assert_eq!(fields[5], "disk.raw", "{list}");
    let out = dir.join("x");
    std::fs::create_dir(&out).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&targz)
            .arg("-C")
            .arg(&out),
    );
    let extracted = out.join("disk.raw");
    assert!(
        std::fs::read(&extracted).unwrap() == std::fs::read(&raw).unwrap(),
        "extracted disk.raw differs from the raw image"
    );
    (tmp, extracted)
}

#[test]
fn gce_disk_ending_in_data_extracts_with_gnu_tar() {
    check_gce_with_gnu_tar(&ends_in_data());
}

#[test]
fn gce_disk_ending_in_a_hole_extracts_full_length_and_sparse() {
    let d = ends_in_hole();
    let (_dir, extracted) = check_gce_with_gnu_tar(&d);
    let meta = std::fs::metadata(&extracted).unwrap();
    assert_eq!(meta.len(), d.size());
    // GNU tar seeks over the holes: far fewer blocks than the length.
    assert!(
        meta.blocks() * 512 < d.size() / 2,
        "{} blocks for {} bytes",
        meta.blocks(),
        d.size()
    );
}

#[test]
fn gce_sparse_map_with_extension_blocks_extracts_right() {
    check_gce_with_gnu_tar(&many_runs());
}

#[test]
fn gce_empty_disk_extracts_as_all_zeros() {
    check_gce_with_gnu_tar(&disk(MIB, &[]));
}

#[test]
fn gce_bytes_do_not_depend_on_threads_or_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = ends_in_data();
    let mut files = Vec::new();
    for (i, n) in [1, 3, 3].into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.tar.gz"));
        write_package(&d, Package::GceTarGz, &threads(n), &path);
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(files[0] == files[1], "1 thread vs 3 threads");
    assert!(files[1] == files[2], "two runs with 3 threads");
    // No name and no time in the gzip header: bytes 4..8 (MTIME) are zero.
    assert_eq!(&files[0][..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
}
