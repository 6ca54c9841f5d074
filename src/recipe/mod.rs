//! The recipe: serde types exactly as the user writes them in TOML.
//!
//! ```text
//! recipe.toml ─load─► (Document, SourceMap) ─resolve─► Plan
//!                 │                          │
//!                 └──── Vec<Diagnostic> ◄────┘   file:line:col, caret, help
//! ```
//!
//! Every struct denies unknown fields, so a typo is an error with a
//! suggestion, never a silently ignored key. Values that a diagnostic may
//! point at are wrapped in [`Spanned`], which keeps their byte range in the
//! file; the JSON Schema (see [`schema`]) shows them as their inner type.
//! Nothing here has a default applied or a path resolved: that is
//! [`resolve`]'s job, and its result, the [`Plan`], is what
//! the build consumes.

pub mod api;
mod load;
mod network;
mod resolve;

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;
pub use serde_spanned::Spanned;

pub use crate::diagnostic::{render_all, Diagnostic, SourceMap};
pub use load::{load, load_str, read};
pub use network::{Network, NetworkMode, NetworkTable};
pub use resolve::{resolve, Environment, DEFAULT_EPOCH, DEFAULT_ESP_SIZE, MIN_ESP_SIZE, OUTSIDE};

use crate::plan::Plan;
pub use crate::plan::{FileKind, Firmware, Hypervisor, Loader, MmdebstrapVariant};
pub use crate::platform::FormatName;

/// Loads and resolves the recipe at `path`, reading `SOURCE_DATE_EPOCH` from
/// the process environment, and checks every input's `sha256` pin (waiting
/// for the SHA-256s of large inputs): everything `imgbuild check` does
/// before it reads the OS.
pub fn check(path: &Path) -> Result<Plan, Vec<Diagnostic>> {
    check_with(path, &Environment::from_process())
}

/// [`check`] in `env` (for instance with `allowed_paths`).
pub fn check_with(path: &Path, env: &Environment) -> Result<Plan, Vec<Diagnostic>> {
    check_source(&read(path)?, env)
}

/// [`check_with`] on the recipe text in `map`.
pub fn check_source(map: &SourceMap, env: &Environment) -> Result<Plan, Vec<Diagnostic>> {
    let plan = plan_source(map, env)?;
    plan.inputs_checked().map_err(|problems| {
        problems
            .iter()
            .map(|p| p.diagnostic().clone())
            .collect::<Vec<_>>()
    })?;
    Ok(plan)
}

/// Loads and resolves the recipe at `path` in `env` without waiting for the
/// SHA-256s of large inputs: they keep computing while a build reads the
/// OS, and the build checks their pins before it puts any output in place
/// ([`Plan::inputs_checked`]). What `imgbuild build` does.
pub fn plan_with(path: &Path, env: &Environment) -> Result<Plan, Vec<Diagnostic>> {
    plan_source(&read(path)?, env)
}

/// Loads and resolves the recipe text in `map`. Unlike `load` followed by
/// `resolve`, problems of both stages are reported together: when loading
/// could recover from its errors, the recovered recipe is resolved too.
pub fn plan_source(map: &SourceMap, env: &Environment) -> Result<Plan, Vec<Diagnostic>> {
    let (recipe, mut diags) = load::load_recovering(map);
    if let Some(recipe) = recipe {
        match resolve(&recipe, map, env) {
            Ok(plan) if diags.is_empty() => return Ok(plan),
            Ok(_) => {}
            // Problems with placeholders are consequences of load errors.
            Err(more) => diags.extend(
                more.into_iter()
                    .filter(|d| d.span != Some(load::PLACEHOLDER)),
            ),
        }
    }
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
    Err(diags)
}

/// The recipe's JSON Schema (draft 7, which Taplo / Even Better TOML read),
/// generated from the same types the loader deserializes.
pub fn schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Document>();
    schema.to_value()
}

/// A whole recipe file.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "imgbuild recipe")]
pub struct Document {
    /// The disk image: name, size, epoch, seed, layout.
    pub image: Image,
    /// Where the operating system tree comes from.
    pub os: Os,
    /// Boot loader and kernel command line.
    #[serde(default)]
    pub boot: Boot,
    /// Configuration applied to the tree: hostname, users, files, services, network.
    #[serde(default)]
    pub config: Config,
    /// One output image per target, named `<image.name>-<target>.<ext>`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Target>")]
    pub targets: BTreeMap<String, Spanned<Target>>,
    /// What `imgbuild test` checks on each output's serial console.
    #[serde(default)]
    pub test: TestTable,
}

