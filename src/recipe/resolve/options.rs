//! Format-specific target options (`cluster_size`, `compress`,
//! `block_size`, `subformat`, `logical_sector_size`), each allowed only with
//! its format.

use std::ops::Range;

use super::context::{Cx, MIB};
use crate::plan::TargetPlan;
use crate::recipe::{Compression, FormatName, Hypervisor, Spanned, Subformat, Target};

/// Format-specific options, each allowed only with its format.
pub(super) fn target_options(cx: &mut Cx, t: &Target, format: FormatName, plan: &mut TargetPlan) {
    // The disk inside a package takes its format's options.
    let format = match format {
        FormatName::Ova => FormatName::Vmdk,
        FormatName::TarGz => FormatName::Raw,
        FormatName::OciArchive => FormatName::Qcow2,
        f => f,
    };
    let shown = plan.format;
    let only = |cx: &mut Cx, span: Range<usize>, key: &str, fmt: &str| {
        cx.error(
            span,
            format!("`{key}` applies only to {fmt} targets"),
            Some(format!("this target's format is {shown}")),
        );
    };
    if let Some(c) = &t.cluster_size {
        if format != FormatName::Qcow2 {
            only(cx, c.span(), "cluster_size", "qcow2");
        } else {
            plan.cluster_size = power_of_two(cx, c, "cluster_size", 512, 2 * MIB);
        }
    }
    if let Some(c) = &t.compress {
        if format != FormatName::Qcow2 {
            only(cx, c.span(), "compress", "qcow2");
        }
        plan.compression = Some(match c.get_ref() {
            Compression::Zlib => imgbuild_formats::Compression::Zlib,
            Compression::Zstd => imgbuild_formats::Compression::Zstd,
        });
    }
    if let Some(b) = &t.block_size {
        if format != FormatName::Vhdx {
            only(cx, b.span(), "block_size", "vhdx");
        } else {
            plan.block_size = power_of_two(cx, b, "block_size", MIB, 256 * MIB);
        }
    }
    if let Some(s) = &t.subformat {
        if matches!(format, FormatName::Vhdx | FormatName::Vmdk) {
            subformat(cx, s, format, plan);
        } else {
            only(cx, s.span(), "subformat", "vhdx and vmdk");
        }
    }
    if let Some(l) = &t.logical_sector_size {
        if format != FormatName::Vhdx {
            only(cx, l.span(), "logical_sector_size", "vhdx");
        } else if !matches!(l.get_ref(), 512 | 4096) {
            cx.error(
                l.span(),
                format!("logical sector size {} is not 512 or 4096", l.get_ref()),
                None,
            );
        }
        plan.logical_sector_size = u32::try_from(*l.get_ref()).ok();
    }
}

fn power_of_two(cx: &mut Cx, s: &Spanned<String>, key: &str, min: u64, max: u64) -> Option<u32> {
    let n = cx.size(s, key)?;
    if !n.is_power_of_two() || n < min || n > max {
        let (lo, hi) = (crate::size::human(min), crate::size::human(max));
        cx.error(
            s.span(),
            format!("`{key}` must be a power of two from {lo} to {hi}"),
            None,
        );
        return None;
    }
    u32::try_from(n).ok()
}

/// `subformat` of a vhdx or vmdk disk (a package's VMDK is streamOptimized).
fn subformat(cx: &mut Cx, s: &Spanned<Subformat>, format: FormatName, plan: &mut TargetPlan) {
    use Subformat as S;
    match (format, s.get_ref()) {
        (FormatName::Vhdx, S::Dynamic) => {
            plan.subformat = Some(imgbuild_formats::Subformat::Dynamic)
        }
        (FormatName::Vhdx, S::Fixed) => plan.subformat = Some(imgbuild_formats::Subformat::Fixed),
        (FormatName::Vmdk, S::StreamOptimized) => {
            plan.vmdk_subformat = Some(imgbuild_formats::VmdkSubformat::StreamOptimized)
        }
        (FormatName::Vmdk, S::MonolithicSparse) if plan.hypervisor == Hypervisor::Aws => {
            cx.error(
                s.span(),
                "EC2 imports a VMDK only as streamOptimized".into(),
                Some("leave subformat out (streamOptimized is the default)".into()),
            );
        }
        (FormatName::Vmdk, S::MonolithicSparse) if plan.package.is_none() => {
            plan.vmdk_subformat = Some(imgbuild_formats::VmdkSubformat::MonolithicSparse)
        }
        _ => {
            let help = if plan.package.is_some() {
                "an OVA carries a streamOptimized VMDK; for monolithicSparse use format = \"vmdk\""
            } else {
                "vhdx takes \"dynamic\" or \"fixed\", vmdk \"streamOptimized\" or \"monolithicSparse\""
            };
            cx.error(
                s.span(),
                format!(
                    "subformat does not apply to this target's format ({})",
                    plan.format
                ),
                Some(help.into()),
            );
        }
    }
}
