//! `[os] source` → [`OsPlan`]: exactly one kind, keys that belong to it,
//! paths resolved against the recipe's directory, tar digests verified.

use super::context::{Cx, OS_TAR_ROLE, OUTSIDE};
use crate::plan::{OsPlan, SourcesPlan};
use crate::recipe::{ArchiveEntry, MmdebstrapVariant, OsSource, Spanned};
use crate::source::archives::Archive;

/// Resolves the OS source; on error returns a placeholder (the caller
/// discards the plan when any diagnostic was recorded).
pub(super) fn os(cx: &mut Cx, source: &Spanned<OsSource>) -> OsPlan {
    let s = source.get_ref();
    let given: Vec<&str> = [
        ("tar", s.tar.is_some()),
        ("dir", s.dir.is_some()),
        ("mmdebstrap", s.mmdebstrap.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, on)| on.then_some(k))
    .collect();
    if given.len() != 1 {
        let found = if given.is_empty() {
            "none".to_string()
        } else {
            given.join(", ")
        };
        let help = "source = { tar = \"rootfs.tar.zst\" } or { dir = \"rootfs/\" } or { mmdebstrap = \"bookworm\" }";
        cx.error(
            source.span(),
            format!(
                "the OS source needs exactly one of `tar`, `dir`, `mmdebstrap` (found {found})"
            ),
            Some(help.into()),
        );
        return placeholder();
    }
    misplaced(cx, s);
    if let Some(tar) = &s.tar {
        return tar_source(cx, tar, s.sha256.as_ref());
    }
    if let Some(dir) = &s.dir {
        return dir_source(cx, dir, s.keep_owner.as_ref().is_some_and(|k| *k.get_ref()));
    }
    match &s.mmdebstrap {
        Some(suite) => mmdebstrap(cx, suite, s),
        None => placeholder(),
    }
}

fn placeholder() -> OsPlan {
    OsPlan::Dir {
        path: Default::default(),
        written: String::new(),
        keep_owner: false,
    }
}

/// Keys that belong to another kind of source.
fn misplaced(cx: &mut Cx, s: &OsSource) {
    let mut flag = |span: Option<std::ops::Range<usize>>, key: &str, owner: &str, on: bool| {
        if let (Some(span), false) = (span, on) {
            cx.error(
                span,
                format!("`{key}` applies only to `{owner}` sources"),
                None,
            );
        }
    };
    flag(
        s.sha256.as_ref().map(Spanned::span),
        "sha256",
        "tar",
        s.tar.is_some(),
    );
    flag(
        s.keep_owner.as_ref().map(Spanned::span),
        "keep_owner",
        "dir",
        s.dir.is_some(),
    );
    let deb = s.mmdebstrap.is_some();
    flag(
        s.variant.as_ref().map(Spanned::span),
        "variant",
        "mmdebstrap",
        deb,
    );
    for (span, key) in [
        (s.mirror.as_ref().map(Spanned::span), "mirror"),
        (s.archives.as_ref().map(Spanned::span), "archives"),
        (s.updates.as_ref().map(Spanned::span), "updates"),
        (s.security.as_ref().map(Spanned::span), "security"),
        (s.max_age.as_ref().map(Spanned::span), "max_age"),
    ] {
        flag(span, key, "mmdebstrap", deb);
    }
    flag(
        s.packages.as_ref().map(Spanned::span),
        "packages",
        "mmdebstrap",
        deb,
    );
    flag(
        s.components.as_ref().map(Spanned::span),
        "components",
        "mmdebstrap",
        deb,
    );
}

fn tar_source(cx: &mut Cx, tar: &Spanned<String>, sha256: Option<&Spanned<String>>) -> OsPlan {
    let expected = sha256.and_then(|s| {
        let v = s.get_ref().to_ascii_lowercase();
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some((v, s.span()))
        } else {
            cx.error(
                s.span(),
                "`sha256` must be 64 hex digits".into(),
                Some("compute it with `sha256sum FILE`".into()),
            );
            None
        }
    });
    let Some(i) = cx.input(OS_TAR_ROLE.into(), tar, true) else {
        return placeholder();
    };
    if let Some((want, span)) = expected {
        cx.pin(i, want, span);
    }
    OsPlan::Tar {
        path: cx.inputs[i].path.clone(),
        written: cx.inputs[i].written.clone(),
        // Filled in with the digest (see `Deferred::finish`).
        sha256: cx.inputs[i].sha256.clone(),
    }
}

fn dir_source(cx: &mut Cx, dir: &Spanned<String>, keep_owner: bool) -> OsPlan {
    let Some((path, outside)) = cx.confine(dir) else {
        return placeholder();
    };
    if !path.is_dir() {
        let help = format!(
            "paths are relative to the recipe's directory; this one is {}",
            path.display()
        );
        cx.error(
            dir.span(),
            format!("`{}` is not a directory", dir.get_ref()),
            Some(help),
        );
    }
    OsPlan::Dir {
        path,
        written: if outside {
            OUTSIDE.to_string()
        } else {
            dir.get_ref().clone()
        },
        keep_owner,
    }
}

