//! `cargo xtask soak [N]`: every shipped scenario N times (default 100)
//! under a parallel CPU load, each trace compared with its reviewed
//! snapshot; writes `reports/soak.md` with the flakes per scenario (a run
//! that failed, or whose trace differs from the snapshot) and the first
//! differences of each.
//!
//! The load is threads of this process that spin in slices of 10 ms: they
//! stop when the soak ends, and by themselves after `--max-secs` whatever
//! happens. Not run in CI (it takes N times the suite).
//!
//! Knows the suite and its snapshots through `hoplab_sim::snapshot`, and
//! the runs through the `hoplab` binary only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hoplab_sim::snapshot;

use crate::root;

/// What `cargo xtask soak` was asked to do.
pub struct Options {
    pub rounds: usize,
    /// Spinning threads beside the runs (default: one per core).
    pub load: Option<usize>,
    /// The load stops by itself after this long.
    pub max_secs: u64,
    /// Runs at once within a round (each run is its own sandbox).
    pub jobs: usize,
    /// Only these scenarios [default: all].
    pub names: Vec<String>,
}

/// How many differences of one scenario the report keeps.
const KEPT: usize = 3;

#[derive(Default)]
struct Tally {
    runs: usize,
    flakes: usize,
    /// `round N: first line of what differed`.
    examples: Vec<String>,
    secs: f64,
}

/// Spinning threads until `stop`, or `max` has passed.
fn start_load(n: usize, max: Duration, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + max;
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let slice = Instant::now() + Duration::from_millis(10);
                    while Instant::now() < slice {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
            })
        })
        .collect()
}

/// One run of `file` into `out`: whether it passed, and what differed.
fn once(bin: &Path, n: &snapshot::Named, out: &Path) -> Result<Option<String>> {
    let _ = std::fs::remove_dir_all(out);
    let o = Command::new(bin)
        .args(["--quiet", "run"])
        .arg(&n.file)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let new = match std::fs::read_to_string(out.join("trace.yaml")) {
        Ok(t) => t,
        Err(_) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            return Ok(Some(format!("no trace ({}): {last}", o.status)));
        }
    };
    let old = std::fs::read_to_string(&n.snapshot)
        .with_context(|| format!("reading {}", n.snapshot.display()))?;
    let d = hoplab_sim::trace::diff(snapshot::read_body(&old), &new);
    if let Some(first) = d.first() {
        let more = if d.len() > 1 {
            format!(" (+{} more)", d.len() - 1)
        } else {
            String::new()
        };
        return Ok(Some(format!("{first}{more}")));
    }
    if !o.status.success() {
        return Ok(Some(format!(
            "same trace, but the run exited with {}",
            o.status
        )));
    }
    Ok(None)
}

/// The built binaries copied to `dir` (hoplab finds the net manager and
/// the gateway beside itself), so that a build during a long soak does not
/// change what it runs.
fn frozen_bins(dir: &Path) -> Result<std::path::PathBuf> {
    let bin = crate::build_hoplab_bins(false)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in ["hoplab", "netmanager", "gateway"] {
        let from = bin.with_file_name(name);
        std::fs::copy(&from, dir.join(name))
            .with_context(|| format!("copying {} to {}", from.display(), dir.display()))?;
    }
    Ok(dir.join("hoplab"))
}

/// What one run said (what differed, if anything) and how long it took.
type Outcome = (Option<String>, f64);

/// Every scenario once, `jobs` at a time: for each (in `named`'s order)
/// what differed, if anything, and how long its run took.
fn one_round(
    bin: &Path,
    named: &[snapshot::Named],
    out_root: &Path,
    jobs: usize,
) -> Result<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome>>>> =
        Mutex::new((0..named.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(n) = named.get(i) else { break };
                let t = Instant::now();
                let r =
                    once(bin, n, &out_root.join(&n.name)).map(|f| (f, t.elapsed().as_secs_f64()));
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.context("a soak worker ended early")?)
        .collect()
}

