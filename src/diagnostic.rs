//! Recipe diagnostics, rendered like rustc and `just`:
//!
//! ```text
//! error: unknown key `hostnme` in `config`
//!  --> recipe.toml:7:1
//!   |
//! 7 | hostnme = "golden"
//!   | ^^^^^^^
//!   |
//!   = help: did you mean `hostname`?
//!           valid keys: `hostname`, `timezone`, ...
//! ```

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a recipe, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The recipe file, as the user named it.
    pub file: PathBuf,
    /// Byte range in the file, when the problem has a place.
    pub span: Option<Range<usize>>,
    /// 1-based line of the span's start (0 without a span).
    pub line: usize,
    /// 1-based column, in characters, of the span's start (0 without a span).
    pub col: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it; may hold several lines.
    pub help: Option<String>,
    /// The text of line `line`, for the snippet.
    pub source_line: Option<String>,
    /// Characters the caret covers on that line (at least 1).
    pub caret_len: usize,
}

impl Diagnostic {
    /// Adds a help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The diagnostic as the CLI prints it, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "error: {}", self.message);
        let Some(line_text) = &self.source_line else {
            let _ = writeln!(out, " --> {}", self.file.display());
            if let Some(help) = &self.help {
                write_help(&mut out, " ", help);
            }
            return out;
        };
        let pad = " ".repeat(self.line.to_string().len());
        let _ = writeln!(
            out,
            "{pad}--> {}:{}:{}",
            self.file.display(),
            self.line,
            self.col
        );
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {line_text}", self.line);
        // Keep tabs as tabs so the caret lines up under the same glyphs.
        let lead: String = line_text
            .chars()
            .take(self.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = writeln!(out, "{pad} | {lead}{}", "^".repeat(self.caret_len.max(1)));
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} |");
            write_help(&mut out, &pad, help);
        }
        out
    }
}

fn write_help(out: &mut String, pad: &str, help: &str) {
    let mut lines = help.lines();
    if let Some(first) = lines.next() {
        let _ = writeln!(out, "{pad} = help: {first}");
    }
    for more in lines {
        let _ = writeln!(out, "{pad}         {more}");
    }
}

/// Renders several diagnostics separated by blank lines.
pub fn render_all(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(Diagnostic::render)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A recipe's text and where it came from: turns byte spans into
/// diagnostics, and relative paths into paths under the recipe's directory.
#[derive(Clone, Debug)]
pub struct SourceMap {
    /// The file as the user named it (shown in diagnostics).
    pub file: PathBuf,
    /// The directory relative paths in the recipe are resolved against
    /// (absolute, independent of the current directory at build time).
    pub dir: PathBuf,
    /// The recipe text.
    pub text: String,
}

impl SourceMap {
    /// A source map for `text` read from `file`; `dir` is made absolute
    /// from the current directory if `file` is relative.
    pub fn new(file: &Path, text: String) -> Self {
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        SourceMap {
            file: file.to_path_buf(),
            dir,
            text,
        }
    }

    /// A path written in the recipe, resolved against the recipe's directory.
    pub fn path(&self, written: &str) -> PathBuf {
        self.dir.join(written)
    }

    /// A diagnostic at `span` (clamped to the text).
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let len = self.text.len();
        let mut start = span.start.min(len);
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(len, |i| start + i);
        let line = self.text[..start].matches('\n').count() + 1;
        let col = self.text[line_start..start].chars().count() + 1;
        let mut end = span.end.clamp(start, line_end);
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        Diagnostic {
            file: self.file.clone(),
            span: Some(span),
            line,
            col,
            message: message.into(),
            help: None,
            source_line: Some(line_text.to_string()),
            caret_len: self.text[start..end].chars().count().max(1),
        }
    }

    /// A diagnostic about the whole file (no place to point at).
    pub fn error_file(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            span: None,
            line: 0,
            col: 0,
            message: message.into(),
            help: None,
            source_line: None,
            caret_len: 0,
        }
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a
/// plausible typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 1.max(c.len().max(word.len()) / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`?" (when one is close) and the list of valid names.
pub(crate) fn suggest(word: &str, candidates: &[&str], what: &str) -> String {
    let list = candidates
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(word, candidates) {
        Some(c) => format!("did you mean `{c}`?\nvalid {what}: {list}"),
        None => format!("valid {what}: {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_caret_under_the_span() {
        let map = SourceMap::new(Path::new("r.toml"), "[a]\nkey = 4\n".into());
        let d = map.error(10..11, "bad").with_help("fix it");
        assert_eq!((d.line, d.col), (2, 7));
        assert_eq!(
            d.render(),
            "error: bad\n --> r.toml:2:7\n  |\n2 | key = 4\n  |       ^\n  |\n  = help: fix it\n"
        );
    }

    #[test]
    fn span_past_the_end_is_clamped() {
        let map = SourceMap::new(Path::new("r.toml"), "é".into());
        let d = map.error(1..99, "x");
        assert_eq!((d.line, d.col, d.caret_len), (1, 1, 1));
    }

    #[test]
    fn closest_finds_one_letter_typos_only() {
        assert_eq!(
            closest("hostnme", &["hostname", "timezone"]),
            Some("hostname")
        );
        assert_eq!(closest("zzz", &["hostname", "timezone"]), None);
    }
}
