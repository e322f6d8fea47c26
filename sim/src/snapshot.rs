//! Reviewed traces stored as insta snapshots (`tests/snapshots/`): where
//! a scenario's lives and the file's text; and the one way a scenario is
//! named on every command line ([`find`]): a name, looked up as
//! `scenarios/NAME.yaml`, or a path to a file anywhere, whose snapshot
//! then lives beside it (`DIR/NAME.snap`). It knows the insta file format
//! and file names; not what a scenario holds. Comparing two traces is
//! [`crate::trace::diff`].

use std::path::{Path, PathBuf};

/// Where the reviewed trace of scenario `name` lives, below the workspace root.
pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join("tests/snapshots")
        .join(format!("scenarios__{name}.snap"))
}

/// A scenario as a command line named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The file's stem: the scenario's name and its output folder's.
    pub name: String,
    /// The scenario file.
    pub file: PathBuf,
    /// Its reviewed snapshot: `tests/snapshots/scenarios__NAME.snap` for
    /// a file of `scenarios/`, else `NAME.snap` beside the file.
    pub snapshot: PathBuf,
}

/// Whether `arg` is a name (no `/`, no `.yaml`/`.yml` ending) rather
/// than a path.
fn is_name(arg: &str) -> bool {
    !arg.contains('/') && !arg.ends_with(".yaml") && !arg.ends_with(".yml")
}

/// The scenario `arg` names, below the workspace `root`: a name
/// (`routed-pair`, looked up as `ROOT/scenarios/routed-pair.yaml`) or a
/// path (`my/edge.yaml`, relative to the current directory). An error says
/// what was looked for and how to name a scenario.
pub fn find(root: &Path, arg: &str) -> Result<Named, crate::Error> {
    let shipped = root.join("scenarios");
    let file = if is_name(arg) {
        shipped.join(format!("{arg}.yaml"))
    } else {
        PathBuf::from(arg)
    };
    // A path is the user's: reading it says what is wrong with it.
    if is_name(arg) && !file.exists() {
        return Err(crate::Error::Failed(format!(
            "no scenario named `{arg}`: {} does not exist (name a scenario of {} by its \
             name, e.g. `routed-pair`, or give the path of a .yaml file)",
            file.display(),
            shipped.display()
        )));
    }
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let in_shipped = canon(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    })
    .is_some_and(|d| Some(d) == canon(&shipped));
    let snapshot = if in_shipped {
        path(root, &name)
    } else {
        dir.join(format!("{name}.snap"))
    };
    Ok(Named {
        name,
        file,
        snapshot,
    })
}

/// Every scenario of `ROOT/scenarios/`, in name order.
pub fn all(root: &Path) -> Result<Vec<Named>, crate::Error> {
    let dir = root.join("scenarios");
    let io = |source| crate::Error::Io {
        what: format!("reading {}", dir.display()),
        source,
    };
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            if let Some(n) = p.file_stem() {
                names.push(n.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names.iter().map(|n| find(root, n)).collect()
}

/// The body of an insta snapshot file (after its `---` header).
pub fn read_body(text: &str) -> &str {
    if let Some(rest) = text.strip_prefix("---\n") {
        if let Some(i) = rest.find("\n---\n") {
            return &rest[i + 5..];
        }
    }
    text
}

/// The snapshot file for a trace, in the format `insta` reads and writes.
pub fn file_text(trace_yaml: &str) -> String {
    format!(
        "---\nsource: tests/scenarios.rs\nexpression: trace\n---\n{}",
        trace_yaml
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "scenario: s\nflows:\n- step: a\n  sent: tcp\n  result: ok\n  packets:\n  - packet: tcp S 1.1.1.1:1 > 2.2.2.2:2\n    hops:\n    - at: c/eth0 out\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end: delivered to s\n";

    #[test]
    fn a_scenario_is_named_by_name_or_path() {
        let root = std::env::temp_dir().join(format!("hoplab-named-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("scenarios")).unwrap();
        std::fs::create_dir_all(root.join("mine")).unwrap();
        std::fs::write(root.join("scenarios/a.yaml"), "version: 1\n").unwrap();
        std::fs::write(root.join("mine/edge.yaml"), "version: 1\n").unwrap();
        let by_name = find(&root, "a").unwrap();
        assert_eq!(by_name.file, root.join("scenarios/a.yaml"));
        assert_eq!(by_name.snapshot, path(&root, "a"));
        let by_path = find(&root, root.join("scenarios/a.yaml").to_str().unwrap()).unwrap();
        assert_eq!(by_path.snapshot, path(&root, "a"));
        assert_eq!(by_path.name, "a");
        let outside = find(&root, root.join("mine/edge.yaml").to_str().unwrap()).unwrap();
        assert_eq!(outside.name, "edge");
        assert_eq!(outside.snapshot, root.join("mine/edge.snap"));
        let e = find(&root, "nope").unwrap_err().to_string();
        assert!(e.starts_with("no scenario named `nope`: "), "{e}");
        assert!(e.contains("scenarios/nope.yaml does not exist"), "{e}");
        // A path is taken as it is: reading it will say what is wrong.
        assert_eq!(find(&root, "mine/gone.yaml").unwrap().name, "gone");
        assert_eq!(
            all(&root)
                .unwrap()
                .iter()
                .map(|n| &n.name)
                .collect::<Vec<_>>(),
            ["a"]
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn snapshot_file_round_trips() {
        assert_eq!(read_body(&file_text(T)), T);
    }
}
