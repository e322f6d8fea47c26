//! `hoplab`: run a scenario in its own namespaces, trace a capture, check a
//! scenario file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hoplab_sim::bench::{dataplane, l7};
use hoplab_sim::lab::sandbox;
use hoplab_sim::scenario::LoadError;
use hoplab_sim::{oakestra, run, snapshot, trace};

#[derive(Parser)]
#[command(
    name = "hoplab",
    version,
    about = "What does the gateway do to packets? Scenarios in namespaces, per-hop traces."
)]
struct Cli {
    /// Print only errors: no progress lines, no logs below error.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More log detail: -v info, -vv debug, -vvv trace (RUST_LOG, when
    /// set, chooses instead).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a scenario in fresh namespaces, run its traffic, capture and trace it.
    Run {
        /// The scenario: a name (scenarios/NAME.yaml below the current
        /// directory) or the path of a .yaml file.
        #[arg(value_name = "SCENARIO")]
        scenario: String,
        /// Where to write capture.pcapng, trace.yaml, report.md,
        /// report.html and logs/ (NAME is the scenario's name).
        #[arg(long, value_name = "DIR", default_value = "target/scenarios/NAME")]
        out: String,
    },
    /// Check scenarios and report every problem with file, line and field.
    Validate {
        /// Scenarios to check, each a name (scenarios/NAME.yaml) or the
        /// path of a .yaml file [default: every scenario of scenarios/].
        #[arg(value_name = "SCENARIO")]
        scenarios: Vec<String>,
    },
    /// Trace a capture: the per-hop trace (YAML, on stdout) of a pcapng
    /// written by a run, or of any pcapng or pcap file. With the scenario it
    /// came from, packets are grouped by traffic step and ordered along the
    /// scenario's wiring; without, every packet is listed on its own.
    ///
    /// A damaged capture (cut short, or partly corrupt) is traced up to the
    /// damage: the trace's `skipped.damage` and a warning on stderr name
    /// each damaged block's byte offset and what is wrong with it.
    ///
    /// Exit status: 0, the whole capture was read; 3, the capture is
    /// damaged (the trace of every packet before the damage is written all
    /// the same); 2, the file cannot be read or is not a capture.
    Trace {
        /// A pcapng or pcap file.
        capture: PathBuf,
        /// The scenario the capture came from: a name (scenarios/NAME.yaml)
        /// or the path of a .yaml file.
        #[arg(long, value_name = "SCENARIO")]
        scenario: Option<String>,
    },
    /// Write report.md and report.html for a run's directory, a trace.yaml,
    /// or a capture (traced first, as `hoplab trace` does).
    ///
    /// Exit status: 0, the reports are written; 3, they are written, but
    /// the capture is damaged (traced up to the damage; the reports and a
    /// warning on stderr say where and why); 2, nothing could be written.
    Report {
        /// A run's output directory, a trace.yaml, or a pcapng/pcap file.
        input: PathBuf,
        /// The scenario a capture came from (captures only): a name
        /// (scenarios/NAME.yaml) or the path of a .yaml file.
        #[arg(long, value_name = "SCENARIO")]
        scenario: Option<String>,
        /// Where to write report.md and report.html [default: beside the
        /// input].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g.
    /// `hoplab completions bash > /etc/bash_completion.d/hoplab`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
    /// Build a chain of N hosts, ping across its ends, tear it down; print
    /// the timings as one line of JSON.
    #[command(name = "__bench-chain", hide = true)]
    BenchChain {
        /// How many hosts the chain has.
        hosts: usize,
    },
    /// Measure throughput, latency and new-connection rate through six
    /// paths (kernel, kernel DNAT, net manager local, net manager over the
    /// tunnel, gateway, kernel DNAT on the gateway node); print the results
    /// as one line of JSON.
    #[command(name = "__bench-dataplane", hide = true)]
    BenchDataplane {
        /// Where the run's logs and net manager counters go.
        #[arg(long, default_value = "target/bench-dataplane")]
        out: PathBuf,
        /// Bulk send time per measurement, seconds.
        #[arg(long, default_value_t = dataplane::Config::default().secs)]
        secs: f64,
        /// Recorded round trips per latency measurement.
        #[arg(long, default_value_t = dataplane::Config::default().round_trips)]
        round_trips: usize,
        /// Rounds over the six paths (medians are reported).
        #[arg(long, default_value_t = dataplane::Config::default().rounds)]
        rounds: usize,
        /// Veth settings to measure with, each round: `harness` (one
        /// segment per GSO packet, as scenarios run), `gso` (the kernel's
        /// default).
        #[arg(long, value_delimiter = ',', default_value = "harness,gso")]
        veths: Vec<String>,
    },
    /// p50/p99 latency through the gateway with and without exposure
    /// changes every `churn_ms`; print the results as one line of JSON.
    #[command(name = "__bench-exposure", hide = true)]
    BenchExposure {
        /// Where the run's logs go.
        #[arg(long, default_value = "target/bench-exposure")]
        out: PathBuf,
        /// Recorded round trips per latency measurement.
        #[arg(long, default_value_t = dataplane::ExposureConfig::default().round_trips)]
        round_trips: usize,
        /// Rounds (each with and without changes; medians are reported).
        #[arg(long, default_value_t = dataplane::ExposureConfig::default().rounds)]
        rounds: usize,
        /// An exposure change every this many milliseconds.
        #[arg(long, default_value_t = dataplane::ExposureConfig::default().churn_ms)]
        churn_ms: u64,
    },
    /// Requests/s and p50/p99 latency through HAProxy (HTTP, TLS edge, TLS
    /// re-encrypt) beside the same requests straight to the server; print
    /// the results as one line of JSON.
    #[command(name = "__bench-l7", hide = true)]
    BenchL7 {
        /// Where the run's logs and host directories go.
        #[arg(long, default_value = "target/bench-l7")]
        out: PathBuf,
        /// Requests per measurement (each on a new connection).
        #[arg(long, default_value_t = l7::Config::default().requests)]
        requests: usize,
        /// Rounds over the six targets (medians are reported).
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
    /// Build the trace of a synthetic capture of about N frames (a load
    /// step's TCP flows); print the time and peak memory as one line of
    /// JSON.
    #[command(name = "__bench-trace", hide = true)]
    BenchTrace {
        /// How many frames the capture has (rounded to whole flows).
        frames: usize,
    },
    /// The built-in echo server (started by scenarios; not for direct use).
    #[command(name = "__echo", hide = true)]
    Echo {
        /// A TCP port to echo on (repeatable).
        #[arg(long, value_name = "PORT")]
        tcp: Vec<u16>,
        /// A UDP port to echo on (repeatable).
        #[arg(long, value_name = "PORT")]
        udp: Vec<u16>,
    },
    /// The built-in HTTP(S)/WebSocket server (started by scenarios; not for
    /// direct use). Its options are `hoplab_sim::l7::server::ServerOpts`'s.
    #[command(name = "__http", hide = true)]
    Http {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The built-in DNS responder (started by scenarios; not for direct
    /// use): `--port P --record NAME=ADDR ...`.
    #[command(name = "__dns", hide = true)]
    Dns {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
        /// The protocol of the exposed port.
        #[arg(value_parser = ["tcp", "udp"])]
        proto: String,
        /// The port of the gateway's public address to expose.
        port: u16,
        /// The service it leads to: service IP and port, e.g.
        /// 10.30.1.1:80 or [fdff::1]:80.
        service: std::net::SocketAddr,
    },
    /// Stop exposing PORT (and drop its flows).
    Unexpose {
        /// The protocol of the exposed port.
        #[arg(value_parser = ["tcp", "udp"])]
        proto: String,
        /// The exposed port of the gateway's public address.
        port: u16,
        /// The IPv6 exposure of that port, not the IPv4 one.
        #[arg(long)]
        v6: bool,
    },
    /// Answer ICMP echo to the public address from SERVICE (a service IP).
    ExposeIcmp {
        /// The service IP echo requests go to, e.g. 10.30.1.1 or fdff::1.
        service: std::net::IpAddr,
    },
    /// Stop exposing ICMP echo (and drop its flows).
    UnexposeIcmp {
        /// The IPv6 echo exposure, not the IPv4 one.
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
            GatewayOp::ExposeIcmp { service } => format!("expose icmp {service}"),
            GatewayOp::UnexposeIcmp { v6 } => {
                format!("unexpose icmp{}", if *v6 { " v6" } else { "" })
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hoplab_sim::progress::set_quiet(cli.quiet);
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
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
            eprintln!("error: {}", message(&e));
            // An interrupted run exits as the signal would have ended it.
            match (e.downcast_ref::<hoplab_sim::Error>(), sandbox::signal()) {
                (Some(hoplab_sim::Error::Interrupted), Some(sig)) => {
                    ExitCode::from(sandbox::exit_status(sig))
                }
                _ => ExitCode::from(2),
            }
        }
    }
}

/// `e` and its causes, `: `-separated, leaving out a cause whose text the
/// message already holds (errors that print their source themselves).
fn message(e: &anyhow::Error) -> String {
    let mut m = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if m.contains(&c) {
            continue;
        }
        if !m.is_empty() {
            m.push_str(": ");
        }
        m.push_str(&c);
    }
    m
}

/// The scenario `arg` names: a name (`scenarios/NAME.yaml` below the
/// current directory) or a path.
fn find_scenario(arg: &str) -> anyhow::Result<snapshot::Named> {
    Ok(snapshot::find(std::path::Path::new(""), arg)?)
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

/// `hoplab run`: check the scenario before making any namespace, then
/// run it in the sandbox.
fn run_scenario(arg: &str, out: &str) -> anyhow::Result<ExitCode> {
    let named = find_scenario(arg)?;
    let file = named.file.as_path();
    let sc = oakestra::load(file)?;
    sandbox::check(&sc)?;
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

/// `hoplab validate`: every file checked, each error on its own line of
/// stderr (file:line:col field: message), then the file's count.
fn validate(args: &[String]) -> anyhow::Result<ExitCode> {
    let named = if args.is_empty() {
        snapshot::all(std::path::Path::new(""))?
    } else {
        let mut v = Vec::new();
        for a in args {
            v.push(find_scenario(a)?);
        }
        v
    };
    if named.is_empty() {
        bail!("no scenario in scenarios/: name a scenario file");
    }
    let mut bad = 0;
    for n in &named {
        let f = &n.file;
        match oakestra::load(f) {
            Ok(_) => println!("{}: ok", f.display()),
            Err(LoadError::Invalid(errors)) => {
                eprintln!("{errors}");
                let n = errors.count();
                eprintln!(
                    "{}: {n} error{}",
                    f.display(),
                    if n == 1 { "" } else { "s" }
                );
                bad += 1;
            }
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

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run {
            scenario: file,
            out,
        } => run_scenario(&file, &out),

        Cmd::Validate { scenarios } => validate(&scenarios),
        Cmd::Trace { capture, scenario } => {
            let t = trace_capture(&capture, scenario.as_deref())?;

            print!("{}", t.to_yaml());
            Ok(warn_skipped(&capture, &t))
        }
        Cmd::Report {
            input,
            scenario,
            out,
        } => report(&input, scenario.as_deref(), out),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "hoplab", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gateway { control, op } => {
            let line = op.line();
            let answer = hoplab_sim::lab::gateway_ctl::control(&control, &line)
                .with_context(|| format!("gateway at {}: `{line}`", control.display()))?;
            print!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchChain { hosts } => bench_chain(hosts),
        Cmd::BenchTrace { frames } => {
            let r = hoplab_sim::bench::trace::run(frames).map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BenchDataplane {
            out,
            secs,
            round_trips,
            rounds,
            veths,
        } => bench_dataplane(out, secs, round_trips, rounds, &veths),
        Cmd::BenchExposure {
            out,
            round_trips,
            rounds,
            churn_ms,
        } => bench_exposure(
            &out,
            dataplane::ExposureConfig {
                round_trips,
                rounds,
                churn_ms,
            },
        ),
        Cmd::BenchL7 {
            out,
            requests,
            rounds,
            max_secs,
            capture_requests,
        } => bench_l7(
            &out,
            l7::Config {
                requests,
                rounds,
                max_secs,
                capture_requests,
                ..l7::Config::default()
            },
        ),
        Cmd::Echo { tcp, udp } => {
            hoplab_sim::lab::echo::serve(&tcp, &udp).context("echo server")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Http { args } => {
            hoplab_sim::l7::server::main(&args).context("HTTP server")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dns { args } => {
            let (port, records) = hoplab_sim::l7::dns::parse_args(&args).context("DNS server")?;
            hoplab_sim::l7::dns::serve(port, records).context("DNS server")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hoplab report`: report.md and report.html for a run's directory, a
/// trace.yaml, or a capture.
fn report(
    input: &std::path::Path,
    scenario: Option<&str>,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (tr, dir, capture) = if input.is_dir() {
        let t = input.join("trace.yaml");
        (
            read_trace(&t)?,
            input.to_path_buf(),
            "capture.pcapng".to_string(),
        )
    } else if input.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        let dir = input.parent().map(PathBuf::from).unwrap_or_default();
        (read_trace(input)?, dir, "capture.pcapng".to_string())
    } else {
        let dir = input.parent().map(PathBuf::from).unwrap_or_default();
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (trace_capture(input, scenario)?, dir, name)
    };
    let out = out.unwrap_or(dir);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (file, text) in [
        (
            "report.md",
            hoplab_sim::report::markdown(&tr, std::path::Path::new(&capture)),
        ),
        (
            "report.html",
            hoplab_sim::report::html::report(&tr, &capture),
        ),
    ] {
        let p = out.join(file);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("{}", p.display());
    }
    Ok(warn_skipped(input, &tr))
}

/// Exit status of `hoplab trace` and `hoplab report` when the capture is
/// damaged: the output is written, but holds only what came before the
/// damage.
const DAMAGED: u8 = 3;

/// A warning on stderr (unless quiet) for each thing the trace of `input`
/// leaves out; the exit status: [`DAMAGED`] if the capture is damaged.
fn warn_skipped(input: &std::path::Path, t: &trace::Trace) -> ExitCode {
    if !hoplab_sim::progress::quiet() {
        for w in t.skipped.warnings() {
            eprintln!("warning: {}: {w}", input.display());
        }
    }
    if t.skipped.damage.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DAMAGED)
    }
}

/// The trace of a capture, for its scenario if one is given.
fn trace_capture(
    capture: &std::path::Path,
    scenario: Option<&str>,
) -> anyhow::Result<trace::Trace> {
    let sc = match scenario {
        Some(arg) => oakestra::load(&find_scenario(arg)?.file)?,
        None => {
            let name = capture
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "capture".into());
            oakestra::parse(capture, &name, "version: 1\n")
                .context("the empty scenario of a bare capture")?
        }
    };
    let file = hoplab_sim::capture::read(capture)?;
    let mut lab = trace::LabView::of(&sc);
    // The capture's own key log (a Decryption Secrets Block) decrypts its TLS.
    lab.tls_keys = trace::KeyLog::parse(&file.tls_keys);
    // And its drop verdicts (a section comment of a run's pcapng).
    lab.drops = file.verdicts.unwrap_or_default();
    let mut t = trace::build(&lab, &file.frames, &[]);
    t.skipped.damage = file.damage;
    Ok(t)
}

fn read_trace(path: &std::path::Path) -> anyhow::Result<trace::Trace> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    trace::Trace::from_yaml(&text)
        .with_context(|| format!("{}: not a hoplab trace", path.display()))
}

/// `__bench-chain`: in the sandbox, the chain benchmark of `hosts` hosts;
/// its timings on stdout as one line of JSON.
fn bench_chain(hosts: usize) -> anyhow::Result<ExitCode> {
    if let Some(code) = enter_sandbox()? {
        return Ok(code);
    }
    let t = hoplab_sim::bench::chain::run(hosts)?;
    println!("{}", serde_json::to_string(&t)?);
    Ok(ExitCode::SUCCESS)
}

/// `__bench-dataplane`: in the sandbox, the dataplane benchmark; its
/// results on stdout as one line of JSON.
fn bench_dataplane(
    out: PathBuf,
    secs: f64,
    round_trips: usize,
    rounds: usize,
    veths: &[String],
) -> anyhow::Result<ExitCode> {
    use dataplane::{Config, Veths};
    let veths = veths
        .iter()
        .map(|k| {
            Veths::from_key(k).with_context(|| format!("--veths: `{k}` is neither harness nor gso"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    sandbox::check(&dataplane::scenario())?;
    if let Some(code) = enter_sandbox()? {
        return Ok(code);
    }
    let cfg = Config {
        secs,
        round_trips,
        rounds,
        veths,
    };
    let r = dataplane::run(&cfg, &out)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}

/// `__bench-exposure`: in the sandbox, the exposure-change benchmark; its
/// results on stdout as one line of JSON.
fn bench_exposure(
    out: &std::path::Path,
    cfg: dataplane::ExposureConfig,
) -> anyhow::Result<ExitCode> {
    sandbox::check(&dataplane::scenario())?;
    if let Some(code) = enter_sandbox()? {
        return Ok(code);
    }
    let r = dataplane::run_exposure(&cfg, out, &netlink_changer)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}

/// The exposure bench's netlink control: the gateway's set change
/// ([`hoplab::shell::nfnetlink`]) on the bench's own table, with a socket
/// opened in the calling thread's namespace.
fn netlink_changer() -> Result<dataplane::NetlinkChanger, String> {
    use hoplab::shell::nfnetlink::{SetElem, SetOp, Socket, NFPROTO_INET};
    let mut sock =
        Socket::open().map_err(|e| format!("opening a NETLINK_NETFILTER socket: {e}"))?;
    let port = dataplane::CHURN_PORT;
    Ok(Box::new(move |add| {
        let e = SetElem {
            set: dataplane::CHURN_SET.into(),
            key: port.to_be_bytes().to_vec(),
            shown: port.to_string(),
        };
        let op = if add { SetOp::Add } else { SetOp::Delete };
        sock.change_set(op, NFPROTO_INET, dataplane::CHURN_TABLE, &[e])
            .map_err(|e| e.to_string())
    }))
}

/// `__bench-l7`: in the sandbox, the L7 benchmark; its results on stdout
/// as one line of JSON.
fn bench_l7(out: &std::path::Path, cfg: l7::Config) -> anyhow::Result<ExitCode> {
    sandbox::check(&l7::scenario())?;
    if let Some(code) = enter_sandbox()? {
        return Ok(code);
    }
    let r = l7::run(&cfg, out)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(ExitCode::SUCCESS)
}
