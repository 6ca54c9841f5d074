//! The GRUB boot step: one menu on the ESP, read by GRUB for BIOS (an
//! i386-pc core image we assemble from the tree's modules) and by the
//! distribution's signed GRUB for UEFI, started by shim (signed by the
//! Microsoft UEFI CA) so that Secure Boot with Microsoft's keys accepts it.
//!
//! ```text
//! LBA 0 (protective MBR): boot.img bytes 0..440, patched ─► loads LBA S+0
//! BIOS boot partition at LBA S: core.img (prefix (,gpt<esp>)/EFI/<vendor>) ─┐
//! ESP                                                                        │
//!   /EFI/BOOT/BOOTX64.EFI   shimx64.efi.signed   (removable-media path:      │
//!   /EFI/BOOT/grubx64.efi   grubx64.efi.signed    what firmware without      │
//!   /EFI/BOOT/mmx64.efi     mmx64.efi.signed      boot entries starts)       │
//!   /EFI/<vendor>/shimx64.efi, grubx64.efi, mmx64.efi (the distribution's)   │
//!   /EFI/<vendor>/grub.cfg  the menu ◄──────────── signed GRUB's prefix ◄────┘
//!   /EFI/BOOT/grub.cfg      the same bytes (Debian 13's GRUB reads this one first)
//! root filesystem
//!   /vmlinuz, /initrd.img   ◄── menu: search --fs-uuid, linux, initrd
//! ```
//! No `fbx64.efi` (shim's fallback would reset the machine in a loop
//! without a CSV, and on every boot with a TPM), no fonts or modules to
//! load under Secure Boot (GRUB refuses both there): the menu uses only
//! commands built into the signed image. The kernel is named through
//! `/vmlinuz` and `/initrd.img` when they point at the kernel booted, so a
//! kernel update inside the guest (which moves those links) boots the new
//! kernel. Facts and sources: shared/notes/boot-facts.md §1–2.

use super::{core_image, BootError, BootOptions, Kernel};
use crate::tree::{FileData, Kind, Tree};

/// shim signed by the Microsoft UEFI CA (package shim-signed).
pub const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// MokManager, signed by the distribution (shim-helpers-amd64-signed).
pub const MOK_MANAGER: &str = "/usr/lib/shim/mmx64.efi.signed";
/// The distribution's monolithic GRUB image, signed (grub-efi-amd64-signed).
pub const SIGNED_GRUB: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// GRUB's i386-pc modules and images (grub-pc-bin).
pub const I386_PC: &str = "/usr/lib/grub/i386-pc";

/// A file to put on the ESP: where, what, and where it came from in the tree.
#[derive(Clone, Debug)]
pub struct EspFile {
    /// Path on the ESP (`/EFI/BOOT/BOOTX64.EFI`).
    pub path: String,
    /// Contents.
    pub data: FileData,
    /// Its path in the OS tree, or `imgbuild` for files we write.
    pub source: String,
}

/// A regular file of the tree (symlinks followed), with its resolved path.
fn tree_file(os: &Tree, path: &str) -> Option<(String, FileData)> {
    super::file_at(os, path)
}

/// The ESP directory the signed GRUB's prefix names: `/EFI/<ID>` with `ID`
/// from os-release (Debian and Ubuntu build their signed GRUB that way).
pub fn vendor(os: &Tree) -> String {
    let id = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| tree_file(os, p))
        .and_then(|(_, d)| d.read_all().ok())
        .and_then(|text| {
            String::from_utf8_lossy(&text).lines().find_map(|l| {
                l.strip_prefix("ID=")
                    .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
            })
        })
        .filter(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    id.unwrap_or_else(|| "debian".to_string())
}

/// The UEFI chain's files: shim + signed GRUB (+ MokManager) when the tree
/// has shim, else the signed GRUB alone as the removable-media loader.
pub fn uefi_files(os: &Tree, vendor: &str) -> Result<Vec<EspFile>, BootError> {
    let (grub_path, grub) = tree_file(os, SIGNED_GRUB).ok_or(BootError::MissingPackage {
        what: "GRUB for UEFI",
        path: SIGNED_GRUB,
        package: "grub-efi-amd64-signed",
    })?;
    let mut files = Vec::new();
    let mut put = |path: String, (source, data): (String, FileData)| {
        files.push(EspFile { path, data, source });
    };
    match tree_file(os, SHIM) {
        Some(shim) => {
            put("/EFI/BOOT/BOOTX64.EFI".into(), shim.clone());
            put(
                "/EFI/BOOT/grubx64.efi".into(),
                (grub_path.clone(), grub.clone()),
            );
            put(format!("/EFI/{vendor}/shimx64.efi"), shim);
            put(format!("/EFI/{vendor}/grubx64.efi"), (grub_path, grub));
            if let Some(mm) = tree_file(os, MOK_MANAGER) {
                put("/EFI/BOOT/mmx64.efi".into(), mm.clone());
                put(format!("/EFI/{vendor}/mmx64.efi"), mm);
            }
        }
        None => {
            put(
                "/EFI/BOOT/BOOTX64.EFI".into(),
                (grub_path.clone(), grub.clone()),
            );
            put(format!("/EFI/{vendor}/grubx64.efi"), (grub_path, grub));
        }
    }
    Ok(files)
}

