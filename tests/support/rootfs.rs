//! The cached Debian rootfs tarballs the tests read: made once with
//! mmdebstrap, checked every time they are reused, rebuilt when they are not
//! whole. The one implementation: every test binary and
//! `scripts/debian-rootfs.sh` (through `tests/fixtures.rs`) come here.
//!
//! ```text
//! ensure(spec, cache)
//!   lock <cache>/.<name>.lock ─► validate <cache>/<name>  ─ok─► path
//!                                   │ missing, a directory, empty, truncated,
//!                                   │ a package of the spec not installed
//!                                   ▼
//!        remove it ─► mmdebstrap … <cache>/.<name>.<pid>.tmp.tar ─► validate ─► rename ─► path
//! ```
//! The temporary name ends in `.tar`: mmdebstrap picks its output format
//! from the name, and any other ending gives a directory. The file name
//! carries a hash of the suite and the package list, so a changed list never
//! reuses an old tarball.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// What a cached rootfs holds.
#[derive(Clone, Copy, Debug)]
pub struct RootfsSpec {
    /// Debian suite (`bookworm`).
    pub suite: &'static str,
    /// A word for the file name (`test`, `minimal`).
    pub label: &'static str,
    /// Packages on top of mmdebstrap's minbase variant.
    pub packages: &'static [&'static str],
}

/// The rootfs most tests read: a bootable Debian 12 guest with both boot
/// loader chains (GRUB for BIOS, shim and signed GRUB for UEFI and Secure
/// Boot) and systemd-boot.
pub const BOOKWORM: RootfsSpec = RootfsSpec {
    suite: "bookworm",
    label: "test",
    packages: &[
        "linux-image-cloud-amd64",
        "systemd-sysv",
        "udev",
        "systemd-boot-efi",
        "login",
        "passwd",
        "sudo",
        "iproute2",
        "kmod",
        "initramfs-tools",
        "grub-pc-bin",
        "grub-efi-amd64-signed",
        "shim-signed",
        "shim-helpers-amd64-signed",
    ],
};

impl RootfsSpec {
    /// `debian-<suite>-<label>-<12 hex digits of the spec's hash>.tar`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.tar", self.prefix(), &self.key()[..12])
    }

    fn prefix(&self) -> String {
        format!("debian-{}-{}", self.suite, self.label)
    }

    fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("suite={}\nvariant=minbase\n", self.suite));
        for p in self.packages {
            h.update(format!("package={p}\n"));
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `$IMGBUILD_CACHE`, else `~/.cache/imgbuild`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("IMGBUILD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/imgbuild")
        })
}

/// The tarball of `spec` in `cache`, made or remade when it is not whole.
/// Fails (panics) when it cannot be made; the caller checks for mmdebstrap.
pub fn ensure(spec: &RootfsSpec, cache: &Path) -> PathBuf {
    fs::create_dir_all(cache).unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
    let path = cache.join(spec.file_name());
    let lock = File::create(cache.join(format!(".{}.lock", spec.file_name())))
        .unwrap_or_else(|e| panic!("creating the lock file in {}: {e}", cache.display()));
    lock.lock().expect("locking the rootfs cache");
    match validate(&path, spec) {
        Ok(()) => return path,
        Err(Problem::Missing) => {}
        Err(problem) => {
            eprintln!(
                "rootfs fixture: {} is not usable ({problem}); removing and rebuilding it",
                path.display()
            );
            remove(&path);
        }
    }
    build(spec, cache, &path);
    path
}

/// Why a cached tarball cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// Nothing at the path.
    Missing,
    /// Something that is not a regular file (a directory mmdebstrap made).
    NotAFile,
    /// A file of no bytes.
    Empty,
    /// The archive is cut short or damaged at this byte offset.
    Damaged(u64, String),
    /// These packages of the spec are not installed in it.
    MissingPackages(Vec<String>),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing"),
            Problem::NotAFile => write!(f, "not a regular file"),
            Problem::Empty => write!(f, "empty"),
            Problem::Damaged(at, why) => write!(f, "damaged at byte {at}: {why}"),
            Problem::MissingPackages(p) => write!(f, "packages not installed: {}", p.join(", ")),
        }
    }
}

/// Checks that `path` is a whole tar archive (every header's checksum, every
/// member inside the file, the end-of-archive blocks present) holding a
/// kernel and a dpkg status file that lists every package of `spec` as
/// installed (the kernel only when the spec installs one).
pub fn validate(path: &Path, spec: &RootfsSpec) -> Result<(), Problem> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Err(Problem::Missing),
    };
    if !meta.is_file() {
        return Err(Problem::NotAFile);
    }
    if meta.len() == 0 {
        return Err(Problem::Empty);
    }
    let file = File::open(path).map_err(|e| Problem::Damaged(0, e.to_string()))?;
    let members = walk(&file, meta.len())?;
    let wants_kernel = spec.packages.iter().any(|p| p.starts_with("linux-image"));
    if wants_kernel
        && !members
            .iter()
            .any(|m| m.name.starts_with("./boot/vmlinuz-"))
    {
        return Err(Problem::Damaged(0, "no /boot/vmlinuz-* in it".into()));
    }
    let status = members
        .iter()
        .find(|m| m.name == "./var/lib/dpkg/status")
        .ok_or_else(|| Problem::Damaged(0, "no /var/lib/dpkg/status in it".into()))?;
    let mut text = vec![0u8; usize::try_from(status.len).expect("status fits in memory")];
    file.read_exact_at(&mut text, status.offset)
        .map_err(|e| Problem::Damaged(status.offset, e.to_string()))?;
    let installed = installed_packages(&String::from_utf8_lossy(&text));
    let missing: Vec<String> = spec
        .packages
        .iter()
        .filter(|p| !installed.contains(**p))
        .map(|p| p.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Problem::MissingPackages(missing))
    }
}

