//! `hoplab`: run a scenario in its own namespaces, trace a capture, check a
//! scenario file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hoplab_sim::{run, sandbox, scenario, trace};

#[derive(Parser)]
#[command(
    name = "hoplab",
    version,
    about = "What does the gateway do to packets? Scenarios in namespaces, per-hop traces."
)]
struct Cli {
    /// Print only errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a scenario in fresh namespaces, run its traffic, capture and trace it.
    Run {
        /// The scenario file (scenarios/NAME.yaml).
        scenario: PathBuf,
        /// Where to write capture.pcapng, trace.yaml, report.md and logs/.
        #[arg(long, default_value = "target/scenarios/NAME")]
        out: String,
    },
    /// Check a scenario file and report every problem with file, line and field.
    Validate { scenarios: Vec<PathBuf> },
    /// Trace a pcapng written by a run, for the scenario it came from.
    Trace {
        pcapng: PathBuf,
        #[arg(long)]
        scenario: PathBuf,
    },
    /// Talk to a running gateway through its control socket
    /// (`<out>/ctl/gw-<node>.sock` of a run): read its counters, Forward
    /// table and exposures, or change what it exposes.
    Gateway {
        /// The gateway's control socket.
        #[arg(long, value_name = "PATH")]
        control: PathBuf,
        #[command(subcommand)]
        op: GatewayOp,
    },
    /// Build a chain of N hosts, ping across its ends, tear it down; print timings.
    #[command(name = "__bench-chain", hide = true)]
    BenchChain { hosts: usize },
    /// Measure throughput, latency and new-connection rate through six
    /// paths (kernel, kernel DNAT, net manager local, net manager over the
    /// tunnel, gateway, kernel DNAT on the gateway node); print one line
    /// per path.
    #[command(name = "__bench-dataplane", hide = true)]
    BenchDataplane {
        /// Where the run's logs and net manager counters go.
        #[arg(long, default_value = "target/bench-dataplane")]
        out: PathBuf,
        /// Bulk send time per measurement, seconds.
        #[arg(long, default_value_t = 0.8)]
        secs: f64,
        /// Recorded round trips per latency measurement.
        #[arg(long, default_value_t = 2000)]
        round_trips: usize,
        /// Rounds over the six paths (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Veth settings to measure with, each round: `harness` (one
        /// segment per GSO packet, as scenarios run), `gso` (the kernel's
        /// default).
        #[arg(long, value_delimiter = ',', default_value = "harness,gso")]
        veths: Vec<String>,
    },
    /// The built-in echo server (started by scenarios; not for direct use).
    #[command(name = "__echo", hide = true)]
    Echo {
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
    },
}

#[derive(Subcommand)]
enum GatewayOp {
    /// The gateway's counters and its firewall's.
    Counters,
    /// The Forward table.
    Flows,
    /// The Exposed Services table.
    Exposures,
    /// Expose PORT of the public address as SERVICE (a service IP and port).
    Expose {
        #[arg(value_parser = ["tcp", "udp"])]
        proto: String,
        port: u16,
        service: std::net::SocketAddr,
    },
    /// Stop exposing PORT (and drop its flows).
    Unexpose {
        #[arg(value_parser = ["tcp", "udp"])]
        proto: String,
        port: u16,
        /// The IPv6 exposure of that port, not the IPv4 one.
        #[arg(long)]
        v6: bool,
    },
}

impl GatewayOp {
    fn line(&self) -> String {
        match self {
            GatewayOp::Counters => "counters".into(),
            GatewayOp::Flows => "flows".into(),
            GatewayOp::Exposures => "exposures".into(),
            GatewayOp::Expose {
                proto,
                port,
                service,
            } => format!("expose {proto} {port} {service}"),
            GatewayOp::Unexpose { proto, port, v6 } => {
                format!("unexpose {proto} {port}{}", if *v6 { " v6" } else { "" })
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = if cli.quiet { "error" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_target(false)
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Outside the sandbox: run this same command inside one and return its
/// exit code. Inside: set the sandbox up and return None, to go on.
fn enter_sandbox() -> anyhow::Result<Option<ExitCode>> {
    if !sandbox::inside() {
        let code = sandbox::reexec().context("entering the sandbox")?;
        return Ok(Some(ExitCode::from(code.clamp(0, 255) as u8)));
    }
    sandbox::init().context("setting up the sandbox")?;
    Ok(None)
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run {
            scenario: file,
            out,
        } => {
            // Validate before making any namespace.
            let sc = scenario::load(&file)?;
            if let Some(code) = enter_sandbox()? {
                return Ok(code);
            }
            let out = PathBuf::from(out.replace("NAME", &sc.name));
            let o = run::run(&sc, &out).with_context(|| format!("scenario {}", file.display()))?;
            println!(
                "{}: {} flows traced; {}",
                sc.name,
                o.trace.flows.len(),
                out.display()
            );
            if !o.unmet.is_empty() {
                for u in &o.unmet {
                    eprintln!("unmet expectation: {u}");
                }
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate { scenarios } => {
            if scenarios.is_empty() {
                bail!("name at least one scenario file");
            }
            let mut bad = 0;
            for f in &scenarios {
                match scenario::load(f) {
                    Ok(_) => println!("{}: ok", f.display()),
                    Err(e) => {
                        eprintln!("{e}");
                        bad += 1;
                    }
                }
            }
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Trace {
            pcapng,
            scenario: file,
        } => {
            let sc = scenario::load(&file)?;
            let frames = trace::read_pcapng(&pcapng)?;
            print!("{}", trace::build(&sc, &frames, &[]).to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gateway { control, op } => {
            let line = op.line();
            let answer = hoplab_sim::gateway::control(&control, &line)
                .with_context(|| format!("gateway at {}: `{line}`", control.display()))?;
            print!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchChain { hosts } => {
            if let Some(code) = enter_sandbox()? {
                return Ok(code);
            }
            let b = run::bench_chain(hosts)?;
            println!(
                "bare_ms={:.1} build_ms={:.1} traffic_ms={:.1} teardown_ms={:.1}",
                b.bare_ms, b.build_ms, b.traffic_ms, b.teardown_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchDataplane {
            out,
            secs,
            round_trips,
            rounds,
            veths,
        } => {
            use hoplab_sim::dataplane_bench::{Config, Veths};
            let veths = veths
                .iter()
                .map(|k| {
                    Veths::from_key(k)
                        .with_context(|| format!("--veths: `{k}` is neither harness nor gso"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(code) = enter_sandbox()? {
                return Ok(code);
            }
            let cfg = Config {
                secs,
                round_trips,
                rounds,
                veths,
            };
            let r = hoplab_sim::dataplane_bench::run(&cfg, &out)?;
            print!("{}", r.to_lines());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Echo { tcp, udp } => {
            hoplab_sim::echo::serve(&tcp, &udp).context("echo server")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
