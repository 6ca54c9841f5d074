//! Hostname, timezone and locale.

use super::{is_file, meta, put, read_text, update_text, Changes, ConfigError, Result};
use crate::tree::{Kind, Tree};

/// Debian's `/etc/hosts` as the installer writes it, without the hostname.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\t\tlocalhost ip6-localhost ip6-loopback\n\
ff02::1\t\tip6-allnodes\n\
ff02::2\t\tip6-allrouters\n";

/// Checks a hostname against RFC 1123 §2.1 (labels of 1–63 letters, digits
/// and `-`, not starting or ending with `-`; at most 253 characters).
fn check_hostname(name: &str) -> Result<()> {
    let bad = |why: &str| ConfigError::Invalid {
        what: "hostname",
        value: name.to_owned(),
        why: why.to_owned(),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("only letters, digits, '-' and '.' are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label cannot start or end with '-'"));
        }
    }
    Ok(())
}

/// Writes `/etc/hostname` and the `127.0.1.1` line of `/etc/hosts` (Debian's
/// convention for a host without a fixed address; `hostname.domain short` for
/// an FQDN). Other lines of an existing `/etc/hosts` are kept; without one,
/// Debian's default is written. `/etc/hostname` gets the name as given.
pub fn set_hostname(tree: &mut Tree, hostname: &str, epoch: i64) -> Result<Changes> {
    check_hostname(hostname)?;
    let mut changes = Changes::default();
    update_text(
        tree,
        "/etc/hostname",
        &format!("{hostname}\n"),
        meta(0o644, 0, 0, epoch),
        epoch,
        &mut changes,
    )?;
    let short = hostname.split('.').next().unwrap_or(hostname);
    let line = if short == hostname {
        format!("127.0.1.1\t{hostname}")
    } else {
        format!("127.0.1.1\t{hostname} {short}")
    };
    let old = read_text(tree, "/etc/hosts")?.unwrap_or_else(|| DEFAULT_HOSTS.to_owned());
    let hosts = hosts_with(&old, &line);
    update_text(
        tree,
        "/etc/hosts",
        &hosts,
        meta(0o644, 0, 0, epoch),
        epoch,
        &mut changes,
    )?;
    Ok(changes)
}

