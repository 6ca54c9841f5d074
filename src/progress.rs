//! Progress reporting. The pipeline reports its steps to a [`Progress`]; a
//! program embedding imgbuild gives its own, or [`Silent`]. The CLI's is
//! [`Console`]: indicatif bars when stderr is a terminal, plain
//! timestamp-free log lines otherwise, nothing with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal.
    Bars,
    /// One line per step on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Bars if stderr is a terminal, lines otherwise; quiet wins.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// Where the pipeline reports its steps.
pub trait Progress: Send + Sync {
    /// A step without a measurable size begins (`reading the OS tree`); it
    /// ends when the returned [`Step`] is dropped.
    fn step(&self, msg: &str) -> Step;

    /// A step that moves `total` bytes begins; [`Step::set`] says how many
    /// are done.
    fn bytes(&self, msg: &str, total: u64) -> Step {
        let _ = total;
        self.step(msg)
    }
}

/// What a [`Step`] reports to.
pub trait StepReport: Send {
    /// Bytes done so far.
    fn set(&self, done: u64);
}

/// One step in progress; it ends when dropped.
pub struct Step(Option<Box<dyn StepReport>>);

impl Step {
    /// A step nobody watches.
    pub fn none() -> Step {
        Step(None)
    }

    /// A step reported to `report` (dropped when the step ends).
    pub fn new(report: impl StepReport + 'static) -> Step {
        Step(Some(Box::new(report)))
    }

    /// Sets the bytes done.
    pub fn set(&self, done: u64) {
        if let Some(r) = &self.0 {
            r.set(done);
        }
    }
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn step(&self, _: &str) -> Step {
        Step::none()
    }
}

/// The CLI's reporter: bars, lines or nothing ([`Mode`]).
#[derive(Clone, Copy, Debug)]
pub struct Console {
    mode: Mode,
}

impl Console {
    /// A reporter in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }
}

/// An indicatif bar, cleared when the step ends.
struct Bar(ProgressBar);

impl StepReport for Bar {
    fn set(&self, done: u64) {
        self.0.set_position(done);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Console {
    fn step(&self, msg: &str) -> Step {
        match self.mode {
            Mode::Quiet => Step::none(),
            Mode::Lines => {
                eprintln!("imgbuild: {msg}");
                Step::none()
            }
            Mode::Bars => {
                let bar = ProgressBar::new_spinner().with_message(msg.to_string());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                Step::new(Bar(bar))
            }
        }
    }

    fn bytes(&self, msg: &str, total: u64) -> Step {
        match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::new(total).with_message(msg.to_string());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:30} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
                    )
                    .expect("valid template"),
                );
                Step::new(Bar(bar))
            }
            _ => self.step(msg),
        }
    }
}
