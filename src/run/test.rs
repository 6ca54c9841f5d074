//! `imgbuild test`: boots every output of a build directory in every
//! firmware mode `manifest.json` records for it, watches each serial
//! console, and decides each boot:
//!
//! - **passed**: every `expect` pattern appeared (in any order);
//! - **failed at once**: a `fail` pattern appeared (`Kernel panic`, …);
//! - **failed**: the timeout passed first, or QEMU stopped first.
//!
//! The patterns and timeout come from the manifest's `test` record (the
//! recipe's `[test]` table, defaults applied), overridable per run. Boots run
//! in parallel up to the machine's CPUs ([`Slot`]); each console is kept in
//! a log file.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use super::qemu::{Accel, Bus, Machine, Mode, Slot};
use crate::plan::{Hypervisor, TestPlan};
use crate::progress::Progress;
use crate::record::manifest::ReadError;
use crate::record::{OutputRecord, MANIFEST};

/// Why a test run could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The directory's manifest is missing, unreadable, not ours, or names
    /// an output outside the directory.
    #[error(transparent)]
    Manifest(#[from] ReadError),
    /// No scratch directory for the firmware variables and unpacked disks.
    #[error("cannot create a scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
    /// A Compute Engine image's disk could not be unpacked.
    #[error("cannot unpack {}: {source}", path.display())]
    Unpack {
        /// The archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: imgbuild_formats::Error,
    },
    /// A pattern given on the command line is not a regular expression.
    #[error("`{pattern}` is not a regular expression: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        message: String,
    },
    /// The log directory cannot be made.
    #[error("cannot create the log directory {path}: {source}")]
    Logs {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest lists no output that boots.
    #[error("{0} lists no output to boot")]
    Nothing(PathBuf),
}

/// How to run the tests.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Replace the manifest's `expect` patterns (when not empty).
    pub expect: Vec<String>,
    /// Added to the manifest's `fail` patterns.
    pub fail: Vec<String>,
    /// Replace the manifest's timeout.
    pub timeout: Option<Duration>,
    /// Boots at once (at most; machine-wide slots).
    pub jobs: usize,
    /// KVM or TCG.
    pub accel: Accel,
    /// Where each boot's console log goes (created).
    pub logs: PathBuf,
    /// Memory per guest in MiB.
    pub memory_mib: u32,
}

impl TestOptions {
    /// Defaults for testing `dir`: the manifest's checks, logs in
    /// `<dir>.console/` beside it, TCG, as many boots as CPUs.
    pub fn new(dir: &Path) -> Self {
        TestOptions {
            expect: Vec::new(),
            fail: Vec::new(),
            timeout: None,
            jobs: Slot::default_jobs(),
            accel: Accel::Tcg,
            logs: default_logs(dir),
            memory_mib: 1024,
        }
    }
}

/// `<dir>.console`, beside `dir`: not inside it, where `imgbuild verify`
/// would count the logs as files nobody lists.
pub fn default_logs(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.console"))
}

/// One boot's result.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    /// The image file.
    pub output: String,
    /// Its target.
    pub target: String,
    /// The firmware mode.
    pub firmware: Mode,
    /// The disk bus.
    pub bus: Bus,
    /// Passed?
    pub passed: bool,
    /// Seconds from QEMU's start to the decision.
    pub seconds: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The console log.
    pub log: PathBuf,
    /// The console's last lines (failures only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// The build directory.
    pub dir: PathBuf,
    /// The accelerator used.
    pub accel: String,
    /// Patterns expected.
    pub expect: Vec<String>,
    /// Patterns that fail.
    pub fail: Vec<String>,
    /// Seconds per boot allowed.
    pub timeout: u64,
    /// One per output and firmware mode, in manifest order.
    pub cases: Vec<Case>,
}

impl TestReport {
    /// Every boot passed.
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|c| c.passed)
    }
}

/// One boot to do.
struct Job {
    index: usize,
    output: OutputRecord,
    disk: BootDisk,
    mode: Mode,
    bus: Bus,
}

