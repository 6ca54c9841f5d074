//! Packages against independent readers: GNU tar and gzip for the GCE
//! tar.gz; GNU tar, sha1sum, an XML parser, qemu-img and `cot info` (the
//! Common OVF Tool, from PyPI) for the OVA; skopeo
//! and a local registry for the OCI archive. A missing tool fails the test:
//! these packages have no other oracle.

// Shared with the other oracles; `require_tool` (skip when missing) is not used here.
#[allow(unused_imports)]
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild_formats::package::{self, Package, PackageOptions};
use imgbuild_formats::{write_images, ImageSummary, VirtualDisk, WriteOptions};
use sha2::{Digest, Sha256};

use crate::common_vhdx::*;

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
    // Read and write, as the app's outputs are: the OVA reads its VMDK back.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    let sink = package::sink(&options, file, write).unwrap();
    write_images(disk, vec![sink]).unwrap().remove(0)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

// ---------------------------------------------------------------- OVA

const OVF: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
const VSSD: &str = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
const VMW: &str = "http://www.vmware.com/schema/ovf";

fn ovf_settings() -> package::OvfSettings {
    package::OvfSettings {
        name: "test <vm> & co".into(),
        cpus: 3,
        memory_mib: 3072,
        efi: true,
        secure_boot: true,
        controller: package::OvfController::Pvscsi,
    }
}

/// `tar -tvf` of `archive`: (mode, owner, size, name) per member.
fn tar_list(archive: &Path) -> Vec<(String, String, u64, String)> {
    let list = stdout_of(Command::new("tar").arg("-tvf").arg(archive));
    list.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "{l}");
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[5..].join(" "),
            )
        })
        .collect()
}

fn tar_extract(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into),
    );
}

/// The bytes `member` says the disk has, read from `file`.
fn member_bytes(file: &Path, member: &package::Member) -> Vec<u8> {
    let all = std::fs::read(file).unwrap();
    let start = usize::try_from(member.offset).unwrap();
    all[start..start + usize::try_from(member.size).unwrap()].to_vec()
}

fn element<'a, 'i>(node: roxmltree::Node<'a, 'i>, ns: &str, name: &str) -> roxmltree::Node<'a, 'i> {
    node.children()
        .find(|c| {
            c.is_element() && c.tag_name().namespace() == Some(ns) && c.tag_name().name() == name
        })
        .unwrap_or_else(|| panic!("no {{{ns}}}{name} in <{}>", node.tag_name().name()))
}

fn text_of(node: roxmltree::Node, ns: &str, name: &str) -> String {
    element(node, ns, name).text().unwrap_or("").to_string()
}

/// Checks every line of the OVA's manifest, extracted in `dir`, with
/// `sha1sum`: OVF 1.x manifests carry SHA-1 (DSP0243 1.1.0), written
/// `SHA1(<file>)= <hex>` as VMware writes them. Returns the files listed.
fn check_manifest_with_sha1sum(dir: &Path, mf: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join(mf)).unwrap();
    let mut files = Vec::new();
    for line in text.lines() {
        let (file, hex) = line
            .strip_prefix("SHA1(")
            .and_then(|l| l.split_once(")= "))
            .unwrap_or_else(|| panic!("bad manifest line {line:?}"));
        let sum = stdout_of(Command::new("sha1sum").arg(dir.join(file)));
        assert_eq!(sum.split_whitespace().next(), Some(hex), "{file}");
        files.push(file.to_string());
    }
    files
}

