//! `imgbuild check`'s freshness lines: they read the clock and the
//! archives' Release files, so they live here at the edge, not in the
//! pipeline.

use imgbuild::pipeline::Prepared;
use imgbuild::source;

/// For `imgbuild check`, an mmdebstrap source's freshness: when the
/// cached tree was bootstrapped and last found current, and per archive its
/// Release date then and now (fetched now: a newer one says how to refresh).
pub(crate) fn freshness_lines(prepared: &Prepared) -> Vec<String> {
    use source::archives::{format_utc, parse_release_date};
    let Some((info, action)) = &prepared.bootstrap else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = |t: u64| now.saturating_sub(t) as f64 / 86_400.0;
    let mut lines = vec![format!(
        "os: bootstrapped {} ({:.1} days ago{}), archives last found current {:.1} days ago",
        format_utc(info.created),
        days(info.created),
        match action {
            source::mmdebstrap::CacheAction::Reused
            | source::mmdebstrap::CacheAction::ReusedUnchanged => ", cached",
            _ => ", just now",
        },
        days(info.checked)
    )];
    let mut newer = false;
    for a in &info.archives {
        let then = a.date.as_deref().unwrap_or("unknown");
        let state = match source::archives::fetch_release_date(&a.archive) {
            Ok(d) if Some(&d) == a.date.as_ref() => "unchanged since".to_string(),
            Ok(d) => {
                let later = match (
                    parse_release_date(&d),
                    a.date.as_deref().and_then(parse_release_date),
                ) {
                    (Some(n), Some(t)) => n > t,
                    _ => true,
                };
                newer |= later;
                format!("now {d}, {} than", if later { "NEWER" } else { "other" })
            }
            Err(e) => format!("could not check ({e}); was"),
        };
        lines.push(format!(
            "archive {} {}: Release {state} {then}",
            a.archive.uri, a.archive.suite
        ));
    }
    if newer {
        lines.push(
            "newer packages are published: `imgbuild build --refresh` bootstraps again (or set max_age in [os] source)"
                .to_string(),
        );
    }
    lines
}
