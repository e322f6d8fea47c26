//! The scenario file as the user writes it: schema v1 ([`schema`], the
//! Oakestra sections in [`services`]), bounded before it is parsed
//! ([`guard`]: size, nesting depth, alias expansion, duplicate keys),
//! parsed and checked on its own (`validate`), and errors located in the
//! text ([`mod@locate`] for one field path, `marks` for all of a file's
//! errors in one pass). See `scenarios/README.md` for the documented schema.
//!
//! Every error names the file, the line and column, and the field path
//! (`links[2].b.host`, `hosts.a.sysctls."net.ipv4.ip_forward"`); every
//! error found is reported ([`ScenarioErrors`]). What the file expands to
//! (the lab) and the checks that need it are `crate::oakestra`'s and
//! `crate::lab`'s; this module imports neither.

use std::path::{Path, PathBuf};

pub mod guard;
pub mod locate;
mod marks;
pub mod process;
pub mod schema;
pub mod services;
mod suggest;
mod validate;

pub use locate::locate;
pub use process::*;
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

/// Errors listed at most (located in one pass); more are counted.
pub const MAX_LOCATED: usize = 1000;

/// Every error found in a scenario file, in the order found; never empty.
/// Reads as its first error (`e.line`, `e.field`).
#[derive(Debug)]
pub struct ScenarioErrors {
    errors: Vec<ScenarioError>,
    /// Errors found beyond [`MAX_LOCATED`], counted only.
    omitted: usize,
}

impl ScenarioErrors {
    /// Each error located, the first [`MAX_LOCATED`] of them.
    pub fn errors(&self) -> &[ScenarioError] {
        &self.errors
    }

    /// How many errors there are in all.
    pub fn count(&self) -> usize {
        self.errors.len() + self.omitted
    }
}

impl std::ops::Deref for ScenarioErrors {
    type Target = ScenarioError;
    fn deref(&self) -> &ScenarioError {
        &self.errors[0]
    }
}

impl From<ScenarioError> for ScenarioErrors {
    fn from(e: ScenarioError) -> Self {
        ScenarioErrors {
            errors: vec![e],
            omitted: 0,
        }
    }
}

/// Each error on its own line.
impl std::fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n(and {} more errors)", self.omitted)?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

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
    Invalid(#[from] ScenarioErrors),
}

