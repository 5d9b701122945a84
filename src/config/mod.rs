//! Configuration: `alive.yaml` (the seed's format, unchanged) → a validated [`Plan`].
//!
//! Pipeline: YAML with positions ([`yaml`]) → raw structs ([`raw`]) with the pasted
//! keepalived blocks lexed and parsed ([`keepalived`]), their positions mapped back into the
//! YAML file → cross-field validation and defaults ([`validate`]) → [`Plan`]. Every problem
//! becomes a [`Diagnostic`] naming file:line:column; all of them are collected in one pass.
//! [`check`] is `alive-proxy check`, [`summary`] its human-readable output.

pub mod check;
pub mod diagnostic;
pub mod diff;
pub mod keepalived;
pub mod plan;
pub mod raw;
pub mod summary;
pub mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Pos, Severity};
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

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    /// The diagnostics of an invalid file (errors first, then warnings); empty for `Read`.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(d) => d,
            LoadError::Read { .. } => &[],
        }
    }
}

fn render(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut s = String::new();
    for d in diags {
        s.push_str(&d.to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "{errors} error{} in the configuration",
        if errors == 1 { "" } else { "s" }
    ));
    s
}

/// Read and validate `path`. Diagnostics name the file as given.
pub fn load(path: &Path, mode: Mode) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
    let (errors, warnings) = diags.finish();
    match plan {
        Some(plan) if errors.is_empty() => Ok(Loaded { plan, warnings }),
        _ => {
            let mut all = errors;
            all.extend(warnings);
            Err(LoadError::Invalid(all))
        }
    }
}
