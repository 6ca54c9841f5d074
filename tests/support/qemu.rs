//! Boots a disk image under QEMU with OVMF (UEFI) and watches the serial
//! console. The guest is x86-64 on q35 with TCG (`IMGBUILD_QEMU_ACCEL`
//! overrides, e.g. `kvm:tcg`), 1 GiB of RAM, the disk on virtio-blk.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Firmware code (Debian package ovmf).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Firmware variable store template, copied per boot (it is written to).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The emulator.
pub const QEMU: &str = "qemu-system-x86_64";

/// Boots `image` (`format` as QEMU names it: raw, qcow2, vhdx, vpc) and
/// returns the serial log once every pattern has appeared in it, in any
/// order. On timeout, on QEMU exiting first, or when QEMU or OVMF are
/// missing, returns an error holding the log so far. QEMU is killed either
/// way.
pub fn boot_until(
    image: &Path,
    format: &str,
    patterns: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    for needed in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(needed).exists() {
            return Err(format!("{needed} is missing (install ovmf)"));
        }
    }
    let vars = tempfile::NamedTempFile::new().map_err(|e| format!("temp OVMF vars: {e}"))?;
    std::fs::copy(OVMF_VARS, vars.path()).map_err(|e| format!("copying {OVMF_VARS}: {e}"))?;
    let accel = std::env::var("IMGBUILD_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-machine",
        &format!("q35,accel={accel}"),
        "-m",
        "1024",
        "-nographic",
        "-no-reboot",
    ])
    .arg("-drive")
    .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
    .arg("-drive")
    .arg(format!(
        "if=pflash,format=raw,file={}",
        vars.path().display()
    ))
    .arg("-drive")
    .arg(format!(
        "file={},format={format},if=virtio",
        image.display()
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let result = watch(&mut child, patterns, timeout);
    // Ours alone: kill by the child handle, then reap.
    let _ = child.kill();
    let status = child.wait();
    result.map_err(|log| format!("{log}\n[qemu exit: {status:?}]"))
}

/// Reads stdout and stderr on threads; returns Ok(log) when all patterns
/// are seen, Err(message + log) otherwise.
fn watch(child: &mut Child, patterns: &[&str], timeout: Duration) -> Result<String, String> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut out = child.stdout.take().expect("stdout is piped");
    let tx_out = tx.clone();
    std::thread::spawn(move || pump(&mut out, &tx_out));
    let mut err = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || pump(&mut err, &tx));
    let deadline = Instant::now() + timeout;
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                log.extend_from_slice(&chunk);
                let text = String::from_utf8_lossy(&log);
                if patterns.iter().all(|p| text.contains(p)) {
                    return Ok(text.into_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let text = String::from_utf8_lossy(&log);
                return Err(format!(
                    "timed out after {timeout:?} waiting for {patterns:?}; serial log:\n{text}"
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let text = String::from_utf8_lossy(&log);
                return Err(format!(
                    "QEMU exited before {patterns:?} appeared; serial log:\n{text}"
                ));
            }
        }
    }
}

fn pump(from: &mut impl Read, to: &mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
}
