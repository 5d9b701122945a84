//! Diagnostics: one problem in the config file, with its place (file:line:column), what was
//! expected, and an excerpt of the offending source line with a caret. Also the collector that
//! gathers the problems of one load so that they are reported in one run.
//!
//! Memory stays linear in the file whatever it holds: a collector keeps at most
//! [`MAX_REPORTED`] problems of each severity (the first ones in file order) and only counts
//! the rest, and an excerpt is at most [`EXCERPT_CHARS`] characters of its line, cut around the
//! column. (Keeping every problem with a full copy of its line made a one-line 60 KB file
//! cost gigabytes.)

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::Serialize;

/// Problems of one severity reported per load; the rest are counted ("and N more").
pub const MAX_REPORTED: usize = 50;
/// Longest source excerpt shown under a diagnostic, in characters (without the `…` marks).
pub const EXCERPT_CHARS: usize = 120;

/// A place in the loaded file: 1-based line and 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found while loading. `Display` gives the compiler-style report:
/// `alive.yaml:12:5: error: <what is wrong>; expected <what>`, the source excerpt, a caret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    pub severity: Severity,
    pub message: String,
    pub expected: Option<String>,
    /// The source line the position points into (empty when the file has no such line). A line
    /// longer than [`EXCERPT_CHARS`] is cut to that many characters around the column, with
    /// `…` where it was cut.
    pub source_line: String,
    /// 1-based column of `pos` within `source_line` (equals `pos.col` unless the line was cut).
    #[serde(skip)]
    pub excerpt_col: usize,
}

impl Diagnostic {
    /// The first line of the report, without the source excerpt:
    /// `file:line:col: severity: message[; expected ...]`.
    pub fn headline(&self) -> String {
        let mut s = format!(
            "{}:{}:{}: {}: {}",
            self.file, self.pos.line, self.pos.col, self.severity, self.message
        );
        if let Some(expected) = &self.expected {
            s.push_str("; expected ");
            s.push_str(expected);
        }
        s
    }

    /// Spaces (tabs where the source has tabs, so it lines up) up to the column, then `^`.
    fn caret(&self) -> String {
        let mut caret: String = self
            .source_line
            .chars()
            .take(self.excerpt_col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        caret.push('^');
        caret
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.headline())?;
        if !self.source_line.is_empty() || self.pos.line > 0 {
            write!(f, "\n  | {}\n  | {}", self.source_line, self.caret())?;
        }
        Ok(())
    }
}

/// `line` as shown under a diagnostic at 1-based character column `col`: whole when short,
/// else [`EXCERPT_CHARS`] characters around the column with `…` where it was cut. Returns the
/// excerpt and the column within it.
pub fn excerpt(line: &str, col: usize) -> (String, usize) {
    let at = col.saturating_sub(1);
    // Counting stops just past the limit: a long line is never walked twice.
    if line.chars().nth(EXCERPT_CHARS).is_none() {
        return (line.to_owned(), col);
    }
    let start = at.saturating_sub(EXCERPT_CHARS / 2);
    let mut shown = String::with_capacity(EXCERPT_CHARS + 8);
    let mut column = at - start + 1;
    if start > 0 {
        shown.push('…');
        column += 1;
    }
    let mut chars = line.chars().skip(start);
    shown.extend(chars.by_ref().take(EXCERPT_CHARS));
    if chars.next().is_some() {
        shown.push('…');
    }
    (shown, column)
}

/// The file's lines as YAML counts them: `\r\n`, `\n` and a lone `\r` all end a line.
pub fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    lines.push(&text[start..]);
    lines
}

/// What identifies a problem: one found twice (a raw_check applies to every backend) is
/// reported once.
type Key = (Pos, String);

/// The first [`MAX_REPORTED`] distinct problems of one severity in file order, and how many
/// distinct ones there were in all.
#[derive(Debug, Default)]
struct Kept {
    first: BTreeMap<Key, Option<String>>,
    /// Fingerprints of every distinct problem seen, for an exact count without keeping them.
    seen: HashSet<u64>,
}

impl Kept {
    fn add(&mut self, pos: Pos, message: String, expected: Option<String>) {
        let mut hasher = DefaultHasher::new();
        (pos, &message).hash(&mut hasher);
        if !self.seen.insert(hasher.finish()) {
            return;
        }
        let key = (pos, message);
        if self.first.len() == MAX_REPORTED
            && self
                .first
                .last_key_value()
                .is_some_and(|(last, _)| *last < key)
        {
            return;
        }
        self.first.insert(key, expected);
        if self.first.len() > MAX_REPORTED {
            self.first.pop_last();
        }
    }

    fn distinct(&self) -> usize {
        self.seen.len()
    }
}

/// What a load found: the first problems of each kind in file order, and how many there are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    /// At most [`MAX_REPORTED`], sorted by position.
    pub errors: Vec<Diagnostic>,
    /// At most [`MAX_REPORTED`], sorted by position.
    pub warnings: Vec<Diagnostic>,
    /// Distinct errors found, shown or not.
    pub error_total: usize,
    /// Distinct warnings found, shown or not.
    pub warning_total: usize,
}

/// Collects the diagnostics of one load; knows the file's name and text to quote lines.
#[derive(Debug)]
pub struct Diags<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    errors: Kept,
    warnings: Kept,
    /// Errors reported, duplicates included (callers compare counts before and after a step).
    errors_reported: usize,
}

