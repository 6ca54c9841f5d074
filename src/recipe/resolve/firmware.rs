//! A target's firmware modes and Secure Boot: the recipe's, else the
//! platform's default, refused where the platform or loader cannot boot.

use std::ops::Range;

use super::context::Cx;
use crate::plan::FirmwareModes;
use crate::recipe::{Document, Firmware, Hypervisor, Loader, Target};

/// The target's firmware and Secure Boot requirement: the recipe's, else
/// the platform's default ([`Hypervisor::default_firmware`]); refuses what
/// the platform or the loader cannot boot.
pub(super) fn firmware(
    cx: &mut Cx,
    recipe: &Document,
    tname: &str,
    span: &Range<usize>,
    t: &Target,
    hypervisor: Hypervisor,
) -> (FirmwareModes, bool) {
    let (default_fw, default_sb) = hypervisor.default_firmware();
    let fw = t.firmware.as_ref().map_or(default_fw, |f| *f.get_ref());
    let modes = FirmwareModes::from_recipe(fw);
    let fw_span = t.firmware.as_ref().map_or(span.clone(), |f| f.span());
    let platform_only = match hypervisor {
        Hypervisor::Hyperv => Some((Firmware::Uefi, "Hyper-V Generation 2 boots UEFI only; for BIOS use hypervisor = \"hyperv-gen1\" (Generation 1)")),
        Hypervisor::HypervGen1 => Some((Firmware::Bios, "Hyper-V Generation 1 boots BIOS only; for UEFI use hypervisor = \"hyperv\" (Generation 2)")),
        _ => None,
    };
    if let Some((only, help)) = platform_only {
        if fw != only {
            cx.error(
                fw_span.clone(),
                format!(
                    "target `{tname}`: firmware `{}` cannot boot on {}",
                    modes.name(),
                    hypervisor.name()
                ),
                Some(help.into()),
            );
        }
    }
    let sb = match &t.secure_boot {
        Some(s) => {
            if *s.get_ref() && !modes.uefi {
                cx.error(
                    s.span(),
                    format!(
                        "target `{tname}`: Secure Boot needs UEFI, but its firmware is `{}`",
                        modes.name()
                    ),
                    Some("set firmware = \"uefi\" or \"hybrid\", or leave secure_boot out".into()),
                );
            }
            *s.get_ref()
        }
        None => default_sb && modes.uefi,
    };
    let systemd_boot = recipe
        .boot
        .loader
        .as_ref()
        .filter(|l| *l.get_ref() == Loader::SystemdBoot);
    if let Some(loader) = systemd_boot {
        let default = |explicit: bool| {
            if explicit {
                String::new()
            } else {
                format!(" (the {} default)", hypervisor.name())
            }
        };
        if modes.bios {
            cx.error(
                fw_span,
                format!(
                    "target `{tname}`: firmware `{}`{} needs BIOS boot code, and loader \"systemd-boot\" is UEFI-only",
                    modes.name(),
                    default(t.firmware.is_some())
                ),
                Some(format!(
                    "use loader = \"grub\" (packages grub-pc-bin for BIOS, shim-signed and grub-efi-amd64-signed for UEFI), or set firmware = \"uefi\" on target `{tname}`"
                )),
            );
        }
        if sb {
            let at = t.secure_boot.as_ref().map_or(loader.span(), |s| s.span());
            cx.error(
                at,
                format!(
                    "target `{tname}`: Secure Boot{} cannot work with loader \"systemd-boot\": imgbuild installs it unsigned, and Debian 12 ships no systemd-boot signed for shim",
                    default(t.secure_boot.is_some())
                ),
                Some(format!(
                    "use loader = \"grub\" with the packages shim-signed (signed by the Microsoft UEFI CA) and grub-efi-amd64-signed, or set secure_boot = false on target `{tname}`"
                )),
            );
        }
    }
    (modes, sb)
}
