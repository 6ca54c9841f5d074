//! Users and groups, as `useradd`/`groupadd`/`usermod -aG` would make them,
//! by editing `/etc/passwd`, `/etc/shadow`, `/etc/group` and `/etc/gshadow`.
//!
//! Choices (shadow-utils 4.13 on Debian 12 is the reference):
//! - Names must match useradd's documented pattern `[a-z_][a-z0-9_-]*[$]?`,
//!   at most 32 characters.
//! - Ids: a normal user gets the first free uid in `UID_MIN..=UID_MAX` and, as
//!   with `USERGROUPS_ENAB yes`, a group of its own name whose gid equals the
//!   uid when that gid is free (else the first free gid); system users and
//!   groups get the highest free id in `SYS_*_MIN..=SYS_*_MAX`, as useradd
//!   allocates them. Ranges come from the tree's `/etc/login.defs`.
//! - A supplementary group that does not exist is an error naming it (no
//!   silent creation, so a typo such as `sudoo` cannot pass); create groups
//!   first with [`add_groups`].
//! - Without a `password_hash` the shadow password is `*`: no password
//!   matches, and unlike `!` sshd without PAM does not treat the account as
//!   locked, so key logins work. `sudo` then needs a NOPASSWD rule.
//! - The home directory (`/home/<name>` by default) is created with the
//!   tree's `HOME_MODE` or else 0700 (Debian 12's adduser `DIR_MODE`; useradd
//!   without HOME_MODE would use 0755 from its umask), owned by the user,
//!   filled from `/etc/skel` (owners changed, modes and mtimes kept). An
//!   existing home is left alone, as useradd does.
//! - A user that exists already is updated, not duplicated: groups and keys
//!   are added, shell, comment and password replaced when given; a different
//!   uid, gid or home is refused.
//! - The `passwd-`/`shadow-` backup files useradd leaves are not written.

use super::home::{make_home, HomePlan};
use super::usersdb::{add_member, Db, LoginDefs};
use super::{is_file, meta, write_file, Changes, ConfigError, Result};
use crate::tree::Tree;

/// A group to create (an existing group of the same name with a matching gid,
/// or with no gid asked, is left as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// Fixed gid; allocated when `None`.
    pub gid: Option<u32>,
    /// Allocate from the system range.
    pub system: bool,
}

/// A user to create or update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// Fixed uid; allocated when `None`.
    pub uid: Option<u32>,
    /// Primary gid: an existing group with this gid, or a new group of the
    /// user's name with it. `None`: a new group of the user's name.
    pub gid: Option<u32>,
    /// Supplementary groups (must exist).
    pub groups: Vec<String>,
    /// Login shell; default `/bin/bash` if in the tree, else `/bin/sh`
    /// (`/usr/sbin/nologin` for system users).
    pub shell: Option<String>,
    /// Home; default `/home/<name>` (`/nonexistent`, not created, for system users).
    pub home: Option<String>,
    /// crypt(3) hash for `/etc/shadow`; `None` leaves the password unusable.
    pub password_hash: Option<String>,
    /// Lines for `~/.ssh/authorized_keys`.
    pub ssh_authorized_keys: Vec<String>,
    /// A system account (system id range, no aging, no home by default).
    pub system: bool,
    /// GECOS field.
    pub comment: Option<String>,
}

/// The four databases and the settings, edited in memory, written at the end.
struct Dbs {
    passwd: Db,
    shadow: Option<Db>,
    group: Db,
    gshadow: Option<Db>,
    defs: LoginDefs,
}

impl Dbs {
    fn load(tree: &Tree) -> Result<Self> {
        let passwd = Db::load(tree, "/etc/passwd", 7)?;
        let group = Db::load(tree, "/etc/group", 4)?;
        let shadow = Db::load(tree, "/etc/shadow", 9)?;
        let gshadow = Db::load(tree, "/etc/gshadow", 4)?;
        // Shadow files are kept where they exist, and made for a fresh tree.
        let shadow = (shadow.existed || !passwd.existed).then_some(shadow);
        let gshadow = (gshadow.existed || !group.existed).then_some(gshadow);
        Ok(Self {
            passwd,
            shadow,
            group,
            gshadow,
            defs: LoginDefs::load(tree)?,
        })
    }