/// `hosts` with every `127.0.1.1` line replaced by `line`, or `line` added
/// after the last `127.0.0.1` line (or first, without one).
fn hosts_with(hosts: &str, line: &str) -> String {
    let is_addr = |l: &str, addr: &str| l.split_whitespace().next() == Some(addr);
    let mut out: Vec<&str> = Vec::new();
    let mut placed = false;
    for l in hosts.lines() {
        if is_addr(l, "127.0.1.1") {
            if !placed {
                out.push(line);
                placed = true;
            }
        } else {
            out.push(l);
        }
    }
    if !placed {
        let at = out
            .iter()
            .rposition(|l| is_addr(l, "127.0.0.1"))
            .map_or(0, |i| i + 1);
        out.insert(at, line);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Checks a relative name made of `[A-Za-z0-9_+.-]` components (a zone or
/// locale name), with no `.`/`..` component.
fn check_name(what: &'static str, name: &str, allow_slash: bool, extra: &[u8]) -> Result<()> {
    let bad = |why: &str| ConfigError::Invalid {
        what,
        value: name.to_owned(),
        why: why.to_owned(),
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    let ok = |b: u8| {
        b.is_ascii_alphanumeric()
            || b"_+-.".contains(&b)
            || extra.contains(&b)
            || (allow_slash && b == b'/')
    };
    if !name.bytes().all(ok) {
        return Err(bad("only letters, digits and _ + - . are allowed"));
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad("empty, '.' and '..' components are not allowed"));
    }
    Ok(())
}

/// Points `/etc/localtime` at `/usr/share/zoneinfo/<timezone>` (an absolute
/// symlink, as `timedatectl` and Debian's tzdata make it) and, on Debian
/// (`/etc/debian_version` or an existing `/etc/timezone`), writes
/// `/etc/timezone`. The zone file must exist in the tree (package `tzdata`).
pub fn set_timezone(tree: &mut Tree, timezone: &str, epoch: i64) -> Result<Changes> {
    check_name("timezone", timezone, true, &[])?;
    let zone = format!("/usr/share/zoneinfo/{timezone}");
    if !is_file(tree, &zone) {
        return Err(ConfigError::Missing {
            what: "timezone",
            name: timezone.to_owned(),
            looked_for: format!("{zone} (is tzdata installed?)"),
        });
    }
    let mut changes = Changes::default();
    let current = tree
        .resolve(b"/etc/localtime", false)
        .ok()
        .and_then(|rel| tree.lookup(&rel));
    let same = current
        .is_some_and(|id| matches!(&tree.inode(id).kind, Kind::Symlink(t) if t == zone.as_bytes()));
    if !same {
        put(
            tree,
            "/etc/localtime",
            Kind::Symlink(zone.clone().into_bytes()),
            Some(meta(0o777, 0, 0, epoch)),
            epoch,
            &mut changes,
        )?;
    }
    if is_file(tree, "/etc/debian_version") || is_file(tree, "/etc/timezone") {
        update_text(
            tree,
            "/etc/timezone",
            &format!("{timezone}\n"),
            meta(0o644, 0, 0, epoch),
            epoch,
            &mut changes,
        )?;
    }
    Ok(changes)
}

/// Sets the system locale: `LANG=<locale>` in `/etc/default/locale` (Debian,
/// read by pam_env) and `/etc/locale.conf` (systemd). Only the setting: locale
/// data cannot be generated offline, so a locale other than `C`, `POSIX` or
/// `C.UTF-8` (built into glibc ≥ 2.35 and shipped by Debian's libc-bin) must
/// already be compiled in the source (`locales-all`, or `locale-gen` run when
/// the rootfs was made); without `/usr/lib/locale/locale-archive` or
/// `/usr/lib/locale/<name>/` this step refuses it.
pub fn set_locale(tree: &mut Tree, locale: &str, epoch: i64) -> Result<Changes> {
    check_name("locale", locale, false, b"@")?;
    if !matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8") && !locale_available(tree, locale) {
        return Err(ConfigError::Missing {
            what: "locale",
            name: locale.to_owned(),
            looked_for: "/usr/lib/locale/locale-archive and /usr/lib/locale/<name> (install locales-all or generate it in the rootfs; C.UTF-8 always works)".to_owned(),
        });
    }
    let mut changes = Changes::default();
    let text = format!("LANG={locale}\n");
    for path in ["/etc/default/locale", "/etc/locale.conf"] {
        update_text(
            tree,
            path,
            &text,
            meta(0o644, 0, 0, epoch),
            epoch,
            &mut changes,
        )?;
    }
    Ok(changes)
}

/// glibc's directory name for a locale: the codeset lower-cased without `-`
/// (`en_US.UTF-8` → `en_US.utf8`).
fn locale_available(tree: &Tree, locale: &str) -> bool {
    let normalized = match locale.split_once('.') {
        Some((lang, rest)) => {
            let (codeset, modifier) = rest
                .split_once('@')
                .map_or((rest, None), |(c, m)| (c, Some(m)));
            let codeset: String = codeset
                .chars()
                .filter(|c| *c != '-')
                .map(|c| c.to_ascii_lowercase())
                .collect();
            match modifier {
                Some(m) => format!("{lang}.{codeset}@{m}"),
                None => format!("{lang}.{codeset}"),
            }
        }
        None => locale.to_owned(),
    };
    super::exists(tree, "/usr/lib/locale/locale-archive")
        || super::exists(tree, &format!("/usr/lib/locale/{locale}"))
        || super::exists(tree, &format!("/usr/lib/locale/{normalized}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_line_replaces_existing_127_0_1_1() {
        let out = hosts_with(
            "127.0.0.1 localhost\n127.0.1.1 old\n::1 localhost\n",
            "127.0.1.1\tnew",
        );
        assert_eq!(out, "127.0.0.1 localhost\n127.0.1.1\tnew\n::1 localhost\n");
    }

    #[test]
    fn hosts_line_goes_after_last_localhost_line() {
        let out = hosts_with(
            "# c\n127.0.0.1 localhost\n::1 localhost\n",
            "127.0.1.1\tnew",
        );
        assert_eq!(
            out,
            "# c\n127.0.0.1 localhost\n127.0.1.1\tnew\n::1 localhost\n"
        );
    }

    #[test]
    fn hostname_validation_rejects_bad_labels() {
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", &"x".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "case {bad:?}: accepted");
        }
        for good in ["golden", "a-1.example.com", "X9"] {
            assert!(check_hostname(good).is_ok(), "case {good:?}: refused");
        }
    }

    #[test]
    fn timezone_names_cannot_escape() {
        for bad in [
            "../etc/passwd",
            "Europe/../x",
            "/UTC",
            "Europe//Berlin",
            "a b",
        ] {
            assert!(
                check_name("timezone", bad, true, &[]).is_err(),
                "case {bad:?}: accepted"
            );
        }
    }
}
