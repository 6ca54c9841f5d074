//! `[config]` → [`ConfigPlan`]: names checked, defaults applied, file
//! sources hashed. Whether groups, owners, shells, zones and units exist is
//! a question for the OS tree, checked by the pipeline.

use std::collections::BTreeMap;
use std::ops::Range;

use super::context::Cx;
use crate::plan::{
    CloudInitPlan, ConfigPlan, Content, FilePlan, NetworkPlan, ServicesPlan, UserPlan,
};
use crate::recipe::{CloudInit, Config, FileEntry, FileKind, Services, Spanned, User};

pub(super) fn config(cx: &mut Cx, c: &Config, image_name: &str) -> ConfigPlan {
    let hostname = c.hostname.as_ref().map(|h| {
        if !valid_hostname(h.get_ref()) {
            let help = "1 to 64 characters: labels of letters, digits and '-' separated by '.', no label starting or ending with '-'";
            cx.error(h.span(), format!("invalid hostname `{}`", h.get_ref()), Some(help.into()));
        }
        h.get_ref().clone()
    });
    let timezone = checked(
        cx,
        c.timezone.as_ref(),
        "timezone",
        "like \"UTC\" or \"Europe/Paris\"",
        |t| {
            !t.starts_with('/')
                && t.split('/').all(|p| !p.is_empty() && p != ".." && p != ".")
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        },
    );
    let locale = checked(
        cx,
        c.locale.as_ref(),
        "locale",
        "like \"C.UTF-8\" or \"en_US.UTF-8\"",
        |l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        },
    );
    let users = users(cx, &c.users);
    let files = files(cx, &c.files);
    let services = services(cx, &c.services);
    let network = match &c.network {
        Some(n) if !n.get_ref().dhcp() => NetworkPlan::None,
        _ => NetworkPlan::Dhcp,
    };
    let host = hostname.as_deref().unwrap_or(image_name);
    let cloud_init = c
        .cloud_init
        .as_ref()
        .map(|ci| cloud_init(cx, ci, image_name, host));
    ConfigPlan {
        hostname,
        timezone,
        locale,
        users,
        files,
        services,
        network,
        cloud_init,
    }
}

fn checked(
    cx: &mut Cx,
    v: Option<&Spanned<String>>,
    key: &str,
    help: &str,
    ok: impl Fn(&str) -> bool,
) -> Option<String> {
    let v = v?;
    if !ok(v.get_ref()) {
        cx.error(
            v.span(),
            format!("invalid {key} `{}`", v.get_ref()),
            Some(help.into()),
        );
    }
    Some(v.get_ref().clone())
}