/// The disk QEMU opens for one output.
#[derive(Clone, Debug)]
pub struct BootDisk {
    /// The file: the output itself, or the disk unpacked from it.
    pub image: PathBuf,
    /// Its format as imgbuild names it.
    pub format: String,
    /// Where the disk lies inside the file (offset, size), for a package
    /// that stores it uncompressed (OVA, OCI archive).
    pub member: Option<(u64, u64)>,
}

impl BootDisk {
    /// The disk of `output` in the build directory `dir`: the file itself,
    /// a package's disk in place, or a Compute Engine image's `disk.raw`
    /// unpacked (sparse) into `scratch`. `output.file` must be a plain name
    /// ([`crate::record::read_manifest`] checks it).
    pub fn of(dir: &Path, output: &OutputRecord, scratch: &Path) -> Result<BootDisk, TestError> {
        let path = dir.join(&output.file);
        if !output.is_gce_archive() {
            return Ok(BootDisk {
                image: path,
                format: output.format.name().to_string(),
                member: output.member.as_ref().map(|m| (m.offset, m.size)),
            });
        }
        let image = scratch.join(format!("{}.raw", output.file));
        unpack_gce(&path, &image)?;
        Ok(BootDisk {
            image,
            format: "raw".into(),
            member: None,
        })
    }

    /// A machine booting this disk in `mode` on the bus `imgbuild test`
    /// uses for the platform ([`bus_for`]).
    pub fn machine(&self, hypervisor: Option<Hypervisor>, mode: Mode) -> Machine {
        let mut machine = Machine::for_format(&self.image, &self.format, mode);
        machine.member = self.member;
        machine.bus = bus_for(hypervisor, mode);
        machine
    }
}

/// Removes a scratch directory from the signal handler's list when dropped.
struct Unregister(PathBuf);

impl Drop for Unregister {
    fn drop(&mut self) {
        crate::output::unregister_dir(&self.0);
    }
}

/// Unpacks a Compute Engine image's `disk.raw` from `archive` into `to`.
pub fn unpack_gce(archive: &Path, to: &Path) -> Result<u64, TestError> {
    let io = |what: &str, e| TestError::Unpack {
        path: archive.to_path_buf(),
        source: imgbuild_formats::Error::io(what, e),
    };
    let from = std::fs::File::open(archive).map_err(|e| io("cannot open it", e))?;
    let out = std::fs::File::create(to).map_err(|e| io("cannot create the unpacked disk", e))?;
    imgbuild_formats::package::gce::unpack(from, &out).map_err(|source| TestError::Unpack {
        path: archive.to_path_buf(),
        source,
    })
}

/// The disk bus a platform's guest is tested on: virtio for KVM and
/// KubeVirt, and for the UEFI guests of Hyper-V, Azure and VMware (QEMU has
/// no Hyper-V storage, Debian's OVMF no PVSCSI driver; their kernel carries
/// virtio too); IDE for a BIOS boot of a Hyper-V or Azure image, how
/// Generation 1 attaches its boot disk; PVSCSI for a BIOS boot of a VMware
/// image, where its OVA puts the disk; virtio-scsi for Compute Engine;
/// NVMe for EC2.
pub fn bus_for(hypervisor: Option<Hypervisor>, mode: Mode) -> Bus {
    let Some(bus) = hypervisor.map(|h| h.platform().qemu_bus) else {
        return Bus::Virtio;
    };
    match mode {
        Mode::Bios => bus.bios,
        Mode::Uefi | Mode::SecureBoot => bus.uefi,
    }
}

