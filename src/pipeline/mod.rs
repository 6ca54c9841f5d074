//! The build pipeline: a resolved [`Plan`] in, images, `SHA256SUMS` and
//! `manifest.json` out. Read it top to bottom:
//!
//! ```text
//! prepare:  read_os ─► configure ─► check_drivers ─► write_driver_config ─► layout ─► grow_root ─► fstab
//!           ─► hygiene ─► ext4 (root)
//!           ─► per distinct (cmdline, firmware): boot_files (ESP tree, BIOS code) ─► fat ─► assemble ─► VirtualDisk
//! build:    prepare ─► write every target of a disk in one pass ─► SHA256SUMS ─► manifest.json ─► rename all
//! ```
//! Everything that can fail on the recipe's content (drivers, the content not
//! fitting the disk) fails in `prepare`, before any output file exists.

mod error;
pub mod manifest;
pub mod outputs;

pub use error::{BuildError, Cause};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use imgbuild_formats::package::PackageOptions;
use imgbuild_formats::VirtualDisk;
use sha2::Digest;

use crate::fs::{ext4, fat};
use crate::layout::{self, LayoutPlan};
use crate::plan::{FirmwareModes, NetworkPlan, OsPlan, Plan, TargetPlan};
use crate::plan::{Hypervisor as RecipeHypervisor, Loader};
use crate::progress::Progress;
use crate::record::{BiosRecord, BootRecord, OutputRecord};
use crate::source;
use crate::tree::{boot, config, drivers, systemd, Meta, Timestamp, Tree};
use outputs::{OutputSpec, Pending};

/// Where and how to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Cache for bootstrapped trees.
    pub cache_dir: PathBuf,
    /// Where compressed tars are unpacked (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
    /// mmdebstrap sources: check the archives for newer Release files and
    /// bootstrap again when there are (`--refresh`).
    pub refresh: bool,
}

impl BuildOptions {
    /// Build into `out_dir`, with the default cache
    /// ([`default_cache_dir`]), unpacking in the system temp directory, and
    /// reusing a cached bootstrap as its `max_age` allows.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        BuildOptions {
            out_dir: out_dir.into(),
            cache_dir: default_cache_dir(),
            temp_dir: None,
            refresh: false,
        }
    }
}

/// One disk to write and the targets that share it.
pub struct Disk {
    /// The assembled disk.
    pub disk: VirtualDisk,
    /// Targets written from it.
    pub targets: Vec<TargetPlan>,
    /// How it boots (for the manifest).
    pub boot: BootRecord,
}

/// Everything checked and assembled, nothing written yet.
pub struct Prepared {
    /// Disks, one per distinct content.
    pub disks: Vec<Disk>,
    /// The partition layout.
    pub layout: LayoutPlan,
    /// Kernel version booted.
    pub kernel_version: String,
    /// Installed packages (dpkg), sorted: name, version, and for an
    /// mmdebstrap source the suite of the archive it came from.
    pub packages: Vec<(String, String, Option<String>)>,
    /// An mmdebstrap source's bootstrap: the archives and their Release
    /// dates, and what was done with the cache.
    pub bootstrap: Option<(
        source::mmdebstrap::BootstrapInfo,
        source::mmdebstrap::CacheAction,
    )>,
    /// Bytes of file data in the root filesystem.
    pub root_min_size: u64,
    /// Per target (plan order): where each module it needs was found.
    pub drivers: Vec<(String, drivers::DriverReport)>,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}

impl Prepared {
    /// One line per target for `imgbuild check`:
    /// `hyperv: hv_vmbus (builtin), hv_storvsc (initramfs+installed), …`.
    pub fn driver_lines(&self) -> Vec<String> {
        self.drivers
            .iter()
            .map(|(target, r)| format!("{target}: {}", r.summary()))
            .collect()
    }