fn valid_hostname(h: &str) -> bool {
    (1..=64).contains(&h.len())
        && h.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// useradd's default NAME_REGEX, with the 32-character limit.
fn valid_user_name(n: &str) -> bool {
    let body = n.strip_suffix('$').unwrap_or(n);
    (1..=32).contains(&n.len())
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn id(cx: &mut Cx, v: Option<&Spanned<i64>>, key: &str) -> Option<u32> {
    let v = v?;
    // 4294967295 is (uid_t)-1, "no id", in chown(2) and setuid(2).
    match u32::try_from(*v.get_ref()) {
        Ok(n) if n != u32::MAX => Some(n),
        _ => {
            cx.error(
                v.span(),
                format!("{key} {} is out of range", v.get_ref()),
                Some("ids run from 0 to 4294967294".into()),
            );
            None
        }
    }
}

/// A user's home or shell: absolute, normalised like `[[config.files]]`
/// paths (no `.`, `..` or empty component: issue 14 found `/home/../../etc`
/// accepted), without `:` or a newline (passwd's separators).
fn absolute(cx: &mut Cx, v: Option<&Spanned<String>>, key: &str) -> Option<String> {
    let v = v?;
    if !normal_path(v.get_ref()) || v.get_ref().contains(['\n', ':']) {
        cx.error(
            v.span(),
            format!("{key} `{}` must be an absolute path", v.get_ref()),
            Some("without `.`, `..`, `//`, `:` or a trailing `/`, like \"/home/ops\"".into()),
        );
    }
    Some(v.get_ref().clone())
}

fn users(cx: &mut Cx, users: &[User]) -> Vec<UserPlan> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for u in users {
        let name = u.name.get_ref();
        if !valid_user_name(name) {
            let help = "lower-case letters, digits, '_' and '-', starting with a letter or '_', at most 32 characters";
            cx.error(
                u.name.span(),
                format!("invalid user name `{name}`"),
                Some(help.into()),
            );
        }
        if let Some(first) = seen.insert(name, u.name.span().start) {
            let line = cx.map.error(first..first, "").line;
            cx.error(
                u.name.span(),
                format!("user `{name}` is defined twice"),
                Some(format!("first defined on line {line}")),
            );
        }
        if let Some(bad) = u.groups.iter().find(|g| !valid_user_name(g)) {
            cx.error(
                u.name.span(),
                format!("user `{name}`: invalid group name `{bad}`"),
                None,
            );
        }
        if let Some(k) = u
            .ssh_authorized_keys
            .iter()
            .find(|k| k.contains(['\n', '\r']))
        {
            let help = "give each key as its own string in the list";
            cx.error(
                u.name.span(),
                format!(
                    "user `{name}`: an ssh key spans several lines: `{}`",
                    k.lines().next().unwrap_or("")
                ),
                Some(help.into()),
            );
        }
        let password_hash = u.password_hash.as_ref().map(|p| {
            if p.get_ref().contains([':', '\n']) || p.get_ref().is_empty() {
                let help = "a crypt(3) string like \"$6$salt$hash\" (mkpasswd -m sha-512), or \"!\" to lock";
                cx.error(p.span(), "invalid password hash".into(), Some(help.into()));
            }
            p.get_ref().clone()
        });
        out.push(UserPlan {
            name: name.clone(),
            uid: id(cx, u.uid.as_ref(), "uid"),
            gid: id(cx, u.gid.as_ref(), "gid"),
            groups: u.groups.clone(),
            ssh_authorized_keys: u.ssh_authorized_keys.clone(),
            shell: absolute(cx, u.shell.as_ref(), "shell"),
            password_hash,
            home: absolute(cx, u.home.as_ref(), "home"),
            system: u.system,
            comment: u.comment.clone(),
        });
    }
    out
}

/// Parses an octal mode string: "644", "0644", "4755" (at most 0o7777).
pub(super) fn parse_mode(s: &str) -> Option<u16> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let len_ok = matches!(digits.len(), 3 | 4) || (digits.len() == 5 && digits.starts_with('0'));
    if !len_ok {
        return None;
    }
    u16::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

/// Absolute, with no empty, `.` or `..` component, and not `/` itself.
fn normal_path(p: &str) -> bool {
    p.len() > 1
        && p.starts_with('/')
        && !p.contains('\0')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn files(cx: &mut Cx, files: &[FileEntry]) -> Vec<FilePlan> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for f in files {
        let path = f.path.get_ref();
        if !normal_path(path) {
            let help =
                "an absolute path without `.`, `..`, `//` or a trailing `/`, like \"/etc/motd\"";
            cx.error(
                f.path.span(),
                format!("invalid file path `{path}`"),
                Some(help.into()),
            );
        }
        if let Some(first) = seen.insert(path, f.path.span().start) {
            let line = cx.map.error(first..first, "").line;
            cx.error(
                f.path.span(),
                format!("`{path}` is listed twice"),
                Some(format!("first listed on line {line}")),
            );
        }
        out.push(file(cx, f));
    }
    out
}

fn file(cx: &mut Cx, f: &FileEntry) -> FilePlan {
    let path = f.path.get_ref().clone();
    let kind = f.kind.as_ref().map_or(FileKind::File, |k| *k.get_ref());
    let span = f.path.span();
    let content = match kind {
        FileKind::File => file_content(cx, f, &path, span.clone()),
        _ => {
            not_for(
                cx,
                f.content.is_some().then(|| span.clone()),
                "content",
                kind,
            );
            not_for(cx, f.source.as_ref().map(Spanned::span), "source", kind);
            None
        }
    };
    let target = match (kind, &f.target) {
        (FileKind::Symlink, Some(t)) if !t.get_ref().is_empty() && !t.get_ref().contains('\0') => {
            Some(t.get_ref().clone())
        }
        (FileKind::Symlink, _) => {
            cx.error(
                span.clone(),
                format!("symlink `{path}` needs a non-empty `target`"),
                None,
            );
            None
        }
        (_, t) => {
            not_for(cx, t.as_ref().map(Spanned::span), "target", kind);
            None
        }
    };
    let default_mode = match kind {
        FileKind::File => 0o644,
        FileKind::Dir => 0o755,
        FileKind::Symlink => 0o777,
    };
    let mode = match &f.mode {
        Some(m) if kind == FileKind::Symlink => {
            not_for(cx, Some(m.span()), "mode", kind);
            default_mode
        }
        Some(m) => parse_mode(m.get_ref()).unwrap_or_else(|| {
            let help = "modes are octal: digits 0-7, up to \"7777\", like \"0644\" or \"0755\"";
            cx.error(
                m.span(),
                format!("invalid mode `{}`", m.get_ref()),
                Some(help.into()),
            );
            default_mode
        }),
        None => default_mode,
    };
    let owner = principal(cx, f.owner.as_ref(), "owner");
    let group = principal(cx, f.group.as_ref(), "group");
    FilePlan {
        path,
        kind,
        content,
        target,
        mode,
        owner,
        group,
    }
}

fn file_content(cx: &mut Cx, f: &FileEntry, path: &str, span: Range<usize>) -> Option<Content> {
    match (&f.content, &f.source) {
        (Some(c), None) => Some(Content::Inline(c.clone())),
        (None, Some(s)) => cx
            .input(format!("config.files[{path}]"), s, false)
            .map(Content::File),
        (Some(_), Some(s)) => {
            cx.error(
                s.span(),
                format!("`{path}` has both `content` and `source`"),
                Some("keep one".into()),
            );
            None
        }
        (None, None) => {
            let help =
                "add content = \"...\" or source = \"files/...\" (or kind = \"dir\" / \"symlink\")";
            cx.error(
                span,
                format!("file `{path}` has no `content` or `source`"),
                Some(help.into()),
            );
            None
        }
    }
}

fn not_for(cx: &mut Cx, span: Option<Range<usize>>, key: &str, kind: FileKind) {
    if let Some(span) = span {
        let kind = match kind {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
        };
        cx.error(
            span,
            format!("`{key}` does not apply to kind = \"{kind}\""),
            None,
        );
    }
}

fn principal(cx: &mut Cx, v: Option<&Spanned<String>>, key: &str) -> Option<String> {
    let v = v?;
    let s = v.get_ref();
    if !(valid_user_name(s)
        || (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && s.parse::<u32>().is_ok()))
    {
        cx.error(
            v.span(),
            format!("invalid {key} `{s}`"),
            Some("a user or group name, or a numeric id".into()),
        );
    }
    Some(s.clone())
}

/// Unit types systemd knows (systemd.unit(5)).
const UNIT_SUFFIXES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "slice",
    "scope",
    "device",
];

