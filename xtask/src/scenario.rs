//! `cargo xtask scenario`: run scenarios, compare each trace with its
//! reviewed snapshot hop by hop, write the reports, the run's index page,
//! pending snapshots for `cargo insta review` and, on request, JUnit XML.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hoplab_sim::progress;
use hoplab_sim::report::html::{IndexEntry, IndexStatus};
use hoplab_sim::snapshot;
use hoplab_sim::trace::Trace;

use crate::{junit, pending, root};

/// What `cargo xtask scenario` was asked to do.
pub struct Options {
    pub names: Vec<String>,
    pub accept: bool,
    pub release: bool,
    pub junit: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
}

/// Lines of a failed run's stderr kept for the JUnit file.
const STDERR_TAIL: usize = 40;

/// What one scenario came to.
struct Result1 {
    name: String,
    status: IndexStatus,
    detail: String,
    case: junit::Suite,
}

/// Run `hoplab run` for `file` into `out`, passing its stderr (progress
/// lines, logs) through as it comes and keeping the last lines of it.
fn run_one(bin: &Path, file: &Path, out: &Path, o: &Options) -> Result<(bool, Vec<String>)> {
    let mut c = Command::new(bin);
    if o.quiet {
        c.arg("--quiet");
    }
    for _ in 0..o.verbose {
        c.arg("-v");
    }
    c.arg("run")
        .arg(file)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let mut tail = std::collections::VecDeque::new();
    let err = child.stderr.take().expect("piped");
    for line in BufReader::new(err).lines() {
        let line = line.context("reading hoplab's stderr")?;
        eprintln!("{line}");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let st = child.wait().context("waiting for hoplab")?;
    let mut tail: Vec<String> = tail.into();
    if !st.success() {
        tail.push(format!("hoplab run exited with {st}"));
    }
    Ok((st.success(), tail))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn note(o: &Options, name: &str, phase: &str, took: Duration, text: &str) {
    if !o.quiet {
        eprintln!("{}", progress::line(name, phase, took, text));
    }
}

pub fn run(o: Options) -> Result<()> {
    let bin = crate::build_hoplab_bins(o.release)?;
    // Names are looked up in scenarios/; paths are the user's, relative to
    // where cargo was run.
    let named: Vec<snapshot::Named> = if o.names.is_empty() {
        snapshot::all(&root())?
    } else {
        o.names
            .iter()
            .map(|a| snapshot::find(&root(), a))
            .collect::<Result<_, _>>()?
    };
    let out_root = root().join("target/scenarios");
    let mut results = Vec::new();
    for (n, arg) in named
        .iter()
        .zip(o.names.iter().map(Some).chain(std::iter::repeat(None)))
    {
        let name = &n.name;
        let out = out_root.join(name);
        // Outputs of an earlier run must not pass for this one's.
        for f in ["trace.yaml", "diff.html", STATUS_FILE] {
            let _ = std::fs::remove_file(out.join(f));
        }
        let t = Instant::now();
        let (ok, tail) = run_one(&bin, &n.file, &out, &o)?;
        let secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let r = compare(
            (name, arg.map_or(name, |a| a)),
            &n.snapshot,
            &out,
            ok,
            &tail,
            secs,
            o.accept,
        )?;
        note(&o, name, "compare", t.elapsed(), &r.detail);
        write(
            &out.join(STATUS_FILE),
            &format!("{}\n{}\n", r.status.key(), r.detail),
        )?;
        results.push(r);
    }

    if o.accept {
        let n = crate::reports::regenerate()?;
        if !o.quiet {
            eprintln!(
                "{}: {n} files regenerated from the snapshots",
                hoplab_sim::report::COMMITTED_DIR
            );
        }
    }
    let index = out_root.join("index.html");
    write(
        &index,
        &hoplab_sim::report::html::index("hoplab scenarios", &index_entries(&out_root)?),
    )?;
    if let Some(j) = &o.junit {
        let suites: Vec<junit::Suite> = results.iter().map(|r| r.case.clone()).collect();
        write(j, &junit::render(&suites)?)?;
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !matches!(r.status, IndexStatus::Ok | IndexStatus::Accepted))
        .map(|r| r.name.as_str())
        .collect();
    if !o.quiet {
        eprintln!(
            "{} scenarios, {} failed; reports: {}",
            results.len(),
            failed.len(),
            index.display()
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} scenarios failed: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Where a result folder keeps its status for the index: the status's key,
/// then its detail, a line each.
const STATUS_FILE: &str = "status.txt";

/// Every result under `out_root` (a folder with a trace or a status),
/// newest first: the status it was compared to, or `not compared` for a
/// folder `hoplab run` wrote.
fn index_entries(out_root: &Path) -> Result<Vec<IndexEntry>> {
    let mut found = Vec::new();
    let rd = match std::fs::read_dir(out_root) {
        Ok(rd) => rd,
        Err(_) => return Ok(Vec::new()),
    };
    for e in rd {
        let dir = e
            .with_context(|| format!("reading {}", out_root.display()))?
            .path();
        let trace = dir.join("trace.yaml");
        let status = dir.join(STATUS_FILE);
        let when = [&status, &trace]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max();
        let Some(when) = when else { continue };
        let kept = std::fs::read_to_string(&status).unwrap_or_default();
        let mut lines = kept.lines();
        let (st, detail) = match lines.next().and_then(IndexStatus::from_key) {
            Some(st) => (st, lines.next().unwrap_or_default().to_string()),
            None => (
                IndexStatus::NotCompared,
                "written by hoplab run; not compared with a snapshot".to_string(),
            ),
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((
            when,
            IndexEntry {
                has_diff: dir.join("diff.html").exists(),
                name,
                status: st,
                detail,
            },
        ));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    Ok(found.into_iter().map(|(_, e)| e).collect())
}

/// Compare one run's trace (in `out`) with the reviewed snapshot `snap`,
/// or accept it. `(name, arg)`: the scenario's name and how it was named
/// on the command line (for the commands a message suggests).
fn compare(
    (name, arg): (&str, &str),
    snap: &Path,
    out: &Path,
    ok: bool,
    tail: &[String],
    secs: f64,
    accept: bool,
) -> Result<Result1> {
    let pending_path = pending::pending_path(snap);
    let trace_path = out.join("trace.yaml");
    let new = match std::fs::read_to_string(&trace_path) {
        Ok(t) => t,
        Err(_) => {
            let detail = "the run wrote no trace".to_string();
            eprintln!("{name}: FAILED: {detail}");
            return Ok(Result1 {
                name: name.into(),
                status: IndexStatus::Failed,
                case: junit::scenario_suite(name, secs, None, None, Some(tail)),
                detail,
            });
        }
    };
    let new_trace =
        Trace::from_yaml(&new).with_context(|| format!("{}: not a trace", trace_path.display()))?;
    let run_failed = (!ok).then_some(tail);
    if accept {
        write(snap, &snapshot::file_text(&new))?;
        let _ = std::fs::remove_file(&pending_path);
        let mut detail = format!("accepted -> {}", snap.display());
        if !ok {
            detail.push_str(" (the run reported unmet expectations)");
        }
        return Ok(Result1 {
            name: name.into(),
            status: if ok {
                IndexStatus::Accepted
            } else {
                IndexStatus::Failed
            },
            case: junit::scenario_suite(name, secs, Some(&new_trace), Some(&[]), run_failed),
            detail,
        });
    }
    let old = match std::fs::read_to_string(snap) {
        Ok(t) => t,
        Err(_) => {
            write(&pending_path, &pending::pending_snapshot_text(&new))?;
            let detail = format!(
                "no reviewed snapshot: read {} and accept with `cargo xtask scenario {arg} --accept`",
                out.join("report.html").display()
            );
            eprintln!("{name}: {detail}");
            let lines = vec!["no reviewed snapshot".to_string()];
            return Ok(Result1 {
                name: name.into(),
                status: IndexStatus::NoSnapshot,
                case: junit::scenario_suite(name, secs, Some(&new_trace), Some(&lines), run_failed),
                detail,
            });
        }
    };
    let old_body = snapshot::read_body(&old);
    let d = hoplab_sim::trace::diff(old_body, &new);
    let case = junit::scenario_suite(name, secs, Some(&new_trace), Some(&d), run_failed);
    if d.is_empty() {
        let _ = std::fs::remove_file(&pending_path);
        let (status, detail) = if ok {
            (IndexStatus::Ok, format!("ok ({secs:.2} s)"))
        } else {
            (
                IndexStatus::Failed,
                "the run failed or an expectation was not met".to_string(),
            )
        };
        return Ok(Result1 {
            name: name.into(),
            status,
            detail,
            case,
        });
    }
    // A per-hop diff: printed, written as a page beside the report, and
    // left as a pending snapshot for `cargo insta review`.
    eprintln!("{name}: the trace differs from the reviewed snapshot:");
    for l in &d {
        eprintln!("  {l}");
    }
    let diff_page = out.join("diff.html");
    let old_trace = Trace::from_yaml(old_body).ok();
    if let Some(old_trace) = &old_trace {
        write(
            &diff_page,
            &hoplab_sim::report::html::diff_page(name, old_trace, &new_trace, &d),
        )?;
    }
    write(&pending_path, &pending::pending_snapshot_text(&new))?;
    // `cargo insta review` finds pending snapshots of the workspace only.
    let insta = if snap.starts_with(root()) {
        ", or cargo insta review"
    } else {
        ""
    };
    eprintln!(
        "  (diff page: {}; capture: {})\n  accept with: cargo xtask scenario {arg} --accept{insta}",
        diff_page.display(),
        out.join("capture.pcapng").display()
    );
    Ok(Result1 {
        name: name.into(),
        status: IndexStatus::Diff,
        detail: format!(
            "{} difference{} from the reviewed snapshot",
            d.len(),
            if d.len() == 1 { "" } else { "s" }
        ),
        case,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "scenario: s\nflows:\n- step: a\n  sent: tcp\n  result: ok\n  packets:\n  - packet: tcp S 1.1.1.1:1 > 2.2.2.2:2\n    hops:\n    - at: c/eth0 out\n      hdr: 1.1.1.1:1 > 2.2.2.2:2 tcp S seq=0 len=60 ttl=64\n    end: delivered to s\n";

    fn setup(tag: &str, reviewed: Option<&str>, new: &str) -> (PathBuf, PathBuf, PathBuf) {
        let d = std::env::temp_dir().join(format!("xtask-compare-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("trace.yaml"), new).unwrap();
        let snap = d.join("scenarios__s.snap");
        if let Some(r) = reviewed {
            std::fs::write(&snap, snapshot::file_text(r)).unwrap();
        }
        (d, snap, out)
    }

    #[test]
    fn a_difference_is_reported_per_hop_with_a_diff_page_and_a_pending_snapshot() {
        let new = TRACE.replace("ttl=64", "ttl=63");
        let (d, snap, out) = setup("diff", Some(TRACE), &new);
        let r = compare(("s", "s"), &snap, &out, true, &[], 0.5, false).unwrap();
        assert_eq!(r.status, IndexStatus::Diff);
        assert!(out.join("diff.html").exists());
        let page = std::fs::read_to_string(out.join("diff.html")).unwrap();
        assert!(
            page.contains("ttl: 64 -&gt; 63") || page.contains("ttl: 64 -> 63"),
            "{page}"
        );
        // What `cargo insta review` picks up: the new trace, pending.
        let pending = std::fs::read_to_string(pending::pending_path(&snap)).unwrap();
        assert_eq!(snapshot::read_body(&pending).trim_end(), new.trim_end());
        // The reviewed snapshot is untouched until accepted.
        assert_eq!(
            snapshot::read_body(&std::fs::read_to_string(&snap).unwrap()),
            TRACE
        );
        let xml = junit::render(&[r.case]).unwrap();
        assert!(
            xml.contains("<failure") && xml.contains("ttl: 64 -&gt; 63"),
            "{xml}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_same_trace_passes_and_clears_a_stale_pending_snapshot() {
        let (d, snap, out) = setup("same", Some(TRACE), TRACE);
        std::fs::write(pending::pending_path(&snap), "stale").unwrap();
        let r = compare(("s", "s"), &snap, &out, true, &[], 0.5, false).unwrap();
        assert_eq!(r.status, IndexStatus::Ok);
        assert!(!pending::pending_path(&snap).exists());
        assert!(!out.join("diff.html").exists());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_failed_run_fails_even_with_the_same_trace() {
        let (d, snap, out) = setup("failed", Some(TRACE), TRACE);
        let tail = vec!["unmet expectation: a".to_string()];
        let r = compare(("s", "s"), &snap, &out, false, &tail, 0.5, false).unwrap();
        assert_eq!(r.status, IndexStatus::Failed);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_index_lists_every_result_newest_first_with_its_status() {
        let d = std::env::temp_dir().join(format!("xtask-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let put = |name: &str, file: &str, text: &str| {
            std::fs::create_dir_all(d.join(name)).unwrap();
            std::fs::write(d.join(name).join(file), text).unwrap();
            // Modification times a little apart, oldest first.
            std::thread::sleep(Duration::from_millis(20));
        };
        put(
            "old",
            STATUS_FILE,
            "diff\n2 differences from the reviewed snapshot\n",
        );
        put("by-hand", "trace.yaml", TRACE);
        put("new", STATUS_FILE, "ok\nok (1.00 s)\n");
        std::fs::create_dir_all(d.join("empty")).unwrap();
        let e = index_entries(&d).unwrap();
        let got: Vec<(&str, IndexStatus)> = e.iter().map(|e| (e.name.as_str(), e.status)).collect();
        assert_eq!(
            got,
            [
                ("new", IndexStatus::Ok),
                ("by-hand", IndexStatus::NotCompared),
                ("old", IndexStatus::Diff),
            ]
        );
        assert_eq!(e[2].detail, "2 differences from the reviewed snapshot");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn no_snapshot_leaves_the_trace_pending_for_review() {
        let (d, snap, out) = setup("none", None, TRACE);
        let r = compare(("s", "s"), &snap, &out, true, &[], 0.5, false).unwrap();
        assert_eq!(r.status, IndexStatus::NoSnapshot);
        assert!(pending::pending_path(&snap).exists());
        std::fs::remove_dir_all(d).unwrap();
    }
}
