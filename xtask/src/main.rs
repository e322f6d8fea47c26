//! `cargo xtask`: the project's build system.
//!
//! * `scenario [NAME...] [--accept] [--release] [--junit FILE] [-q|-v]`: run scenarios,
//!   compare each trace with its reviewed snapshot hop by hop (printed, and
//!   a diff page and a pending snapshot for `cargo insta review` on a
//!   difference), or accept the new traces; write target/scenarios/index.html.
//! * `reports`: regenerate reports/scenarios/ from the reviewed snapshots.
//! * `bench harness [--hosts 10,100,1000]`: build, run and tear down chains
//!   of N hosts; write reports/bench-harness.md.
//! * `bench dataplane [--release]`: throughput, latency and connection rate
//!   through six paths (kernel, kernel DNAT, net manager local, net manager
//!   over the tunnel from an instance; gateway and a kernel-only DNAT of the
//!   same shape from an external client) in one run; write
//!   reports/bench-dataplane.md.
//! * `bench l7 [--debug] [--requests N] [--rounds N] [--capture-requests N]`:
//!   requests/s and p50/p99 latency through HAProxy (HTTP, TLS edge, TLS
//!   re-encrypt) beside the same requests straight to the server, in one
//!   run, and a last round with the lab captured; write reports/bench-l7.md.
//! * `bench exposure [--debug] [--round-trips N] [--rounds N] [--churn-ms
//!   MS]`: latency through the gateway with and without exposure changes;
//!   write reports/bench-exposure.md.
//! * `bench trace [--frames 10000,100000,1000000] [--debug]`: the trace of
//!   synthetic captures of N frames, frames/s and peak memory; write
//!   reports/bench-trace.md.
//! * `fuzz [--secs N] [--merge|--cmin] [--report] [TARGET[=SECS]...]`: run
//!   the cargo-fuzz targets (nightly and cargo-fuzz needed) for N seconds each; `--merge` keeps new coverage in the
//!   repository's corpus, minimised (`--cmin`: only that, no run);
//!   `--report` writes reports/fuzz.md; `--seed CAPTURE...` adds seeds
//!   from a run's capture and the shipped scenarios instead.
//! * `wireshark-profile [--dir DIR]`: install the hoplab Wireshark
//!   profile (wireshark/profile/: the tunnel decoded, interface, direction
//!   and comment columns) as the `hoplab` configuration profile.
//! * `soak [N] [--load T] [--jobs J] [--max-secs S] [--scenario NAME]...`:
//!   the whole suite N times (default 100), J runs at once (default 1),
//!   beside T spinning threads (default: one per core); write
//!   reports/soak.md with the flakes per scenario.
//! * `clean`: remove target/scenarios.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hoplab_sim::bench::dataplane::Config;
use hoplab_sim::bench::l7;

