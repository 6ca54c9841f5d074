//! [`Environment`]: the only outside state resolving reads, passed in.

use std::path::PathBuf;

/// The epoch used when neither the recipe nor `SOURCE_DATE_EPOCH` gives one:
/// 2023-11-14T22:13:20Z.
pub const DEFAULT_EPOCH: u64 = 1_700_000_000;

/// The only outside state `resolve` reads, passed in so that tests (and
/// the pipeline after it) never read the process environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// The value of `SOURCE_DATE_EPOCH`, if set.
    pub source_date_epoch: Option<String>,
    /// Directories outside the recipe's own that its files may come from
    /// (`--allow-path`): the build's explicit opt-in. Everything else a
    /// recipe names must resolve, symlinks followed, inside its directory.
    pub allowed_paths: Vec<PathBuf>,
}

impl Environment {
    /// Reads `SOURCE_DATE_EPOCH` from the process environment; no path
    /// outside the recipe's directory is allowed.
    pub fn from_process() -> Self {
        Environment {
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
            allowed_paths: Vec::new(),
        }
    }

    /// The epoch outside a recipe (`imgbuild make-fs`): `SOURCE_DATE_EPOCH`,
    /// else [`DEFAULT_EPOCH`]; an error says what is wrong with the variable.
    pub fn epoch(&self) -> Result<u64, String> {
        match self.source_date_epoch.as_deref() {
            None => Ok(DEFAULT_EPOCH),
            Some(v) => v.trim().parse::<u32>().map(u64::from).map_err(|_| {
                format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds from 0 to 4294967295")
            }),
        }
    }
}
