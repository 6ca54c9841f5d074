//! Our GPT against sgdisk, the independent reader.

use imgbuild::ids::Seed;
use imgbuild::layout::{assemble, plan};
use imgbuild_formats::{raw::RawWriter, write_images, VirtualDiskBuilder};

use crate::support::*;

#[test]
fn sgdisk_verifies_our_gpt_and_lists_our_partitions() {
    if !require_tool("sgdisk") {
        return;
    }
    let d = tempdir();
    let plan = plan(3 << 30, 256 << 20, &Seed([3; 32])).unwrap();
    let empty = |i: usize| {
        VirtualDiskBuilder::new(plan.partitions[i].size)
            .build()
            .unwrap()
    };
    // Boot code in the MBR's code area must leave the protective entry alone.
    let code = [0xEBu8; 440];
    let disk = assemble(&plan, &[&empty(0), &empty(1), &empty(2)], Some(&code)).unwrap();
    let img = p(d.path(), "disk.raw");
    let sink = Box::new(RawWriter::new(std::fs::File::create(&img).unwrap()));
    write_images(&disk, vec![sink]).unwrap();

    let out = run(std::process::Command::new("sgdisk").arg("-v").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No problems found"),
        "sgdisk -v:\n{text}"
    );

    let info = |n: &str| {
        let out = run_ok(
            std::process::Command::new("sgdisk")
                .args(["-i", n])
                .arg(&img),
        );
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    // 1: the BIOS boot partition (EF02) from LBA 40 to the first MiB.
    let text = info("1");
    assert!(
        text.contains("21686148-6449-6e6f-744e-656564454649"),
        "{text}"
    );
    assert!(text.contains("first sector: 40 "), "{text}");
    assert!(text.contains("last sector: 2047 "), "{text}");
    // 2: the ESP from 1 MiB.
    let text = info("2");
    assert!(
        text.contains("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
        "{text}"
    );
    assert!(text.contains("first sector: 2048 "), "{text}");
    // 3: the root, physically last.
    let text = info("3");
    assert!(
        text.contains("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
        "{text}"
    );
    assert!(
        text.contains(&plan.partitions[2].guid.to_string()),
        "{text}"
    );
    assert!(text.contains("first sector: 526336"), "{text}");
    assert!(text.contains("partition name: 'root'"), "{text}");
    let out = run_ok(std::process::Command::new("sgdisk").arg("-p").arg(&img));
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains(&plan.disk_guid.to_string()), "{text}");
}