mod bench;
mod bench_l7;
mod bench_trace;
mod fuzz;
mod junit;
mod pending;
mod reports;
mod scenario;
mod soak;
mod template;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run scenarios and check them against their snapshots.
    Scenario {
        /// Scenarios to run, each a name (scenarios/NAME.yaml) or the path
        /// of a .yaml file, whose snapshot is then NAME.snap beside it
        /// [default: every scenario of scenarios/].
        #[arg(value_name = "SCENARIO")]
        names: Vec<String>,
        /// Accept the new traces as the reviewed snapshots (and regenerate
        /// reports/scenarios/).
        #[arg(long)]
        accept: bool,
        /// Build hoplab in release mode.
        #[arg(long)]
        release: bool,
        /// Also write a JUnit XML file: one test case per scenario
        /// (its snapshot) and per expectation (each traffic step).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Print only errors and differences: no progress lines.
        #[arg(long, short, conflicts_with = "verbose")]
        quiet: bool,
        /// More log detail from the runs (-v info, -vv debug; RUST_LOG
        /// chooses when set).
        #[arg(long, short, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Regenerate the committed per-hop reports of the shipped scenarios
    /// (reports/scenarios/) from the reviewed snapshots.
    Reports,
    /// Benchmarks; results go under reports/.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Run the fuzz targets (dataplane/fuzz, sim/fuzz, fuzz) for a bounded time
    /// each: needs a nightly toolchain and cargo-fuzz
    /// (`cargo install cargo-fuzz --locked`).
    Fuzz {
        /// Seconds per target (a target named TARGET=SECS gets its own).
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// After each run, replace the corpus in the repository
        /// (CRATE/fuzz/corpus/TARGET/) by the smallest set of inputs that
        /// covers it and what the run found.
        #[arg(long)]
        merge: bool,
        /// Only minimise the corpus in the repository (with the last
        /// run's inputs, if any), without fuzzing.
        #[arg(long, conflicts_with_all = ["merge", "report"])]
        cmin: bool,
        /// Write reports/fuzz.md: per target, executions, time, exec/s,
        /// corpus size, crashes.
        #[arg(long)]
        report: bool,
        /// Only add seeds to the corpus, from the frames of these captures
        /// (target/scenarios/NAME/capture.pcapng of a run) and the shipped
        /// scenario files.
        #[arg(long, num_args = 1.., value_name = "CAPTURE", conflicts_with_all = ["merge", "cmin", "report"])]
        seed: Vec<PathBuf>,
        /// The targets, each TARGET or TARGET=SECS [default: every target].
        targets: Vec<String>,
    },
    /// Install the hoplab Wireshark profile (wireshark/profile/): UDP port
    /// 50103 decoded as IP, columns for the interface, direction and frame
    /// comment. Then choose it in Wireshark (Edit > Configuration Profiles)
    /// or use `tshark -C hoplab`.
    WiresharkProfile {
        /// The profile folder to write [default:
        /// $XDG_CONFIG_HOME/wireshark/profiles/hoplab, else
        /// ~/.config/wireshark/profiles/hoplab].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run every scenario N times under a parallel CPU load and write
    /// reports/soak.md: the flakes per scenario (not for CI).
    Soak {
        /// Rounds: each runs every scenario once.
        #[arg(default_value_t = 100)]
        rounds: usize,
        /// Spinning threads beside the runs [default: one per core].
        #[arg(long)]
        load: Option<usize>,
        /// The load stops by itself after this many seconds.
        #[arg(long, default_value_t = 6 * 3600)]
        max_secs: u64,
        /// Runs at once within a round, each in its own sandbox.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        jobs: u16,
        /// Only these scenarios [default: every scenario of scenarios/].
        #[arg(long = "scenario", value_name = "SCENARIO")]
        names: Vec<String>,
    },
    /// Remove the outputs of scenario runs (target/scenarios).
    Clean,
}

#[derive(Subcommand)]
enum Bench {
    /// Build, run and tear down a chain of N hosts, for each N.
    Harness {
        /// The chain lengths to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        hosts: Vec<usize>,
    },
    /// Throughput, latency and connection rate through the kernel, kernel
    /// DNAT, the net manager, the tunnel, the gateway and a kernel-only
    /// gateway node, in one run.
    Dataplane {
        /// Build in release mode [default: release, unless --debug].
        #[arg(long)]
        release: bool,
        /// Build in debug mode instead (numbers not meaningful).
        #[arg(long, conflicts_with = "release")]
        debug: bool,
        /// How long each throughput test sends, in seconds.
        #[arg(long, default_value_t = Config::default().secs)]
        secs: f64,
        /// How many round trips each latency test records.
        #[arg(long, default_value_t = Config::default().round_trips)]
        round_trips: usize,
        /// How many times the six paths are measured; the report shows
        /// medians.
        #[arg(long, default_value_t = Config::default().rounds)]
        rounds: usize,
    },
    /// Latency through the gateway while exposures change every 10 ms,
    /// against the same without changes; writes reports/bench-exposure.md.
    Exposure {
        /// Build in debug mode instead of release (numbers not meaningful).
        #[arg(long)]
        debug: bool,
        /// How many round trips each latency test records.
        #[arg(long, default_value_t = hoplab_sim::bench::dataplane::ExposureConfig::default().round_trips)]
        round_trips: usize,
        /// How many rounds (each without changes, with them, and under the
        /// same netlink work and nft processes without the gateway); the
        /// report shows medians.
        #[arg(long, default_value_t = hoplab_sim::bench::dataplane::ExposureConfig::default().rounds)]
        rounds: usize,
        /// An exposure change every this many milliseconds.
        #[arg(long, default_value_t = hoplab_sim::bench::dataplane::ExposureConfig::default().churn_ms)]
        churn_ms: u64,
    },
    /// The trace of synthetic captures of N frames: frames/s and peak
    /// memory; writes reports/bench-trace.md.
    Trace {
        /// The capture sizes, in frames, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        frames: Vec<usize>,
        /// Build in debug mode instead of release (numbers not meaningful).
        #[arg(long)]
        debug: bool,
    },
    /// Requests/s and p50/p99 latency through HAProxy (HTTP, TLS edge,
    /// TLS re-encrypt) beside the same requests straight to the server,
    /// in one run.
    L7 {
        /// Build in debug mode instead of release (numbers not meaningful).
        #[arg(long)]
        debug: bool,
        /// Requests per measurement, each on a new connection.
        #[arg(long, default_value_t = l7::Config::default().requests)]
        requests: usize,
        /// How many times the six targets are measured; the report shows
        /// medians.
        #[arg(long, default_value_t = l7::Config::default().rounds)]
        rounds: usize,
        /// A measurement stops after this many seconds, whatever its count.
        #[arg(long, default_value_t = l7::Config::default().max_secs)]
        max_secs: f64,
        /// Requests per target in a last round with the lab captured (0:
        /// none).
        #[arg(long, default_value_t = l7::Config::default().capture_requests)]
        capture_requests: usize,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the
/// workspace root, where cargo is run), else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => root().join("target"),
    }
}

/// Build the hoplab binary and return its path.
fn build_hoplab(release: bool) -> Result<PathBuf> {
    build(release, &["--bin", "hoplab"])
}

/// Build every binary of the hoplab package (hoplab and the net manager it
/// starts from the same folder) and return hoplab's path.
fn build_hoplab_bins(release: bool) -> Result<PathBuf> {
    build(release, &["--bins"])
}

fn build(release: bool, which: &[&str]) -> Result<PathBuf> {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .args(["build", "--quiet", "--package", "hoplab"])
        .args(which);
    if release {
        c.arg("--release");
    }
    let st = c.status().context("running cargo build")?;
    if !st.success() {
        bail!("cargo build of hoplab failed");
    }
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("hoplab"))
}

