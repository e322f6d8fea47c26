//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `dataplane/fuzz/`,
//! `sim/fuzz/` and the root crate's `fuzz/` for a bounded time each, and sums up what they did
//! (executions, exec/s, corpus size, crashes), on the terminal and, with
//! `--report`, in `reports/fuzz.md`.
//!
//! The corpus in the repository (`CRATE/fuzz/corpus/TARGET/`) is read,
//! never written, by a run: new inputs go to `target/fuzz/TARGET/`, and
//! `--merge` (after a run) or `--cmin` (instead of one) replaces the
//! repository's corpus by the smallest set covering both (libFuzzer's
//! `-merge=1`, as `cargo fuzz cmin` does). Crashes stay in
//! `CRATE/fuzz/artifacts/TARGET/` (not committed; a reproducer is copied
//! to `CRATE/fuzz/regressions/TARGET/` by hand, once the bug is fixed).
//!
//! It needs a nightly toolchain and cargo-fuzz and installs neither. It
//! knows the targets' names and crates, not what they test.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::root;

mod seed;

pub use seed::seed;

/// A fuzz target: its cargo-fuzz name, the crate whose `fuzz/` holds it,
/// and whether libFuzzer runs it under AddressSanitizer (the sim's
/// targets reach C-like unsafe code in dependencies; the dataplane forbids
/// unsafe code, so its targets run without a sanitizer, several times
/// faster).
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub krate: &'static str,
    pub asan: bool,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "packet_view",
        krate: "dataplane",
        asan: false,
    },
    Target {
        name: "tun_packet",
        krate: "dataplane",
        asan: false,
    },
    Target {
        name: "tunnel_datagram",
        krate: "dataplane",
        asan: false,
    },
    Target {
        name: "gateway_packet",
        krate: "dataplane",
        asan: false,
    },
    Target {
        name: "fragments",
        krate: "dataplane",
        asan: false,
    },
    // The root crate's shell code (`fuzz/`): it has unsafe code.
    Target {
        name: "super_packet",
        krate: ".",
        asan: true,
    },
    Target {
        name: "gateway_icmp",
        krate: "dataplane",
        asan: false,
    },
    Target {
        name: "scenario_parse",
        krate: "sim",
        asan: true,
    },
    Target {
        name: "capture_read",
        krate: "sim",
        asan: true,
    },
];

/// What `cargo xtask fuzz` was asked.
pub struct Options {
    /// Seconds per target, unless a target is named `TARGET=SECS`.
    pub secs: u64,
    pub report: bool,
    pub merge: bool,
    /// Only minimise the corpus (with the last run's new inputs), no run.
    pub cmin: bool,
    pub targets: Vec<String>,
}

/// What one target's run did.
struct Outcome {
    name: &'static str,
    /// The time asked for.
    budget: u64,
    krate: &'static str,
    execs: u64,
    secs: f64,
    corpus: usize,
    new_units: usize,
    crashes: Vec<PathBuf>,
}

const INSTALL: &str = "cargo fuzz needs a nightly toolchain and cargo-fuzz: \
     `rustup toolchain install nightly` and `cargo install cargo-fuzz --locked` \
     (the corpus replay tests run on stable without them: `cargo test --workspace`)";

