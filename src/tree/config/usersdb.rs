//! The shadow-utils databases (`passwd(5)`, `shadow(5)`, `group(5)`,
//! `gshadow(5)`) as lines of colon-separated fields, kept in order so an edit
//! rewrites only what it touches; and `login.defs(5)` settings.

use super::{read_text, ConfigError, Result};
use crate::tree::Tree;

/// One line: a record split into fields, or anything else kept verbatim
/// (comments, blank lines, NIS `+`/`-` entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    Record(Vec<String>),
    Other(String),
}

/// A colon-separated database file.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub path: &'static str,
    pub lines: Vec<Line>,
    /// The file existed in the tree.
    pub existed: bool,
    /// The text as read (to skip rewriting an unchanged file).
    original: String,
}

impl Db {
    /// Reads `path` (missing is empty); records must have exactly `fields`.
    pub fn load(tree: &Tree, path: &'static str, fields: usize) -> Result<Self> {
        let text = read_text(tree, path)?;
        let existed = text.is_some();
        let text = text.unwrap_or_default();
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.is_empty() || l.starts_with('#') || l.starts_with('+') || l.starts_with('-') {
                lines.push(Line::Other(l.to_owned()));
                continue;
            }
            let f: Vec<String> = l.split(':').map(str::to_owned).collect();
            if f.len() != fields {
                let message = format!("expected {fields} ':'-separated fields, found {}", f.len());
                return Err(ConfigError::Malformed {
                    path: path.to_owned(),
                    line: i + 1,
                    message,
                });
            }
            lines.push(Line::Record(f));
        }
        Ok(Self {
            path,
            lines,
            existed,
            original: text,
        })
    }

    /// The records, in file order.
    pub fn records(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter().filter_map(|l| match l {
            Line::Record(f) => Some(f),
            Line::Other(_) => None,
        })
    }

    /// The record named `name` (first field).
    pub fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.records().find(|f| f[0] == name)
    }

    /// The record named `name`, to edit.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Record(f) if f[0] == name => Some(f),
            _ => None,
        })
    }

    /// Appends a record.
    pub fn push(&mut self, fields: Vec<String>) {
        self.lines.push(Line::Record(fields));
    }

    /// Ids in field `field` (2 for uid/gid), parsed; a malformed id is an error.
    pub fn ids(&self, field: usize) -> Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            if let Line::Record(f) = l {
                let id = f[field]
                    .parse::<u32>()
                    .map_err(|_| ConfigError::Malformed {
                        path: self.path.to_owned(),
                        line: i + 1,
                        message: format!("id {:?} is not a number", f[field]),
                    })?;
                out.push((id, f[0].clone()));
            }
        }
        Ok(out)
    }

    /// The file's new text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                Line::Record(f) => out.push_str(&f.join(":")),
                Line::Other(s) => out.push_str(s),
            }
            out.push('\n');
        }
        out
    }

    /// True when [`Db::text`] differs from what was read.
    pub fn changed(&self) -> bool {
        self.text() != self.original
    }
}

/// Adds `name` to a comma-separated member list; false if already there.
pub(crate) fn add_member(list: &mut String, name: &str) -> bool {
    if list.split(',').any(|m| m == name) {
        return false;
    }
    if !list.is_empty() {
        list.push(',');
    }
    list.push_str(name);
    true
}

/// `login.defs(5)` settings this step uses, with shadow-utils' defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoginDefs {
    pub uid_min: u32,
    pub uid_max: u32,
    pub sys_uid_min: u32,
    pub sys_uid_max: u32,
    pub gid_min: u32,
    pub gid_max: u32,
    pub sys_gid_min: u32,
    pub sys_gid_max: u32,
    pub pass_min_days: String,
    pub pass_max_days: String,
    pub pass_warn_age: String,
    /// `HOME_MODE` if set.
    pub home_mode: Option<u16>,
}

