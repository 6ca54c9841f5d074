//! Progress reporting: indicatif bars when stderr is a terminal, plain
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

/// Reports the build's steps.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// A reporter in `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }

    /// A step without a measurable size.
    pub fn step(&self, msg: &str) -> Step {
        match self.mode {
            Mode::Quiet => Step { bar: None },
            Mode::Lines => {
                eprintln!("imgbuild: {msg}");
                Step { bar: None }
            }
            Mode::Bars => {
                let bar = ProgressBar::new_spinner().with_message(msg.to_string());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                Step { bar: Some(bar) }
            }
        }
    }

    /// A step that moves `total` bytes.
    pub fn bytes(&self, msg: &str, total: u64) -> Step {
        match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::new(total).with_message(msg.to_string());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:30} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
                    )
                    .expect("valid template"),
                );
                Step { bar: Some(bar) }
            }
            _ => self.step(msg),
        }
    }
}

/// One step in progress; finishes (clears) when dropped.
#[derive(Debug)]
pub struct Step {
    bar: Option<ProgressBar>,
}

impl Step {
    /// Sets the bytes done.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