pub fn run(o: Options) -> Result<()> {
    let targets = select(&o.targets, o.secs)?;
    check_tools()?;
    if o.cmin {
        for (t, _) in targets {
            minimise(t)?;
        }
        return Ok(());
    }
    // The commit the targets were built from (a long run may outlast it).
    let commit = head();
    let mut outcomes = Vec::new();
    for (t, secs) in targets {
        let mut out = run_target(t, secs)?;
        println!(
            "fuzz {}: {} executions in {:.0} s ({:.0}/s), corpus {} (+{} new), {} crashes",
            out.name,
            out.execs,
            out.secs,
            out.execs as f64 / out.secs.max(0.001),
            out.corpus,
            out.new_units,
            out.crashes.len()
        );
        for c in &out.crashes {
            println!("  crash: {}", c.display());
        }
        if o.merge {
            out.corpus = minimise(t)?;
        }
        outcomes.push(out);
        // Written after every target: a long run cut short keeps its
        // figures so far.
        if o.report {
            let path = root().join("reports/fuzz.md");
            fs::write(&path, render(&outcomes, &commit, o.merge))
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if o.report {
        println!("wrote reports/fuzz.md");
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.crashes.is_empty())
        .map(|o| o.name)
        .collect();
    if !crashed.is_empty() {
        bail!("crashes in {}", crashed.join(", "));
    }
    Ok(())
}

/// The targets named (`TARGET` or `TARGET=SECS`), all when none is, each
/// with its time.
fn select(names: &[String], secs: u64) -> Result<Vec<(&'static Target, u64)>> {
    if names.is_empty() {
        return Ok(TARGETS.iter().map(|t| (t, secs)).collect());
    }
    names
        .iter()
        .map(|arg| {
            let (n, s) = match arg.split_once('=') {
                Some((n, s)) => (
                    n,
                    s.parse()
                        .with_context(|| format!("{arg}: not TARGET=SECS"))?,
                ),
                None => (arg.as_str(), secs),
            };
            let t = TARGETS.iter().find(|t| t.name == n).with_context(|| {
                let all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                format!("no fuzz target {n} (there are {})", all.join(", "))
            })?;
            Ok((t, s))
        })
        .collect()
}

/// Fails, saying how to install them, without nightly or cargo-fuzz.
fn check_tools() -> Result<()> {
    let works = |args: &[&str]| {
        Command::new("cargo")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&["+nightly", "--version"]) {
        bail!("no nightly toolchain: {INSTALL}");
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        bail!("cargo-fuzz is not installed: {INSTALL}");
    }
    Ok(())
}

/// `cargo +nightly fuzz SUB [OPTIONS] TARGET ARGS` in `krate`'s folder
/// (where its `fuzz/` is).
fn cargo_fuzz(t: &Target, sub: &str, args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root().join(t.krate))
        .args(["+nightly", "fuzz", sub]);
    if !t.asan {
        c.args(["--sanitizer", "none"]);
    }
    // Overflow checks and debug assertions on: an overflow is a crash.
    // cargo-fuzz builds with one codegen unit by default, which makes the
    // sim's dependencies take many minutes on two cores.
    c.args(["--debug-assertions", "--codegen-units", "16", t.name])
        .args(args);
    c
}

/// Files in `dir` (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn run_target(t: &'static Target, secs: u64) -> Result<Outcome> {
    let fuzz = root().join(t.krate).join("fuzz");
    let corpus = fuzz.join("corpus").join(t.name);
    let work = root().join("target/fuzz").join(t.name);
    let artifacts = fuzz.join("artifacts").join(t.name);
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let log = root().join("target/fuzz").join(format!("{}.log", t.name));
    let before = files(&artifacts);
    let mut dirs = vec![work.clone(), corpus.clone()];
    dirs.extend(Some(fuzz.join("regressions").join(t.name)).filter(|d| d.exists()));
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut args: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let max_time = format!("-max_total_time={secs}");
    args.extend([
        "--",
        &max_time,
        "-print_final_stats=1",
        "-timeout=10",
        "-rss_limit_mb=2048",
    ]);
    // Built first, so that the time measured is the fuzzing's.
    let built = cargo_fuzz(t, "build", &[])
        .stdout(Stdio::null())
        .status()
        .context("running cargo fuzz build")?;
    if !built.success() {
        bail!("cargo fuzz build {} failed", t.name);
    }
    let start = Instant::now();
    let status = cargo_fuzz(t, "run", &args)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
        .status()
        .context("running cargo fuzz")?;
    let elapsed = start.elapsed();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let crashes: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if !status.success() && crashes.is_empty() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("cargo fuzz run {} failed:\n{}", t.name, tail.join("\n"));
    }
    Ok(Outcome {
        name: t.name,
        budget: secs,
        krate: t.krate,
        execs: stat(&text, "number_of_executed_units").unwrap_or_else(|| last_count(&text)),
        secs: fuzz_secs(&text).unwrap_or(elapsed.as_secs_f64()),
        corpus: files(&corpus).len(),
        new_units: files(&work).len(),
        crashes,
    })
}