    /// Writes the changed files: existing ones keep their metadata; new
    /// `passwd`/`group` are 0644 root, new `shadow`/`gshadow` 0640 root:shadow.
    fn store(&self, tree: &mut Tree, epoch: i64, changes: &mut Changes) -> Result<()> {
        let shadow_gid = self
            .group
            .get("shadow")
            .and_then(|g| g[2].parse().ok())
            .unwrap_or(0);
        let dbs = [
            (Some(&self.passwd), 0o644, 0),
            (Some(&self.group), 0o644, 0),
            (self.shadow.as_ref(), 0o640, shadow_gid),
            (self.gshadow.as_ref(), 0o640, shadow_gid),
        ];
        for (db, mode, gid) in dbs {
            let Some(db) = db else { continue };
            if db.changed() {
                let m = (!db.existed).then(|| meta(mode, 0, gid, epoch));
                write_file(tree, db.path, db.text().as_bytes(), m, epoch, changes)?;
            }
        }
        Ok(())
    }

    fn gid_of(&self, group: &str) -> Option<u32> {
        self.group.get(group).and_then(|g| g[2].parse().ok())
    }

    /// Creates a group record (and its gshadow record).
    fn push_group(&mut self, name: &str, gid: u32) {
        self.group.push(vec![
            name.into(),
            "x".into(),
            gid.to_string(),
            String::new(),
        ]);
        if let Some(gs) = &mut self.gshadow {
            gs.push(vec![name.into(), "!".into(), String::new(), String::new()]);
        }
    }
}

/// Checks a user or group name against useradd(8)'s pattern.
fn check_name(what: &'static str, name: &str) -> Result<()> {
    let b = name.as_bytes();
    let body_ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-';
    let ok = !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && match b.split_last() {
            Some((b'$', body)) => body[1..].iter().all(body_ok),
            _ => b[1..].iter().all(body_ok),
        };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            what,
            value: name.into(),
            why: "must match [a-z_][a-z0-9_-]*[$]? and be at most 32 characters".into(),
        })
    }
}

/// Checks a value going into a colon-separated field.
fn check_field(what: &'static str, value: &str) -> Result<()> {
    if value.contains([':', '\n']) {
        return Err(ConfigError::Invalid {
            what,
            value: value.into(),
            why: "cannot contain ':' or a newline".into(),
        });
    }
    Ok(())
}

/// The first (or, `descending`, the last) id in `min..=max` not in `used`.
fn free_id(used: &[u32], min: u32, max: u32, descending: bool, what: &'static str) -> Result<u32> {
    let free = |id: &u32| !used.contains(id);
    let found = if descending {
        (min..=max).rev().find(free)
    } else {
        (min..=max).find(free)
    };
    found.ok_or(ConfigError::IdsExhausted { what, min, max })
}

/// Creates groups (`groupadd`). Returns the changed paths.
pub fn add_groups(tree: &mut Tree, groups: &[GroupSpec], epoch: i64) -> Result<Changes> {
    let mut dbs = Dbs::load(tree)?;
    for g in groups {
        check_name("group name", &g.name)?;
        if let Some(existing) = dbs.gid_of(&g.name) {
            if g.gid.is_some_and(|gid| gid != existing) {
                return Err(ConfigError::Conflict {
                    what: "group",
                    name: g.name.clone(),
                    why: format!("exists with gid {existing}"),
                });
            }
            continue;
        }
        let used: Vec<u32> = dbs.group.ids(2)?.into_iter().map(|(id, _)| id).collect();
        let gid = match g.gid {
            Some(gid) => {
                if let Some((_, by)) = dbs.group.ids(2)?.into_iter().find(|(id, _)| *id == gid) {
                    return Err(ConfigError::Conflict {
                        what: "group",
                        name: g.name.clone(),
                        why: format!("gid {gid} is already used by group {by:?}"),
                    });
                }
                gid
            }
            None if g.system => free_id(
                &used,
                dbs.defs.sys_gid_min,
                dbs.defs.sys_gid_max,
                true,
                "gid",
            )?,
            None => free_id(&used, dbs.defs.gid_min, dbs.defs.gid_max, false, "gid")?,
        };
        dbs.push_group(&g.name, gid);
    }
    let mut changes = Changes::default();
    dbs.store(tree, epoch, &mut changes)?;
    Ok(changes)
}