fn compile(patterns: &[String]) -> Result<Vec<Regex>, TestError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|e| TestError::Pattern {
                pattern: p.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Tests every output of the build directory `dir`.
pub fn test_dir(
    dir: &Path,
    opts: &TestOptions,
    progress: &dyn Progress,
) -> Result<TestReport, TestError> {
    let path = dir.join(MANIFEST);
    // Refused here (before anything is read or written on its word) when an
    // output names anything but a regular file in `dir`.
    let manifest = crate::record::read_manifest(dir)?;
    let mut plan = manifest.test.unwrap_or_else(|| TestPlan::defaults(None));
    if !opts.expect.is_empty() {
        plan.expect = opts.expect.clone();
    }
    plan.fail.extend(opts.fail.iter().cloned());
    if let Some(t) = opts.timeout {
        plan.timeout = t.as_secs().max(1);
    }
    let expect = compile(&plan.expect)?;
    let fail = compile(&plan.fail)?;
    // Compute Engine's tar.gz: QEMU cannot read inside gzip, so its
    // disk.raw is unpacked (sparse) into a scratch directory first.
    let scratch = tempfile::Builder::new()
        .prefix("imgbuild-test-")
        .tempdir()
        .map_err(TestError::Scratch)?;
    crate::output::register_dir(scratch.path());
    let _unregister = Unregister(scratch.path().to_path_buf());
    let jobs = jobs_of(dir, manifest.outputs, scratch.path())?;
    if jobs.is_empty() {
        return Err(TestError::Nothing(path));
    }
    std::fs::create_dir_all(&opts.logs).map_err(|source| TestError::Logs {
        path: opts.logs.clone(),
        source,
    })?;
    let check = Check {
        expect: &expect,
        fail: &fail,
        timeout: Duration::from_secs(plan.timeout),
    };
    let cases = run_jobs(jobs, opts, &check, progress);
    Ok(TestReport {
        dir: dir.to_path_buf(),
        accel: opts.accel.name().into(),
        expect: plan.expect,
        fail: plan.fail,
        timeout: plan.timeout,
        cases,
    })
}

/// One job per output and firmware mode it records, in manifest order, each
/// with its disk ([`BootDisk::of`]) and bus ([`bus_for`]).
fn jobs_of(
    dir: &Path,
    outputs: Vec<OutputRecord>,
    scratch: &Path,
) -> Result<VecDeque<Job>, TestError> {
    let mut jobs = VecDeque::new();
    for output in outputs {
        let disk = BootDisk::of(dir, &output, scratch)?;
        let modes: Vec<Mode> = output
            .firmware
            .iter()
            .filter_map(|m| Mode::from_name(m))
            .collect();
        for mode in modes {
            jobs.push_back(Job {
                index: jobs.len(),
                bus: bus_for(output.hypervisor(), mode),
                output: output.clone(),
                disk: disk.clone(),
                mode,
            });
        }
    }
    Ok(jobs)
}

/// Runs the jobs on `opts.jobs` threads; the cases in job order.
fn run_jobs(
    jobs: VecDeque<Job>,
    opts: &TestOptions,
    check: &Check,
    progress: &dyn Progress,
) -> Vec<Case> {
    let total = jobs.len();
    let queue = Mutex::new(jobs);
    let results = Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.clamp(1, total) {
            scope.spawn(|| loop {
                let Some(job) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                    break;
                };
                let case = run_job(&job, opts, check, progress);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((job.index, case));
            });
        }
    });
    let mut cases = results.into_inner().unwrap_or_else(|e| e.into_inner());
    cases.sort_by_key(|(i, _)| *i);
    cases.into_iter().map(|(_, c)| c).collect()
}

/// What decides a boot.
struct Check<'a> {
    expect: &'a [Regex],
    fail: &'a [Regex],
    timeout: Duration,
}

fn run_job(job: &Job, opts: &TestOptions, check: &Check, progress: &dyn Progress) -> Case {
    let log = opts
        .logs
        .join(format!("{}.{}.log", job.output.file, job.mode.name()));
    let _slot = Slot::take(opts.jobs);
    let step = progress.step(&format!(
        "booting {} with {} ({})",
        job.output.file,
        job.mode,
        job.bus.name()
    ));
    let start = Instant::now();
    let outcome = boot(job, opts, check, &log);
    drop(step);
    let seconds = start.elapsed().as_secs_f64();
    let (passed, failure, text) = match outcome {
        Ok(text) => (true, None, text),
        Err((why, text)) => (false, Some(why), text),
    };
    let last_lines = if passed {
        Vec::new()
    } else {
        last_lines(&text, 15)
    };
    Case {
        output: job.output.file.clone(),
        target: job.output.target.clone(),
        firmware: job.mode,
        bus: job.bus,
        passed,
        seconds,
        failure,
        log,
        last_lines,
    }
}

