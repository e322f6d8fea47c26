//! `cargo xtask reports`: regenerate the committed per-hop reports of the
//! shipped scenarios (`reports/scenarios/`) from the reviewed snapshots.

use anyhow::{Context, Result};

use crate::root;

/// Write every committed report and remove those of scenarios that are
/// gone. Returns how many files changed.
pub fn regenerate() -> Result<usize> {
    let root = root();
    let files = hoplab_sim::report::committed(&root)?;
    let dir = root.join(hoplab_sim::report::COMMITTED_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut changed = 0;
    for (rel, text) in &files {
        let p = root.join(rel);
        if std::fs::read_to_string(&p).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            changed += 1;
        }
    }
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let rel = p.strip_prefix(&root).unwrap_or(&p).to_path_buf();
        if p.extension().is_some_and(|x| x == "md") && !files.iter().any(|(r, _)| *r == rel) {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            changed += 1;
        }
    }
    Ok(changed)
}
