//! The scenario file as the user writes it: schema v1 ([`schema`], the
//! Oakestra sections in [`services`]), parsed and checked on its own
//! (`validate`), and errors located in the text ([`mod@locate`]). See
//! `scenarios/README.md` for the documented schema.
//!
//! Every error names the file, the line and column, and the field path
//! (`links[2].b.host`). What the file expands to (the lab) and the checks
//! that need it are `crate::oakestra`'s and `crate::lab`'s; this module
//! imports neither.

use std::path::{Path, PathBuf};

pub mod locate;
pub mod schema;
pub mod services;
mod validate;

pub use locate::locate;
pub use schema::*;
pub use services::*;

use crate::values::Invalid;

/// Error in a scenario file: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}:{}:{}: {field}: {message}", file.display(), line, column)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `links[2].b.host`; `(document)` for the whole file.
    pub field: String,
    pub message: String,
}

/// Reading the file failed before any YAML was seen.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read scenario: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ScenarioError),
}

/// A scenario file's text and name (its stem).
pub fn read(path: &Path) -> Result<(String, String), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((text, name))
}

/// Parse scenario text and check it on its own; `file` is only used in
/// errors.
pub fn parse(file: &Path, name: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let mut sc: Scenario =
        serde_yaml::from_str(text).map_err(|e| locate::from_yaml_error(file, &e))?;
    sc.name = name.to_string();
    validate::validate(&sc).map_err(|e| located(file, text, e))?;
    Ok(sc)
}

/// `e` with the line and column of its field in `text` (1:1 when the
/// field is not in the text, as for a host the file does not name).
pub fn located(file: &Path, text: &str, e: Invalid) -> ScenarioError {
    let (line, column) = locate(text, &e.field).unwrap_or((1, 1));
    ScenarioError {
        file: file.to_path_buf(),
        line,
        column,
        field: e.field,
        message: e.message,
    }
}
