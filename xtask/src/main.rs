//! `cargo xtask`: the project's build system.
//!
//! * `scenario [NAME...] [--accept] [--junit FILE] [-q|-v]`: run scenarios,
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
//! * `clean`: remove target/scenarios.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod junit;
mod pending;
mod reports;
mod scenario;

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
    /// Throughput, latency and connection rate through the kernel, kernel
    /// DNAT, the net manager, the tunnel, the gateway and a kernel-only
    /// gateway node, in one run.
    Dataplane {
        /// Build in release mode (the default).
        #[arg(long)]
        release: bool,
        /// Build in debug mode instead (numbers not meaningful).
        #[arg(long, conflicts_with = "release")]
        debug: bool,
        /// Bulk send time per measurement, seconds.
        #[arg(long, default_value_t = 0.8)]
        secs: f64,
        /// Recorded round trips per latency measurement.
        #[arg(long, default_value_t = 2000)]
        round_trips: usize,
        /// Rounds over the six paths (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
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

/// One `path=` line of `hoplab __bench-dataplane`.
struct DpRow {
    path: String,
    veths: String,
    client: String,
    dialled: String,
    sink_port: String,
    echo_port: String,
    gbps: f64,
    p50: f64,
    p99: f64,
    /// New connections per second, on the paths that measure it.
    conn: Option<f64>,
    gbps_rounds: String,
    p50_rounds: String,
    p99_rounds: String,
    conn_rounds: Option<String>,
}

fn dp_field(line: &str, k: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")))
        .map(str::to_string)
}

fn dp_rows(text: &str) -> Result<Vec<DpRow>> {
    let mut rows = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("path=")) {
        let s = |k: &str| dp_field(l, k).with_context(|| format!("no {k}= in {l:?}"));
        let n = |k: &str| -> Result<f64> {
            s(k)?
                .parse()
                .with_context(|| format!("{k}= is not a number in {l:?}"))
        };
        rows.push(DpRow {
            path: s("path")?,
            veths: s("veths")?,
            client: s("client")?,
            dialled: s("dialled")?,
            sink_port: s("sink_port")?,
            echo_port: s("echo_port")?,
            gbps: n("gbps")?,
            p50: n("p50_us")?,
            p99: n("p99_us")?,
            conn: dp_field(l, "conn_per_s")
                .map(|_| n("conn_per_s"))
                .transpose()?,
            gbps_rounds: s("gbps_rounds")?,
            p50_rounds: s("p50_rounds")?,
            p99_rounds: s("p99_rounds")?,
            conn_rounds: dp_field(l, "conn_rounds"),
        });
    }
    Ok(rows)
}

/// The paths from `web-0`, compared with (a).
const DP_PATHS_INSIDE: [(&str, &str); 4] = [
    ("a", "kernel: n1's bridge, namespace IP"),
    ("b", "kernel nftables DNAT on n1 (virtual IP)"),
    ("c", "net manager, instance on the same node (service IP)"),
    (
        "d",
        "net manager, instance on n2 via the UDP tunnel (service IP)",
    ),
];

/// The paths from the external client, compared with (f).
const DP_PATHS_OUTSIDE: [(&str, &str); 2] = [
    (
        "e",
        "gateway: public address, exposed ports → gateway → net manager → tunnel → remote-0 on n2",
    ),
    (
        "f",
        "kernel DNAT on gw: public address, other ports → remote-0's namespace IP over the underlay",
    ),
];

const DP_VETHS: [(&str, &str); 2] = [
    (
        "harness",
        "Veths as the harness makes them (one segment per GSO packet)",
    ),
    (
        "gso",
        "Veths with the kernel's default GSO (64 KiB packets), switched on in the same run",
    ),
];