/// `[test]`: how `imgbuild test` decides that a boot passed.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestTable {
    /// Regular expressions that must all appear on the serial console
    /// (default: the hostname followed by ` login:`).
    #[schemars(with = "Option<Vec<String>>")]
    pub expect: Option<Vec<Spanned<String>>>,
    /// Regular expressions that fail the boot at once, in addition to
    /// `Kernel panic` (for instance `Failed to start`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub fail: Vec<Spanned<String>>,
    /// Seconds each boot may take (default 300).
    #[schemars(with = "Option<u32>")]
    pub timeout: Option<Spanned<i64>>,
}

/// `[image]`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Output file stem: outputs are `<name>-<target>.<ext>`.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Virtual disk size with a binary unit, like "4GiB" (units: KiB, MiB, GiB, TiB).
    #[schemars(with = "String")]
    pub size: Spanned<String>,
    /// Seconds since 1970 for every timestamp in the image (default: SOURCE_DATE_EPOCH, else 1700000000).
    #[schemars(with = "Option<u32>")]
    pub epoch: Option<Spanned<i64>>,
    /// Any string; its hash seeds every UUID/GUID (default: a hash of the recipe and its inputs).
    #[schemars(with = "Option<String>")]
    pub seed: Option<Spanned<String>>,
    /// EFI system partition size (default "256MiB", at least "64MiB" so FAT32 fits).
    #[schemars(with = "Option<String>")]
    pub esp_size: Option<Spanned<String>>,
    /// ext4 label of the root filesystem (default "root", at most 16 bytes).
    #[schemars(with = "Option<String>")]
    pub root_label: Option<Spanned<String>>,
    /// Grow the root partition and its filesystem to fill the disk at first
    /// boot, online (systemd-repart and x-systemd.growfs; default true).
    #[schemars(with = "Option<bool>")]
    pub grow_root: Option<Spanned<bool>>,
}

/// `[os]`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Os {
    /// Exactly one of `tar`, `dir` or `mmdebstrap`.
    #[schemars(with = "OsSource")]
    pub source: Spanned<OsSource>,
}

/// `[os] source = { ... }`: give exactly one of `tar`, `dir`, `mmdebstrap`;
/// the other keys belong to one of them.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["tar"]}, {"required": ["dir"]}, {"required": ["mmdebstrap"]}
]))]
pub struct OsSource {
    /// A tar archive (plain, .gz, .zst or .xz), relative to the recipe's directory.
    #[schemars(with = "Option<String>")]
    pub tar: Option<Spanned<String>>,
    /// Expected SHA-256 of the tar file (64 hex digits); checked before building.
    #[schemars(with = "Option<String>")]
    pub sha256: Option<Spanned<String>>,
    /// A directory tree, relative to the recipe's directory.
    #[schemars(with = "Option<String>")]
    pub dir: Option<Spanned<String>>,
    /// With `dir`: keep the files' owners instead of mapping them to root.
    #[schemars(with = "Option<bool>")]
    pub keep_owner: Option<Spanned<bool>>,
    /// Bootstrap this Debian suite with mmdebstrap (e.g. "bookworm").
    #[schemars(with = "Option<String>")]
    pub mmdebstrap: Option<Spanned<String>>,
    /// With `mmdebstrap`: the variant (default "minbase").
    #[schemars(with = "Option<MmdebstrapVariant>")]
    pub variant: Option<Spanned<MmdebstrapVariant>>,
    /// With `mmdebstrap`: install from this one archive URI and the suite
    /// alone, nothing added (default: the host's apt sources for the suite,
    /// with its -updates and -security archives).
    #[schemars(with = "Option<String>")]
    pub mirror: Option<Spanned<String>>,
    /// With `mmdebstrap`: exactly these archives, in this order, nothing
    /// added (instead of the host's).
    #[schemars(with = "Option<Vec<ArchiveEntry>>")]
    pub archives: Option<Spanned<Vec<ArchiveEntry>>>,
    /// With `mmdebstrap` and the host's archives: add `<suite>-updates`
    /// (default true).
    #[schemars(with = "Option<bool>")]
    pub updates: Option<Spanned<bool>>,
    /// With `mmdebstrap` and the host's archives: add `<suite>-security`
    /// from the host's security archive (default true).
    #[schemars(with = "Option<bool>")]
    pub security: Option<Spanned<bool>>,
    /// With `mmdebstrap`: bootstrap again when the cached tree is older
    /// than this, like "7d" or "12h" (default: reuse it until
    /// `imgbuild build --refresh` finds newer archives).
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Spanned<String>>,
    /// With `mmdebstrap`: extra packages to install.
    #[schemars(with = "Option<Vec<String>>")]
    pub packages: Option<Spanned<Vec<String>>>,
    /// With `mmdebstrap`: archive components (default ["main"]).
    #[schemars(with = "Option<Vec<String>>")]
    pub components: Option<Spanned<Vec<String>>>,
}