/// A package, suite or component name: no whitespace, nothing empty.
fn word(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn mmdebstrap(cx: &mut Cx, suite: &Spanned<String>, s: &OsSource) -> OsPlan {
    if !word(suite.get_ref()) {
        cx.error(
            suite.span(),
            format!("invalid suite `{}`", suite.get_ref()),
            Some("like \"bookworm\"".into()),
        );
    }
    let list = |cx: &mut Cx, l: Option<&Spanned<Vec<String>>>, what: &str| -> Option<Vec<String>> {
        let l = l?;
        if let Some(bad) = l.get_ref().iter().find(|p| !word(p)) {
            cx.error(
                l.span(),
                format!("invalid {what} name `{bad}`"),
                Some("one name per string, no spaces".into()),
            );
        }
        Some(l.get_ref().clone())
    };
    let packages = list(cx, s.packages.as_ref(), "package").unwrap_or_default();
    let components =
        list(cx, s.components.as_ref(), "component").unwrap_or_else(|| vec!["main".into()]);
    let sources = sources(cx, suite.get_ref(), &components, s);
    let max_age = s.max_age.as_ref().and_then(|m| {
        let secs = parse_age(m.get_ref());
        if secs.is_none() {
            cx.error(
                m.span(),
                format!("invalid max_age `{}`", m.get_ref()),
                Some("a number of days or hours, like \"7d\" or \"12h\"".into()),
            );
        }
        secs
    });
    OsPlan::Mmdebstrap {
        suite: suite.get_ref().clone(),
        variant: s
            .variant
            .as_ref()
            .map_or(MmdebstrapVariant::Minbase, |v| *v.get_ref()),
        sources,
        packages,
        components,
        max_age,
    }
}

/// `"7d"`, `"12h"`: seconds.
fn parse_age(s: &str) -> Option<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = n.trim().parse().ok()?;
    match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        _ => None,
    }
}

/// The archives: `mirror` (that one, the suite alone), `archives` (exactly
/// those), else the host's with `updates` and `security` (default both).
fn sources(cx: &mut Cx, suite: &str, components: &[String], s: &OsSource) -> SourcesPlan {
    let named = s.mirror.is_some() || s.archives.is_some();
    if let (Some(_), Some(a)) = (&s.mirror, &s.archives) {
        cx.error(
            a.span(),
            "give `mirror` or `archives`, not both".into(),
            Some(
                "`mirror = URI` is the same as archives = [{ uri = URI, suite = <the suite> }]"
                    .into(),
            ),
        );
    }
    if named {
        for (key, flag) in [("updates", &s.updates), ("security", &s.security)] {
            if let Some(f) = flag {
                cx.error(
                    f.span(),
                    format!("`{key}` applies to the host's archives; this source names its own"),
                    Some(format!("list the {key} archive in `archives`, or drop `mirror`/`archives` to use the host's")),
                );
            }
        }
    }
    if let Some(m) = &s.mirror {
        if !uri_ok(m.get_ref()) {
            cx.error(
                m.span(),
                "invalid mirror".into(),
                Some("like \"http://deb.debian.org/debian\"".into()),
            );
        }
        return SourcesPlan::Listed(vec![Archive {
            uri: m.get_ref().trim().to_string(),
            suite: suite.to_string(),
            components: components.to_vec(),
        }]);
    }
    if let Some(list) = &s.archives {
        return SourcesPlan::Listed(archives(cx, list, components));
    }
    let on = |f: &Option<Spanned<bool>>| f.as_ref().is_none_or(|b| *b.get_ref());
    SourcesPlan::Host {
        updates: on(&s.updates),
        security: on(&s.security),
    }
}

/// A URI apt can use: a scheme, no whitespace.
fn uri_ok(u: &str) -> bool {
    !u.trim().is_empty() && u.contains("://") && !u.contains(char::is_whitespace)
}

/// `archives`: each one's URI, suite and components (the source's when it
/// names none).
fn archives(cx: &mut Cx, list: &Spanned<Vec<ArchiveEntry>>, components: &[String]) -> Vec<Archive> {
    if list.get_ref().is_empty() {
        cx.error(
            list.span(),
            "`archives` is empty".into(),
            Some("leave it out to use the host's archives".into()),
        );
    }
    let mut out = Vec::new();
    for a in list.get_ref() {
        let comps = a.components.clone().unwrap_or_else(|| components.to_vec());
        if !uri_ok(&a.uri) || !word(&a.suite) || comps.is_empty() || !comps.iter().all(|c| word(c))
        {
            cx.error(
                list.span(),
                format!(
                    "invalid archive {{ uri = {:?}, suite = {:?} }}",
                    a.uri, a.suite
                ),
                Some(
                    "like { uri = \"http://deb.debian.org/debian\", suite = \"bookworm\" }".into(),
                ),
            );
        }
        out.push(Archive {
            uri: a.uri.trim().to_string(),
            suite: a.suite.clone(),
            components: comps,
        });
    }
    out
}