/// Copy wireshark/profile/ to `dir` (or the user's Wireshark profile
/// folder `hoplab`) and say how to use it.
fn wireshark_profile(dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let config = match std::env::var_os("XDG_CONFIG_HOME") {
                Some(c) if !c.is_empty() => PathBuf::from(c),
                _ => PathBuf::from(
                    std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?,
                )
                .join(".config"),
            };
            config.join("wireshark/profiles/hoplab")
        }
    };
    let src = root().join("wireshark/profile");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for e in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        if let Some(name) = p.file_name() {
            std::fs::copy(&p, dir.join(name))
                .with_context(|| format!("copying {} to {}", p.display(), dir.display()))?;
        }
    }
    println!(
        "{}: the hoplab profile. Choose it in Wireshark (Edit > Configuration Profiles > hoplab) \
         or run `tshark -C hoplab -r CAPTURE`.",
        dir.display()
    );
    Ok(())
}

/// An expected failure (a snapshot difference, an unmet expectation) is
/// one `error:` line and exit status 1, whatever RUST_BACKTRACE says.
fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    // Internal: one chain benchmark in a process of its own.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(bench::ONE_CHAIN) {
        let [_, _, hosts, hoplab] = &args[..] else {
            bail!("usage: xtask {} N HOPLAB", bench::ONE_CHAIN);
        };
        return bench::one_chain(hosts, hoplab);
    }
    match Cli::parse().cmd {
        Cmd::Scenario {
            names,
            accept,
            release,
            junit,
            quiet,
            verbose,
        } => scenario::run(scenario::Options {
            names,
            accept,
            release,
            // Relative to where cargo was run from, as a user means it.
            junit: junit.map(|j| std::env::current_dir().unwrap_or_default().join(j)),
            quiet,
            verbose,
        }),
        Cmd::Reports => {
            let n = reports::regenerate()?;
            println!(
                "{}: {n} files changed",
                root().join(hoplab_sim::report::COMMITTED_DIR).display()
            );
            Ok(())
        }
        Cmd::Bench {
            what: Bench::Harness { hosts },
        } => bench::harness(hosts),
        Cmd::Bench {
            what:
                Bench::Dataplane {
                    release: _,
                    debug,
                    secs,
                    round_trips,
                    rounds,
                },
        } => bench::dataplane(!debug, secs, round_trips, rounds),
        Cmd::Bench {
            what:
                Bench::Exposure {
                    debug,
                    round_trips,
                    rounds,
                    churn_ms,
                },
        } => bench::exposure(!debug, round_trips, rounds, churn_ms),
        Cmd::Bench {
            what:
                Bench::L7 {
                    debug,
                    requests,
                    rounds,
                    max_secs,
                    capture_requests,
                },
        } => bench_l7::run(&bench_l7::Options {
            release: !debug,
            requests,
            rounds,
            max_secs,
            capture_requests,
        }),
        Cmd::Bench {
            what: Bench::Trace { frames, debug },
        } => bench_trace::run(&frames, !debug),
        Cmd::Fuzz { seed, .. } if !seed.is_empty() => fuzz::seed(&seed),
        Cmd::Fuzz {
            secs,
            merge,
            cmin,
            report,
            seed: _,
            targets,
        } => fuzz::run(fuzz::Options {
            secs,
            report,
            merge,
            cmin,
            targets,
        }),
        Cmd::WiresharkProfile { dir } => wireshark_profile(dir),
        Cmd::Soak {
            rounds,
            load,
            max_secs,
            jobs,
            names,
        } => soak::run(soak::Options {
            rounds,
            load,
            max_secs,
            jobs: usize::from(jobs),
            names,
        }),
        Cmd::Clean => {
            let p = root().join("target/scenarios");
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    /// `wireshark-profile --dir` installs every file of wireshark/profile/
    /// byte for byte (tests/cli.rs reads a capture with such a copy).
    #[test]
    fn the_wireshark_profile_is_installed_whole() {
        let dir = std::env::temp_dir().join(format!("hoplab-profile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        super::wireshark_profile(Some(dir.join("profiles/hoplab"))).unwrap();
        let src = super::root().join("wireshark/profile");
        let mut files = 0;
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            let copy = dir.join("profiles/hoplab").join(p.file_name().unwrap());
            assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&copy).unwrap());
            files += 1;
        }
        assert!(files >= 2, "{files} profile files");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