impl LoginDefs {
    /// Reads `/etc/login.defs` (absent: the defaults of shadow 4.13's
    /// useradd: 1000–60000, system 101–999, 0/99999/7).
    pub fn load(tree: &Tree) -> Result<Self> {
        let mut d = Self {
            uid_min: 1000,
            uid_max: 60000,
            sys_uid_min: 101,
            sys_uid_max: 999,
            gid_min: 1000,
            gid_max: 60000,
            sys_gid_min: 101,
            sys_gid_max: 999,
            pass_min_days: "0".into(),
            pass_max_days: "99999".into(),
            pass_warn_age: "7".into(),
            home_mode: None,
        };
        let Some(text) = read_text(tree, "/etc/login.defs")? else {
            return Ok(d);
        };
        for (i, line) in text.lines().enumerate() {
            let mut it = line.split_whitespace();
            let (Some(key), Some(value)) = (it.next(), it.next()) else {
                continue;
            };
            let bad = |what: &str| ConfigError::Malformed {
                path: "/etc/login.defs".into(),
                line: i + 1,
                message: format!("{key} {value:?} is not {what}"),
            };
            let num = || value.parse::<u32>().map_err(|_| bad("a number"));
            match key {
                "UID_MIN" => d.uid_min = num()?,
                "UID_MAX" => d.uid_max = num()?,
                "SYS_UID_MIN" => d.sys_uid_min = num()?,
                "SYS_UID_MAX" => d.sys_uid_max = num()?,
                "GID_MIN" => d.gid_min = num()?,
                "GID_MAX" => d.gid_max = num()?,
                "SYS_GID_MIN" => d.sys_gid_min = num()?,
                "SYS_GID_MAX" => d.sys_gid_max = num()?,
                "PASS_MIN_DAYS" => d.pass_min_days = num()?.to_string(),
                "PASS_MAX_DAYS" => d.pass_max_days = num()?.to_string(),
                "PASS_WARN_AGE" => d.pass_warn_age = num()?.to_string(),
                "HOME_MODE" => {
                    let mode = u16::from_str_radix(value, 8).map_err(|_| bad("an octal mode"))?;
                    d.home_mode = Some(mode & 0o7777);
                }
                _ => {}
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{FileData, Inode, Kind, Meta};

    fn tree_with(path: &str, text: &str) -> Tree {
        let mut t = Tree::new(Meta {
            mode: 0o755,
            ..Meta::default()
        });
        let inode = Inode {
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
            kind: Kind::File(FileData::Bytes(text.as_bytes().into())),
        };
        t.insert(path.as_bytes(), inode).unwrap();
        t
    }

    #[test]
    fn db_round_trips_comments_and_order() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\n\n+@nis::::::\nbin:x:2:2:bin:/bin:/usr/sbin/nologin\n";
        let db = Db::load(&tree_with("/etc/passwd", text), "/etc/passwd", 7).unwrap();
        assert_eq!(db.text(), text);
        assert!(!db.changed());
        assert_eq!(
            db.ids(2).unwrap(),
            vec![(0, "root".to_owned()), (2, "bin".to_owned())]
        );
    }

    #[test]
    fn db_rejects_wrong_field_count_with_line_number() {
        let err = Db::load(
            &tree_with("/etc/group", "root:x:0:\nbad:x:1\n"),
            "/etc/group",
            4,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/group:2: expected 4 ':'-separated fields, found 3"
        );
    }

    #[test]
    fn login_defs_reads_ranges_and_home_mode() {
        let t = tree_with(
            "/etc/login.defs",
            "# x\nUID_MIN\t 2000\nHOME_MODE 0750\nGID_MAX 5000\n",
        );
        let d = LoginDefs::load(&t).unwrap();
        assert_eq!(
            (d.uid_min, d.gid_max, d.home_mode, d.sys_uid_max),
            (2000, 5000, Some(0o750), 999)
        );
    }

    #[test]
    fn add_member_keeps_list_unique() {
        let mut l = String::new();
        assert!(add_member(&mut l, "a"));
        assert!(add_member(&mut l, "b"));
        assert!(!add_member(&mut l, "a"));
        assert_eq!(l, "a,b");
    }
}