/// The Envelope's required parts and the declared hardware; `vmdk_size` is
/// the VMDK member's size, which the `File` must declare.
fn check_ovf(text: &str, vmdk: &str, capacity: u64, vmdk_size: u64) {
    let doc = roxmltree::Document::parse(text).expect("the OVF is well-formed XML");
    let env = doc.root_element();
    assert_eq!(
        (env.tag_name().namespace(), env.tag_name().name()),
        (Some(OVF), "Envelope")
    );
    let file = element(element(env, OVF, "References"), OVF, "File");
    assert_eq!(file.attribute((OVF, "href")), Some(vmdk));
    assert_eq!(
        file.attribute((OVF, "size")),
        Some(vmdk_size.to_string().as_str()),
        "the File's ovf:size is the VMDK member's size"
    );
    let disk = element(element(env, OVF, "DiskSection"), OVF, "Disk");
    assert_eq!(
        disk.attribute((OVF, "capacity")),
        Some(capacity.to_string().as_str())
    );
    assert_eq!(
        disk.attribute((OVF, "capacityAllocationUnits")),
        Some("byte")
    );
    assert_eq!(
        disk.attribute((OVF, "fileRef")),
        file.attribute((OVF, "id"))
    );
    assert_eq!(
        disk.attribute((OVF, "format")),
        Some("http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized")
    );
    let disk_id = disk.attribute((OVF, "diskId")).unwrap();
    let net = element(element(env, OVF, "NetworkSection"), OVF, "Network");
    assert_eq!(net.attribute((OVF, "name")), Some("VM Network"));
    let vs = element(env, OVF, "VirtualSystem");
    assert_eq!(vs.attribute((OVF, "id")), Some("test <vm> & co"));
    assert_eq!(text_of(vs, OVF, "Name"), "test <vm> & co");
    let os = element(vs, OVF, "OperatingSystemSection");
    assert_eq!(
        os.attribute((OVF, "id")),
        Some("96"),
        "CIM OsType 96: Debian 64-Bit"
    );
    assert!(os.attribute((VMW, "osType")).unwrap().starts_with("debian"));
    let hw = element(vs, OVF, "VirtualHardwareSection");
    assert!(text_of(element(hw, OVF, "System"), VSSD, "VirtualSystemType").starts_with("vmx-"));
    let items: Vec<_> = hw
        .children()
        .filter(|c| c.has_tag_name((OVF, "Item")))
        .collect();
    let item = |kind: &str| {
        *items
            .iter()
            .find(|i| text_of(**i, RASD, "ResourceType") == kind)
            .unwrap_or_else(|| panic!("no Item of ResourceType {kind}"))
    };
    assert_eq!(text_of(item("3"), RASD, "VirtualQuantity"), "3");
    assert_eq!(text_of(item("4"), RASD, "VirtualQuantity"), "3072");
    assert_eq!(text_of(item("4"), RASD, "AllocationUnits"), "byte * 2^20");
    let scsi = item("6");
    assert_eq!(text_of(scsi, RASD, "ResourceSubType"), "VirtualSCSI");
    let hd = item("17");
    assert_eq!(
        text_of(hd, RASD, "HostResource"),
        format!("ovf:/disk/{disk_id}")
    );
    assert_eq!(
        text_of(hd, RASD, "Parent"),
        text_of(scsi, RASD, "InstanceID")
    );
    assert_eq!(text_of(hd, RASD, "AddressOnParent"), "0");
    let nic = item("10");
    assert_eq!(text_of(nic, RASD, "ResourceSubType"), "VmxNet3");
    assert_eq!(text_of(nic, RASD, "Connection"), "VM Network");
    let config: Vec<(&str, &str)> = hw
        .children()
        .filter(|c| c.has_tag_name((VMW, "Config")))
        .map(|c| {
            (
                c.attribute((VMW, "key")).unwrap(),
                c.attribute((VMW, "value")).unwrap(),
            )
        })
        .collect();
    assert!(config.contains(&("firmware", "efi")), "{config:?}");
    assert!(
        config.contains(&("bootOptions.efiSecureBootEnabled", "true")),
        "{config:?}"
    );
}

