//! `Plan`: the authoritative, fully resolved build.
//!
//! The recipe's resolution turns a recipe into a
//! `Plan`: every default applied, every size in bytes, every path absolute
//! (resolved against the recipe's directory), every input hashed, the epoch
//! and seed fixed. Nothing after this reads the environment or the recipe;
//! the plan is what `manifest.json` records. Checks that need the OS tree
//! (drivers, that the content fits the disk, that groups and units exist)
//! belong to the build pipeline, which has everything it needs here.

use std::path::PathBuf;

use imgbuild_formats::{Compression, Format, Subformat};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::ids::Seed;
pub use crate::platform::{Firmware, Hypervisor};

/// A fully resolved build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The recipe file, as named by the user.
    pub recipe: PathBuf,
    /// SHA-256 of the recipe's bytes (hex).
    pub recipe_sha256: String,
    /// Output file stem.
    pub name: String,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Seconds since 1970 for every timestamp in the image.
    pub epoch: u64,
    /// Where `epoch` came from.
    pub epoch_source: EpochSource,
    /// The build seed (hex of 32 bytes); every UUID/GUID derives from it.
    #[serde(serialize_with = "hex_seed")]
    pub seed: Seed,
    /// Partition layout.
    pub layout: LayoutPlan,
    /// The OS tree's source.
    pub os: OsPlan,
    /// Boot loader and command line.
    pub boot: BootPlan,
    /// Configuration applied to the tree.
    pub config: ConfigPlan,
    /// One output per target, sorted by target name.
    pub targets: Vec<TargetPlan>,
    /// What `imgbuild test` checks on each output's serial console.
    pub test: TestPlan,
    /// Every file input with its digest, in recipe order. The SHA-256 of a
    /// large input may still be computing (empty here): [`Plan::inputs_checked`]
    /// gives them all, its `sha256` pin checked.
    pub inputs: Vec<Input>,
    /// The SHA-256s still computing and the pins they must match (none for
    /// a plan built in code, or whose inputs were all small).
    #[serde(skip)]
    pub checks: InputChecks,
}

impl Plan {
    /// The inputs with every SHA-256, waiting for those still computing,
    /// and every `sha256` pin checked: what the manifest records. The
    /// pipeline calls it after the images are written, before they are put
    /// in place.
    pub fn inputs_checked(&self) -> Result<Vec<Input>, Vec<InputProblem>> {
        self.checks.wait(&self.inputs)
    }
}

/// `imgbuild test`'s checks, as the manifest records them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TestPlan {
    /// Regular expressions that must all appear on the serial console.
    pub expect: Vec<String>,
    /// Regular expressions that fail the boot as soon as they appear.
    pub fail: Vec<String>,
    /// Seconds a boot may take.
    pub timeout: u64,
}

impl TestPlan {
    /// A boot fails at once on this, whatever the recipe says.
    pub const KERNEL_PANIC: &'static str = "Kernel panic";
    /// Seconds a boot may take unless the recipe says otherwise.
    pub const DEFAULT_TIMEOUT: u64 = 300;

