//! A target's firmware modes and Secure Boot: the recipe's, else the
//! platform's default, refused where the platform or loader cannot boot.

use std::ops::Range;

use super::context::Cx;
use crate::plan::FirmwareModes;
use crate::recipe::{Document, Hypervisor, Loader, Target};

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
    let platform_only = hypervisor.platform().only_firmware;
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
    let sb = secure_boot(cx, tname, t, modes, default_sb);
    let systemd_boot = recipe
        .boot
        .loader
        .as_ref()
        .filter(|l| *l.get_ref() == Loader::SystemdBoot);
    if let Some(loader) = systemd_boot {
        let at = SystemdBootPlaces {
            firmware: fw_span,
            loader: loader.span(),
        };
        check_systemd_boot(cx, tname, t, hypervisor, modes, sb, at);
    }
    (modes, sb)
}

/// The Secure Boot requirement: the recipe's (refused without UEFI), else
/// the platform's default when the target boots UEFI.
fn secure_boot(
    cx: &mut Cx,
    tname: &str,
    t: &Target,
    modes: FirmwareModes,
    default_sb: bool,
) -> bool {
    match &t.secure_boot {
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
    }
}

/// Where a systemd-boot problem is reported: the firmware (or the target),
/// and the loader.
struct SystemdBootPlaces {
    firmware: Range<usize>,
    loader: Range<usize>,
}

/// systemd-boot is UEFI-only and installed unsigned: refuses BIOS and
/// Secure Boot, saying when the platform's default asked for them.
fn check_systemd_boot(
    cx: &mut Cx,
    tname: &str,
    t: &Target,
    hypervisor: Hypervisor,
    modes: FirmwareModes,
    sb: bool,
    at: SystemdBootPlaces,
) {
    let default = |explicit: bool| {
        if explicit {
            String::new()
        } else {
            format!(" (the {} default)", hypervisor.name())
        }
    };
    if modes.bios {
        cx.error(
            at.firmware,
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
        let place = t.secure_boot.as_ref().map_or(at.loader, |s| s.span());
        cx.error(
            place,
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