#[test]
fn ova_members_hashes_descriptor_and_disk_pass_gnu_tar_and_qemu() {
    need("tar");
    need("qemu-img");
    need("sha1sum");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = ends_in_data();
    let ova = dir.join("test-vm.ova");
    let summary = write_package(
        &d,
        Package::Ova(ovf_settings()),
        &WriteOptions::default(),
        &ova,
    );
    assert_eq!(summary.format, imgbuild_formats::Format::Vmdk);
    assert_eq!(summary.file_size, std::fs::metadata(&ova).unwrap().len());
    assert_eq!(summary.file_size % 10240, 0, "whole 10240-byte records");
    // GNU tar: the descriptor first, then the manifest, then the disk.
    let members = tar_list(&ova);
    let names: Vec<&str> = members.iter().map(|m| m.3.as_str()).collect();
    assert_eq!(names, ["test-vm.ovf", "test-vm.mf", "test-vm-disk1.vmdk"]);
    let x = dir.join("x");
    tar_extract(&ova, &x);
    assert_eq!(
        check_manifest_with_sha1sum(&x, "test-vm.mf"),
        ["test-vm.ovf", "test-vm-disk1.vmdk"]
    );
    let ovf = std::fs::read_to_string(x.join("test-vm.ovf")).unwrap();
    check_ovf(&ovf, "test-vm-disk1.vmdk", d.size(), members[2].2);
    let vmdk = x.join("test-vm-disk1.vmdk");
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&vmdk),
    );
    let raw = dir.join("reference.raw");
    write(
        &d,
        imgbuild_formats::Format::Raw,
        &WriteOptions::default(),
        &raw,
    );
    qemu_compare(&raw, &vmdk, "vmdk");
    // find_disk and the summary agree on where the VMDK lies.
    let found = package::find_disk(&File::open(&ova).unwrap()).unwrap();
    assert_eq!(Some(&found), summary.member.as_ref());
    assert_eq!(found.format, imgbuild_formats::Format::Vmdk);
    assert!(member_bytes(&ova, &found) == std::fs::read(&vmdk).unwrap());
}

/// `cot info` output lines that flag a problem. cot (Common OVF Tool)
/// exits 0 even when it logs ERROR lines, so its output is what counts.
fn cot_complaints(ova: &Path) -> Vec<String> {
    let out = run_ok(Command::new("cot").arg("info").arg(ova));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("test-vm-disk1.vmdk"),
        "cot did not read the package:\n{text}"
    );
    text.lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARNING"))
        .map(str::to_string)
        .collect()
}

/// Issue 21: `cot info`, an OVF reader independent of VMware's, printed an
/// ERROR for each file of the OVA (SHA-256 digests in the manifest of an
/// OVF 1.x envelope, which specifies SHA-1), and the disk's `File` had no
/// `ovf:size`. Now cot reads it without an ERROR or a WARNING (cot warns
/// when a `File`'s size differs from the file), the size is the VMDK
/// member's, and the manifest's SHA-1 digests are sha1sum's.
#[test]
fn ova_reads_in_cot_without_error_with_file_sizes_and_sha1_digests() {
    need("cot");
    need("tar");
    need("sha1sum");
    let tmp = tempfile::tempdir().unwrap();
    let ova = tmp.path().join("test-vm.ova");
    let d = many_runs();
    write_package(&d, Package::Ova(ovf_settings()), &threads(2), &ova);
    let complaints = cot_complaints(&ova);
    assert!(complaints.is_empty(), "cot info: {complaints:#?}");
    let x = tmp.path().join("x");
    tar_extract(&ova, &x);
    let vmdk = tar_list(&ova)
        .into_iter()
        .find(|m| m.3 == "test-vm-disk1.vmdk")
        .expect("a VMDK member");
    assert_eq!(std::fs::metadata(x.join(&vmdk.3)).unwrap().len(), vmdk.2);
    let ovf = std::fs::read_to_string(x.join("test-vm.ovf")).unwrap();
    check_ovf(&ovf, &vmdk.3, d.size(), vmdk.2);
    assert_eq!(
        check_manifest_with_sha1sum(&x, "test-vm.mf"),
        ["test-vm.ovf", "test-vm-disk1.vmdk"]
    );
}