    /// The checks of a recipe without `[test]`: the login prompt (of
    /// `hostname` when known), no kernel panic, five minutes.
    pub fn defaults(hostname: Option<&str>) -> Self {
        TestPlan {
            expect: vec![Self::login_prompt(hostname)],
            fail: vec![Self::KERNEL_PANIC.to_string()],
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// `<hostname> login:` as a regular expression (any `login:` without one).
    pub fn login_prompt(hostname: Option<&str>) -> String {
        match hostname {
            Some(h) => format!("{} login:", regex::escape(h)),
            None => "login:".to_string(),
        }
    }
}

/// An input that fails the build at its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputProblem {
    /// The file could not be read (gone, unreadable).
    Unreadable {
        /// Its role (`os.source.tar`).
        role: String,
        /// Why.
        reason: String,
        /// Where the recipe names it.
        diagnostic: Diagnostic,
    },
    /// Its SHA-256 is not the recipe's `sha256`.
    PinMismatch {
        /// Its role.
        role: String,
        /// The recipe's digest.
        expected: String,
        /// The file's.
        found: String,
        /// At the pin, with both digests.
        diagnostic: Diagnostic,
    },
}

impl InputProblem {
    /// The diagnostic a person reads (file:line:col, caret, help).
    pub fn diagnostic(&self) -> &Diagnostic {
        match self {
            InputProblem::Unreadable { diagnostic, .. }
            | InputProblem::PinMismatch { diagnostic, .. } => diagnostic,
        }
    }
}

/// A SHA-256 computing on its own thread while the build goes on.
pub struct PendingSha {
    /// Index in [`Plan::inputs`].
    pub input: usize,
    /// The job.
    pub job: crate::source::digest::DigestJob,
    /// Where the recipe names the file: the diagnostic if reading fails.
    pub on_error: Diagnostic,
}

/// A `sha256` pin checked when its input's digest is known.
pub struct PendingPin {
    /// Index in [`Plan::inputs`].
    pub input: usize,
    /// The recipe's digest.
    pub want: String,
    /// At the pin; its help gets both digests.
    pub mismatch: Diagnostic,
}

/// The checks a plan still owes: SHA-256s computing and their pins.
/// Shared by clones of the plan; waited for once.
#[derive(Clone, Default)]
pub struct InputChecks(Option<std::sync::Arc<std::sync::Mutex<ChecksState>>>);

/// Per input index: its SHA-256 and length; or what is wrong.
type ChecksResult = Result<Vec<(usize, String, u64)>, Vec<InputProblem>>;

/// What [`InputChecks`] holds.
struct ChecksState {
    jobs: Vec<PendingSha>,
    pins: Vec<PendingPin>,
    /// `(input, sha256, len)` once waited for.
    done: Option<ChecksResult>,
}

impl InputChecks {
    /// Checks to do later; none if both lists are empty.
    pub fn new(jobs: Vec<PendingSha>, pins: Vec<PendingPin>) -> Self {
        if jobs.is_empty() && pins.is_empty() {
            return Self(None);
        }
        Self(Some(std::sync::Arc::new(std::sync::Mutex::new(
            ChecksState {
                jobs,
                pins,
                done: None,
            },
        ))))
    }

    /// `inputs` with the digests filled in, or every problem found.
    pub fn wait(&self, inputs: &[Input]) -> Result<Vec<Input>, Vec<InputProblem>> {
        let Some(state) = &self.0 else {
            return Ok(inputs.to_vec());
        };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if state.done.is_none() {
            let mut found = Vec::new();
            let mut problems = Vec::new();
            for j in std::mem::take(&mut state.jobs) {
                let role = inputs
                    .get(j.input)
                    .map_or_else(String::new, |i| i.role.clone());
                match j.job.join() {
                    Ok(d) => found.push((j.input, d.sha256, d.len)),
                    Err(e) => {
                        let written = inputs.get(j.input).map_or("", |i| i.written.as_str());
                        let mut diagnostic = j.on_error;
                        let reason = match e.kind() {
                            std::io::ErrorKind::NotFound => "no such file".to_string(),
                            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                            _ => e.to_string(),
                        };
                        diagnostic.message = format!("cannot read `{written}`: {reason}");
                        problems.push(InputProblem::Unreadable {
                            role,
                            reason,
                            diagnostic,
                        });
                    }
                }
            }
            for p in std::mem::take(&mut state.pins) {
                let Some((_, sha, _)) = found.iter().find(|(i, _, _)| *i == p.input) else {
                    continue; // unreadable: reported above
                };
                if *sha != p.want {
                    let mut diagnostic = p.mismatch;
                    diagnostic.help = Some(format!(
                        "expected {}\n   found {sha}\nthe file changed, or the recipe's digest is stale",
                        p.want
                    ));
                    problems.push(InputProblem::PinMismatch {
                        role: inputs
                            .get(p.input)
                            .map_or_else(String::new, |i| i.role.clone()),
                        expected: p.want,
                        found: sha.clone(),
                        diagnostic,
                    });
                }
            }
            problems.sort_by_key(|p| p.diagnostic().span.as_ref().map_or(0, |s| s.start));
            state.done = Some(if problems.is_empty() {
                Ok(found)
            } else {
                Err(problems)
            });
        }
        match state.done.as_ref().expect("filled above") {
            Err(p) => Err(p.clone()),
            Ok(found) => {
                let mut out = inputs.to_vec();
                for (i, sha, len) in found {
                    if let Some(input) = out.get_mut(*i) {
                        input.sha256.clone_from(sha);
                        input.len = *len;
                    }
                }
                Ok(out)
            }
        }
    }
}

impl std::fmt::Debug for InputChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "InputChecks(pending)"
        } else {
            "InputChecks(none)"
        })
    }
}

