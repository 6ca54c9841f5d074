//! `[targets.*]`: each target's platform, format or package, output name,
//! command line and the platform's own limits.

use std::ops::Range;

use super::context::{Cx, MIB};
use super::firmware::firmware;
use super::image::check_cmdline;
use super::options::target_options;
use crate::plan::{FirmwareModes, TargetPlan};
use crate::recipe::{Document, FormatName, Hypervisor, Spanned, Target};
use crate::size::parse_size;
use imgbuild_formats::package::{OvfController, OvfSettings, Package};

pub(super) fn targets(
    cx: &mut Cx,
    recipe: &Document,
    name: &str,
    cmdline: &str,
) -> Vec<TargetPlan> {
    if recipe.targets.is_empty() {
        let d = cx.map.error_file("the recipe has no targets");
        cx.diags
            .push(d.with_help("add one, like:\n[targets.kvm]\nformat = \"qcow2\""));
    }
    let mut out = Vec::new();
    for (tname, t) in &recipe.targets {
        if let Some(plan) = target(cx, recipe, tname, t, name, cmdline) {
            out.push(plan);
        }
    }
    out
}

fn target(
    cx: &mut Cx,
    recipe: &Document,
    tname: &str,
    t: &Spanned<Target>,
    name: &str,
    cmdline: &str,
) -> Option<TargetPlan> {
    let span = t.span();
    let t = t.get_ref();
    check_target_name(cx, tname, &span);
    let hypervisor = hypervisor(cx, tname, &span, t)?;
    let format = t
        .format
        .as_ref()
        .map_or(hypervisor.platform().format, |f| *f.get_ref());
    let (firmware, secure_boot) = firmware(cx, recipe, tname, &span, t, hypervisor);
    check_format(cx, t, hypervisor, format);
    if hypervisor == Hypervisor::Azure {
        check_azure(cx, recipe);
    }
    if hypervisor == Hypervisor::Gce {
        check_gce(cx, recipe);
    }
    let package = match format {
        FormatName::Ova => Some(Package::Ova(ovf_settings(
            cx,
            t,
            name,
            hypervisor,
            firmware,
            secure_boot,
        ))),
        FormatName::TarGz => Some(Package::GceTarGz),
        FormatName::OciArchive => Some(Package::OciArchive),
        _ => None,
    };
    let disk_format = disk_format(format, package.as_ref());
    let extension = package
        .as_ref()
        .map_or(disk_format.extension(), |p| p.extension());
    check_package_stem(cx, &span, name, tname, package.as_ref());
    if format != FormatName::Ova {
        check_no_hardware(cx, t);
    }
    let mut plan = TargetPlan {
        name: tname.to_string(),
        output: format!("{name}-{tname}.{extension}"),
        format: disk_format,
        package,
        hypervisor,
        cmdline: target_cmdline(cx, t, cmdline, &span),
        firmware,
        secure_boot,
        cluster_size: None,
        compression: None,
        block_size: None,
        subformat: None,
        vmdk_subformat: None,
        logical_sector_size: None,
    };
    target_options(cx, t, format, &mut plan);
    Some(plan)
}

/// Target names become part of file names.
fn check_target_name(cx: &mut Cx, tname: &str, span: &Range<usize>) {
    if tname.is_empty()
        || !tname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    {
        let help = "target names become part of file names: use letters, digits, '_' and '-'";
        cx.error(
            span.clone(),
            format!("invalid target name `{tname}`"),
            Some(help.into()),
        );
    }
}

/// The target's platform: the recipe's `hypervisor`, else the platform the
/// target is named after.
fn hypervisor(cx: &mut Cx, tname: &str, span: &Range<usize>, t: &Target) -> Option<Hypervisor> {
    if let Some(h) = &t.hypervisor {
        return Some(*h.get_ref());
    }
    let h = Hypervisor::from_name(tname);
    if h.is_none() {
        let names: Vec<String> = Hypervisor::ALL
            .iter()
            .map(|h| format!("\"{}\"", h.name()))
            .collect();
        let help = format!(
            "only a target named after a hypervisor implies it; add hypervisor = {}",
            names.join(", ")
        );
        cx.error(
            span.clone(),
            format!("target `{tname}` does not say its hypervisor"),
            Some(help),
        );
    }
    h
}

/// The format of the disk written: the target's, or the one its package
/// carries.
fn disk_format(format: FormatName, package: Option<&Package>) -> imgbuild_formats::Format {
    match format {
        FormatName::Qcow2 => imgbuild_formats::Format::Qcow2,
        FormatName::Vhdx => imgbuild_formats::Format::Vhdx,
        FormatName::Vhd => imgbuild_formats::Format::Vhd,
        FormatName::Raw => imgbuild_formats::Format::Raw,
        FormatName::Vmdk => imgbuild_formats::Format::Vmdk,
        FormatName::Ova | FormatName::TarGz | FormatName::OciArchive => package
            .expect("a package format has its package")
            .disk_format(),
    }
}