/// The console's last `n` non-empty lines, without terminal escapes.
pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let clean = strip_escapes(text);
    let lines: Vec<&str> = clean
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// `text` without ANSI escape sequences and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; others: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

type Outcome = Result<String, (String, String)>;

/// Boots one job: Ok(console) when every `expect` appeared, Err((why,
/// console)) otherwise. QEMU is killed either way.
fn boot(job: &Job, opts: &TestOptions, check: &Check, log: &Path) -> Outcome {
    let fail = |why: String| Err((why, String::new()));
    let mut machine = job.disk.machine(job.output.hypervisor(), job.mode);
    machine.accel = opts.accel;
    machine.memory_mib = opts.memory_mib;
    let vars = match tempfile::NamedTempFile::new() {
        Ok(v) => v,
        Err(e) => return fail(format!("cannot create the firmware variables: {e}")),
    };
    let mut cmd = match machine.command(vars.path()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "cannot start {}: {e} (install Debian's `qemu-system-x86`)",
                super::qemu::QEMU
            ))
        }
    };
    let file = std::fs::File::create(log).ok();
    let outcome = watch(&mut child, check, file);
    let _ = child.kill();
    let status = child.wait();
    outcome.map_err(|(why, text)| match status {
        Ok(s) if why.starts_with("QEMU stopped") => (format!("{why} ({s})"), text),
        _ => (why, text),
    })
}

/// Reads QEMU's output until a decision.
fn watch(child: &mut Child, check: &Check, mut log: Option<std::fs::File>) -> Outcome {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    if let Some(mut out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || pump(&mut out, &tx));
    }
    if let Some(mut err) = child.stderr.take() {
        std::thread::spawn(move || pump(&mut err, &tx));
    }
    let deadline = Instant::now() + check.timeout;
    let mut pending = Vec::new();
    let mut text = String::new();
    let mut seen = vec![false; check.expect.len()];
    // Where the last search began: patterns are searched again only from a
    // little before the new output (a match may straddle two reads).
    let mut from = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(&chunk);
                }
                // Decoded as it comes; a character cut between two reads
                // waits for its end.
                pending.extend_from_slice(&chunk);
                let cut = match std::str::from_utf8(&pending) {
                    Err(e) if e.error_len().is_none() => e.valid_up_to(),
                    _ => pending.len(),
                };
                text.push_str(&String::from_utf8_lossy(&pending[..cut]).replace('\r', ""));
                pending.drain(..cut);
                let mut start = from.min(text.len()).saturating_sub(4096);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let window = &text[start..];
                from = text.len();
                if let Some(p) = check.fail.iter().find(|p| p.is_match(window)) {
                    return Err((
                        format!("the console showed `{}`, a failure pattern", p.as_str()),
                        text,
                    ));
                }
                for (s, p) in seen.iter_mut().zip(check.expect) {
                    *s |= p.is_match(window);
                }
                if seen.iter().all(|s| *s) {
                    return Ok(text);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err((
                    format!(
                        "timed out after {} s waiting for {}",
                        check.timeout.as_secs(),
                        missing(check, &seen)
                    ),
                    text,
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err((
                    format!("QEMU stopped before {} appeared", missing(check, &seen)),
                    text,
                ));
            }
        }
    }
}