/// Pending checks do not make two plans differ: what they check is in
/// [`Plan::inputs`].
impl PartialEq for InputChecks {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InputChecks {}

fn hex_seed<S: serde::Serializer>(seed: &Seed, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::ids::hex(&seed.0))
}

/// Where the epoch came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochSource {
    /// `[image] epoch`.
    Recipe,
    /// The `SOURCE_DATE_EPOCH` environment variable.
    SourceDateEpoch,
    /// The default epoch (1700000000, the recipe module's `DEFAULT_EPOCH`).
    Default,
}

/// A file the build reads, with its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// What the file is for (`os.source.tar`, `config.files[/etc/motd]`, ...).
    pub role: String,
    /// The path as written in the recipe (relative to the recipe's directory).
    pub written: String,
    /// The absolute path (not serialized: it differs between machines).
    #[serde(skip)]
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// Its content id (see [`crate::source::digest::Want`]): what the seed
    /// hashes, so that ids can be drawn before the SHA-256 is done.
    #[serde(skip)]
    pub content_id: [u8; 32],
    /// Length in bytes.
    pub len: u64,
    /// Its zero sectors, measured while hashing (the OS tarball only): lets
    /// the ext4 writer leave holes without reading the data again.
    #[serde(skip)]
    pub zeros: Option<std::sync::Arc<crate::source::zeros::ZeroMap>>,
}

/// Partition layout: GPT with an EFI system partition and an ext4 root
/// filling the rest of the disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayoutPlan {
    /// EFI system partition size in bytes.
    pub esp_size: u64,
    /// FAT volume label of the ESP.
    pub esp_label: String,
    /// ext4 label of the root filesystem.
    pub root_label: String,
    /// Grow the root partition and filesystem at first boot.
    pub grow_root: bool,
}

/// The OS tree's source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OsPlan {
    /// A tar archive (also listed in [`Plan::inputs`]).
    Tar {
        /// Absolute path (not serialized: it differs between machines).
        #[serde(skip)]
        path: PathBuf,
        /// The path as written in the recipe.
        written: String,
        /// Its SHA-256 (verified against the recipe when given there).
        sha256: String,
    },
    /// A directory tree.
    Dir {
        /// Absolute path (not serialized).
        #[serde(skip)]
        path: PathBuf,
        /// The path as written in the recipe.
        written: String,
        /// Keep owners instead of mapping every file to root.
        keep_owner: bool,
    },
    /// mmdebstrap bootstraps the tree.
    Mmdebstrap {
        /// Debian suite.
        suite: String,
        /// mmdebstrap variant.
        variant: MmdebstrapVariant,
        /// The archives: the host's for the suite, or the recipe's list.
        sources: SourcesPlan,
        /// Extra packages.
        packages: Vec<String>,
        /// Archive components (for the host's archives).
        components: Vec<String>,
        /// Bootstrap again when the cache is older than this (seconds).
        max_age: Option<u64>,
    },
}