#[test]
fn ova_with_bios_and_lsilogic_declares_them() {
    let tmp = tempfile::tempdir().unwrap();
    let ova = tmp.path().join("a.ova");
    let settings = package::OvfSettings {
        efi: false,
        secure_boot: false,
        controller: package::OvfController::LsiLogic,
        ..ovf_settings()
    };
    let s = write_package(
        &ends_in_hole(),
        Package::Ova(settings),
        &WriteOptions::default(),
        &ova,
    );
    let bytes = std::fs::read(&ova).unwrap();
    let ovf = String::from_utf8_lossy(&bytes[512..512 + 8192]);
    assert!(ovf.contains(r#"vmw:key="firmware" vmw:value="bios""#));
    assert!(!ovf.contains("efiSecureBootEnabled"));
    assert!(ovf.contains("<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>"));
    assert!(s.member.is_some());
}

#[test]
fn ova_and_oci_bytes_are_the_same_on_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = ends_in_data();
    for package in [Package::Ova(ovf_settings()), Package::OciArchive] {
        let mut files = Vec::new();
        for (i, n) in [1, 3].into_iter().enumerate() {
            let path = tmp.path().join(format!("{i}.{}", package.extension()));
            let opts = WriteOptions {
                threads: Some(n),
                seed: Some([9; 32]),
                ..WriteOptions::default()
            };
            write_package(&d, package.clone(), &opts, &path);
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files[0] == files[1], "{}: two runs differ", package.name());
    }
}

// ---------------------------------------------------------------- OCI

/// A registry (Debian's docker-registry) on a free local port; killed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        need("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on port {port}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON file of an OCI layout directory.
fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The layer descriptor of the one manifest in an OCI layout directory.
fn only_layer(layout: &Path) -> serde_json::Value {
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let manifest = json(&blob_path(layout, manifests[0]["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    layers[0].clone()
}

#[test]
fn oci_archive_goes_through_skopeo_and_a_registry_unchanged() {
    need("tar");
    need("skopeo");
    need("qemu-img");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = ends_in_hole();
    let archive = dir.join("test-vm-kubevirt.oci.tar");
    let summary = write_package(&d, Package::OciArchive, &WriteOptions::default(), &archive);
    assert_eq!(summary.format, imgbuild_formats::Format::Qcow2);
    assert_eq!(
        summary.file_size,
        std::fs::metadata(&archive).unwrap().len()
    );

    // Our layout, read with GNU tar and serde_json.
    let ours = dir.join("ours");
    tar_extract(&archive, &ours);
    let layer = only_layer(&ours);
    assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let digest = layer["digest"].as_str().unwrap().to_string();
    let blob = std::fs::read(blob_path(&ours, &digest)).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&blob)), digest);
    assert_eq!(layer["size"], blob.len() as u64);

    let inspect = stdout_of(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", archive.display())),
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Layers"], serde_json::json!([digest]), "{inspect}");
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");

    let registry = Registry::start();
    let reference = format!("docker://127.0.0.1:{}/imgbuild/test:latest", registry.port);
    run_ok(
        Command::new("skopeo")
            // Without --preserve-digests skopeo gzips the layer on its way to a registry.
            .args(["--insecure-policy", "copy", "--preserve-digests"])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&reference),
    );
    let pulled = dir.join("pulled");
    run_ok(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--preserve-digests"])
            .args([
                "--src-tls-verify=false",
                "--dest-oci-accept-uncompressed-layers",
            ])
            .arg(&reference)
            .arg(format!("oci:{}:latest", pulled.display())),
    );
    drop(registry);
    assert_eq!(
        only_layer(&pulled)["digest"].as_str(),
        Some(digest.as_str())
    );
    assert!(
        std::fs::read(blob_path(&pulled, &digest)).unwrap() == blob,
        "the layer pulled back differs from ours"
    );

    // The layer: disk/ and the qcow2, owned 107:107; the qcow2 is the disk.
    let layer_tar = blob_path(&pulled, &digest);
    let members = tar_list(&layer_tar);
    let expect = [
        ("dr-xr-xr-x", "107/107", "disk/"),
        ("-r--r-----", "107/107", "disk/test-vm.qcow2"),
    ];
    assert_eq!(members.len(), 2, "{members:?}");
    for (m, e) in members.iter().zip(expect) {
        assert_eq!((m.0.as_str(), m.1.as_str(), m.3.as_str()), e);
    }
    let x = dir.join("layer");
    tar_extract(&layer_tar, &x);
    let qcow2 = x.join("disk/test-vm.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&qcow2),
    );
    let raw = dir.join("reference.raw");
    write(
        &d,
        imgbuild_formats::Format::Raw,
        &WriteOptions::default(),
        &raw,
    );
    qemu_compare(&raw, &qcow2, "qcow2");

    let found = package::find_disk(&File::open(&archive).unwrap()).unwrap();
    assert_eq!(Some(&found), summary.member.as_ref());
    assert_eq!(found.name, "disk/test-vm.qcow2");
    assert_eq!(found.format, imgbuild_formats::Format::Qcow2);
    assert!(member_bytes(&archive, &found) == std::fs::read(&qcow2).unwrap());
}

#[test]
fn gce_disk_above_8_gib_uses_base_256_fields_gnu_tar_reads() {
    // Octal fields stop at 8 GiB - 1: the real size and the last offsets
    // are base-256. GNU tar must list and extract it (sparse, so cheap).
    need("tar");
    let size = 16 << 30;
    let d = disk(size, &[(4096, 4096), (10 << 30, 8192), (size - 4096, 4096)]);
    let tmp = tempfile::tempdir().unwrap();
    let targz = tmp.path().join("big.tar.gz");
    write_package(&d, Package::GceTarGz, &threads(2), &targz);
    let list = tar_list_gz(&targz);
    assert_eq!(list, [(size, "disk.raw".to_string())]);
    let x = tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&targz)
            .arg("-C")
            .arg(&x),
    );
    let out = File::open(x.join("disk.raw")).unwrap();
    assert_eq!(out.metadata().unwrap().len(), size);
    let mut a = vec![0u8; 12288];
    let mut b = vec![0u8; 12288];
    for at in [0, (10 << 30) - 2048, size - 12288] {
        imgbuild_formats::ReadAt::read_exact_at(&out, &mut a, at).unwrap();
        d.read_at(at, &mut b).unwrap();
        assert!(a == b, "bytes at {at}");
    }
}