/// A scenario file's text and name (its stem). Reads at most one byte
/// more than [`guard::MAX_FILE_BYTES`], which [`parse`] then refuses.
pub fn read(path: &Path) -> Result<(String, String), LoadError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(guard::MAX_FILE_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|source| LoadError::Read {
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
/// errors. The text is bounded first ([`guard`]: size, depth, alias
/// expansion, duplicate keys); then every error of the file's own checks.
pub fn parse(file: &Path, name: &str, text: &str) -> Result<Scenario, ScenarioErrors> {
    let (sc, found) = parse_unchecked(file, name, text)?;
    check_all(file, text, found)?;
    Ok(sc)
}

/// The scenario as read, and what the file's own checks found wrong with
/// it (maybe nothing), for a caller that goes on checking. Errs only when
/// there is no scenario to read: too large, too deep, a YAML or schema error.
pub fn parse_unchecked(
    file: &Path,
    name: &str,
    text: &str,
) -> Result<(Scenario, Vec<Invalid>), ScenarioErrors> {
    guard::check_text(text).map_err(|r| ScenarioError {
        file: file.to_path_buf(),
        line: r.line,
        column: r.column,
        field: "(document)".to_string(),
        message: r.message,
    })?;
    let dups = guard::walk(text).map_err(|e| syntax_error(file, text, &e))?;
    if !dups.is_empty() {
        return Err(duplicates(file, text, &dups));
    }
    let mut sc: Scenario =
        serde_yaml::from_str(text).map_err(|e| locate::from_yaml_error(file, &e))?;
    sc.name = name.to_string();
    sc.dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut found = validate::sessions(&mut sc.traffic);
    found.extend(validate::validate(&sc));
    Ok((sc, found))
}

/// `Ok` when `found` is empty, else every error of it located (in one
/// pass over the text).
pub fn check_all(file: &Path, text: &str, found: Vec<Invalid>) -> Result<(), ScenarioErrors> {
    if found.is_empty() {
        return Ok(());
    }
    let omitted = found.len().saturating_sub(MAX_LOCATED);
    let found: Vec<Invalid> = found.into_iter().take(MAX_LOCATED).collect();
    let segs: Vec<Vec<locate::Seg>> = found.iter().map(|e| locate::split_path(&e.field)).collect();
    let wanted: Vec<(&[locate::Seg], usize)> = segs.iter().map(|s| (s.as_slice(), 0)).collect();
    let at = marks::find(text, &wanted);
    let errors = found
        .into_iter()
        .zip(at)
        .map(|(e, at)| located_at(file, text, e, at))
        .collect();
    Err(ScenarioErrors { errors, omitted })
}

/// A YAML error located; a syntax error in a flow collection is reported
/// at the bracket left open.
fn syntax_error(file: &Path, text: &str, e: &serde_yaml::Error) -> ScenarioError {
    let mut err = locate::from_yaml_error(file, e);
    if err.field == "(document)" && err.message.contains("while parsing a flow") {
        if let Some(&(line, column, c)) = guard::open_at(text, err.line + 1).last() {
            err.message = format!("`{c}` not closed: {}", err.message);
            (err.line, err.column) = (line, column);
        }
    }
    err
}

fn duplicates(file: &Path, text: &str, dups: &[guard::Duplicate]) -> ScenarioErrors {
    let omitted = dups.len().saturating_sub(MAX_LOCATED);
    let dups = &dups[..dups.len().min(MAX_LOCATED)];
    let wanted: Vec<(&[locate::Seg], usize)> = dups
        .iter()
        .flat_map(|d| [(d.path.as_slice(), d.nth), (d.path.as_slice(), 0)])
        .collect();
    let at = marks::find(text, &wanted);
    let errors = dups
        .iter()
        .zip(at.chunks(2))
        .map(|(d, at)| {
            let (line, column) = at[0].unwrap_or((1, 1));
            let (l0, c0) = at[1].unwrap_or((1, 1));
            let k = match d.path.last() {
                Some(locate::Seg::Key(k)) => k.as_str(),
                _ => "",
            };
            ScenarioError {
                file: file.to_path_buf(),
                line,
                column,
                field: locate::path_string(&d.path),
                message: format!("duplicate key `{k}`: also at line {l0} column {c0}"),
            }
        })
        .collect();
    ScenarioErrors { errors, omitted }
}

/// Line `l` column `c` of a text value that starts at `line`:`column`: a
/// block scalar (`|`, `>`) starts on the next line, at its indentation.
fn within(text: &str, line: usize, column: usize, l: usize, c: usize) -> (usize, usize) {
    let start = text.lines().nth(line - 1).unwrap_or("");
    let at = start.chars().nth(column - 1);
    if matches!(at, Some('|' | '>')) {
        let body = text.lines().nth(line + l - 1).unwrap_or("");
        let indent = body.len() - body.trim_start().len();
        (line + l, indent + c)
    } else if l == 1 {
        (line, column + c)
    } else {
        (line + l - 1, c)
    }
}

/// `e` with the line and column of its field in `text` (1:1 when the
/// field is not in the text, as for a host the file does not name).
pub fn located(file: &Path, text: &str, e: Invalid) -> ScenarioError {
    let at = locate(text, &e.field);
    located_at(file, text, e, at)
}

fn located_at(file: &Path, text: &str, e: Invalid, at: Option<(usize, usize)>) -> ScenarioError {
    let (mut line, mut column) = at.unwrap_or((1, 1));
    if let Some((l, c)) = e.within {
        (line, column) = within(text, line, column, l, c);
    }
    ScenarioError {
        file: file.to_path_buf(),
        line,
        column,
        field: e.field,
        message: e.message,
    }
}
