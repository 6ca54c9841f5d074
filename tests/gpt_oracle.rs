//! Our GPT against sgdisk, the independent reader.

mod support;

use imgbuild::ids::Seed;
use imgbuild::layout::{assemble, uefi_plan};
use imgbuild_formats::{raw::RawWriter, write_images, VirtualDiskBuilder};
use support::*;

#[test]
fn sgdisk_verifies_our_gpt_and_lists_our_partitions() {
    if !require_tool("sgdisk") {
        return;
    }
    let d = tempdir();
    let plan = uefi_plan(3 << 30, 256 << 20, &Seed([3; 32])).unwrap();
    let esp = VirtualDiskBuilder::new(plan.partitions[0].size)
        .build()
        .unwrap();
    let root = VirtualDiskBuilder::new(plan.partitions[1].size)
        .build()
        .unwrap();
    let disk = assemble(&plan, &[&esp, &root]).unwrap();
    let img = p(d.path(), "disk.raw");
    let sink = Box::new(RawWriter::new(std::fs::File::create(&img).unwrap()));
    write_images(&disk, vec![sink]).unwrap();

    let out = run(std::process::Command::new("sgdisk").arg("-v").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "sgdisk -v:\n{text}"
    );

    let out = run_ok(
        std::process::Command::new("sgdisk")
            .arg("-i")
            .arg("2")
            .arg(&img),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
        "{text}"
    );
    assert!(text.contains(&plan.partitions[1].guid), "{text}");
    assert!(text.contains("first sector: 526336"), "{text}");
    assert!(text.contains("partition name: 'root'"), "{text}");
    let out = run_ok(std::process::Command::new("sgdisk").arg("-p").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains(&plan.disk_guid), "{text}");
}