/// The kernel and initrd as the menu names them: `/vmlinuz` and
/// `/initrd.img` when those links lead to the kernel booted (Debian's
/// kernel packages keep them current), else the files' own paths.
pub fn kernel_paths(os: &Tree, kernel: &Kernel) -> (String, Option<String>) {
    let via = |link: &str, target: &str| match tree_file(os, link) {
        Some((resolved, _)) if resolved == target => link.to_string(),
        _ => target.to_string(),
    };
    let k = via("/vmlinuz", &kernel.kernel.0);
    let i = kernel.initrd.as_ref().map(|(p, _)| via("/initrd.img", p));
    (k, i)
}

/// Splits a kernel command line into words as the kernel does: on spaces,
/// except inside double quotes (`opt="a b"` is one word, quotes kept).
pub fn kernel_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// One word for GRUB's script parser, taken literally: single quotes, a
/// single quote inside written as `'\''` (GRUB manual, "Quoting").
pub fn grub_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The menu: boot the one entry at once, on the serial console too.
pub fn menu(opts: &BootOptions, kernel: &str, initrd: Option<&str>) -> String {
    let args: Vec<String> = kernel_words(&opts.kernel_cmdline())
        .iter()
        .map(|w| grub_quote(w))
        .collect();
    let mut s = String::new();
    s.push_str("# Written by imgbuild. GRUB reads this file for BIOS (core image in the\n");
    s.push_str("# BIOS boot partition) and for UEFI (shim, then the signed GRUB).\n");
    s.push_str("set default=0\n");
    s.push_str(&format!("set timeout={}\n", opts.timeout));
    s.push_str("if serial --unit=0 --speed=115200; then\n");
    s.push_str("\tterminal_input --append serial\n");
    s.push_str("\tterminal_output --append serial\n");
    s.push_str("fi\n");
    s.push_str(&format!(
        "menuentry {} --id imgbuild {{\n",
        grub_quote(&opts.title)
    ));
    s.push_str(&format!(
        "\tsearch --no-floppy --fs-uuid --set=root {}\n",
        opts.root_fs_uuid
    ));
    s.push_str(&format!(
        "\tlinux {} {}\n",
        grub_quote(kernel),
        args.join(" ")
    ));
    if let Some(i) = initrd {
        s.push_str(&format!("\tinitrd {}\n", grub_quote(i)));
    }
    s.push_str("}\n");
    s
}

/// GRUB for BIOS: the MBR's boot code and the core image for the BIOS boot
/// partition at `opts.bios_boot_lba`, which finds the menu at
/// `(,gpt<esp>)/EFI/<vendor>`.
pub fn bios(os: &Tree, opts: &BootOptions, vendor: &str) -> Result<super::BiosBoot, BootError> {
    let missing = |path: &'static str| BootError::MissingPackage {
        what: "GRUB for BIOS",
        path,
        package: "grub-pc-bin",
    };
    let boot_img = tree_file(os, &format!("{I386_PC}/boot.img"))
        .ok_or_else(|| missing("/usr/lib/grub/i386-pc/boot.img"))?;
    let boot_img = boot_img.1.read_all().map_err(BootError::Read)?;
    let prefix = format!("(,gpt{})/EFI/{vendor}", opts.esp_partition);
    let dir = os
        .resolve(I386_PC.as_bytes(), true)
        .ok()
        .and_then(|p| os.lookup(&p))
        .filter(|&id| matches!(os.inode(id).kind, Kind::Dir(_)))
        .ok_or_else(|| missing("/usr/lib/grub/i386-pc"))?;
    let read = |name: &str| -> Result<Vec<u8>, BootError> {
        let child = os
            .children(dir)
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, id)| id);
        match child.map(|id| &os.inode(id).kind) {
            Some(Kind::File(d)) => d.read_all().map_err(BootError::Read),
            _ => Err(BootError::GrubModule {
                name: name.to_string(),
            }),
        }
    };
    let core = core_image::build(&read, core_image::MODULES, &prefix, opts.bios_boot_lba)?;
    let boot_code = core_image::boot_code(&boot_img, opts.bios_boot_lba)?;
    Ok(super::BiosBoot {
        boot_code,
        core: core.image,
        modules: core.modules,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_words_keep_double_quoted_spaces() {
        assert_eq!(
            kernel_words(r#"  console=ttyS0  opt="a b" x "#),
            ["console=ttyS0", r#"opt="a b""#, "x"]
        );
    }

    #[test]
    fn grub_quote_is_literal() {
        assert_eq!(grub_quote("a$b"), "'a$b'");
        assert_eq!(grub_quote("it's"), r"'it'\''s'");
    }
}
