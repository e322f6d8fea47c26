//! `cargo xtask`: the project's build system.
//!
//! * `scenario [NAME...] [--accept]`: run scenarios, compare each trace with
//!   its reviewed snapshot hop by hop, or accept the new traces.
//! * `bench harness [--hosts 10,100,1000]`: build, run and tear down chains
//!   of N hosts; write reports/bench-harness.md.
//! * `clean`: remove target/scenarios.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hoplab_sim::snapshot;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios (all when none is named) and check them against their snapshots.
    Scenario {
        names: Vec<String>,
        /// Accept the new traces as the reviewed snapshots.
        #[arg(long)]
        accept: bool,
        /// Build hoplab in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Benchmarks; results go under reports/.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Remove the outputs of scenario runs (target/scenarios).
    Clean,
}

#[derive(Subcommand)]
enum Bench {
    /// Build, run and tear down a chain of N hosts, for each N.
    Harness {
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        hosts: Vec<usize>,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Build the hoplab binary and return its path.
fn build_hoplab(release: bool) -> Result<PathBuf> {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .args(["build", "--quiet", "--package", "hoplab", "--bin", "hoplab"]);
    if release {
        c.arg("--release");
    }
    let st = c.status().context("running cargo build")?;
    if !st.success() {
        bail!("cargo build of hoplab failed");
    }
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("hoplab"))
}

fn all_scenarios() -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(root().join("scenarios")).context("reading scenarios/")? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            v.push(
                p.file_stem()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    v.sort();
    Ok(v)
}

fn scenario(names: Vec<String>, accept: bool, release: bool) -> Result<()> {
    let bin = build_hoplab(release)?;
    let names = if names.is_empty() {
        all_scenarios()?
    } else {
        names
    };
    let mut failed = Vec::new();
    for name in &names {
        let file = root().join("scenarios").join(format!("{name}.yaml"));
        if !file.exists() {
            bail!("no scenario {name} ({} does not exist)", file.display());
        }
        let out = root().join("target/scenarios").join(name);
        let t = Instant::now();
        let st = Command::new(&bin)
            .args(["--quiet", "run"])
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        let trace_path = out.join("trace.yaml");
        if !trace_path.exists() {
            eprintln!("{name}: FAILED: the run wrote no trace (exit {st})");
            failed.push(name.clone());
            continue;
        }
        let new = std::fs::read_to_string(&trace_path)?;
        let snap = snapshot::path(&root(), name);
        if accept {
            std::fs::create_dir_all(snap.parent().expect("has a parent"))?;
            std::fs::write(&snap, snapshot::file_text(&new))?;
            println!("{name}: accepted -> {}", snap.display());
            if !st.success() {
                eprintln!("{name}: note: the run reported unmet expectations (exit {st})");
                failed.push(name.clone());
            }
            continue;
        }
        let old = match std::fs::read_to_string(&snap) {
            Ok(t) => t,
            Err(_) => {
                eprintln!(
                    "{name}: no reviewed snapshot at {}: read {} and run with --accept",
                    snap.display(),
                    out.join("report.md").display()
                );
                failed.push(name.clone());
                continue;
            }
        };
        let d = snapshot::diff(snapshot::read_body(&old), &new);
        if d.is_empty() && st.success() {
            println!(
                "{name}: ok ({:.2} s; report {})",
                t.elapsed().as_secs_f64(),
                out.join("report.md").display()
            );
            continue;
        }
        failed.push(name.clone());
        if !st.success() {
            eprintln!("{name}: the run failed or an expectation was not met (exit {st})");
        }
        if !d.is_empty() {
            eprintln!("{name}: the trace differs from the reviewed snapshot:");
            for l in &d {
                eprintln!("  {l}");
            }
            eprintln!(
                "  (capture: {}; accept with: cargo xtask scenario {name} --accept)",
                out.join("capture.pcapng").display()
            );
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} scenarios failed: {}",
            failed.len(),
            names.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Peak resident set of the largest child reaped so far, in KiB.
fn children_maxrss_kib() -> i64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut ru: libc_rusage::rusage = std::mem::zeroed();
        libc_rusage::getrusage(libc_rusage::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

mod libc_rusage {
    #[repr(C)]
    pub struct Timeval {
        pub tv_sec: i64,
        pub tv_usec: i64,
    }
    #[repr(C)]
    pub struct rusage {
        pub ru_utime: Timeval,
        pub ru_stime: Timeval,
        pub ru_maxrss: i64,
        pub rest: [i64; 13],
    }
    pub const RUSAGE_CHILDREN: i32 = -1;
    extern "C" {
        pub fn getrusage(who: i32, usage: *mut rusage) -> i32;
    }
}

fn bench_harness(sizes: Vec<usize>) -> Result<()> {
    let bin = build_hoplab(true)?;
    let mut md = String::from(
        "# Harness benchmark: a chain of N hosts\n\n\
         `cargo xtask bench harness` builds a chain of N hosts (a namespace each, a veth pair \
         between neighbours, addresses, links up), pings over its first and last link, and \
         tears it down, all inside a fresh sandbox, once per N. Total is wall time of the \
         whole `hoplab __bench-chain N` process, sandbox included; peak memory is the \
         largest resident set of the run's processes. The kernel frees the namespaces \
         asynchronously after the process exits; that time is not counted.\n\n\
         Target: 1000 hosts up and torn down in under 10 s.\n\n\
         Baseline, in the same process just before: create and drop N bare network \
         namespaces (the kernel's floor for N hosts); `build / bare` is the cost of \
         everything hoplab adds (links, addresses, sysctls, netlink) relative to it.\n\n\
         | N hosts | bare namespaces (s) | build (s) | build / bare | traffic (s) | teardown (s) | total (s) | per host (ms) | peak RSS (MiB) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for n in sizes {
        // Children are reaped one at a time, so the running maximum grows
        // only when this run is the largest so far: measure each N in its
        // own xtask process.
        let t = Instant::now();
        let out = Command::new(std::env::current_exe()?)
            .args([
                "__bench-one",
                &n.to_string(),
                bin.to_str().expect("utf-8 path"),
            ])
            .output()
            .context("running one benchmark")?;
        let total = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "chain of {n} hosts failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| -> f64 {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let rss_mib = field("maxrss_kib") / 1024.0;
        let (bare, b, tr, td) = (
            field("bare_ms") / 1e3,
            field("build_ms") / 1e3,
            field("traffic_ms") / 1e3,
            field("teardown_ms") / 1e3,
        );
        println!(
            "chain of {n}: bare {bare:.3} s, build {b:.3} s, traffic {tr:.3} s, teardown {td:.3} s, total {total:.3} s, peak {rss_mib:.1} MiB"
        );
        let _ = writeln!(
            md,
            "| {n} | {bare:.3} | {b:.3} | {:.2} | {tr:.3} | {td:.3} | {total:.3} | {:.2} | {rss_mib:.1} |",
            b / bare,
            total * 1e3 / n as f64
        );
    }
    let _ = writeln!(
        md,
        "\nMeasured on {} cores, kernel {}.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel()
    );
    let path = root().join("reports/bench-harness.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn main() -> Result<()> {
    // Internal: one benchmark run in a process of its own (see bench_harness).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__bench-one") {
        let st = Command::new(&args[3])
            .args(["-q", "__bench-chain", &args[2]])
            .output()?;
        if !st.status.success() {
            eprint!("{}", String::from_utf8_lossy(&st.stderr));
            std::process::exit(1);
        }
        print!(
            "{} maxrss_kib={}",
            String::from_utf8_lossy(&st.stdout).trim(),
            children_maxrss_kib()
        );
        return Ok(());
    }
    match Cli::parse().cmd {
        Cmd::Scenario {
            names,
            accept,
            release,
        } => scenario(names, accept, release),
        Cmd::Bench {
            what: Bench::Harness { hosts },
        } => bench_harness(hosts),
        Cmd::Clean => {
            let p = root().join("target/scenarios");
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            Ok(())
        }
    }
}
