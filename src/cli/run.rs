//! `imgbuild boot` and `imgbuild test`: arguments and printing over
//! [`imgbuild::run`].

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use imgbuild::progress::{Console, Mode as ProgressMode};
use imgbuild::run::qemu::{Accel, Bus, Machine, Mode, Slot};
use imgbuild::run::test::{
    render_junit, render_table, test_dir, unpack_gce, BootDisk, TestOptions, TestReport,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FirmwareArg {
    Bios,
    Uefi,
    SecureBoot,
}

impl From<FirmwareArg> for Mode {
    fn from(f: FirmwareArg) -> Mode {
        match f {
            FirmwareArg::Bios => Mode::Bios,
            FirmwareArg::Uefi => Mode::Uefi,
            FirmwareArg::SecureBoot => Mode::SecureBoot,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BusArg {
    Virtio,
    Ide,
    Scsi,
    Pvscsi,
    Nvme,
}

impl From<BusArg> for Bus {
    fn from(b: BusArg) -> Bus {
        match b {
            BusArg::Virtio => Bus::Virtio,
            BusArg::Ide => Bus::Ide,
            BusArg::Scsi => Bus::Scsi,
            BusArg::Pvscsi => Bus::Pvscsi,
            BusArg::Nvme => Bus::Nvme,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum AccelArg {
    /// KVM when /dev/kvm works and the host is not itself a VM, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator, said on stderr.
fn accel(a: AccelArg) -> Accel {
    let (accel, why) = match a {
        AccelArg::Auto => Accel::detect(),
        AccelArg::Kvm => (Accel::Kvm, "KVM (--accel kvm)".to_string()),
        AccelArg::Tcg => (Accel::Tcg, "TCG (--accel tcg)".to_string()),
    };
    eprintln!("imgbuild: QEMU with {why}");
    accel
}

#[derive(clap::Args, Debug)]
pub struct BootArgs {
    /// The image (raw, qcow2, VHDX, VHD).
    image: PathBuf,
    /// Firmware (default: the first mode the build's manifest records for
    /// this image, else bios, QEMU's default).
    #[arg(long, value_enum)]
    firmware: Option<FirmwareArg>,
    /// Image format (default: from the extension).
    #[arg(long, value_enum)]
    format: Option<super::FormatArg>,
    /// Disk bus (default: the one `imgbuild test` uses for the platform
    /// the build's manifest records for this image, else virtio).
    #[arg(long, value_enum)]
    bus: Option<BusArg>,
    /// Memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    smp: u32,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// More QEMU arguments, after `--`.
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

/// What the manifest beside `image` records of it: `None` when there is no
/// manifest or it does not list the image; an error when the manifest is
/// there but refused (see [`imgbuild::record::read_manifest`]).
fn recorded(image: &Path) -> Result<Option<imgbuild::record::OutputRecord>> {
    let dir = match image.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Ok(None),
    };
    if !dir.join(imgbuild::record::MANIFEST).exists() {
        return Ok(None);
    }
    let manifest = imgbuild::record::read_manifest(dir)?;
    let name = image.file_name().and_then(|n| n.to_str()).unwrap_or("");
    Ok(manifest.output(name).cloned())
}

pub fn boot(a: BootArgs) -> Result<()> {
    if !a.image.is_file() {
        bail!("{} is not an image file", a.image.display());
    }
    let record = recorded(&a.image)?;
    let mode = a
        .firmware
        .map(Mode::from)
        .or_else(|| {
            let r = record.as_ref()?;
            r.firmware.iter().find_map(|m| Mode::from_name(m))
        })
        .unwrap_or(Mode::Bios);
    // The variables' copy (and an unpacked disk) in a directory a signal's
    // cleanup removes.
    let scratch = tempfile::Builder::new()
        .prefix("imgbuild-boot-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    imgbuild::output::register_dir(scratch.path());
    let mut machine = match (a.format, &record) {
        (Some(f), _) => {
            Machine::for_format(&a.image, imgbuild_formats::Format::from(f).name(), mode)
        }
        // What the manifest records: the disk `imgbuild test` boots (a
        // package's disk in place, Compute Engine's disk.raw unpacked), on
        // the bus it uses for the platform.
        (None, Some(r)) => {
            let dir = a.image.parent().unwrap_or(Path::new("."));
            BootDisk::of(dir, r, scratch.path())?.machine(r.hypervisor(), mode)
        }
        (None, None) if a.image.to_string_lossy().ends_with(".tar.gz") => {
            let raw = scratch.path().join("disk.raw");
            unpack_gce(&a.image, &raw)?;
            Machine::for_format(&raw, "raw", mode)
        }
        (None, None) => Machine::new(&a.image, mode)?,
    };
    if let Some(bus) = a.bus {
        machine.bus = bus.into();
    }
    machine.memory_mib = a.memory;
    machine.smp = a.smp;
    machine.accel = accel(a.accel);
    machine.extra = a.qemu_args;
    let mut cmd = machine.command(&scratch.path().join("OVMF_VARS.fd"))?;
    eprintln!(
        "imgbuild: booting {} with {mode} on {} (read-only: writes go to a throw-away overlay); Ctrl-A X quits",
        a.image.display(),
        machine.bus.name()
    );
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start {} (install Debian's `qemu-system-x86`)",
            imgbuild::run::qemu::QEMU
        )
    })?;
    *guest() = Some(child);
    let status = wait_guest();
    imgbuild::output::unregister_dir(scratch.path());
    let status = status.context("cannot wait for QEMU")?;
    if !status.success() {
        bail!("QEMU ended with {status}");
    }
    Ok(())
}

/// The QEMU `imgbuild boot` runs, for the signal handler to stop.
static GUEST: Mutex<Option<Child>> = Mutex::new(None);

fn guest() -> std::sync::MutexGuard<'static, Option<Child>> {
    GUEST.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits for the guest's QEMU to end (polling, so that the lock is free
/// for [`stop_guest`] in between).
fn wait_guest() -> std::io::Result<std::process::ExitStatus> {
    loop {
        {
            let mut g = guest();
            match g.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => {
                    *g = None;
                    return Ok(status);
                }
                Some(Err(e)) => return Err(e),
                None => return Err(std::io::Error::other("QEMU was stopped")),
                Some(Ok(None)) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops the guest's QEMU, if `imgbuild boot` runs one: the signal
/// handler's first step, so that a killed `imgbuild boot` leaves no QEMU.
pub fn stop_guest() {
    if let Some(mut child) = guest().take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// A build's output directory, or a recipe to build first (into --output).
    target: PathBuf,
    /// Output directory when TARGET is a recipe.
    #[arg(long, short = 'o', default_value = "out")]
    output: PathBuf,
    #[command(flatten)]
    test: TestFlags,
}

/// The options `imgbuild test` and `imgbuild build --test` share.
#[derive(clap::Args, Debug, Default)]
pub struct TestFlags {
    /// A regular expression every boot must print on its serial console
    /// (repeatable; replaces the recipe's `[test] expect`, whose default is
    /// `<hostname> login:`).
    #[arg(long, value_name = "REGEX")]
    pub expect: Vec<String>,
    /// A regular expression that fails a boot at once (repeatable; added to
    /// the recipe's `[test] fail` and `Kernel panic`).
    #[arg(long, value_name = "REGEX")]
    pub fail: Vec<String>,
    /// Seconds each boot may take (default: the recipe's `[test] timeout`, else 300).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Also write the summary as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Boots at once (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Where the console logs go (default: DIR.console beside the output directory).
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
}

pub fn test(a: TestArgs) -> Result<()> {
    let dir = if a.target.is_dir() {
        a.target
    } else {
        super::build_recipe(&a.target, &a.output, a.test.json)?;
        a.output
    };
    test_built(&dir, &a.test)
}

/// Tests the build directory `dir`; an error when a boot failed.
pub fn test_built(dir: &Path, flags: &TestFlags) -> Result<()> {
    let mut opts = TestOptions::new(dir);
    opts.expect = flags.expect.clone();
    opts.fail = flags.fail.clone();
    opts.timeout = flags.timeout.map(Duration::from_secs);
    opts.jobs = flags.jobs.unwrap_or_else(Slot::default_jobs);
    opts.accel = accel(flags.accel);
    if let Some(l) = &flags.logs {
        opts.logs = l.clone();
    }
    let progress = Console::new(ProgressMode::detect(flags.json));
    let report = test_dir(dir, &opts, &progress)?;
    print(&report, flags)?;
    if !report.passed() {
        let failed = report.cases.iter().filter(|c| !c.passed).count();
        bail!(
            "{failed} of {} boots failed (console logs in {})",
            report.cases.len(),
            opts.logs.display()
        );
    }
    Ok(())
}

fn print(report: &TestReport, flags: &TestFlags) -> Result<()> {
    if let Some(path) = &flags.junit {
        imgbuild::output::write_text(path, &render_junit(report))?;
    }
    if flags.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", render_table(report));
    }
    Ok(())
}