fn missing(check: &Check, seen: &[bool]) -> String {
    check
        .expect
        .iter()
        .zip(seen)
        .filter(|(_, s)| !**s)
        .map(|(p, _)| format!("`{}`", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pump(from: &mut impl Read, to: &mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.send(buf[..n].to_vec()).is_err() {
            break;
        }
    }
}

/// The summary as a table: one line per boot, then the totals.
pub fn render_table(r: &TestReport) -> String {
    let width = r
        .cases
        .iter()
        .map(|c| c.output.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:width$}  {:11}  {:6}  {:6}  {:>7}\n",
        "OUTPUT", "FIRMWARE", "BUS", "RESULT", "TIME"
    );
    for c in &r.cases {
        out.push_str(&format!(
            "{:width$}  {:11}  {:6}  {:6}  {:>5.1} s\n",
            c.output,
            c.firmware.name(),
            c.bus.name(),
            if c.passed { "pass" } else { "FAIL" },
            c.seconds
        ));
    }
    let failed = r.cases.iter().filter(|c| !c.passed).count();
    out.push_str(&format!(
        "{} boots, {} passed, {failed} failed ({}; expected {}; timeout {} s)\n",
        r.cases.len(),
        r.cases.len() - failed,
        r.accel.to_uppercase(),
        r.expect
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", "),
        r.timeout
    ));
    for c in r.cases.iter().filter(|c| !c.passed) {
        out.push_str(&format!(
            "\nFAILED {} with {}: {}\n  console: {}\n",
            c.output,
            c.firmware.name(),
            c.failure.as_deref().unwrap_or("failed"),
            c.log.display()
        ));
        for l in &c.last_lines {
            out.push_str(&format!("  | {l}\n"));
        }
    }
    out
}

/// The summary as JUnit XML: one test suite, one test case per output and
/// firmware mode (`<file> [<mode>]`, class `imgbuild.<target>`), failures
/// with the reason and the console's last lines.
pub fn render_junit(r: &TestReport) -> String {
    let failed = r.cases.iter().filter(|c| !c.passed).count();
    let time: f64 = r.cases.iter().map(|c| c.seconds).sum();
    let name = xml(&format!("imgbuild test {}", r.dir.display()));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{name}\" tests=\"{}\" failures=\"{failed}\" time=\"{time:.3}\">\n",
        r.cases.len()
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">\n",
        r.cases.len()
    ));
    for c in &r.cases {
        out.push_str(&format!(
            "    <testcase classname=\"imgbuild.{}\" name=\"{} [{}]\" time=\"{:.3}\">\n",
            xml(&c.target),
            xml(&c.output),
            c.firmware.name(),
            c.seconds
        ));
        if let Some(why) = &c.failure {
            out.push_str(&format!(
                "      <failure message=\"{}\" type=\"boot\">{}</failure>\n",
                xml(why),
                xml(&c.last_lines.join("\n"))
            ));
        }
        out.push_str(&format!(
            "      <system-out>console log: {}</system-out>\n",
            xml(&c.log.display().to_string())
        ));
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// `s` escaped for XML text and attributes, without the characters XML 1.0
/// forbids (terminal escapes on a console).
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(xml("a<b & \"c\"\u{1b}[0m"), "a&lt;b &amp; &quot;c&quot;[0m");
    }

    #[test]
    fn last_lines_drop_escapes_and_blank_lines() {
        let text = "one\r\n\u{1b}[2Jtwo\r\n\r\n\u{1b}[0mthree\n";
        assert_eq!(last_lines(text, 2), ["two", "three"]);
    }

    #[test]
    fn bios_boots_of_hyper_v_and_azure_images_use_ide() {
        let bus = |h: &str, m| bus_for(Hypervisor::from_name(h), m);
        assert_eq!(bus("hyperv-gen1", Mode::Bios), Bus::Ide);
        assert_eq!(bus("azure", Mode::Bios), Bus::Ide);
        assert_eq!(bus("azure", Mode::Uefi), Bus::Virtio);
        assert_eq!(bus("kvm", Mode::Bios), Bus::Virtio);
        assert_eq!(bus("vmware", Mode::Bios), Bus::Pvscsi);
        assert_eq!(bus("vmware", Mode::Uefi), Bus::Virtio);
        assert_eq!(bus("gce", Mode::Bios), Bus::Scsi);
        assert_eq!(bus("kubevirt", Mode::Bios), Bus::Virtio);
        assert_eq!(bus("aws", Mode::Bios), Bus::Nvme);
        assert_eq!(bus("aws", Mode::Uefi), Bus::Nvme);
        assert_eq!(bus("aws", Mode::SecureBoot), Bus::Nvme);
    }
}
