//! The first step: the OS tree from a tarball, a directory or an
//! mmdebstrap bootstrap (through the cache the options name).

use std::path::Path;

use super::error::{BuildError, Result};
use super::options::BuildOptions;
use crate::plan::{OsPlan, Plan};
use crate::source;
use crate::tree::{Meta, Timestamp, Tree};

pub(super) fn dir_meta(epoch: i64) -> Meta {
    Meta {
        mode: 0o755,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    }
}

/// What an mmdebstrap source's bootstrap recorded, and what it did with the cache.
pub(super) type BootstrapRecord = (
    source::mmdebstrap::BootstrapInfo,
    source::mmdebstrap::CacheAction,
);

pub(super) fn read_os(
    plan: &Plan,
    opts: &BuildOptions,
    epoch: i64,
) -> Result<(Tree, Option<BootstrapRecord>)> {
    let mut tree = Tree::new(dir_meta(epoch));
    let mut record = None;
    let tar_opts = |zeros| source::tar::TarOptions {
        temp_dir: opts.temp_dir.clone(),
        owners: source::tar::Owners::Numeric,
        clamp_mtime: Some(epoch),
        zeros,
        max_unpacked: Some(source::UnpackLimit::for_disk(plan.size)),
    };
    match &plan.os {
        OsPlan::Tar { path, written, .. } => {
            let zeros = plan
                .inputs
                .iter()
                .find(|i| &i.path == path)
                .and_then(|i| i.zeros.clone());
            source::tar::read_tar(path, &mut tree, &tar_opts(zeros)).map_err(source_error(
                "the OS tarball",
                path,
                written,
            ))?;
        }
        OsPlan::Dir {
            path,
            written,
            keep_owner,
        } => {
            let o = source::dir::DirOptions {
                keep_owner: *keep_owner,
                clamp_mtime: Some(epoch),
                xattrs: true,
            };
            source::dir::read_dir(path, &mut tree, &o).map_err(source_error(
                "the OS directory",
                path,
                written,
            ))?;
        }
        OsPlan::Mmdebstrap { suite, max_age, .. } => {
            let spec = debootstrap_spec(&plan.os, epoch).expect("an mmdebstrap source");
            let policy = source::mmdebstrap::CachePolicy {
                refresh: opts.refresh,
                max_age: *max_age,
            };
            let done = source::mmdebstrap::bootstrap(&spec, &opts.cache_dir, policy).map_err(
                |source| BuildError::Source {
                    context: format!("cannot bootstrap Debian {suite} with mmdebstrap"),
                    source: Box::new(source),
                },
            )?;
            let tar = done.tar.clone();
            record = Some((done.info, done.action));
            // Not a recipe input (no digest): map its zeros on a thread of
            // its own, for the holes; ext4 waits for the map if it must.
            let zeros = source::zeros::ZeroMap::new();
            let nothing_else = source::digest::Want {
                sha256: false,
                content_id: false,
            };
            drop(source::digest::DigestJob::spawn(
                tar.clone(),
                nothing_else,
                Some(zeros.clone()),
                false,
            ));
            source::tar::read_tar(&tar, &mut tree, &tar_opts(Some(zeros))).map_err(|source| {
                BuildError::Source {
                    context: format!("cannot read the bootstrapped tree {}", tar.display()),
                    source: Box::new(source),
                }
            })?;
        }
    }
    Ok((tree, record))
}

/// A source read's error: [`BuildError::MissingInput`] when the path is
/// gone, else [`BuildError::Source`] naming it as the recipe wrote it.
fn source_error<'a>(
    what: &'a str,
    path: &'a Path,
    written: &'a str,
) -> impl FnOnce(source::SourceError) -> BuildError + 'a {
    move |source| {
        if std::fs::symlink_metadata(path).is_err() {
            BuildError::MissingInput {
                what: what.to_string(),
                path: path.to_path_buf(),
            }
        } else {
            BuildError::Source {
                context: format!("cannot read {what} {written}"),
                source: Box::new(source),
            }
        }
    }
}

/// The mmdebstrap run an OS plan asks for (`None` for other sources).
pub fn debootstrap_spec(os: &OsPlan, epoch: i64) -> Option<source::mmdebstrap::DebootstrapSpec> {
    let OsPlan::Mmdebstrap {
        suite,
        variant,
        sources,
        packages,
        components,
        ..
    } = os
    else {
        return None;
    };
    Some(source::mmdebstrap::DebootstrapSpec {
        suite: suite.clone(),
        variant: variant.as_str().to_string(),
        sources: match sources {
            crate::plan::SourcesPlan::Host { updates, security } => {
                source::Sources::Host(source::archives::HostChoice {
                    updates: *updates,
                    security: *security,
                })
            }
            crate::plan::SourcesPlan::Listed(list) => source::Sources::Listed(list.clone()),
        },
        components: components.clone(),
        packages: packages.clone(),
        epoch: Some(epoch),
    })
}
