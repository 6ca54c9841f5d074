//! e2fsprogs as the oracle for the ext4 filesystems we write: `e2fsck -fn`
//! must find nothing, `debugfs` reads files and inodes back.

use std::path::Path;
use std::process::Command;

use super::{run, run_ok};

/// `e2fsck -fn IMG` must exit 0 and report no problem at all: besides its
/// banner, the five pass headers and the summary line, it prints nothing.
pub fn e2fsck_clean(img: &Path) {
    let out = run(Command::new("e2fsck").arg("-fn").arg(img));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "e2fsck -fn {} failed ({}):\n{text}",
        img.display(),
        out.status
    );
    let expected = ["Pass 1:", "Pass 2:", "Pass 3:", "Pass 4:", "Pass 5:"];
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.starts_with("e2fsck ")
                && !expected.iter().any(|p| l.starts_with(p))
                && !l.contains(" non-contiguous), ")
                && !l.is_empty()
        })
        .collect();
    assert!(
        problems.is_empty(),
        "e2fsck -fn {} reported:\n{text}",
        img.display()
    );
}

/// `debugfs -R CMD IMG`'s stdout (times in UTC), which must succeed.
pub fn debugfs(img: &Path, cmd: &str) -> String {
    let out = run_ok(
        Command::new("debugfs")
            .env("TZ", "UTC")
            .arg("-R")
            .arg(cmd)
            .arg(img),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
