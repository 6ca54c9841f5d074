//! What a kernel offers: `modules.builtin`, `modules.dep` and the module
//! files under `/lib/modules/<ver>` of the tree, and the modules inside an
//! initramfs listing.

use std::collections::{BTreeMap, BTreeSet};

use super::super::cpio::Initramfs;
use super::super::{Kind, Tree};
use super::{read_small, DriverError};

/// Module name of a module file: basename without `.ko`, `.ko.xz`, `.ko.zst`
/// or `.ko.gz`, with `-` as `_` (how modprobe and modules.dep names compare).
pub fn module_name(file: &[u8]) -> Option<String> {
    let base = file.rsplit(|&b| b == b'/').next().unwrap_or(file);
    let stem = [&b".ko"[..], b".ko.xz", b".ko.zst", b".ko.gz"]
        .iter()
        .find_map(|ext| base.strip_suffix(*ext))?;
    if stem.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(stem).replace('-', "_"))
}

/// Kernel versions with a module directory in the tree (`/lib/modules/*`
/// and `/usr/lib/modules/*`, through symlinks), sorted and deduplicated.
pub fn kernel_versions(tree: &Tree) -> Vec<String> {
    let mut out = BTreeSet::new();
    for base in [&b"lib/modules"[..], b"usr/lib/modules"] {
        let Some(dir) = tree.resolve(base, true).ok().and_then(|p| tree.lookup(&p)) else {
            continue;
        };
        for (name, id) in tree.children(dir) {
            if matches!(tree.inode(id).kind, Kind::Dir(_)) {
                out.insert(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    out.into_iter().collect()
}

/// What one kernel offers, read from its module directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelModules {
    /// The kernel version.
    pub version: String,
    /// Names in `modules.builtin` (absent file: empty).
    pub builtin: BTreeSet<String>,
    /// Module files present, by name, as paths relative to the module directory.
    pub installed: BTreeMap<String, Vec<u8>>,
    /// Direct dependencies from `modules.dep` (absent file: none), by name.
    pub deps: BTreeMap<String, Vec<String>>,
}

/// `modules.builtin` and `modules.dep` of a distribution kernel are ~100 KiB.
pub(super) const MAX_INDEX: u64 = 16 << 20;
/// Directory depth under /lib/modules/<ver> worth walking (kernel/drivers/… is ~6).
const MAX_DEPTH: usize = 16;

impl KernelModules {
    /// Reads `/lib/modules/<version>` of the tree.
    pub fn read(tree: &Tree, version: &str) -> Result<Self, DriverError> {
        if version.is_empty() || version == "." || version == ".." || version.contains(['/', '\0'])
        {
            return Err(DriverError::BadVersion {
                version: version.to_string(),
            });
        }
        let dir = [
            format!("lib/modules/{version}"),
            format!("usr/lib/modules/{version}"),
        ]
        .iter()
        .filter_map(|p| tree.resolve(p.as_bytes(), true).ok())
        .find(|p| {
            tree.lookup(p)
                .is_some_and(|id| matches!(tree.inode(id).kind, Kind::Dir(_)))
        })
        .ok_or_else(|| DriverError::NoModules {
            version: version.to_string(),
        })?;
        let mut k = KernelModules {
            version: version.to_string(),
            ..Default::default()
        };
        if let Some(text) = read_small(tree, &join(&dir, b"modules.builtin"), MAX_INDEX)? {
            k.builtin = text
                .split(|&b| b == b'\n')
                .filter_map(module_name)
                .collect();
        }
        if let Some(text) = read_small(tree, &join(&dir, b"modules.dep"), MAX_INDEX)? {
            for line in text.split(|&b| b == b'\n') {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                let Some(name) = module_name(&line[..colon]) else {
                    continue;
                };
                let deps = line[colon + 1..]
                    .split(|&b| b == b' ')
                    .filter_map(module_name)
                    .collect();
                k.deps.insert(name, deps);
            }
        }
        let root = tree.lookup(&dir).expect("found as a directory above");
        let mut stack = vec![(Vec::new(), root, 0usize)];
        while let Some((rel, id, depth)) = stack.pop() {
            for (name, child) in tree.children(id) {
                let path = if rel.is_empty() {
                    name.to_vec()
                } else {
                    join(&rel, name)
                };
                match &tree.inode(child).kind {
                    Kind::Dir(_) if depth < MAX_DEPTH => stack.push((path, child, depth + 1)),
                    Kind::File(_) => {
                        if let Some(m) = module_name(name) {
                            k.installed.entry(m).or_insert(path);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(k)
    }

    /// `name` and everything it needs (modules.dep is already transitive;
    /// walked anyway so a hand-made file works), sorted, without `name`.
    pub fn dependencies(&self, name: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = vec![name];
        while let Some(m) = todo.pop() {
            for d in self.deps.get(m).into_iter().flatten() {
                if d != name && seen.insert(d.clone()) {
                    todo.push(d);
                }
            }
        }
        seen.into_iter().collect()
    }
}

/// Module names for `kernel_version` inside an initramfs listing (files under
/// `lib/modules/<ver>/` or `usr/lib/modules/<ver>/`).
pub fn initramfs_modules(listing: &Initramfs, kernel_version: &str) -> BTreeSet<String> {
    let prefixes = [
        format!("lib/modules/{kernel_version}/"),
        format!("usr/lib/modules/{kernel_version}/"),
    ];
    listing
        .entries
        .iter()
        .filter(|e| e.is_file() && prefixes.iter().any(|p| e.path().starts_with(p.as_bytes())))
        .filter_map(|e| module_name(e.path()))
        .collect()
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}
