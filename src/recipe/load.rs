//! TOML text → [`Document`], keeping spans, collecting every error.
//!
//! serde stops at the first error, so the loader parses the document once
//! into toml's spanned tree (`DeTable`), then deserializes from that tree in
//! a loop: each error becomes a [`Diagnostic`], the offending key is removed
//! from the tree, and deserialization runs again, until it succeeds or an
//! error cannot be recovered from (a missing key). The tree also names the
//! key path (`config.users[0].uid`) for each error and lets the messages be
//! rewritten for people: "unknown key", "did you mean", "expected a string
//! like \"4GiB\"".

use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::Document;
use crate::diagnostic::{suggest, Diagnostic, SourceMap};

/// At most this many errors are recovered from (each removes one key).
const MAX_ROUNDS: usize = 100;

/// Reads and loads the recipe at `path`.
pub fn load(path: &Path) -> Result<(Document, SourceMap), Vec<Diagnostic>> {
    let map = read(path)?;
    let recipe = load_str(&map)?;
    Ok((recipe, map))
}

/// Reads the recipe file at `path` into a source map.
pub fn read(path: &Path) -> Result<SourceMap, Vec<Diagnostic>> {
    let fail = |msg: String| {
        let map = SourceMap::new(path, String::new());
        Err(vec![map.error_file(msg)])
    };
    // Opened without blocking: a FIFO in the recipe's place must not hang
    // the build; it is refused below, not read.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot read recipe: {e}")),
    };
    match file.metadata() {
        Ok(m) if !m.is_file() => return fail("cannot read recipe: not a regular file".into()),
        Ok(m) if m.len() > MAX_RECIPE => {
            return fail(format!(
                "the recipe is {} bytes; a recipe may be at most {} (4 MiB): put large contents in files next to it ([[config.files]] source = \"…\")",
                m.len(),
                MAX_RECIPE
            ))
        }
        Ok(_) => {}
        Err(e) => return fail(format!("cannot read recipe: {e}")),
    }
    let mut text = String::new();
    // Bounded even if the file grows while it is read.
    match std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_RECIPE + 1), &mut text) {
        Ok(_) if text.len() as u64 > MAX_RECIPE => fail(format!(
            "the recipe grew past {MAX_RECIPE} bytes while it was read"
        )),
        Ok(_) => Ok(SourceMap::new(path, text)),
        Err(e) => fail(format!("cannot read recipe: {e}")),
    }
}

/// The largest recipe read (4 MiB): parsing keeps every value with its
/// place in the file, up to ~50 bytes of memory per byte of a recipe of
/// short strings, so this bounds a build's memory for its recipe at ~200 MiB.
pub const MAX_RECIPE: u64 = 4 << 20;

/// Loads a recipe from the text in `map`.
pub fn load_str(map: &SourceMap) -> Result<Document, Vec<Diagnostic>> {
    match load_recovering(map) {
        (Some(recipe), diags) if diags.is_empty() => Ok(recipe),
        (_, diags) => Err(diags),
    }
}

/// The span given to placeholder values: diagnostics about them are
/// consequences of an error already reported, and are dropped.
pub(super) const PLACEHOLDER: Range<usize> = usize::MAX..usize::MAX;