/// `tar -tvzf`: (size, name) per member.
fn tar_list_gz(archive: &Path) -> Vec<(u64, String)> {
    let list = stdout_of(Command::new("tar").arg("-tvzf").arg(archive));
    list.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].parse().unwrap(), f[5..].join(" "))
        })
        .collect()
}

/// `open` reads an OVA and a containerDisk as the disk inside them, in
/// place (what `imgbuild inspect` and `convert` use), and refuses GCE's
/// gzip'd tar saying what to do.
#[test]
fn packages_open_as_the_disk_inside_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = ends_in_data();
    for (package, file, format) in [
        (
            Package::Ova(ovf_settings()),
            "test-vm.ova",
            imgbuild_formats::Format::Vmdk,
        ),
        (
            Package::OciArchive,
            "test-vm.oci.tar",
            imgbuild_formats::Format::Qcow2,
        ),
    ] {
        let path = tmp.path().join(file);
        write_package(&d, package, &WriteOptions::default(), &path);
        let image = imgbuild_formats::open(&path, None).unwrap();
        assert_eq!(image.format(), format, "{file}");
        assert_same_bytes(&d, image.as_ref());
        let facts = image.facts();
        assert!(
            facts
                .iter()
                .any(|(k, v)| k == "package member" && v.contains("test-vm")),
            "{file}: {facts:?}"
        );
    }
    let gz = tmp.path().join("image.tar.gz");
    write_package(&d, Package::GceTarGz, &WriteOptions::default(), &gz);
    let err = imgbuild_formats::open(&gz, None)
        .err()
        .expect("gzip is refused");
    assert!(err.to_string().contains("tar -xzf"), "{err}");
}