    /// One line per disk for `imgbuild check`: its targets, the firmware
    /// modes it boots in and the loader (`kvm: boots with bios, uefi,
    /// secure-boot (grub)`).
    pub fn boot_lines(&self) -> Vec<String> {
        self.disks
            .iter()
            .map(|d| {
                format!(
                    "{}: boots with {} ({})",
                    d.boot.targets.join(", "),
                    d.boot.firmware.join(", "),
                    d.boot.loader
                )
            })
            .collect()
    }
}

/// What a build wrote.
#[derive(Debug, serde::Serialize)]
pub struct BuildReport {
    /// Output directory.
    pub out_dir: PathBuf,
    /// The images.
    pub outputs: Vec<OutputRecord>,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}

struct Timer<'a> {
    timings: &'a mut BTreeMap<String, f64>,
    start: Instant,
}

impl Timer<'_> {
    fn lap(&mut self, stage: &str) {
        let now = Instant::now();
        *self.timings.entry(stage.to_string()).or_default() += (now - self.start).as_secs_f64();
        self.start = now;
    }
}

/// A `Result` of the pipeline.
pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Runs every check and assembles the disks without writing any output:
/// what `imgbuild check` does after the recipe.
pub fn prepare(plan: &Plan, opts: &BuildOptions, progress: &dyn Progress) -> Result<Prepared> {
    let mut timings = BTreeMap::new();
    let mut t = Timer {
        timings: &mut timings,
        start: Instant::now(),
    };
    let epoch = i64::try_from(plan.epoch)
        .map_err(|_| BuildError::Plan(format!("epoch {} out of range", plan.epoch)))?;

    let step = progress.step("reading the OS tree");
    let (mut tree, bootstrap) = read_os(plan, opts, epoch)?;
    drop(step);
    t.lap("read_os");

    let step = progress.step("configuring the tree");
    configure(&mut tree, plan, epoch)?;
    let kernel = boot::find_kernel(&tree).map_err(BuildError::NoKernel)?;
    let driver_reports = check_drivers(&tree, plan, &kernel)?;
    write_driver_config(&mut tree, plan, epoch)?;
    let layout = layout::plan(plan.size, plan.layout.esp_size, &plan.seed)?;
    let (esp_part, root_part) = (layout.esp(), layout.root());
    let mut root_entry = config::FstabEntry::root_ext4(&root_part.guid.to_string());
    if plan.layout.grow_root {
        config::grow_root_on_boot(&mut tree, &root_part.type_guid.to_string(), epoch).map_err(
            |e| BuildError::ConfigStep {
                context: "cannot set up growing the root on first boot".into(),
                source: Box::new(e),
            },
        )?;
        root_entry.options.push_str(",x-systemd.growfs");
    }
    config::write_fstab(
        &mut tree,
        &[
            root_entry,
            config::FstabEntry::esp(&esp_part.guid.to_string()),
        ],
        epoch,
    )?;
    config::clean_for_golden_image(&mut tree, &config::Hygiene::default(), epoch)?;
    let origin = |name: &str, version: &str| {
        let (info, _) = bootstrap.as_ref()?;
        info.origins.get(&format!("{name} {version}")).cloned()
    };
    let packages = config::installed_packages(&tree)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| {
            let o = origin(&n, &v);
            (n, v, o)
        })
        .collect();
    drop(step);
    t.lap("configure");

    let step = progress.step("laying out the root filesystem");
    let mut ext4_opts = ext4::Ext4Options::new(
        root_part.size,
        plan.seed.uuid("ext4.uuid"),
        plan.seed.uuid("ext4.hash_seed"),
        epoch,
    );
    ext4_opts.label = plan.layout.root_label.clone();
    let root = match ext4::write(&tree, &ext4_opts) {
        Ok(r) => r,
        Err(ext4::Ext4Error::TooSmall { needed, .. }) => {
            return Err(BuildError::TooLarge {
                needed,
                available: root_part.size,
                min_disk_size: layout::min_disk_size(plan.layout.esp_size, needed),
            });
        }
        Err(e) => return Err(BuildError::RootFilesystem(e)),
    };
    drop(step);
    t.lap("ext4");

    let step = progress.step("assembling the disks");
    let disks = assemble_disks(&tree, plan, &layout, &root, epoch)?;
    drop(step);
    t.lap("esp_and_gpt");
    Ok(Prepared {
        disks,
        layout,
        kernel_version: kernel.version,
        packages,
        bootstrap,
        root_min_size: root.data_len(),
        drivers: driver_reports,
        timings,
    })
}