/// Loads what can be loaded: every error found, and a recipe when the
/// errors could be recovered from (offending keys removed, missing required
/// keys filled with [`PLACEHOLDER`] values), so that `resolve` can report
/// its own problems in the same run.
pub(super) fn load_recovering(map: &SourceMap) -> (Option<Document>, Vec<Diagnostic>) {
    let (mut root, syntax) = DeTable::parse_recoverable(&map.text);
    if !syntax.is_empty() {
        let mut diags: Vec<Diagnostic> = syntax.iter().map(|e| syntax_error(map, e)).collect();
        sort(&mut diags);
        return (None, diags);
    }
    let mut diags = Vec::new();
    // Keys removed after an error, and tables filled in: their own missing
    // keys are consequences, not news.
    let mut removed: Vec<String> = Vec::new();
    let mut filled: Vec<Vec<Seg>> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match Document::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(recipe) => {
                sort(&mut diags);
                return (Some(recipe), diags);
            }
            Err(err) => err,
        };
        let span = err.span().unwrap_or(0..0);
        let msg = err.message().trim_end();
        let path = locate(root.get_ref(), &span);
        if let Some(field) = between(msg, "missing field `", "`") {
            let table = if span == root.span() {
                Some(Vec::new())
            } else {
                path
            };
            let Some(table) = table else { break };
            let quiet =
                removed.iter().any(|r| r == field) || filled.iter().any(|f| table.starts_with(f));
            if !quiet {
                diags.push(missing(map, span, field, &table));
            }
            if !fill(root.get_mut(), &table, field) {
                break;
            }
            let mut at = table;
            at.push(Seg::Key(field.to_string()));
            filled.push(at);
            continue;
        }
        diags.push(describe(map, span, msg, path.as_deref()));
        let Some(mut path) = path else { break };
        while matches!(path.last(), Some(Seg::Index(_))) {
            path.pop();
        }
        if !remove(root.get_mut(), &path) {
            break;
        }
        if let Some(Seg::Key(k)) = path.last() {
            removed.push(k.clone());
        }
    }
    sort(&mut diags);
    (None, diags)
}

/// Required keys that hold tables; every other required key holds a string.
const TABLE_KEYS: [&str; 3] = ["image", "os", "source"];

/// Inserts a placeholder for the missing key `field` into the table at `path`.
fn fill(root: &mut DeTable<'_>, path: &[Seg], field: &str) -> bool {
    let Some(table) = table_at(root, path) else {
        return false;
    };
    let value = if TABLE_KEYS.contains(&field) {
        DeValue::Table(DeTable::new())
    } else {
        DeValue::String(String::new().into())
    };
    let key = Spanned::new(PLACEHOLDER, field.to_string().into());
    table
        .insert(key, Spanned::new(PLACEHOLDER, value))
        .is_none()
}

fn table_at<'a, 'i>(table: &'a mut DeTable<'i>, path: &[Seg]) -> Option<&'a mut DeTable<'i>> {
    let Some((Seg::Key(k), rest)) = path.split_first() else {
        return path.is_empty().then_some(table);
    };
    let mut value = table.get_mut(k.as_str())?.get_mut();
    let mut rest = rest;
    while let Some((Seg::Index(i), more)) = rest.split_first() {
        let DeValue::Array(items) = value else {
            return None;
        };
        value = items.get_mut(*i)?.get_mut();
        rest = more;
    }
    match value {
        DeValue::Table(t) => table_at(t, rest),
        _ => None,
    }
}

fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
}

fn syntax_error(map: &SourceMap, e: &toml::de::Error) -> Diagnostic {
    let msg = e.message().trim_end();
    map.error(e.span().unwrap_or(0..0), format!("invalid TOML: {msg}"))
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The path of the innermost key, or array item, whose name or value holds `span`.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Seg>> {
    for (k, v) in table.iter() {
        let mut path = vec![Seg::Key(k.get_ref().to_string())];
        if k.span() == *span {
            return Some(path);
        }
        // Tables written as [headers] have spans that do not cover their
        // keys: look inside first.
        if let Some(rest) = locate_value(v.get_ref(), span) {
            path.extend(rest);
            return Some(path);
        }
        if contains(&v.span(), span) {
            return Some(path);
        }
    }
    None
}

fn locate_value(value: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<Seg>> {
    match value {
        DeValue::Table(t) => locate(t, span),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let mut path = vec![Seg::Index(i)];
            match locate_value(item.get_ref(), span) {
                Some(rest) => path.extend(rest),
                None if contains(&item.span(), span) => {}
                None => return None,
            }
            Some(path)
        }),
        _ => None,
    }
}

/// Removes the key at `path`; false if the path does not lead to a key.
fn remove(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    match path {
        [Seg::Key(k)] => table.remove(k.as_str()).is_some(),
        [Seg::Key(k), rest @ ..] => match table.get_mut(k.as_str()).map(Spanned::get_mut) {
            Some(value) => remove_in(value, rest),
            None => false,
        },
        _ => false,
    }
}