pub fn run(o: Options) -> Result<()> {
    let out_root = crate::target_dir().join("soak");
    let bin = frozen_bins(&out_root.join("bin"))?;
    let path = root().join("reports/soak.md");
    let named: Vec<snapshot::Named> = if o.names.is_empty() {
        snapshot::all(&root())?
    } else {
        o.names
            .iter()
            .map(|a| snapshot::find(&root(), a))
            .collect::<Result<_, _>>()?
    };
    // A scenario without a reviewed snapshot has nothing to flake from.
    let (named, unreviewed): (Vec<_>, Vec<_>) =
        named.into_iter().partition(|n| n.snapshot.exists());
    let unreviewed: Vec<String> = unreviewed.into_iter().map(|n| n.name).collect();
    let load = o
        .load
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = start_load(load, Duration::from_secs(o.max_secs), stop.clone());
    let t0 = Instant::now();
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let result = (|| -> Result<()> {
        for round in 1..=o.rounds {
            for (n, (flake, secs)) in named
                .iter()
                .zip(one_round(&bin, &named, &out_root, o.jobs)?)
            {
                let e = tally.entry(n.name.clone()).or_default();
                e.runs += 1;
                e.secs += secs;
                if let Some(what) = flake {
                    eprintln!("soak round {round}: {}: FLAKE: {what}", n.name);
                    e.flakes += 1;
                    if e.examples.len() < KEPT {
                        e.examples.push(format!("round {round}: {what}"));
                    }
                    // Kept for a look: the run's folder, by round.
                    let out = out_root.join(&n.name);
                    let keep = out_root.join(format!("{}.round-{round}", n.name));
                    let _ = std::fs::remove_dir_all(&keep);
                    let _ = std::fs::rename(&out, &keep);
                }
            }
            let flakes: usize = tally.values().map(|t| t.flakes).sum();
            eprintln!(
                "soak: round {round}/{} done, {flakes} flakes so far ({:.0} s)",
                o.rounds,
                t0.elapsed().as_secs_f64()
            );
            // Written after every round: a soak cut short keeps its rounds.
            let text = report((&o, round), load, (&tally, &unreviewed), t0.elapsed());
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result?;
    eprintln!("soak: {}", path.display());
    Ok(())
}

fn report(
    (o, done): (&Options, usize),
    load: usize,
    (tally, unreviewed): (&BTreeMap<String, Tally>, &[String]),
    took: Duration,
) -> String {
    let mut m = String::new();
    let runs: usize = tally.values().map(|t| t.runs).sum();
    let flakes: usize = tally.values().map(|t| t.flakes).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(m, "# Soak: the scenario suite, {done} rounds under load\n");
    if done < o.rounds {
        let _ = writeln!(m, "(Written after round {done} of {}.)\n", o.rounds);
    }
    let only: String = o.names.iter().map(|n| format!(" --scenario {n}")).collect();
    let spin = o.load.map(|n| format!(" --load {n}")).unwrap_or_default();
    let (jobs, at_once) = if o.jobs > 1 {
        (
            format!(" --jobs {}", o.jobs),
            format!(", {} runs at once, each in its own sandbox", o.jobs),
        )
    } else {
        (String::new(), String::new())
    };
    let beside = if load == 0 {
        format!(
            "no thread of the soak spins (`--load 0`): the load on the {cores} core{} is \
             whatever else runs on the machine (the 1-minute load average is not recorded)",
            if cores == 1 { "" } else { "s" },
        )
    } else {
        format!(
            "{load} thread{} of the soak spin (on a machine with {cores} core{}), so each run \
             gets less CPU than alone",
            if load == 1 { "" } else { "s" },
            if cores == 1 { "" } else { "s" },
        )
    };
    let _ = writeln!(
        m,
        "Written by `cargo xtask soak {}{spin}{jobs}{only}`. Each round runs every shipped scenario \
         once (debug build{at_once}) and compares its trace with the reviewed snapshot; a flake \
         is a run whose trace differs or that did not end as the snapshot says. Beside the \
         runs, {beside}.\n",
        o.rounds,
    );
    let _ = writeln!(
        m,
        "**{flakes} flake{} in {runs} runs** ({:.0} s in all).\n",
        if flakes == 1 { "" } else { "s" },
        took.as_secs_f64()
    );
    let _ = writeln!(m, "| scenario | runs | flakes | mean run (s) |");
    let _ = writeln!(m, "|---|---:|---:|---:|");
    for (name, t) in tally {
        let _ = writeln!(
            m,
            "| `{name}` | {} | {} | {:.2} |",
            t.runs,
            t.flakes,
            t.secs / t.runs.max(1) as f64
        );
    }
    if !unreviewed.is_empty() {
        let _ = writeln!(
            m,
            "\nNot run (no reviewed snapshot to compare with): {}.",
            unreviewed
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let flaky: Vec<_> = tally.iter().filter(|(_, t)| t.flakes > 0).collect();
    if !flaky.is_empty() {
        let _ = writeln!(m, "\n## What differed\n");
        for (name, t) in flaky {
            let _ = writeln!(m, "- `{name}`:");
            for e in &t.examples {
                let _ = writeln!(m, "  - {e}");
            }
        }
    }
    m
}
