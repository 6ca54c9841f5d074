//! CLI behaviour: exit codes, exact messages, no output left on failure.

mod support;

use support::*;

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
        err.contains("use a .raw/.img, .qcow2, .vhdx or .vhd name, or --format"),
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
    run_ok(imgbuild().arg("verify").arg(d.path()));
    std::fs::write(p(d.path(), "a.qcow2"), b"abd").unwrap();
    let out = run(imgbuild().arg("verify").arg(d.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MISMATCH a.qcow2"));
}