fn bench_dataplane(release: bool, secs: f64, round_trips: usize, rounds: usize) -> Result<()> {
    let bin = build_hoplab_bins(release)?;
    let out = target_dir().join("bench-dataplane");
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let t = Instant::now();
    let run = Command::new(&bin)
        .args(["-q", "__bench-dataplane", "--out"])
        .arg(&out)
        .args([
            "--secs",
            &secs.to_string(),
            "--round-trips",
            &round_trips.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--veths",
            "harness,gso",
        ])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let total = t.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "the dataplane benchmark failed ({}): {}(logs: {})",
            run.status,
            String::from_utf8_lossy(&run.stderr),
            out.join("logs").display()
        );
    }
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    let rows = dp_rows(&text)?;
    let find = |v: &str, p: &str| -> Result<&DpRow> {
        rows.iter()
            .find(|r| r.veths == v && r.path == p)
            .with_context(|| format!("no result for path ({p}) with {v} veths in:\n{text}"))
    };
    let conn = |r: &DpRow| -> Result<f64> {
        r.conn
            .with_context(|| format!("no connection rate for path ({}) in:\n{text}", r.path))
    };
    let ratio_ca = |v: &str| -> Result<f64> { Ok(find(v, "c")?.gbps / find(v, "a")?.gbps) };
    let (ca_harness, ca_gso) = (ratio_ca("harness")?, ratio_ca("gso")?);
    // (e) ÷ (f): throughput, p50, p99, new connections per second.
    let ratio_ef = |v: &str| -> Result<[f64; 4]> {
        let (e, f) = (find(v, "e")?, find(v, "f")?);
        Ok([
            e.gbps / f.gbps,
            e.p50 / f.p50,
            e.p99 / f.p99,
            conn(e)? / conn(f)?,
        ])
    };
    let (ef_harness, ef_gso) = (ratio_ef("harness")?, ratio_ef("gso")?);

    let mut md = String::from(
        "# Dataplane benchmark: kernel, kernel DNAT, net manager, tunnel, gateway\n\n\
         `cargo xtask bench dataplane` measures, in one run (one process, one machine \
         moment), TCP throughput, request/response latency and, where noted, the \
         new-connection rate through six paths to servers of the same kind: four from \
         the client instance `web-0` on worker node n1, compared with path (a), the \
         kernel bridging; two from the external host `client`, through the router and \
         the gateway node's public address to `remote-0` on n2, compared with path (f), \
         the gateway node's kernel doing the DNAT and the routing. Every ratio is against \
         a baseline measured in the same run with the same veths.\n\n\
         Target: (c) throughput ÷ (a) throughput at least 0.5.\n\n",
    );
    let _ = writeln!(
        md,
        "| veths | (c) ÷ (a) throughput | (e) ÷ (f) throughput | (e) ÷ (f) p50 latency | \
         (e) ÷ (f) p99 latency | (e) ÷ (f) new connections/s |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (label, ca, ef) in [
        (
            "harness (one segment per GSO packet)",
            ca_harness,
            ef_harness,
        ),
        ("kernel default (GSO)", ca_gso, ef_gso),
    ] {
        let _ = writeln!(
            md,
            "| {label} | **{ca:.2}** ({}) | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** |",
            met(ca),
            ef[0],
            ef[1],
            ef[2],
            ef[3]
        );
    }
    let _ = writeln!(
        md,
        "\nThroughput and connection rate: higher is better, so a ratio below 1 is the \
         path's cost. Latency: lower is better, so a ratio above 1 is its cost."
    );
    let dialled = |r: &DpRow| format!("`{}:{}/{}`", r.dialled, r.sink_port, r.echo_port);
    let conn_cell = |r: &DpRow| {
        r.conn
            .map(|c| format!("{c:.0}"))
            .unwrap_or_else(|| "—".into())
    };
    for (v, title) in DP_VETHS {
        let _ = writeln!(md, "\n## {title}");
        for (paths, base, heading) in [
            (
                &DP_PATHS_INSIDE[..],
                "a",
                "From `web-0` on n1, ratios against (a)",
            ),
            (
                &DP_PATHS_OUTSIDE[..],
                "f",
                "From the external `client`, ratios against (f)",
            ),
        ] {
            let b = find(v, base)?;
            let _ = writeln!(
                md,
                "\n### {heading}\n\n\
                 | path | what | dialled (sink/echo) | throughput (Gbit/s) | ÷ ({base}) | p50 (µs) | ÷ ({base}) | p99 (µs) | ÷ ({base}) | new connections/s | ÷ ({base}) |\n\
                 |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (p, what) in paths {
                let r = find(v, p)?;
                let conn_ratio = match (r.conn, b.conn) {
                    (Some(x), Some(y)) => format!("{:.2}", x / y),
                    _ => "—".into(),
                };
                let _ = writeln!(
                    md,
                    "| ({p}) | {what} | {} | {:.3} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {conn_ratio} |",
                    dialled(r),
                    r.gbps,
                    r.gbps / b.gbps,
                    r.p50,
                    r.p50 / b.p50,
                    r.p99,
                    r.p99 / b.p99,
                    conn_cell(r),
                );
            }
        }
        let _ = writeln!(
            md,
            "\nEach round's values (the tables show their medians):\n\n\
             | path | client | throughput (Gbit/s) | p50 (µs) | p99 (µs) | new connections/s |\n\
             |---|---|---|---|---|---|"
        );
        for (p, _) in DP_PATHS_INSIDE.iter().chain(&DP_PATHS_OUTSIDE) {
            let r = find(v, p)?;
            let sp = |s: &str| s.replace(',', ", ");
            let conns = r
                .conn_rounds
                .as_deref()
                .map(|s| {
                    s.split(',')
                        .map(|x| {
                            x.parse::<f64>()
                                .map(|c| format!("{c:.0}"))
                                .unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                md,
                "| ({p}) | `{}` | {} | {} | {} | {conns} |",
                r.client,
                sp(&r.gbps_rounds),
                sp(&r.p50_rounds),
                sp(&r.p99_rounds)
            );
        }
    }
    let drops: Vec<String> = text
        .lines()
        .filter_map(|l| {
            Some(format!(
                "{} {}",
                dp_field(l, "netmanager")?,
                dp_field(l, "drops")?
            ))
        })
        .collect();
    let gateway = text
        .lines()
        .find_map(|l| {
            Some(format!(
                "{}: drops {}; other counters not zero: {}",
                dp_field(l, "gateway")?,
                dp_field(l, "drops")?,
                dp_field(l, "counters")?.replace(',', ", ")
            ))
        })
        .with_context(|| format!("no gateway= line in:\n{text}"))?;
    let check = text
        .lines()
        .find(|l| l.starts_with("paths_check "))
        .with_context(|| format!("no paths_check line in:\n{text}"))?;
    let c = |k: &str| -> Result<u64> {
        dp_field(check, k)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no number {k}= in {check:?}"))
    };
    let (e_conns, f_conns) = (c("e_connections")?, c("f_connections")?);
    let (exposed, flows, dnat, fwd) = (
        c("gateway_exposed_new")?,
        c("gateway_flows_created")?,
        c("baseline_dnat_new")?,
        c("baseline_forward_new")?,
    );
    let agree = |a: u64, b: &[u64]| {
        if b.iter().all(|x| *x == a) {
            "as many"
        } else {
            "**not** as many"
        }
    };
    let _ = writeln!(
        md,
        "\n## Machine\n\n\
         {} cores, kernel {}; 1-minute load average just before the run: {load}. \
         Whole run (sandbox, topology, net managers, gateway, {rounds} rounds of 12 \
         measurements, 6 of them with a connection-rate test): {total:.1} s. Net manager \
         drop counters at the end of the run: {}. Gateway counters at the end of the \
         traffic (its own, and its firewall's as `firewall.*`), on {gateway}.\n\n\
         Where the connections went: (e) opened {e_conns} connections, the gateway's \
         firewall DNATed {exposed} new ones to it and it created {flows} flows \
         ({}); (f) opened {f_conns}, gw's baseline table DNATed {dnat} and forwarded the \
         first packet of {fwd} ({}).",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel(),
        drops.join("; "),
        agree(e_conns, &[exposed, flows]),
        agree(f_conns, &[dnat, fwd]),
    );
    let _ = write!(
        md,
        "\n## How measured\n\n\
         - One generated scenario (`hoplab_sim::bench::dataplane::scenario`): cluster c1 with \
           worker nodes n1, n2 and gw (each with its bridge, TUN `nm0` and real `netmanager` \
           process, tunnel on UDP 50103; gw third, so n1's and n2's addresses are those of a \
           two-node cluster); service `local` (round robin 10.30.1.1, its one instance \
           `local-0` on n1), `remote` (round robin 10.30.2.1, `remote-0` on n2), `web` (the \
           client `web-0` on n1, instance IP 10.30.3.11); the gateway on gw (real `gateway` \
           process, TUN `gw0`, public address 24.0.5.8 on interface `pub`, internal address \
           10.30.255.253, Forward table bound 65536) exposing tcp 5001 → 10.30.2.1:5001 and \
           tcp 5002 → 10.30.2.1:5002; the external host `client` (93.6.1.78) behind the \
           router `internet`. n1 and n2 have their default route via gw's underlay address; \
           gw routes n1's and n2's /26 via their underlay addresses. Built inside a fresh \
           sandbox (`hoplab __bench-dataplane`); nothing touches the machine's own namespaces.\n\
         - (a) `web-0` dials `local-0`'s namespace IP: the two share n1's bridge, so the \
           kernel bridges the packets; no routing, no NAT, no net manager.\n\
         - (b) `web-0` dials 10.96.0.1; n1's nftables DNAT it (prerouting) to `local-0` and \
           masquerade it (postrouting) so the reply also comes back through n1: both \
           directions routed and translated by n1's kernel (conntrack NAT), the shape of \
           (c). n1 sends no ICMP redirects, and a raw-priority `notrack` rule keeps \
           conntrack off every packet but (b)'s, so (c) and (d) pay nothing for (b)'s rules.\n\
         - (c) `web-0` dials `local`'s service IP: n1 routes it to its TUN; the net manager \
           resolves the service, rewrites the packet and writes it back to the TUN; the \
           reply (to web-0's instance IP) takes the same way back.\n\
         - (d) `web-0` dials `remote`'s service IP: n1's net manager sends each packet over \
           UDP to n2's, which writes it to its TUN; the reply comes back the same way.\n\
         - (e) `client` dials 24.0.5.8 on ports 5001 and 5002: the router hands the packets \
           to gw's `pub`; the gateway's firewall DNATs them to its internal address, into \
           `gw0`; the gateway process rewrites them to `remote`'s service IP and writes them \
           back; the kernel routes them to gw's net manager, which tunnels them to n2's; the \
           replies come back the same way (n2's net manager, tunnel, gw's net manager, the \
           gateway, conntrack undoing the DNAT, `pub`).\n\
         - (f) `client` dials 24.0.5.8 on ports 6001 and 6002: gw's kernel DNATs them \
           (table `ip hoplab_bench_baseline`, loaded once the gateway runs) to `remote-0`'s \
           namespace IP and port 5001/5002 and routes them over the underlay to n2, which \
           bridges them to `remote-0`; n2's default route sends the replies back to gw, \
           whose conntrack undoes the DNAT. The same entry (router, `pub`, gw's conntrack \
           and the gateway's firewall chains) as (e), with the kernel doing the rest. The \
           gateway's firewall refuses in its `forward` chain whatever comes from `pub` and \
           was not DNATed into `gw0`, and an `accept` in another table's chain (at any \
           priority) does not spare a packet from a later chain's `drop`: so the benchmark \
           inserts one rule at the head of the gateway's `forward` chain accepting exactly \
           (f)'s DNATed connections. Before anything is timed, one check connection per \
           path verifies (e) reaches the gateway process and not (f)'s DNAT, and (f) \
           reaches (f)'s DNAT and forward counters, not the gateway process nor its \
           `refused_forward` counter.\n\
         - Servers: sockets created by the benchmark inside `local-0` and `remote-0`, \
           served by threads of the benchmark process: a sink on port 5001 (reads until \
           EOF, answers with the byte count) and an echo on port 5002 (64-byte messages, \
           `TCP_NODELAY`), a thread per connection.\n\
         - Throughput: one connection, 128 KiB writes for {secs} s, then the client shuts \
           its side down; bytes the sink counted ÷ the time from the first write to the \
           arrival of the count.\n\
         - Latency: one connection, `TCP_NODELAY`, 20 warm-up round trips, then \
           {round_trips} round trips of a 64-byte request and a 64-byte response, each \
           timed; p50 and p99 (nearest rank).\n\
         - New-connection rate, for (a), (e) and (f): for {conn_secs} s (at most 5000 \
           connections), one after the other: connect, one 64-byte round trip on the echo \
           (`TCP_NODELAY`), close; connections ÷ elapsed time. The clients close first, so \
           their sockets wait in TIME_WAIT; their ephemeral port range is 1024–65535.\n\
         - Veths: the harness creates every veth with `gso_max_segs 1` (one segment per GSO \
           packet, so captures show wire-sized frames). Each round measures the six paths \
           with that, then again with `gso_max_segs 65535` (the kernel's default) set on \
           every veth end of the scenario (the router's and the external client's too). The \
           net managers' and the gateway's TUNs have no offloads either way: the kernel \
           segments before a TUN, they see MTU-sized packets.\n\
         - Every path is checked with one round trip before anything is timed (this also \
           lets the net managers resolve the services). Then {rounds} rounds, each: the \
           harness veths a b c d e f, the GSO veths a b c d e f; the tables show each \
           value's median over the rounds.\n\n\
         ## Reading the numbers\n\n\
         - With the harness's veths every path moves one MTU-sized segment per packet \
           through the whole stack, so the kernel paths run at a per-packet rate not far \
           from the net manager's; (c) ÷ (a) there is the net manager's cost relative to a \
           kernel that is also per-packet. With GSO veths the kernel moves 64 KiB packets \
           end to end while the net manager still reads and writes one MTU-sized packet per \
           system call on one thread: that ratio is the one a deployment would see.\n\
         - (e) crosses two userspace programs on gw (the gateway, then the net manager) and \
           one on n2, each a TUN read and write per packet, and the tunnel's UDP \
           encapsulation; (f) is routed and translated by the kernels alone. (e) ÷ (f) is \
           the cost of the gateway path as a whole, gateway and net managers together, \
           against a kernel-only gateway node of the same shape. Its connection-rate ratio \
           includes the gateway's per-flow work (Forward table entry, conntrack of the DNAT) \
           and the net managers' per-packet work on the handshake and teardown packets.\n\
         - Latency is measured with blocking sockets, so each round trip includes waking \
           the threads on the way (the client, the server, and for (c), (d) and (e) the net \
           managers and the gateway). On a machine with few (virtual) CPUs, waking a thread \
           on an idle CPU can cost more than the path itself: when one path's p50 differs \
           several-fold between rounds, thread placement moved it, not the path. Compare \
           latencies within one round. The connection rate includes the server's thread \
           start per connection, the same on every path.\n",
        conn_secs = secs.min(0.5),
    );
    let path = root().join("reports/bench-dataplane.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    for r in &rows {
        let base = if matches!(r.path.as_str(), "e" | "f") {
            "f"
        } else {
            "a"
        };
        let b = find(&r.veths, base)?;
        println!(
            "{:>7} veths ({}) {:.3} Gbit/s ({:.2} of {base}), p50 {:.1} µs, p99 {:.1} µs{}",
            r.veths,
            r.path,
            r.gbps,
            r.gbps / b.gbps,
            r.p50,
            r.p99,
            r.conn
                .map(|c| format!(", {c:.0} connections/s"))
                .unwrap_or_default()
        );
    }
    println!("wrote {}", path.display());
    Ok(())
}

fn met(ratio: f64) -> &'static str {
    if ratio >= 0.5 {
        "target met"
    } else {
        "target not met"
    }
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
        } => bench_harness(hosts),
        Cmd::Bench {
            what:
                Bench::Dataplane {
                    release: _,
                    debug,
                    secs,
                    round_trips,
                    rounds,
                },
        } => bench_dataplane(!debug, secs, round_trips, rounds),
        Cmd::Clean => {
            let p = root().join("target/scenarios");
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            Ok(())
        }
    }
}