/// A final statistic of libFuzzer's (`-print_final_stats=1`).
fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
        .and_then(|v| v.trim().parse().ok())
}

/// The execution count of libFuzzer's last status line (`#N\t...`), for a
/// run that ended without final stats (a crash).
fn last_count(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// How long libFuzzer fuzzed, from its last line (`Done N runs in S
/// second(s)`; the build before it is not counted).
fn fuzz_secs(log: &str) -> Option<f64> {
    log.lines().rev().find_map(|l| {
        let rest = l.strip_prefix("Done ")?;
        let secs = rest.split(" runs in ").nth(1)?.split_whitespace().next()?;
        secs.parse::<f64>().ok().map(|s| s.max(1.0))
    })
}

/// Replaces the repository's corpus of `t` by the smallest set of inputs
/// that covers what it and the last run's new inputs cover (libFuzzer's
/// `-merge=1` into an empty folder: what `cargo fuzz cmin` does, over both).
/// Returns the corpus's new size.
fn minimise(t: &Target) -> Result<usize> {
    let corpus = root().join(t.krate).join("fuzz/corpus").join(t.name);
    let work = root().join("target/fuzz").join(t.name);
    let min = root().join("target/fuzz").join(format!("{}.min", t.name));
    if min.exists() {
        fs::remove_dir_all(&min).with_context(|| format!("removing {}", min.display()))?;
    }
    fs::create_dir_all(&min).with_context(|| format!("creating {}", min.display()))?;
    let dirs: Vec<String> = [&min, &corpus, &work]
        .into_iter()
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect();
    let mut args: Vec<&str> = dirs.iter().map(String::as_str).collect();
    // Edges only (no hit counts): the smallest corpus that reaches every
    // edge, kept in the repository; runs grow it again.
    args.extend(["--", "-merge=1", "-use_counters=0"]);
    let st = cargo_fuzz(t, "run", &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running cargo fuzz (merge)")?;
    let kept = files(&min);
    if !st.success() || kept.is_empty() {
        bail!("minimising the corpus of {} failed", t.name);
    }
    for f in files(&corpus) {
        fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
    }
    for f in &kept {
        let to = corpus.join(f.file_name().expect("a file"));
        fs::copy(f, &to).with_context(|| format!("writing {}", to.display()))?;
    }
    println!("fuzz {}: corpus now {} inputs", t.name, kept.len());
    Ok(kept.len())
}

/// The short hash of the commit checked out.
fn head() -> String {
    Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn render(outcomes: &[Outcome], commit: &str, merged: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Fuzzing\n");
    let args: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{}={}", o.name, o.budget))
        .collect();
    let _ = writeln!(
        s,
        "Written by `cargo xtask fuzz --report{} {}` at commit `{commit}`: \
         each target ran for the seconds given, one after the other, one process \
         (libFuzzer, `--debug-assertions`; the sim's targets under \
         AddressSanitizer). The corpus replay tests \
         (`dataplane/tests/fuzz_corpus.rs`, `sim/tests/fuzz_corpus.rs`) run \
         every kept input on stable in `cargo test --workspace`.\n",
        if merged { " --merge" } else { "" },
        args.join(" ")
    );
    let _ = writeln!(
        s,
        "The corpus (`CRATE/fuzz/corpus/TARGET/`) was seeded from real packets: \
         the TUN frames (`nm0`, `gw0`) and tunnel datagrams of the captures of \
         `svc-two-nodes`, `svc-ipv6`, `svc-manager-failure`, \
         `ext-to-svc-gateway-cluster` and its IPv6 variant, the first frames of \
         two of those captures (pcapng, and as classic pcap) and every shipped \
         scenario file; `--merge` keeps the smallest set of inputs covering \
         it and what a run found. \"corpus\" below is its size after the run (after the merge, with `--merge`); a crash's \
         input stays in `CRATE/fuzz/artifacts/TARGET/`.\n"
    );
    let _ = writeln!(
        s,
        "| target | crate | executions | time (s) | exec/s | corpus | crashes |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            o.name,
            o.krate,
            o.execs,
            o.secs,
            o.execs as f64 / o.secs.max(0.001),
            o.corpus,
            o.crashes.len()
        );
    }
    let dp: Vec<&Outcome> = outcomes.iter().filter(|o| o.krate == "dataplane").collect();
    let _ = writeln!(
        s,
        "\nDataplane targets: {} executions, {} crashes.",
        dp.iter().map(|o| o.execs).sum::<u64>(),
        dp.iter().map(|o| o.crashes.len()).sum::<usize>()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = "#65536\tpulse  cov: 470 ft: 690 corp: 245/21Kb exec/s: 21845 rss: 32Mb\n\
        Done 56659 runs in 16 second(s)\n\
        stat::number_of_executed_units: 56659\n\
        stat::average_exec_per_sec:     3541\n";

    const CRASHED: &str = "#469022\tREDUCE cov: 474 ft: 701 corp: 246/21Kb\n\
        thread '<unnamed>' panicked at targets/common.rs:198:9:\n";

    #[test]
    fn reads_libfuzzers_figures() {
        assert_eq!(stat(DONE, "number_of_executed_units"), Some(56659));
        assert_eq!(fuzz_secs(DONE), Some(16.0));
        assert_eq!(stat(CRASHED, "number_of_executed_units"), None);
        assert_eq!(last_count(CRASHED), 469_022);
        assert_eq!(fuzz_secs(CRASHED), None);
    }

    #[test]
    fn targets_are_named_with_their_time() {
        let all = select(&[], 7).unwrap();
        assert_eq!(all.len(), TARGETS.len());
        assert!(all.iter().all(|(_, s)| *s == 7));
        let some = select(&["tun_packet=90".into(), "capture_read".into()], 7).unwrap();
        let got: Vec<(&str, u64)> = some.iter().map(|(t, s)| (t.name, *s)).collect();
        assert_eq!(got, [("tun_packet", 90), ("capture_read", 7)]);
        let err = select(&["nope".into()], 7).unwrap_err().to_string();
        assert!(err.contains("packet_view"), "{err}");
        assert!(select(&["tun_packet=x".into()], 7).is_err());
    }

    #[test]
    fn the_report_sums_the_dataplane_targets() {
        let o = |name, krate, execs, crashes: usize| Outcome {
            name,
            krate,
            budget: 10,
            execs,
            secs: 10.0,
            corpus: 3,
            new_units: 1,
            crashes: vec![PathBuf::from("x"); crashes],
        };
        let md = render(
            &[
                o("tun_packet", "dataplane", 100, 0),
                o("packet_view", "dataplane", 50, 1),
                o("capture_read", "sim", 1000, 0),
            ],
            "abc1234",
            true,
        );
        assert!(
            md.contains("cargo xtask fuzz --report --merge tun_packet=10 "),
            "{md}"
        );
        assert!(
            md.contains("| tun_packet | dataplane | 100 | 10 | 10 | 3 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("Dataplane targets: 150 executions, 1 crashes."),
            "{md}"
        );
        assert!(
            md.contains("tun_packet=10 packet_view=10 capture_read=10"),
            "{md}"
        );
    }
}
