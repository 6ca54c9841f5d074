//! Helpers shared by the formats crate's oracle tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use imgbuild_formats::{VirtualDisk, VirtualDiskBuilder};

/// True when `tool` is on PATH. When it is not: with `CI=true` the test
/// fails; otherwise it is skipped out loud ([`skip`]).
pub fn require_tool(tool: &str) -> bool {
    let found = has_tool(tool);
    if !found {
        skip(&format!(
            "{tool} is not installed (scripts/install-deps.sh installs it)"
        ));
    }
    found
}

/// True when `tool` is on PATH (nothing recorded).
pub fn has_tool(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Skips the calling test because a tool is missing: with `CI=true` it
/// panics (CI installs every tool, so a skip there is a failure). Otherwise
/// it prints the reason and appends it to `$IMGBUILD_TEST_REPORT/skips.txt`,
/// which `scripts/test.sh` counts and lists in its summary (libtest itself
/// would count the test as passed). The caller returns right after.
pub fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}: with CI=true nothing is skipped");
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| {
            s.rsplit_once('-')
                .map_or(s.clone(), |(name, _hash)| name.to_string())
        })
        .unwrap_or_default();
    eprintln!("SKIPPED {binary}::{test}: {reason}");
    if let Some(dir) = std::env::var_os("IMGBUILD_TEST_REPORT") {
        use std::io::Write;
        let _ = std::fs::create_dir_all(&dir);
        let line = format!("{binary}::{test}\t{reason}\n");
        // One short O_APPEND write per line: lines from parallel tests never interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&dir).join("skips.txt"))
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Runs a command; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One piece of data on a generated disk.
#[derive(Clone, Debug)]
pub struct Piece {
    /// Disk offset (clamped into the disk when building).
    pub offset: u64,
    /// Length in bytes (clamped).
    pub len: u64,
    /// Content style and seed: even seeds compress well, odd seeds are noise.
    pub seed: u32,
}

/// Bytes for a piece: text-like repetitive data for even seeds, xorshift
/// noise (incompressible) for odd ones, so compressed writers meet both.
pub fn piece_bytes(len: usize, seed: u32) -> Vec<u8> {
    if seed.is_multiple_of(2) {
        let words: [&[u8]; 6] = [
            b"kernel ",
            b"initrd ",
            b"\x00\x00\x00\x00",
            b"ext4 ",
            b"qcow2\n",
            b"\x7fELF",
        ];
        let mut out = Vec::with_capacity(len);
        let mut i = seed as usize;
        while out.len() < len {
            out.extend_from_slice(words[i % words.len()]);
            i = i.wrapping_mul(31).wrapping_add(7) % 1009;
        }
        out.truncate(len);
        out
    } else {
        let mut x = u64::from(seed) | 0x9e37_79b9_0000_0000;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}

/// A sparse disk of `size` bytes holding `pieces` (sorted, overlaps dropped,
/// clamped to the size).
pub fn sparse_disk(size: u64, pieces: &[Piece]) -> VirtualDisk {
    let mut sorted: Vec<Piece> = pieces.to_vec();
    sorted.sort_by_key(|p| p.offset);
    let mut b = VirtualDiskBuilder::new(size);
    let mut end = 0u64;
    for p in sorted {
        if size == 0 || p.offset >= size || p.offset < end {
            continue;
        }
        let len = p.len.min(size - p.offset);
        if len == 0 {
            continue;
        }
        let bytes: Arc<[u8]> = piece_bytes(usize::try_from(len).unwrap(), p.seed).into();
        b.bytes(p.offset, bytes);
        end = p.offset + len;
    }
    b.build().expect("pieces are sorted and inside the disk")
}

/// `qemu-img check -f FMT IMG` must exit 0 and report neither errors nor
/// leaks.
pub fn qemu_check(img: &Path, qemu_fmt: &str) {
    let out = run(Command::new("qemu-img")
        .args(["check", "-f", qemu_fmt])
        .arg(img));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check -f {qemu_fmt} {}:\n{text}",
        img.display()
    );
    assert!(
        text.contains("No errors were found"),
        "qemu-img check -f {qemu_fmt}:\n{text}"
    );
    assert!(
        !text.contains("Leaked"),
        "qemu-img check -f {qemu_fmt}:\n{text}"
    );
}

/// `qemu-img compare -f raw -F FMT RAW IMG` must say the two hold the same
/// disk.
pub fn qemu_compare(raw: &Path, img: &Path, qemu_fmt: &str) {
    let out = run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", qemu_fmt])
        .arg(raw)
        .arg(img));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img compare -F {qemu_fmt} {}: {text}{}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Images are identical"), "{text}");
}
