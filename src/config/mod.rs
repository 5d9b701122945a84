//! Configuration: `alive.yaml` (the seed's format, unchanged) → a validated [`Plan`].
//!
//! Pipeline: YAML with positions ([`yaml`]) → raw structs ([`raw`]) with the pasted
//! keepalived blocks lexed and parsed ([`keepalived`]), their positions mapped back into the
//! YAML file → cross-field validation and defaults ([`validate`]) → [`Plan`]. Every problem
//! becomes a [`Diagnostic`] naming file:line:column; all of them are collected in one pass.
//! [`summary`] is the human-readable plan that `alive-proxy check` prints.

pub mod diagnostic;
pub mod diff;
pub mod file;
pub mod keepalived;
pub mod plan;
pub mod raw;
pub mod summary;
pub mod validate;
pub mod watch;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Findings, Pos, Severity};
pub use plan::*;

/// How strictly to treat things that depend on the machine (e.g. kubeconfig files):
/// `check` warns, `run` refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Run,
}

/// A plan that loaded, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub plan: Plan,
    pub warnings: Vec<Diagnostic>,
}

/// Why a file did not load. Each message names the file; the I/O cause is part of the
/// message, not a separate `source()`, so printing the error chain shows it once.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is a {kind}, not a regular file; --config takes the path of alive.yaml", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is larger than {limit} bytes, too large for a config file", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotText { path: PathBuf, offset: usize },
    #[error("{}", render(.0))]
    Invalid(Rejection),
}

/// What an invalid file is reported with: the first problems of each kind, and how many
/// there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Errors first, then warnings, each in file order; at most
    /// [`diagnostic::MAX_REPORTED`] of each.
    pub diagnostics: Vec<Diagnostic>,
    /// Distinct errors found, shown or not.
    pub error_total: usize,
    /// Distinct problems found but not in `diagnostics`.
    pub omitted: usize,
}

impl LoadError {
    /// The diagnostics of an invalid file (errors first, then warnings); empty for a file
    /// that could not be read.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(r) => &r.diagnostics,
            _ => &[],
        }
    }
}

fn render(rejection: &Rejection) -> String {
    let mut s = String::new();
    for d in &rejection.diagnostics {
        s.push_str(&d.to_string());
        s.push('\n');
    }
    if rejection.omitted > 0 {
        s.push_str(&format!(
            "... and {} more not shown (the first {} of each kind are, in file order)\n",
            rejection.omitted,
            diagnostic::MAX_REPORTED
        ));
    }
    let errors = rejection.error_total;
    s.push_str(&format!(
        "{errors} error{} in the configuration",
        if errors == 1 { "" } else { "s" }
    ));
    s
}

/// Read and validate `path`. Diagnostics name the file as given.
pub fn load(path: &Path, mode: Mode) -> Result<Loaded, LoadError> {
    let text = file::read_config(path)?;
    let name = path.display().to_string();
    load_text(&name, &text, mode, path.parent())
}

/// Validate `text` as if it were a file called `display_name` (tests, reload previews).
/// Relative kubeconfig paths stay relative to the working directory.
pub fn load_str(display_name: &str, text: &str, mode: Mode) -> Result<Loaded, LoadError> {
    load_text(display_name, text, mode, None)
}

fn load_text(
    name: &str,
    text: &str,
    mode: Mode,
    base_dir: Option<&Path>,
) -> Result<Loaded, LoadError> {
    let mut diags = diagnostic::Diags::new(name, text);
    let plan = match yaml::parse(text, &mut diags) {
        Some(root) => {
            let raw = raw::read(&root, &mut diags);
            let ctx = validate::Context {
                mode,
                source: PathBuf::from(name),
                base_dir: base_dir.filter(|d| !d.as_os_str().is_empty()),
            };
            Some(validate::build(raw, &ctx, &mut diags))
        }
        None => {
            if diags.error_count() == 0 {
                diags.error(
                    Pos::new(1, 1),
                    "the file holds no YAML document",
                    "a mapping with `instances:`",
                );
            }
            None
        }
    };
    let findings = diags.findings();
    match plan {
        Some(plan) if findings.error_total == 0 => Ok(Loaded {
            plan,
            warnings: findings.warnings,
        }),
        _ => {
            let shown = findings.errors.len() + findings.warnings.len();
            let mut diagnostics = findings.errors;
            diagnostics.extend(findings.warnings);
            Err(LoadError::Invalid(Rejection {
                diagnostics,
                error_total: findings.error_total,
                omitted: (findings.error_total + findings.warning_total).saturating_sub(shown),
            }))
        }
    }
}