/// Builds the plan into `opts.out_dir`: all outputs or none. The output
/// directory is taken first (locked, checked); the images are written into
/// a staging directory in one pass; the inputs' SHA-256s and pins are
/// checked; then the new set replaces the old at once.
pub fn build(plan: &Plan, opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildReport> {
    // First: the output directory is usable, and ours alone until the end.
    let out =
        crate::outdir::OutDir::open(&opts.out_dir).map_err(|e| BuildError::OutputDirectory {
            path: opts.out_dir.clone(),
            message: format!("{e:#}"),
        })?;
    let staging = out.staging().to_path_buf();
    let mut prepared = match prepare(plan, opts, progress) {
        Ok(p) => p,
        // A recipe problem the digests find (a stale `sha256` pin) explains
        // more than whatever it made fail meanwhile: it wins.
        Err(e) => {
            plan.inputs_checked().map_err(BuildError::Inputs)?;
            return Err(e);
        }
    };
    crate::outdir::fault_point("before-write");
    let start = Instant::now();
    let mut pending = Pending::default();
    // Every disk in one pass: they share their root filesystem, read once.
    let disks: Vec<(&VirtualDisk, Vec<OutputSpec>)> = prepared
        .disks
        .iter()
        .map(|d| {
            let specs = d
                .targets
                .iter()
                .map(|t| OutputSpec {
                    target: t.name.clone(),
                    hypervisor: t.hypervisor.name().to_string(),
                    file_name: t.output.clone(),
                    format: t.format,
                    options: t.write_options(&plan.seed),
                    firmware: d.boot.firmware.clone(),
                    package: t.package.clone().map(|package| PackageOptions {
                        package,
                        name: t.output_stem().to_string(),
                        mtime: plan.epoch,
                    }),
                })
                .collect();
            (&d.disk, specs)
        })
        .collect();
    pending
        .write(&staging, &disks, progress)
        .map_err(error::write_error)?;
    prepared
        .timings
        .insert("write_outputs".into(), start.elapsed().as_secs_f64());
    // Its parts: the one pass writing every image, reading back the images
    // not hashed while written, fsync.
    for (phase, secs) in &pending.timings {
        prepared
            .timings
            .insert(format!("write_outputs.{phase}"), *secs);
    }
    // The inputs' SHA-256s ran beside the writing; a pin that does not match
    // fails the build here, before anything is put in place.
    let t = Instant::now();
    let inputs = plan.inputs_checked().map_err(BuildError::Inputs)?;
    prepared
        .timings
        .insert("input_sha256_wait".into(), t.elapsed().as_secs_f64());
    let images = pending.images();
    let sums: Vec<(String, String)> = images
        .iter()
        .map(|o| (o.sha256.clone(), o.file.clone()))
        .collect();
    let json = manifest::of(plan, &inputs, &prepared, &images)
        .to_json()
        .map_err(|e| BuildError::Plan(format!("cannot encode the manifest: {e}")))?;
    let write = |pending: &mut Pending| -> anyhow::Result<Vec<String>> {
        pending.text(
            &staging,
            crate::record::SUMS,
            &crate::record::write_sums(&sums),
        )?;
        pending.text(&staging, crate::record::MANIFEST, &json)?;
        Ok(std::mem::take(pending)
            .commit()?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    };
    let names = write(&mut pending).map_err(error::write_error)?;
    out.commit(&names)
        .map_err(|e| BuildError::OutputDirectory {
            path: opts.out_dir.clone(),
            message: format!("{e:#}"),
        })?;
    Ok(BuildReport {
        out_dir: opts.out_dir.clone(),
        outputs: images,
        timings: prepared.timings,
    })
}

fn dir_meta(epoch: i64) -> Meta {
    Meta {
        mode: 0o755,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    }
}

/// What an mmdebstrap source's bootstrap recorded, and what it did with the cache.
type BootstrapRecord = (
    source::mmdebstrap::BootstrapInfo,
    source::mmdebstrap::CacheAction,
);

fn read_os(
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
            let spec = debootstrap_spec(&plan.os, epoch)
                .ok_or_else(|| BuildError::Plan("not an mmdebstrap source".into()))?;
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

fn configure(tree: &mut Tree, plan: &Plan, epoch: i64) -> Result<()> {
    let c = &plan.config;
    if let Some(h) = &c.hostname {
        config::set_hostname(tree, h, epoch)?;
    }
    if let Some(tz) = &c.timezone {
        config::set_timezone(tree, tz, epoch)?;
    }
    if let Some(l) = &c.locale {
        config::set_locale(tree, l, epoch)?;
    }
    let users: Vec<_> = c.users.iter().map(|u| u.to_spec()).collect();
    config::add_users(tree, &users, epoch)?;
    let files = c
        .files
        .iter()
        .map(|f| {
            f.to_spec(&plan.inputs).map_err(|e| {
                input_error(
                    format!("the content of {}", f.path),
                    f.content.as_ref(),
                    &plan.inputs,
                    e,
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    config::apply_files(tree, &files, epoch)?;
    if c.network == NetworkPlan::Dhcp {
        config::configure_dhcp(tree, epoch)?;
    }
    let meta = Meta {
        mode: 0o644,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    };
    let step = |context: String| {
        move |e: systemd::SystemdError| BuildError::ConfigStep {
            context,
            source: Box::new(e),
        }
    };
    for unit in &c.services.enable {
        systemd::enable_unit(tree, unit, &meta).map_err(step(format!("cannot enable {unit}")))?;
    }
    for unit in &c.services.disable {
        systemd::disable_unit(tree, unit).map_err(step(format!("cannot disable {unit}")))?;
    }
    for unit in &c.services.mask {
        systemd::mask_unit(tree, unit, &meta).map_err(step(format!("cannot mask {unit}")))?;
    }
    if let Some(ci) = &c.cloud_init {
        let seed = ci
            .to_nocloud(&plan.inputs)
            .map_err(|e| BuildError::ConfigStep {
                context: "cannot read the cloud-init documents".into(),
                source: Box::new(e),
            })?;
        config::write_nocloud(tree, &seed, epoch)?;
    }
    Ok(())
}

/// A file input's read error: [`BuildError::MissingInput`] when the file
/// is gone, else a [`BuildError::ConfigStep`].
fn input_error(
    what: String,
    content: Option<&crate::plan::Content>,
    inputs: &[crate::plan::Input],
    e: std::io::Error,
) -> BuildError {
    let path = match content {
        Some(crate::plan::Content::File(i)) => inputs.get(*i).map(|i| i.path.clone()),
        _ => None,
    };
    match path {
        Some(path) if e.kind() == std::io::ErrorKind::NotFound => {
            BuildError::MissingInput { what, path }
        }
        _ => BuildError::ConfigStep {
            context: format!("cannot read {what}"),
            source: Box::new(e),
        },
    }
}

fn hypervisor(h: RecipeHypervisor) -> drivers::Hypervisor {
    match h {
        RecipeHypervisor::Kvm => drivers::Hypervisor::Kvm,
        RecipeHypervisor::Hyperv | RecipeHypervisor::HypervGen1 => drivers::Hypervisor::HyperV,
        RecipeHypervisor::Azure => drivers::Hypervisor::Azure,
        RecipeHypervisor::Vmware => drivers::Hypervisor::Vmware,
        RecipeHypervisor::Gce => drivers::Hypervisor::Gce,
        RecipeHypervisor::Kubevirt => drivers::Hypervisor::Kubevirt,
    }
}

/// What the boot step needs for one disk: its targets' command line,
/// firmware and Secure Boot requirement.
fn boot_options(
    plan: &Plan,
    layout: &LayoutPlan,
    key: &DiskKey,
    secure_boot: bool,
    epoch: i64,
) -> boot::BootOptions {
    boot::BootOptions {
        loader: match plan.boot.loader {
            Loader::Grub => boot::LoaderKind::Grub,
            Loader::SystemdBoot => boot::LoaderKind::SystemdBoot,
        },
        bios: key.firmware.bios,
        uefi: key.firmware.uefi,
        secure_boot,
        root_fs_uuid: crate::ids::Guid(plan.seed.uuid("ext4.uuid")),
        esp_partition: layout::ESP_ENTRY,
        bios_boot_lba: layout.bios().start / 512,
        entry_id: plan.name.clone(),
        title: plan.name.clone(),
        root_partuuid: layout.root().guid,
        cmdline: key.cmdline.clone(),
        extra_cmdline: key.extra.clone(),
        timeout: 0,
        epoch,
        host_systemd_boot: Some(PathBuf::from(boot::SYSTEMD_BOOT)),
    }
}

/// What makes two targets' disks differ: the command line (the target's,
/// then its hypervisor profile's additions, such as Azure's serial
/// console) and the firmware they boot with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DiskKey {
    cmdline: String,
    extra: String,
    firmware: FirmwareModes,
}

/// Checks every target's drivers. The kernel's module lists are read and the
/// initramfs is unpacked once, whatever the number of targets.
fn check_drivers(
    tree: &Tree,
    plan: &Plan,
    kernel: &boot::Kernel,
) -> Result<Vec<(String, drivers::DriverReport)>> {
    let version = &kernel.version;
    let modules =
        drivers::KernelModules::read(tree, version).map_err(|source| BuildError::Kernel {
            context: format!("cannot read the modules of kernel {version}"),
            source,
        })?;
    let initramfs = match &kernel.initrd {
        Some((path, data)) => {
            let listing = crate::tree::cpio::list(data).map_err(|e| BuildError::Kernel {
                context: format!("cannot read the initramfs {path}"),
                source: drivers::DriverError::Initramfs(e),
            })?;
            drivers::initramfs_modules(&listing, version)
        }
        None => Default::default(),
    };
    let mut reports = Vec::new();
    for t in &plan.targets {
        let report = drivers::check_modules(&modules, &initramfs, hypervisor(t.hypervisor))
            .map_err(|source| BuildError::Drivers {
                target: t.name.clone(),
                kernel: version.clone(),
                source,
            })?;
        reports.push((t.name.clone(), report));
    }
    Ok(reports)
}

fn write_driver_config(tree: &mut Tree, plan: &Plan, epoch: i64) -> Result<()> {
    let meta = Meta {
        mode: 0o644,
        mtime: Timestamp::from_secs(epoch),
        ..Meta::default()
    };
    let mut seen = Vec::new();
    for t in &plan.targets {
        let h = hypervisor(t.hypervisor);
        if !seen.contains(&h) {
            seen.push(h);
            drivers::write_config(tree, h, &meta).map_err(|e| BuildError::ConfigStep {
                context: format!("cannot write the driver configuration for {}", t.name),
                source: Box::new(e),
            })?;
        }
    }
    Ok(())
}

/// One disk per distinct [`DiskKey`]: targets that boot the same way share
/// one disk, assembled once and written in one pass. The root filesystem is
/// the same for all of them (the boot step writes only the ESP, the BIOS
/// boot partition and the MBR's code).
fn assemble_disks(
    tree: &Tree,
    plan: &Plan,
    layout: &LayoutPlan,
    root: &VirtualDisk,
    epoch: i64,
) -> Result<Vec<Disk>> {
    let esp_part = layout.esp();
    let bios_part = layout.bios();
    let mut by_key: BTreeMap<DiskKey, Vec<TargetPlan>> = BTreeMap::new();
    for t in &plan.targets {
        let key = DiskKey {
            cmdline: t.cmdline.clone(),
            extra: hypervisor(t.hypervisor).profile().cmdline.join(" "),
            firmware: t.firmware,
        };
        by_key.entry(key).or_default().push(t.clone());
    }
    let mut disks = Vec::new();
    for (key, targets) in by_key {
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let secure_boot = targets.iter().any(|t| t.secure_boot);
        let opts = boot_options(plan, layout, &key, secure_boot, epoch);
        let files = boot::boot_files(tree, &opts).map_err(|source| BuildError::Boot {
            targets: names.join(", "),
            source,
        })?;
        let bios = files.bios.as_ref().map(|b| BiosRecord {
            boot_code: format!("tree:{}/boot.img", boot::grub::I386_PC),
            core_sha256: crate::ids::hex(&sha2::Sha256::digest(&b.core)),
            core_size: b.core.len() as u64,
            core_modules: b.modules.clone(),
            prefix: b.prefix.clone(),
        });
        let boot = BootRecord {
            targets: names,
            firmware: files.firmware.iter().map(|s| s.to_string()).collect(),
            loader: match files.loader {
                boot::LoaderKind::Grub => "grub".into(),
                boot::LoaderKind::SystemdBoot => "systemd-boot".into(),
            },
            kernel: files.kernel.kernel.0.clone(),
            kernel_signed: files.kernel_signed,
            initrd: files.kernel.initrd.as_ref().map(|i| i.0.clone()),
            cmdline: opts.kernel_cmdline(),
            config: files.config.clone(),
            efi: files.efi.clone(),
            bios,
        };
        let fat_opts = fat::FatOptions {
            size: esp_part.size,
            volume_id: plan.seed.u32("esp.volume_id"),
            label: plan.layout.esp_label.clone(),
            epoch,
            hidden_sectors: u32::try_from(esp_part.start / 512)
                .map_err(|_| BuildError::Plan("the ESP's start is out of range".into()))?,
        };
        let esp = fat::write(&files.esp, &fat_opts).map_err(BuildError::Esp)?;
        let mut core = imgbuild_formats::VirtualDiskBuilder::new(bios_part.size);
        if let Some(b) = &files.bios {
            if b.core.len() as u64 > bios_part.size {
                return Err(BuildError::CoreTooLarge {
                    size: b.core.len() as u64,
                    available: bios_part.size,
                });
            }
            core.bytes(0, b.core.clone());
        }
        let core = core.build()?;
        let code = files.bios.as_ref().map(|b| &b.boot_code);
        let disk = layout::assemble(layout, &[&core, &esp, root], code)?;
        disks.push(Disk {
            disk,
            targets,
            boot,
        });
    }
    Ok(disks)
}

/// For `imgbuild check`, an mmdebstrap source's freshness: when the
/// cached tree was bootstrapped and last found current, and per archive its
/// Release date then and now (fetched now: a newer one says how to refresh).
pub fn freshness_lines(prepared: &Prepared) -> Vec<String> {
    use source::archives::{format_utc, parse_release_date};
    let Some((info, action)) = &prepared.bootstrap else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = |t: u64| now.saturating_sub(t) as f64 / 86_400.0;
    let mut lines = vec![format!(
        "os: bootstrapped {} ({:.1} days ago{}), archives last found current {:.1} days ago",
        format_utc(info.created),
        days(info.created),
        match action {
            source::mmdebstrap::CacheAction::Reused
            | source::mmdebstrap::CacheAction::ReusedUnchanged => ", cached",
            _ => ", just now",
        },
        days(info.checked)
    )];
    let mut newer = false;
    for a in &info.archives {
        let then = a.date.as_deref().unwrap_or("unknown");
        let state = match source::archives::fetch_release_date(&a.archive) {
            Ok(d) if Some(&d) == a.date.as_ref() => "unchanged since".to_string(),
            Ok(d) => {
                let later = match (
                    parse_release_date(&d),
                    a.date.as_deref().and_then(parse_release_date),
                ) {
                    (Some(n), Some(t)) => n > t,
                    _ => true,
                };
                newer |= later;
                format!("now {d}, {} than", if later { "NEWER" } else { "other" })
            }
            Err(e) => format!("could not check ({e}); was"),
        };
        lines.push(format!(
            "archive {} {}: Release {state} {then}",
            a.archive.uri, a.archive.suite
        ));
    }
    if newer {
        lines.push(
            "newer packages are published: `imgbuild build --refresh` bootstraps again (or set max_age in [os] source)"
                .to_string(),
        );
    }
    lines
}

/// The cache directory: `$IMGBUILD_CACHE`, else `$XDG_CACHE_HOME/imgbuild`,
/// else `~/.cache/imgbuild`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IMGBUILD_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("imgbuild");
    }
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".cache/imgbuild"),
        |h| Path::new(&h).join(".cache/imgbuild"),
    )
}

/// What `imgbuild make-fs` makes.
#[derive(Clone, Debug)]
pub struct MakeFs {
    /// ext4 (else FAT32).
    pub ext4: bool,
    /// Filesystem size in bytes.
    pub size: u64,
    /// Volume label.
    pub label: Option<String>,
    /// UUID (ext4), else derived from the seed.
    pub uuid: Option<[u8; 16]>,
    /// Seed for ids.
    pub seed: crate::ids::Seed,
    /// Timestamps of created metadata.
    pub epoch: i64,
    /// Source tarball.
    pub source: PathBuf,
    /// Its zero sectors, when they were measured (see [`crate::source::zeros`]).
    pub zeros: Option<std::sync::Arc<crate::source::zeros::ZeroMap>>,
}

/// One filesystem from a tarball, as a disk of exactly `size` bytes.
pub fn make_fs(m: &MakeFs) -> anyhow::Result<VirtualDisk> {
    use anyhow::Context;
    let mut tree = Tree::new(dir_meta(m.epoch));
    let opts = source::tar::TarOptions {
        temp_dir: None,
        owners: source::tar::Owners::Numeric,
        clamp_mtime: None,
        zeros: m.zeros.clone(),
        max_unpacked: Some(source::UnpackLimit::for_disk(m.size)),
    };
    source::tar::read_tar(&m.source, &mut tree, &opts).context("cannot read the source tarball")?;
    if m.ext4 {
        let uuid = m.uuid.unwrap_or_else(|| m.seed.uuid("ext4.uuid"));
        let mut o = ext4::Ext4Options::new(m.size, uuid, m.seed.uuid("ext4.hash_seed"), m.epoch);
        if let Some(l) = &m.label {
            o.label = l.clone();
        }
        ext4::write(&tree, &o).map_err(|e| match e {
            ext4::Ext4Error::TooSmall { needed, size } => anyhow::anyhow!(
                "{} does not fit in {}: the filesystem needs at least {} ({needed} bytes); raise --size",
                m.source.display(),
                crate::size::human(size),
                crate::size::human(needed)
            ),
            e => anyhow::Error::new(e).context("cannot lay out the ext4 filesystem"),
        })
    } else {
        let o = fat::FatOptions {
            size: m.size,
            volume_id: m.seed.u32("fat.volume_id"),
            label: m
                .label
                .clone()
                .unwrap_or_else(|| fat::DEFAULT_LABEL.to_string()),
            epoch: m.epoch,
            hidden_sectors: 0,
        };
        fat::write(&tree, &o).context("cannot lay out the FAT filesystem")
    }
}