/// Where mmdebstrap installs from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcesPlan {
    /// The host's apt sources for the suite, with or without its
    /// -updates and -security archives (read when bootstrapping).
    Host {
        /// Add `<suite>-updates`.
        updates: bool,
        /// Add `<suite>-security`.
        security: bool,
    },
    /// Exactly these archives.
    Listed(Vec<crate::source::archives::Archive>),
}

/// Boot configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootPlan {
    /// The loader.
    pub loader: Loader,
    /// Command line shared by every target (without `root=`).
    pub cmdline: String,
}

/// Configuration applied to the tree, in this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigPlan {
    /// /etc/hostname (None: left as the OS tree has it).
    pub hostname: Option<String>,
    /// Zone name under /usr/share/zoneinfo.
    pub timezone: Option<String>,
    /// LANG.
    pub locale: Option<String>,
    /// Users, in recipe order.
    pub users: Vec<UserPlan>,
    /// Files, in recipe order (later entries replace earlier paths' parents' children).
    pub files: Vec<FilePlan>,
    /// Units, full names (`ssh.service`), in recipe order.
    pub services: ServicesPlan,
    /// Network configuration.
    pub network: NetworkPlan,
    /// NoCloud seed.
    pub cloud_init: Option<CloudInitPlan>,
}

/// A user to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserPlan {
    /// Login name.
    pub name: String,
    /// Explicit uid (None: next free one, chosen by the pipeline from the tree's /etc/passwd).
    pub uid: Option<u32>,
    /// Explicit gid of the primary group.
    pub gid: Option<u32>,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// authorized_keys lines.
    pub ssh_authorized_keys: Vec<String>,
    /// Login shell (None: the tree step's default, `/bin/bash` when the
    /// tree has it, else `/bin/sh`; `/usr/sbin/nologin` for system users).
    pub shell: Option<String>,
    /// crypt(3) hash (None: password unusable).
    pub password_hash: Option<String>,
    /// Home directory (None: `/home/<name>`, or `/nonexistent` for system users).
    pub home: Option<String>,
    /// System account.
    pub system: bool,
    /// GECOS field.
    pub comment: Option<String>,
}

/// Where a file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Inline text from the recipe.
    Inline(String),
    /// A file; the index into [`Plan::inputs`].
    File(usize),
}

/// A file, directory or symlink to put in the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FilePlan {
    /// Absolute, normalized path in the image.
    pub path: String,
    /// What to create.
    pub kind: FileKind,
    /// Contents (files only).
    pub content: Option<Content>,
    /// Target (symlinks only).
    pub target: Option<String>,
    /// Permission bits (0..=0o7777), defaults applied.
    pub mode: u16,
    /// Owner, a name or a number as written (None: root). Names are looked
    /// up in the tree's /etc/passwd by the files step.
    pub owner: Option<String>,
    /// Group, a name or a number as written (None: root).
    pub group: Option<String>,
}

/// Units to enable, disable and mask.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServicesPlan {
    /// Enable.
    pub enable: Vec<String>,
    /// Disable.
    pub disable: Vec<String>,
    /// Mask.
    pub mask: Vec<String>,
}

/// Network configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPlan {
    /// systemd-networkd DHCP on every Ethernet link (`Type=ether`).
    Dhcp,
    /// Nothing written.
    None,
}

/// A NoCloud seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloudInitPlan {
    /// user-data.
    pub user_data: Content,
    /// meta-data.
    pub meta_data: Content,
    /// network-config, if any.
    pub network_config: Option<Content>,
}