/// Creates or updates users (`useradd -m -U -G ...` / `usermod -aG ...`).
/// Returns the changed paths. Nothing is written unless every user is valid.
pub fn add_users(tree: &mut Tree, users: &[UserSpec], epoch: i64) -> Result<Changes> {
    let mut dbs = Dbs::load(tree)?;
    let mut plans = Vec::new();
    for u in users {
        check_name("user name", &u.name)?;
        for v in [&u.shell, &u.home, &u.password_hash, &u.comment]
            .into_iter()
            .flatten()
        {
            check_field("user field", v)?;
        }
        for k in &u.ssh_authorized_keys {
            if k.contains('\n') || k.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    what: "ssh key",
                    value: k.clone(),
                    why: "must be one non-empty line".into(),
                });
            }
        }
        let plan = if dbs.passwd.get(&u.name).is_some() {
            update_user(&mut dbs, u)?
        } else {
            create_user(tree, &mut dbs, u, epoch)?
        };
        for g in &u.groups {
            join_group(&mut dbs, &u.name, g)?;
        }
        plans.push(plan);
    }
    let mut changes = Changes::default();
    dbs.store(tree, epoch, &mut changes)?;
    for plan in &plans {
        make_home(tree, plan, epoch, &mut changes)?;
    }
    Ok(changes)
}

fn conflict(name: &str, why: String) -> ConfigError {
    ConfigError::Conflict {
        what: "user",
        name: name.into(),
        why,
    }
}