fn remove_in(value: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (value, path) {
        (DeValue::Table(t), _) => remove(t, path),
        (DeValue::Array(items), [Seg::Index(i), rest @ ..]) => match items.get_mut(*i) {
            Some(item) => remove_in(item.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

/// The text between `start` and the next `end` after it, if `s` begins with `start`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(start)?;
    rest.find(end).map(|i| &rest[..i])
}

/// The backquoted names after "expected" in a serde message.
fn expected_names(msg: &str) -> Vec<&str> {
    let Some(i) = msg.find("expected") else {
        return Vec::new();
    };
    msg[i..].split('`').skip(1).step_by(2).collect()
}

fn table_name(path: Option<&[Seg]>) -> String {
    match path {
        Some(p) if p.len() > 1 => format!(" in `{}`", dotted(&p[..p.len() - 1])),
        _ => " at the top level".to_string(),
    }
}

fn missing(map: &SourceMap, span: Range<usize>, field: &str, table: &[Seg]) -> Diagnostic {
    let within = match table {
        [] => " at the top level".to_string(),
        p => format!(" in `{}`", dotted(p)),
    };
    map.error(span, format!("missing key `{field}`{within}"))
        .with_help(format!(
            "add `{field} = ...`; see `imgbuild schema` for every key"
        ))
}

/// Rewrites one serde error for people.
fn describe(map: &SourceMap, span: Range<usize>, msg: &str, path: Option<&[Seg]>) -> Diagnostic {
    let key = path.map(dotted).unwrap_or_default();
    if let Some(word) = between(msg, "unknown field `", "`") {
        let names = expected_names(msg);
        let d = map.error(span, format!("unknown key `{word}`{}", table_name(path)));
        return if names.is_empty() {
            d
        } else {
            d.with_help(suggest(word, &names, "keys"))
        };
    }
    if let Some(word) = between(msg, "unknown variant `", "`") {
        let names = expected_names(msg);
        let d = map.error(span, format!("unknown value `{word}` for `{key}`"));
        return d.with_help(suggest(word, &names, "values"));
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        let d = map.error(
            span,
            format!("wrong type for `{key}`: expected {expected}, found {found}"),
        );
        let leaf = match path.and_then(|p| p.last()) {
            Some(Seg::Key(k)) => k.as_str(),
            _ => "",
        };
        return match type_help(leaf) {
            Some(h) => d.with_help(h),
            None => d,
        };
    }
    if key.is_empty() {
        map.error(span, msg.to_string())
    } else {
        map.error(span, format!("invalid `{key}`: {msg}"))
    }
}

fn type_help(leaf: &str) -> Option<&'static str> {
    match leaf {
        "size" | "esp_size" | "cluster_size" | "block_size" => Some(
            "write sizes as strings with a binary unit, like \"4GiB\" (units: KiB, MiB, GiB, TiB)",
        ),
        "mode" => Some("write modes as octal strings, like \"0644\""),
        "epoch" => Some("write the epoch as seconds since 1970, like 1700000000"),
        "uid" | "gid" => Some("write ids as integers, like 1000"),
        "packages"
        | "components"
        | "groups"
        | "ssh_authorized_keys"
        | "enable"
        | "disable"
        | "mask" => Some("write a list of strings, like [\"a\", \"b\"]"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> SourceMap {
        SourceMap::new(Path::new("recipe.toml"), text.to_string())
    }

    #[test]
    fn expected_names_reads_serde_lists() {
        assert_eq!(
            expected_names("unknown field `x`, expected one of `a`, `b`"),
            vec!["a", "b"]
        );
        assert_eq!(expected_names("unknown field `x`, expected `a`"), vec!["a"]);
        assert!(expected_names("unknown field `x`, there are no fields").is_empty());
    }

    #[test]
    fn garbage_is_a_syntax_error_not_a_panic() {
        let errs = load_str(&map("[image\nname = ")).expect_err("invalid TOML");
        assert!(errs[0].message.starts_with("invalid TOML"), "{:?}", errs[0]);
    }

    #[test]
    fn missing_section_is_reported() {
        let errs = load_str(&map("[image]\nname = \"a\"\nsize = \"1GiB\"\n")).expect_err("no os");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].message, "missing key `os` at the top level");
    }
}