/// One output image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetPlan {
    /// The target's name (`kvm`).
    pub name: String,
    /// Output file name: `<image.name>-<target>.<ext>`.
    pub output: String,
    /// Image format (of the disk inside the package, if any).
    pub format: Format,
    /// The package the disk goes in (OVA, GCE tar.gz, OCI archive), if any.
    pub package: Option<imgbuild_formats::package::Package>,
    /// Hypervisor profile.
    pub hypervisor: Hypervisor,
    /// Full kernel command line for this target (boot cmdline + target cmdline; no `root=`).
    pub cmdline: String,
    /// Firmware the disk must boot with.
    pub firmware: FirmwareModes,
    /// The UEFI boot chain must pass Secure Boot with Microsoft's keys.
    pub secure_boot: bool,
    /// qcow2 cluster size in bytes.
    pub cluster_size: Option<u32>,
    /// qcow2 compression.
    pub compression: Option<Compression>,
    /// VHDX block size in bytes.
    pub block_size: Option<u32>,
    /// VHDX subformat.
    pub subformat: Option<Subformat>,
    /// VMDK subformat (a plain `vmdk` target; an OVA's is streamOptimized).
    pub vmdk_subformat: Option<imgbuild_formats::VmdkSubformat>,
    /// VHDX logical sector size.
    pub logical_sector_size: Option<u32>,
}

impl TargetPlan {
    /// The output's name without its extension (`debian-bookworm-vmware`):
    /// what a package names its members after.
    pub fn output_stem(&self) -> &str {
        let ext = self
            .package
            .as_ref()
            .map_or(self.format.extension(), |p| p.extension());
        self.output
            .strip_suffix(ext)
            .and_then(|s| s.strip_suffix('.'))
            .unwrap_or(&self.output)
    }

    /// The writer options for this target (ids come from the plan's seed).
    pub fn write_options(&self, seed: &Seed) -> imgbuild_formats::WriteOptions {
        imgbuild_formats::WriteOptions {
            cluster_size: self.cluster_size,
            compression: self.compression,
            threads: None,
            block_size: self.block_size,
            logical_sector_size: self.logical_sector_size,
            subformat: self.subformat.unwrap_or_default(),
            vmdk_subformat: self.vmdk_subformat.unwrap_or_default(),
            detect_zeros: false,
            seed: Some(seed.derive(&format!("target.{}", self.name))),
            // SHA256SUMS needs every output's hash: take it while writing.
            hash: true,
        }
    }
}

/// The firmware a disk boots with: BIOS, UEFI or both (hybrid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FirmwareModes {
    /// Legacy BIOS (SeaBIOS, Hyper-V and Azure Generation 1).
    pub bios: bool,
    /// UEFI (OVMF, Hyper-V and Azure Generation 2).
    pub uefi: bool,
}

impl FirmwareModes {
    /// From the recipe's word.
    pub fn from_recipe(f: Firmware) -> Self {
        Self {
            bios: matches!(f, Firmware::Bios | Firmware::Hybrid),
            uefi: matches!(f, Firmware::Uefi | Firmware::Hybrid),
        }
    }

    /// "bios", "uefi" or "hybrid".
    pub fn name(self) -> &'static str {
        match (self.bios, self.uefi) {
            (true, true) => "hybrid",
            (true, false) => "bios",
            _ => "uefi",
        }
    }
}

// The vocabulary the recipe and the plan share (the recipe deserializes
// these; the plan records them).

/// mmdebstrap's `--variant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum MmdebstrapVariant {
    Extract,
    Custom,
    Essential,
    Apt,
    Minbase,
    Buildd,
    Required,
    Important,
    Debootstrap,
    Standard,
}

impl MmdebstrapVariant {
    /// The name mmdebstrap's `--variant` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            MmdebstrapVariant::Extract => "extract",
            MmdebstrapVariant::Custom => "custom",
            MmdebstrapVariant::Essential => "essential",
            MmdebstrapVariant::Apt => "apt",
            MmdebstrapVariant::Minbase => "minbase",
            MmdebstrapVariant::Buildd => "buildd",
            MmdebstrapVariant::Required => "required",
            MmdebstrapVariant::Important => "important",
            MmdebstrapVariant::Debootstrap => "debootstrap",
            MmdebstrapVariant::Standard => "standard",
        }
    }
}

