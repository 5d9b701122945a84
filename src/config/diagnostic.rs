//! Diagnostics: one problem in the config file, with its place (file:line:column), what was
//! expected, and the offending source line with a caret. Also the collector that gathers every
//! problem of one load so that all of them are reported in one run.

use std::fmt;

use serde::Serialize;

/// A place in the loaded file: 1-based line and 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
/// `alive.yaml:12:5: error: <what is wrong>; expected <what>`, the source line, a caret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    pub severity: Severity,
    pub message: String,
    pub expected: Option<String>,
    /// The source line the position points into (empty when the file has no such line).
    pub source_line: String,
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
            .take(self.pos.col.saturating_sub(1))
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

/// Collects the diagnostics of one load; knows the file's name and text to quote lines.
#[derive(Debug)]
pub struct Diags<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Diags<'a> {
        Diags {
            file,
            lines: split_lines(text),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        self.file
    }

    fn make(
        &self,
        severity: Severity,
        pos: Pos,
        message: String,
        expected: Option<String>,
    ) -> Diagnostic {
        let source_line = pos
            .line
            .checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map(|l| l.to_string())
            .unwrap_or_default();
        Diagnostic {
            file: self.file.to_string(),
            pos,
            severity,
            message,
            expected,
            source_line,
        }
    }

    /// An error saying what is wrong and what was expected instead.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>, expected: impl Into<String>) {
        let d = self.make(
            Severity::Error,
            pos,
            message.into(),
            Some(expected.into()).filter(|e: &String| !e.is_empty()),
        );
        self.errors.push(d);
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        let d = self.make(Severity::Warning, pos, message.into(), None);
        self.warnings.push(d);
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
            let d = self.make(
                Severity::Warning,
                pos,
                message.into(),
                Some(expected.into()).filter(|e: &String| !e.is_empty()),
            );
            self.warnings.push(d);
        }
    }

    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Errors (sorted by position, as a reader walks the file) and warnings.
    /// A raw_check applies to every backend, so the same problem can be found once per
    /// backend: identical diagnostics are reported once.
    pub fn finish(mut self) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
        for list in [&mut self.errors, &mut self.warnings] {
            list.sort_by(|a, b| a.pos.cmp(&b.pos).then_with(|| a.message.cmp(&b.message)));
            list.dedup_by(|a, b| a.pos == b.pos && a.message == b.message);
        }
        (self.errors, self.warnings)
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
}