impl<'a> Diags<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Diags<'a> {
        Diags {
            file,
            lines: split_lines(text),
            errors: Kept::default(),
            warnings: Kept::default(),
            errors_reported: 0,
        }
    }

    pub fn file(&self) -> &str {
        self.file
    }

    /// An error saying what is wrong and what was expected instead.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>, expected: impl Into<String>) {
        self.errors_reported += 1;
        self.errors.add(
            pos,
            message.into(),
            Some(expected.into()).filter(|e: &String| !e.is_empty()),
        );
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.warnings.add(pos, message.into(), None);
    }

    /// Error or warning depending on `as_error` (machine-dependent checks: `run` vs `check`).
    pub fn problem(
        &mut self,
        as_error: bool,
        pos: Pos,
        message: impl Into<String>,
        expected: impl Into<String>,
    ) {
        if as_error {
            self.error(pos, message, expected);
        } else {
            self.warnings.add(
                pos,
                message.into(),
                Some(expected.into()).filter(|e: &String| !e.is_empty()),
            );
        }
    }

    /// Errors reported so far, duplicates included.
    pub fn error_count(&self) -> usize {
        self.errors_reported
    }

    fn render(&self, severity: Severity, kept: Kept) -> Vec<Diagnostic> {
        kept.first
            .into_iter()
            .map(|((pos, message), expected)| {
                let line = pos.line.checked_sub(1).and_then(|i| self.lines.get(i));
                let (source_line, excerpt_col) = match line {
                    Some(line) => excerpt(line, pos.col),
                    None => (String::new(), pos.col),
                };
                Diagnostic {
                    file: self.file.to_owned(),
                    pos,
                    severity,
                    message,
                    expected,
                    source_line,
                    excerpt_col,
                }
            })
            .collect()
    }

    /// The first [`MAX_REPORTED`] distinct errors and warnings, each sorted by position as a
    /// reader walks the file, and how many there were in all.
    pub fn findings(mut self) -> Findings {
        let errors = std::mem::take(&mut self.errors);
        let warnings = std::mem::take(&mut self.warnings);
        let (error_total, warning_total) = (errors.distinct(), warnings.distinct());
        Findings {
            errors: self.render(Severity::Error, errors),
            warnings: self.render(Severity::Warning, warnings),
            error_total,
            warning_total,
        }
    }

    /// [`findings`](Self::findings) without the totals: (errors, warnings).
    pub fn finish(self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        let findings = self.findings();
        (findings.errors, findings.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_place_expectation_line_and_caret() {
        let mut d = Diags::new("alive.yaml", "a: 1\n\tport: x\n");
        d.error(Pos::new(2, 8), "invalid port `x`", "an integer 1..65535");
        let (errors, _) = d.finish();
        assert_eq!(
            errors[0].to_string(),
            "alive.yaml:2:8: error: invalid port `x`; expected an integer 1..65535\n  | \tport: x\n  | \t      ^"
        );
    }

    #[test]
    fn a_long_line_is_shown_as_a_window_around_the_column_with_the_caret_under_it() {
        let line = format!("{}X{}", "a".repeat(10_000), "b".repeat(10_000));
        let mut d = Diags::new("f.yaml", &line);
        d.error(Pos::new(1, 10_001), "bad X", "");
        let (errors, _) = d.finish();
        let e = &errors[0];
        assert!(
            e.source_line.chars().count() <= EXCERPT_CHARS + 2,
            "excerpt of {} chars",
            e.source_line.chars().count()
        );
        assert!(e.source_line.starts_with('…') && e.source_line.ends_with('…'));
        assert_eq!(
            e.source_line.chars().nth(e.excerpt_col - 1),
            Some('X'),
            "the excerpt column points at the offending character"
        );
        let rendered = e.to_string();
        let caret = rendered.lines().last().expect("caret line");
        assert_eq!(caret.chars().count() - 4, e.excerpt_col, "{rendered}");
    }

    #[test]
    fn near_the_start_of_a_long_line_the_excerpt_is_cut_only_at_the_end() {
        let line = "x".repeat(1000);
        let (shown, col) = excerpt(&line, 3);
        assert_eq!(col, 3);
        assert!(!shown.starts_with('…') && shown.ends_with('…'));
        let (shown, col) = excerpt(&line, 1000);
        assert!(shown.starts_with('…') && !shown.ends_with('…'));
        assert_eq!(shown.chars().nth(col - 1), Some('x'));
    }

    #[test]
    fn only_the_first_problems_in_file_order_are_kept_and_all_distinct_ones_are_counted() {
        let mut d = Diags::new("f.yaml", "");
        for line in (1..=500).rev() {
            d.error(Pos::new(line, 1), "bad", "");
            d.error(Pos::new(line, 1), "bad", "");
        }
        assert_eq!(d.error_count(), 1000, "every report counts for callers");
        let findings = d.findings();
        assert_eq!(findings.errors.len(), MAX_REPORTED);
        assert_eq!(findings.error_total, 500, "duplicates count once");
        let lines: Vec<usize> = findings.errors.iter().map(|e| e.pos.line).collect();
        assert_eq!(lines, (1..=MAX_REPORTED).collect::<Vec<_>>());
    }
}