/// One archive of `archives = [...]`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveEntry {
    /// Its URI, like `http://deb.debian.org/debian`.
    pub uri: String,
    /// The suite, like "bookworm" or "bookworm-security".
    pub suite: String,
    /// Components (default: the source's `components`, else ["main"]).
    pub components: Option<Vec<String>>,
}

/// `[boot]`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// Kernel command line for every target; `root=` is added by imgbuild.
    #[schemars(with = "Option<String>")]
    pub cmdline: Option<Spanned<String>>,
    /// Boot loader: "grub" (default: GRUB for BIOS, shim and the
    /// distribution's signed GRUB for UEFI and Secure Boot) or
    /// "systemd-boot" (UEFI without Secure Boot only).
    #[schemars(with = "Option<Loader>")]
    pub loader: Option<Spanned<Loader>>,
}

/// `[config]`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// /etc/hostname (RFC 1123, at most 64 characters).
    #[schemars(with = "Option<String>")]
    pub hostname: Option<Spanned<String>>,
    /// /etc/localtime target under /usr/share/zoneinfo (e.g. "UTC", "Europe/Paris").
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// LANG in /etc/default/locale (e.g. "C.UTF-8").
    #[schemars(with = "Option<String>")]
    pub locale: Option<Spanned<String>>,
    /// Users to create.
    #[serde(default)]
    pub users: Vec<User>,
    /// Files, directories and symlinks to add or replace.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// systemd units to enable, disable or mask (offline, as systemctl would).
    #[serde(default)]
    pub services: Services,
    /// "dhcp" (default: DHCP on every Ethernet link with systemd-networkd), "none", or { dhcp = bool }.
    #[schemars(with = "Option<Network>")]
    pub network: Option<Spanned<Network>>,
    /// A cloud-init NoCloud seed written to /var/lib/cloud/seed/nocloud.
    pub cloud_init: Option<CloudInit>,
}

/// `[[config.users]]`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Supplementary groups (they must exist in the OS tree).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lines for ~/.ssh/authorized_keys.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// User id (default: the next free id from 1000, or below 1000 for system users).
    #[schemars(with = "Option<u32>")]
    pub uid: Option<Spanned<i64>>,
    /// Primary group id (default: a group named like the user, with the uid's number when free).
    #[schemars(with = "Option<u32>")]
    pub gid: Option<Spanned<i64>>,
    /// Login shell (default "/bin/bash").
    #[schemars(with = "Option<String>")]
    pub shell: Option<Spanned<String>>,
    /// crypt(3) hash for /etc/shadow (default: locked, "!").
    #[schemars(with = "Option<String>")]
    pub password_hash: Option<Spanned<String>>,
    /// Home directory (default `/home/<name>`).
    #[schemars(with = "Option<String>")]
    pub home: Option<Spanned<String>>,
    /// A system account (no home created, id below 1000).
    #[serde(default)]
    pub system: bool,
    /// GECOS comment.
    pub comment: Option<String>,
}

/// `[[config.files]]`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute path in the image.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// "file" (default), "dir" or "symlink".
    #[schemars(with = "Option<FileKind>")]
    pub kind: Option<Spanned<FileKind>>,
    /// File contents, inline.
    pub content: Option<String>,
    /// File contents from this file, relative to the recipe's directory.
    #[schemars(with = "Option<String>")]
    pub source: Option<Spanned<String>>,
    /// Symlink target.
    #[schemars(with = "Option<String>")]
    pub target: Option<Spanned<String>>,
    /// Octal permission bits as a string (default "0644" for files, "0755" for directories).
    #[schemars(with = "Option<String>")]
    pub mode: Option<Spanned<String>>,
    /// Owner name or numeric id (default "root").
    #[schemars(with = "Option<String>")]
    pub owner: Option<Spanned<String>>,
    /// Group name or numeric id (default "root").
    #[schemars(with = "Option<String>")]
    pub group: Option<Spanned<String>>,
}