/// A boot loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
pub enum Loader {
    /// GRUB: i386-pc core image in a BIOS boot partition, and for UEFI shim
    /// (signed by the Microsoft UEFI CA) chaining the distribution's signed
    /// GRUB; both read one menu on the EFI system partition.
    #[serde(rename = "grub")]
    Grub,
    /// systemd-boot on the EFI system partition (UEFI only, unsigned).
    #[serde(rename = "systemd-boot")]
    SystemdBoot,
}

/// What a `[[config.files]]` entry creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

/// Conversions into the options of the tree's configuration steps, so the
/// pipeline wires the plan without re-deciding anything.
mod to_tree {
    use std::io;
    use std::sync::Arc;

    use imgbuild_formats::io::SizedFile;

    use super::FileKind;
    use super::{CloudInitPlan, Content, FilePlan, Input, UserPlan};
    use crate::tree::config::{self, NoCloud, Owner, UserSpec};
    use crate::tree::FileData;

    impl UserPlan {
        /// The user as [`config::add_users`] takes it.
        pub fn to_spec(&self) -> UserSpec {
            UserSpec {
                name: self.name.clone(),
                uid: self.uid,
                gid: self.gid,
                groups: self.groups.clone(),
                shell: self.shell.clone(),
                home: self.home.clone(),
                password_hash: self.password_hash.clone(),
                ssh_authorized_keys: self.ssh_authorized_keys.clone(),
                system: self.system,
                comment: self.comment.clone(),
            }
        }
    }

    fn owner(o: &Option<String>) -> Option<Owner> {
        o.as_ref().map(|s| match s.parse::<u32>() {
            Ok(id) => Owner::Id(id),
            Err(_) => Owner::Name(s.clone()),
        })
    }

    impl Content {
        /// The bytes: inline text, or a reference to the input file (read
        /// when the tree is written, not now).
        pub fn data(&self, inputs: &[Input]) -> io::Result<FileData> {
            match self {
                Content::Inline(s) => Ok(FileData::Bytes(Arc::from(s.as_bytes()))),
                Content::File(i) => {
                    let input = inputs
                        .get(*i)
                        .ok_or_else(|| io::Error::other("input index out of range"))?;
                    let file = SizedFile::new(std::fs::File::open(&input.path)?)?;
                    Ok(FileData::Source {
                        source: Arc::new(file),
                        offset: 0,
                        len: input.len,
                    })
                }
            }
        }

        /// The content as text (cloud-init documents).
        pub fn text(&self, inputs: &[Input]) -> io::Result<String> {
            match self {
                Content::Inline(s) => Ok(s.clone()),
                Content::File(i) => {
                    let input = inputs
                        .get(*i)
                        .ok_or_else(|| io::Error::other("input index out of range"))?;
                    std::fs::read_to_string(&input.path)
                }
            }
        }
    }

    impl FilePlan {
        /// The entry as [`config::apply_files`] takes it.
        pub fn to_spec(&self, inputs: &[Input]) -> io::Result<config::FileSpec> {
            let kind = match (self.kind, &self.content, &self.target) {
                (FileKind::File, Some(c), _) => config::FileKind::File(c.data(inputs)?),
                (FileKind::File, None, _) => {
                    config::FileKind::File(FileData::Bytes(Arc::from(&b""[..])))
                }
                (FileKind::Dir, _, _) => config::FileKind::Dir,
                (FileKind::Symlink, _, t) => {
                    config::FileKind::Symlink(t.clone().unwrap_or_default())
                }
            };
            Ok(config::FileSpec {
                path: self.path.clone(),
                kind,
                mode: Some(self.mode),
                owner: owner(&self.owner),
                group: owner(&self.group),
            })
        }
    }

    impl CloudInitPlan {
        /// The seed as [`config::write_nocloud`] takes it.
        pub fn to_nocloud(&self, inputs: &[Input]) -> io::Result<NoCloud> {
            Ok(NoCloud {
                user_data: self.user_data.text(inputs)?,
                meta_data: self.meta_data.text(inputs)?,
                network_config: self
                    .network_config
                    .as_ref()
                    .map(|c| c.text(inputs))
                    .transpose()?,
            })
        }
    }
}