fn create_user(tree: &Tree, dbs: &mut Dbs, u: &UserSpec, epoch: i64) -> Result<HomePlan> {
    let d = dbs.defs.clone();
    let uid = new_uid(dbs, u)?;
    let gid = new_gid(dbs, u, uid)?;
    let default_shell = if u.system {
        "/usr/sbin/nologin"
    } else if is_file(tree, "/bin/bash") {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let shell = u.shell.clone().unwrap_or_else(|| default_shell.into());
    let home = u.home.clone().unwrap_or_else(|| {
        if u.system {
            "/nonexistent".into()
        } else {
            format!("/home/{}", u.name)
        }
    });
    let comment = u.comment.clone().unwrap_or_default();
    dbs.passwd.push(vec![
        u.name.clone(),
        "x".into(),
        uid.to_string(),
        gid.to_string(),
        comment,
        home.clone(),
        shell,
    ]);
    push_shadow(dbs, u, epoch)?;
    let create = !u.system || u.home.is_some();
    let mode = if u.system {
        0o755
    } else {
        d.home_mode.unwrap_or(0o700)
    };
    Ok(HomePlan {
        home,
        uid,
        gid,
        create,
        mode,
        skel: !u.system,
        keys: u.ssh_authorized_keys.clone(),
    })
}

/// A new user's uid: the recipe's (refused when taken), else the first
/// free one in the login.defs range for its kind.
fn new_uid(dbs: &Dbs, u: &UserSpec) -> Result<u32> {
    let d = &dbs.defs;
    let uids = dbs.passwd.ids(2)?;
    let uid = match u.uid {
        Some(uid) => match uids.iter().find(|(id, _)| *id == uid) {
            Some((_, by)) => {
                return Err(conflict(
                    &u.name,
                    format!("uid {uid} is already used by user {by:?}"),
                ))
            }
            None => uid,
        },
        None => {
            let used: Vec<u32> = uids.iter().map(|(id, _)| *id).collect();
            if u.system {
                free_id(&used, d.sys_uid_min, d.sys_uid_max, true, "uid")?
            } else {
                free_id(&used, d.uid_min, d.uid_max, false, "uid")?
            }
        }
    };
    Ok(uid)
}

/// A new user's primary group: the recipe's gid (created when missing),
/// else a new group named after the user, with the uid as gid when free.
fn new_gid(dbs: &mut Dbs, u: &UserSpec, uid: u32) -> Result<u32> {
    let d = dbs.defs.clone();
    let gids = dbs.group.ids(2)?;
    let gid = match u.gid {
        Some(gid) if gids.iter().any(|(id, _)| *id == gid) => gid,
        _ if dbs.group.get(&u.name).is_some() => {
            return Err(conflict(
                &u.name,
                format!(
                    "a group named {:?} exists; set gid to make it the primary group",
                    u.name
                ),
            ));
        }
        Some(gid) => {
            dbs.push_group(&u.name, gid);
            gid
        }
        None => {
            let used: Vec<u32> = gids.iter().map(|(id, _)| *id).collect();
            let gid = if !used.contains(&uid) {
                uid
            } else if u.system {
                free_id(&used, d.sys_gid_min, d.sys_gid_max, true, "gid")?
            } else {
                free_id(&used, d.gid_min, d.gid_max, false, "gid")?
            };
            dbs.push_group(&u.name, gid);
            gid
        }
    };
    Ok(gid)
}

/// The user's `/etc/shadow` line: its hash (else locked), and password
/// aging from login.defs for a login user.
fn push_shadow(dbs: &mut Dbs, u: &UserSpec, epoch: i64) -> Result<()> {
    let d = dbs.defs.clone();
    let Some(shadow) = &mut dbs.shadow else {
        return Err(conflict(
            &u.name,
            "the image has /etc/passwd but no /etc/shadow".into(),
        ));
    };
    let hash = u.password_hash.clone().unwrap_or_else(|| "*".into());
    // shadow(5): last change in days since 1970-01-01; system accounts get no aging (useradd -r).
    let day = epoch.div_euclid(86_400).max(0).to_string();
    let (min, max, warn) = if u.system {
        Default::default()
    } else {
        (d.pass_min_days, d.pass_max_days, d.pass_warn_age)
    };
    shadow.push(vec![
        u.name.clone(),
        hash,
        day,
        min,
        max,
        warn,
        String::new(),
        String::new(),
        String::new(),
    ]);
    Ok(())
}

fn update_user(dbs: &mut Dbs, u: &UserSpec) -> Result<HomePlan> {
    let rec = dbs
        .passwd
        .get_mut(&u.name)
        .expect("the caller found the user");
    let (uid, gid) = (rec[2].clone(), rec[3].clone());
    let differs = |want: Option<String>, have: &str, what: &str| match want {
        Some(w) if w != have => Err(conflict(
            &u.name,
            format!("exists with {what} {have}, not {w}"),
        )),
        _ => Ok(()),
    };
    differs(u.uid.map(|v| v.to_string()), &uid, "uid")?;
    differs(u.gid.map(|v| v.to_string()), &gid, "gid")?;
    differs(u.home.clone(), &rec[5], "home")?;
    if let Some(c) = &u.comment {
        rec[4] = c.clone();
    }
    if let Some(s) = &u.shell {
        rec[6] = s.clone();
    }
    let home = rec[5].clone();
    let bad_id = |v: &str| ConfigError::Malformed {
        path: "/etc/passwd".into(),
        line: 0,
        message: format!("user {:?} has id {v:?}", u.name),
    };
    let uid: u32 = uid.parse().map_err(|_| bad_id(&uid))?;
    let gid: u32 = gid.parse().map_err(|_| bad_id(&gid))?;
    if let Some(hash) = &u.password_hash {
        let Some(shadow) = &mut dbs.shadow else {
            return Err(conflict(
                &u.name,
                "the image has no /etc/shadow for the password".into(),
            ));
        };
        match shadow.get_mut(&u.name) {
            Some(rec) => rec[1] = hash.clone(),
            None => shadow.push(vec![
                u.name.clone(),
                hash.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    Ok(HomePlan {
        home,
        uid,
        gid,
        create: false,
        mode: 0o700,
        skel: false,
        keys: u.ssh_authorized_keys.clone(),
    })
}

/// `usermod -aG group user`: the member lists of group and gshadow.
fn join_group(dbs: &mut Dbs, user: &str, group: &str) -> Result<()> {
    let Some(rec) = dbs.group.get_mut(group) else {
        return Err(ConfigError::Missing {
            what: "group",
            name: group.into(),
            looked_for: format!("/etc/group, for user {user:?}; add it with a group entry first"),
        });
    };
    add_member(&mut rec[3], user);
    if let Some(rec) = dbs.gshadow.as_mut().and_then(|gs| gs.get_mut(group)) {
        add_member(&mut rec[3], user);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_useradd_pattern() {
        for good in ["ops", "_svc", "a-b_c1", "machine$", &"a".repeat(32)] {
            assert!(
                check_name("user name", good).is_ok(),
                "case {good:?}: refused"
            );
        }
        for bad in [
            "",
            "Ops",
            "1ops",
            "-x",
            "a:b",
            "a$b",
            "a.b",
            &"a".repeat(33),
        ] {
            assert!(
                check_name("user name", bad).is_err(),
                "case {bad:?}: accepted"
            );
        }
    }

    #[test]
    fn free_id_ascending_and_descending() {
        assert_eq!(
            free_id(&[1000, 1001, 1003], 1000, 60000, false, "uid").unwrap(),
            1002
        );
        assert_eq!(free_id(&[999, 998], 101, 999, true, "uid").unwrap(), 997);
        assert!(free_id(&[1, 2], 1, 2, false, "uid").is_err());
    }
}