fn unit_names(cx: &mut Cx, units: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for u in units {
        let name = u.get_ref();
        let full = match name.rsplit_once('.') {
            Some((_, suffix)) if UNIT_SUFFIXES.contains(&suffix) => name.clone(),
            // As systemctl does: a name without a unit type is a service.
            _ => format!("{name}.service"),
        };
        if name.is_empty() || name.contains(['/', ' ', '\n', '\0']) {
            cx.error(
                u.span(),
                format!("invalid unit name `{name}`"),
                Some("like \"ssh.service\" or \"systemd-networkd\"".into()),
            );
        }
        out.push(full);
    }
    out
}

fn services(cx: &mut Cx, s: &Services) -> ServicesPlan {
    let enable = unit_names(cx, &s.enable);
    let disable = unit_names(cx, &s.disable);
    let mask = unit_names(cx, &s.mask);
    for (i, unit) in enable.iter().enumerate() {
        let clash = if disable.contains(unit) {
            Some("disable")
        } else if mask.contains(unit) {
            Some("mask")
        } else {
            None
        };
        if let Some(other) = clash {
            cx.error(
                s.enable[i].span(),
                format!("`{unit}` is both enabled and in `{other}`"),
                None,
            );
        }
    }
    ServicesPlan {
        enable,
        disable,
        mask,
    }
}

fn cloud_init(cx: &mut Cx, ci: &CloudInit, image_name: &str, host: &str) -> CloudInitPlan {
    let mut doc =
        |inline: &Option<String>, file: &Option<Spanned<String>>, role: &str, default: String| {
            match (inline, file) {
                (Some(_), Some(f)) => {
                    cx.error(
                        f.span(),
                        format!("give `{role}` or `{role}_file`, not both"),
                        None,
                    );
                    Content::Inline(String::new())
                }
                (Some(s), None) => Content::Inline(s.clone()),
                (None, Some(f)) => cx
                    .input(format!("config.cloud_init.{role}"), f, false)
                    .map_or(Content::Inline(String::new()), Content::File),
                (None, None) => Content::Inline(default),
            }
        };
    let user_data = doc(
        &ci.user_data,
        &ci.user_data_file,
        "user_data",
        "#cloud-config\n".into(),
    );
    let meta = format!("instance-id: iid-{image_name}\nlocal-hostname: {host}\n");
    let meta_data = doc(&ci.meta_data, &ci.meta_data_file, "meta_data", meta);
    let network_config = match (&ci.network_config, &ci.network_config_file) {
        (None, None) => None,
        (inline, file) => Some(doc(inline, file, "network_config", String::new())),
    };
    CloudInitPlan {
        user_data,
        meta_data,
        network_config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_up_to_7777() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("4755"), Some(0o4755));
        assert_eq!(parse_mode("00644"), Some(0o644));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("17777"), None);
        assert_eq!(parse_mode("64"), None);
        assert_eq!(parse_mode("rw-r--r--"), None);
    }

    #[test]
    fn hostnames_follow_rfc1123() {
        assert!(valid_hostname("golden"));
        assert!(valid_hostname("a.b-c.d"));
        assert!(!valid_hostname("-a"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname(&"a".repeat(65)));
        assert!(!valid_hostname("under_score"));
    }

    #[test]
    fn file_paths_must_be_normal_and_absolute() {
        assert!(normal_path("/etc/motd"));
        assert!(!normal_path("/"));
        assert!(!normal_path("etc/motd"));
        assert!(!normal_path("/etc/../motd"));
        assert!(!normal_path("/etc//motd"));
        assert!(!normal_path("/etc/"));
    }
}