struct Member {
    name: String,
    offset: u64,
    len: u64,
}

/// Every member (ustar and GNU long names, pax `path`) up to the
/// end-of-archive block, which must be there.
fn walk(file: &File, len: u64) -> Result<Vec<Member>, Problem> {
    let mut members = Vec::new();
    let mut at = 0u64;
    let mut long_name: Option<String> = None;
    let mut h = [0u8; 512];
    loop {
        if at + 512 > len {
            return Err(Problem::Damaged(
                at,
                "ends before the end-of-archive block".into(),
            ));
        }
        file.read_exact_at(&mut h, at)
            .map_err(|e| Problem::Damaged(at, e.to_string()))?;
        // The writer's own header reader (magic, checksum, octal or
        // base-256 numbers): one tar parser in the project.
        let Some(header) = imgbuild_formats::package::tar::parse(&h, at)
            .map_err(|e| Problem::Damaged(at, e.to_string()))?
        else {
            return Ok(members);
        };
        let size = header.size;
        let data = at + 512;
        let next = data + size.div_ceil(512) * 512;
        if next > len {
            return Err(Problem::Damaged(
                at,
                format!("member of {size} bytes runs past the end"),
            ));
        }
        let read = |n: u64| -> Result<String, Problem> {
            let mut v =
                vec![0u8; usize::try_from(n).map_err(|_| Problem::Damaged(at, "huge".into()))?];
            file.read_exact_at(&mut v, data)
                .map_err(|e| Problem::Damaged(data, e.to_string()))?;
            Ok(String::from_utf8_lossy(&v)
                .trim_end_matches('\0')
                .to_string())
        };
        match header.kind {
            b'L' => long_name = Some(read(size.min(1 << 16))?),
            b'x' => {
                let pax = read(size.min(1 << 20))?;
                if let Some(p) = pax
                    .lines()
                    .find_map(|l| l.split_once(" path=").map(|(_, p)| p.to_string()))
                {
                    long_name = Some(p);
                }
            }
            b'g' => {}
            _ => {
                members.push(Member {
                    name: long_name.take().unwrap_or(header.name),
                    offset: data,
                    len: size,
                });
            }
        }
        at = next;
    }
}

/// Packages whose dpkg status is `install ok installed`.
fn installed_packages(status: &str) -> BTreeSet<String> {
    status
        .split("\n\n")
        .filter(|stanza| stanza.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|stanza| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix("Package: "))
                .map(str::to_string)
        })
        .collect()
}

fn remove(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    };
    result.unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
}

/// mmdebstrap into a temporary `.tar` beside `path`, checked, then renamed.
fn build(spec: &RootfsSpec, cache: &Path, path: &Path) {
    let mirror = imgbuild::source::default_mirror().expect(
        "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list",
    );
    let tmp = cache.join(format!(
        ".{}.{}.tmp.tar",
        spec.file_name(),
        std::process::id()
    ));
    let _cleanup = RemoveOnDrop(tmp.clone());
    let mode = if rustix::process::geteuid().is_root() {
        "--mode=root"
    } else {
        "--mode=unshare"
    };
    eprintln!(
        "rootfs fixture: bootstrapping Debian {} into {} (mmdebstrap {mode}, about a minute)",
        spec.suite,
        path.display()
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg(mode)
        .arg("--variant=minbase")
        .arg(format!("--include={}", spec.packages.join(",")))
        .arg(spec.suite)
        .arg(&tmp)
        .arg(format!("deb {mirror} {} main", spec.suite))
        // Fixed file times: the same packages give the same tarball.
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run mmdebstrap: {e}"));
    assert!(
        out.status.success(),
        "mmdebstrap failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Err(problem) = validate(&tmp, spec) {
        panic!("mmdebstrap made {} but it is {problem}", tmp.display());
    }
    fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), path.display()));
    remove_stale(spec, cache);
    eprintln!("rootfs fixture: {} is ready", path.display());
}

/// Older tarballs of the same suite and label (another package list, or the
/// unversioned `debian-bookworm-test.tar` of earlier versions): ~400 MB each.
fn remove_stale(spec: &RootfsSpec, cache: &Path) {
    let keep = spec.file_name();
    let prefix = spec.prefix();
    let Ok(dir) = fs::read_dir(cache) else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != keep && name.starts_with(&prefix) && name.ends_with(".tar") {
            remove(&e.path());
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Never a panic here: this runs while a failed build unwinds.
        match fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => drop(fs::remove_dir_all(&self.0)),
            Ok(_) => drop(fs::remove_file(&self.0)),
            Err(_) => {}
        }
    }
}
