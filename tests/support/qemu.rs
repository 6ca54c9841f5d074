//! Boots a disk image under QEMU (TCG unless `IMGBUILD_QEMU_ACCEL` says
//! otherwise, e.g. `kvm:tcg`) in one firmware mode and watches the serial
//! console.
//!
//! | firmware | machine | firmware files |
//! |---|---|---|
//! | BIOS | `pc` (SeaBIOS, QEMU's default) | none |
//! | UEFI | `q35` | `OVMF_CODE_4M.fd`, a copy of `OVMF_VARS_4M.fd` |
//! | Secure Boot | `q35,smm=on`, pflash `secure=on` | `OVMF_CODE_4M.secboot.fd`, a copy of `OVMF_VARS_4M.ms.fd` (Microsoft keys, Secure Boot on) |
//!
//! At most `IMGBUILD_QEMU_JOBS` (default: the number of CPUs) guests run at
//! once across every test process: each boot first takes one of that many
//! lock files in the temp dir. Every boot is recorded (image, firmware,
//! seconds, result) in `$IMGBUILD_TEST_REPORT/boots.txt` for the summary of
//! `scripts/test.sh`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use imgbuild::run::qemu::QEMU;
use imgbuild::run::qemu::{Accel, Machine, Slot};

/// How the disk is attached: `Virtio`, `Ide`, `Scsi`, `Pvscsi`.
pub use imgbuild::run::qemu::Bus;
/// How the machine starts: `Bios`, `Uefi`, `SecureBoot`.
pub use imgbuild::run::qemu::Mode as Firmware;

/// One boot.
#[derive(Clone, Debug)]
pub struct Boot<'a> {
    /// The image.
    pub image: &'a Path,
    /// Its format as imgbuild names it: raw, qcow2, vhdx, vhd, vmdk.
    pub format: &'a str,
    /// The disk lies at (offset, length) inside `image` (a package: OVA,
    /// OCI archive), read in place.
    pub member: Option<(u64, u64)>,
    /// Firmware mode.
    pub firmware: Firmware,
    /// Disk bus.
    pub bus: Bus,
    /// Open the image read-only, writes going to a throw-away overlay
    /// (`-snapshot`), so that boots never change a built image and several
    /// may share it.
    pub snapshot: bool,
    /// Every one of these must appear on the serial console.
    pub patterns: &'a [&'a str],
    /// Give up after this long.
    pub timeout: Duration,
    /// Tell the guest to power off when it is done (the SMBIOS system
    /// serial number reads `imgbuild-poweroff`, /sys/class/dmi/id/product_serial)
    /// and wait for QEMU to exit; the patterns must have appeared by then.
    pub poweroff: bool,
}

impl<'a> Boot<'a> {
    /// A snapshot boot on virtio with a ten-minute timeout.
    pub fn new(
        image: &'a Path,
        format: &'a str,
        firmware: Firmware,
        patterns: &'a [&'a str],
    ) -> Self {
        Self {
            image,
            format,
            firmware,
            bus: Bus::Virtio,
            member: None,
            snapshot: true,
            patterns,
            timeout: Duration::from_secs(600),
            poweroff: false,
        }
    }

    /// The same boot, asking the guest to power off when done.
    pub fn poweroff(mut self) -> Self {
        self.poweroff = true;
        self
    }

    /// The same boot of the disk at (offset, length) inside the image.
    pub fn member(mut self, member: Option<(u64, u64)>) -> Self {
        self.member = member;
        self
    }

    /// The same boot on another bus.
    pub fn bus(mut self, bus: Bus) -> Self {
        self.bus = bus;
        self
    }

    /// Boots and returns the serial log once every pattern has appeared in
    /// it, in any order (with `poweroff`: once QEMU has exited, every
    /// pattern having appeared); or an error holding the log so far
    /// (timeout, QEMU exiting first, firmware missing). QEMU is killed
    /// either way.
    pub fn run(&self) -> Result<String, String> {
        let _slot = Slot::take(Slot::default_jobs());
        let start = Instant::now();
        let result = self.run_in_slot();
        record(self, start.elapsed(), result.is_ok());
        result
    }

    fn run_in_slot(&self) -> Result<String, String> {
        let vars = tempfile::NamedTempFile::new().map_err(|e| format!("temp OVMF vars: {e}"))?;
        let mut machine = Machine::for_format(self.image, self.format, self.firmware);
        machine.bus = self.bus;
        machine.member = self.member;
        machine.snapshot = self.snapshot;
        if std::env::var("IMGBUILD_QEMU_ACCEL").is_ok_and(|a| a.starts_with("kvm")) {
            machine.accel = Accel::Kvm;
        }
        if self.poweroff {
            machine.extra = vec!["-smbios".into(), "type=1,serial=imgbuild-poweroff".into()];
        }
        let mut cmd = machine.command(vars.path()).map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
        let result = watch(&mut child, self.patterns, self.timeout, self.poweroff);
        // Ours alone: kill by the child handle, then reap.
        let _ = child.kill();
        let status = child.wait();
        result.map_err(|log| {
            format!(
                "{} under {} ({:?} bus): {log}\n[qemu exit: {status:?}]",
                self.image.display(),
                self.firmware.name(),
                self.bus
            )
        })
    }
}

/// Boots `image` under OVMF (UEFI) on virtio, writing to the image itself;
/// see [`Boot::run`].
pub fn boot_until(
    image: &Path,
    format: &str,
    patterns: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    Boot {
        snapshot: false,
        timeout,
        ..Boot::new(image, format, Firmware::Uefi, patterns)
    }
    .run()
}

/// Reads stdout and stderr on threads; returns Ok(log) when all patterns
/// are seen (`until_exit`: and QEMU has exited), Err(message + log) otherwise.
fn watch(
    child: &mut Child,
    patterns: &[&str],
    timeout: Duration,
    until_exit: bool,
) -> Result<String, String> {
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
                if !until_exit && patterns.iter().all(|p| text.contains(p)) {
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
                if until_exit && patterns.iter().all(|p| text.contains(p)) {
                    return Ok(text.into_owned());
                }
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

fn record(b: &Boot, took: Duration, ok: bool) {
    let Some(dir) = std::env::var_os("IMGBUILD_TEST_REPORT") else {
        return;
    };
    let name = b.image.file_name().unwrap_or_default().to_string_lossy();
    let bus = b.bus.name();
    let line = format!(
        "{name} ({bus})\t{}\t{:.1}\t{}\n",
        b.firmware.name(),
        took.as_secs_f64(),
        if ok { "ok" } else { "FAILED" }
    );
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = File::options()
        .create(true)
        .append(true)
        .open(Path::new(&dir).join("boots.txt"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}