/// `[config.services]`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Services {
    /// Units to enable (their `[Install]` section is applied).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub enable: Vec<Spanned<String>>,
    /// Units to disable (their `[Install]` symlinks are removed).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub disable: Vec<Spanned<String>>,
    /// Units to mask (linked to /dev/null).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub mask: Vec<Spanned<String>>,
}

/// `[config.cloud_init]`: a NoCloud seed. Each document is given inline or
/// as a file relative to the recipe's directory, not both.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// The user-data document, inline (usually starting with "#cloud-config").
    pub user_data: Option<String>,
    /// The user-data document from a file.
    #[schemars(with = "Option<String>")]
    pub user_data_file: Option<Spanned<String>>,
    /// The meta-data document, inline (default: instance-id and local-hostname).
    pub meta_data: Option<String>,
    /// The meta-data document from a file.
    #[schemars(with = "Option<String>")]
    pub meta_data_file: Option<Spanned<String>>,
    /// The network-config document (v1 or v2), inline.
    pub network_config: Option<String>,
    /// The network-config document from a file.
    #[schemars(with = "Option<String>")]
    pub network_config_file: Option<Spanned<String>>,
}

/// `[targets.<name>]`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Image format (default from the hypervisor: kvm → qcow2, hyperv and
    /// hyperv-gen1 → vhdx, azure → vhd, vmware → ova, gce → tar.gz,
    /// kubevirt → oci-archive, aws → vmdk).
    #[schemars(with = "Option<FormatName>")]
    pub format: Option<Spanned<FormatName>>,
    /// Hypervisor whose drivers the image must carry (default: the target's
    /// name when it is kvm, hyperv, hyperv-gen1, azure, vmware, gce, kubevirt
    /// or aws).
    #[schemars(with = "Option<Hypervisor>")]
    pub hypervisor: Option<Spanned<Hypervisor>>,
    /// Appended to `[boot] cmdline` for this target only.
    pub cmdline: Option<String>,
    /// "uefi", "bios" or "hybrid" (default from the hypervisor: kvm and
    /// azure hybrid, hyperv uefi, hyperv-gen1 bios).
    #[schemars(with = "Option<Firmware>")]
    pub firmware: Option<Spanned<Firmware>>,
    /// Require a boot chain that Secure Boot with Microsoft's keys accepts
    /// (default: true for hyperv and azure, false otherwise).
    #[schemars(with = "Option<bool>")]
    pub secure_boot: Option<Spanned<bool>>,
    /// qcow2 cluster size, a power of two from "512" to "2MiB" (default "64KiB").
    #[schemars(with = "Option<String>")]
    pub cluster_size: Option<Spanned<String>>,
    /// qcow2 compression of data clusters (default none).
    #[schemars(with = "Option<Compression>")]
    pub compress: Option<Spanned<Compression>>,
    /// VHDX block size, a power of two from "1MiB" to "256MiB" (default "1MiB").
    #[schemars(with = "Option<String>")]
    pub block_size: Option<Spanned<String>>,
    /// VHDX provisioning, "dynamic" (default) or "fixed"; VMDK subformat,
    /// "streamOptimized" (default) or "monolithicSparse".
    #[schemars(with = "Option<Subformat>")]
    pub subformat: Option<Spanned<Subformat>>,
    /// VHDX logical sector size, 512 (default) or 4096.
    #[schemars(with = "Option<u32>")]
    pub logical_sector_size: Option<Spanned<i64>>,
    /// Virtual CPUs the OVA declares (format "ova" only; default 2).
    #[schemars(with = "Option<u32>")]
    pub cpus: Option<Spanned<i64>>,
    /// Memory the OVA declares, whole MiB (format "ova" only; default "2GiB").
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
}

/// qcow2 compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Compression {
    Zlib,
    Zstd,
}

/// VHDX provisioning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Subformat {
    Dynamic,
    Fixed,
    /// VMDK: compressed grains (vSphere import, OVA).
    #[serde(rename = "streamOptimized")]
    StreamOptimized,
    /// VMDK: plain grains (VMware Workstation, Fusion).
    #[serde(rename = "monolithicSparse")]
    MonolithicSparse,
}