/// A package names its tar members after `<name>-<target>`
/// (`….ovf`, `…-disk1.vmdk`, `disk/….qcow2`): a ustar name holds 100 bytes.
fn check_package_stem(
    cx: &mut Cx,
    span: &Range<usize>,
    name: &str,
    tname: &str,
    package: Option<&Package>,
) {
    let stem = name.len() + 1 + tname.len();
    if package.is_some() && stem > MAX_PACKAGE_STEM {
        cx.error(
            span.clone(),
            format!(
                "`{name}-{tname}` ({stem} bytes) is too long to name the members of a {} package",
                package.map_or("", |p| p.name())
            ),
            Some(format!(
                "`<image.name>-<target>` may have at most {MAX_PACKAGE_STEM} bytes here (tar member names hold 100)"
            )),
        );
    }
}

/// `cpus` and `memory` belong to an OVA's virtual hardware only.
fn check_no_hardware(cx: &mut Cx, t: &Target) {
    for (key, span) in [
        ("cpus", t.cpus.as_ref().map(|c| c.span())),
        ("memory", t.memory.as_ref().map(|m| m.span())),
    ] {
        if let Some(span) = span {
            cx.error(
                span,
                format!("`{key}` applies only to ova targets"),
                Some(
                    "only an OVA declares virtual hardware; other formats carry the disk alone"
                        .into(),
                ),
            );
        }
    }
}

/// The image's command line, then the target's own words.
fn target_cmdline(cx: &mut Cx, t: &Target, cmdline: &str, span: &Range<usize>) -> String {
    let Some(extra) = &t.cmdline else {
        return cmdline.to_string();
    };
    check_cmdline(cx, extra, span.clone());
    let extra = extra.trim();
    if extra.is_empty() {
        cmdline.to_string()
    } else if cmdline.is_empty() {
        extra.to_string()
    } else {
        format!("{cmdline} {extra}")
    }
}

/// A format the platform does not import ([`crate::platform::OnlyFormats`]),
/// reported at the recipe's `format`.
fn check_format(cx: &mut Cx, t: &Target, hypervisor: Hypervisor, format: FormatName) {
    let Some(only) = hypervisor.platform().only_formats else {
        return;
    };
    if let Some(f) = t
        .format
        .as_ref()
        .filter(|_| !only.formats.contains(&format))
    {
        cx.error(f.span(), only.message.into(), Some(only.help.into()));
    }
}

/// Azure takes a VHD whose virtual size is a whole number of MiB.
fn check_azure(cx: &mut Cx, recipe: &Document) {
    if let Ok(n) = parse_size(recipe.image.size.get_ref()) {
        if n % MIB != 0 {
            let help = "Azure requires the virtual size to be a whole number of MiB";
            cx.error(
                recipe.image.size.span(),
                format!("image size {n} is not whole MiB"),
                Some(help.into()),
            );
        }
    }
}

/// Longest `<name>-<target>` a package's members can be named after:
/// `<stem>-disk1.vmdk` and `disk/<stem>.qcow2` must fit tar's 100 bytes.
const MAX_PACKAGE_STEM: usize = 89;

/// The OVA's virtual hardware: the recipe's CPUs and memory (defaults 2
/// and 2 GiB), the firmware the target boots (EFI when it boots UEFI,
/// which is what vSphere gives new VMs), the disk on PVSCSI for the vmware
/// profile (its initramfs is checked for `vmw_pvscsi`), else on LSI Logic.
fn ovf_settings(
    cx: &mut Cx,
    t: &Target,
    name: &str,
    hypervisor: Hypervisor,
    firmware: FirmwareModes,
    secure_boot: bool,
) -> OvfSettings {
    let cpus = match &t.cpus {
        Some(c) => match u32::try_from(*c.get_ref()) {
            Ok(n @ 1..=768) => n,
            _ => {
                cx.error(
                    c.span(),
                    format!("cpus = {} is not from 1 to 768", c.get_ref()),
                    Some("vSphere 8 allows up to 768 virtual CPUs".into()),
                );
                1
            }
        },
        None => 2,
    };
    let memory_mib = match &t.memory {
        Some(m) => match cx.size(m, "memory") {
            Some(n) if n % MIB == 0 && n >= 4 * MIB => n / MIB,
            Some(n) => {
                cx.error(
                    m.span(),
                    format!("memory {n} bytes is not a whole number of MiB of at least 4 MiB"),
                    Some("write it as e.g. \"2GiB\" or \"512MiB\"".into()),
                );
                2048
            }
            None => 2048,
        },
        None => 2048,
    };
    OvfSettings {
        name: name.to_string(),
        cpus,
        memory_mib,
        efi: firmware.uefi,
        secure_boot,
        controller: if hypervisor == Hypervisor::Vmware {
            OvfController::Pvscsi
        } else {
            OvfController::LsiLogic
        },
    }
}

/// Compute Engine imports a `disk.raw` whose size is a whole number of GiB.
fn check_gce(cx: &mut Cx, recipe: &Document) {
    if let Ok(n) = parse_size(recipe.image.size.get_ref()) {
        if n % (1 << 30) != 0 {
            let help = "Compute Engine requires the disk size to be a whole number of GiB";
            cx.error(
                recipe.image.size.span(),
                format!("image size {n} is not whole GiB"),
                Some(help.into()),
            );
        }
    }
}
