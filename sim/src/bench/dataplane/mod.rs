//! The dataplane benchmark: two clients, six paths to the same kind of
//! server, measured in one run (same process, same machine moment).
//!
//! One generated scenario: cluster `c1` with worker nodes `n1`, `n2` and
//! `gw` (the gateway node, third so that n1's and n2's addresses are those
//! of a two-node cluster); service `local` (round robin [`LOCAL_SVC`], one
//! instance on n1), `remote` (round robin [`REMOTE_SVC`], one instance on
//! n2) and `web` (the client, on n1, with an instance IP so that replies of
//! local services come back through n1's TUN); the gateway on `gw` with
//! public address [`PUBLIC`], exposing `remote`'s sink and echo
//! ([`SINK_PORT`], [`ECHO_PORT`] → [`REMOTE_SVC`], same ports); the
//! external host `client` ([`EXTERNAL`]) behind the `internet` router.
//!
//! From `web-0`:
//!
//! - (a) [`BenchPath::Kernel`]: `local-0`'s namespace IP; n1's bridge
//!   forwards, no routing, no NAT, no net manager.
//! - (b) [`BenchPath::KernelDnat`]: the virtual IP [`VIP`], which n1's
//!   nftables DNATs (prerouting) to `local-0`'s namespace IP and
//!   masquerades (postrouting) so the reply comes back through n1 too: both
//!   directions routed and NATed by n1's kernel, the shape of (c).
//! - (c) [`BenchPath::NetManager`]: `local`'s service IP; both directions go
//!   through n1's TUN and its userspace net manager.
//! - (d) [`BenchPath::Tunnel`]: `remote`'s service IP; n1's net manager
//!   sends the packets over UDP 50103 to n2's, and the replies come back
//!   the same way.
//!
//! From the external `client`, through the router to `gw`'s public
//! interface:
//!
//! - (e) [`BenchPath::Gateway`]: [`PUBLIC`] on the exposed ports; the
//!   gateway's firewall DNATs to its internal address, the gateway process
//!   rewrites to `remote`'s service IP and hands the packet (through its
//!   TUN `gw0` and the kernel) to gw's net manager, which tunnels it to
//!   n2's; the replies come back the same way.
//! - (f) [`BenchPath::GatewayKernelDnat`]: [`PUBLIC`] on
//!   [`BASELINE_SINK_PORT`] and [`BASELINE_ECHO_PORT`]; gw's kernel DNATs
//!   (table [`BASELINE_TABLE`]) to `remote-0`'s namespace IP and routes it
//!   over the underlay to n2 (gw routes n2's /26 via n2's underlay
//!   address); n2's default route leads back to gw, whose conntrack
//!   reverses the DNAT. The same shape as (e) with the kernel doing all of
//!   it: the baseline of (e).
//!
//! (f)'s rules are loaded after the gateway started. The gateway's own
//! table (`inet hoplab_gateway`) refuses in its `forward` chain whatever
//! comes from `pub` and was not DNATed to `gw0`, and an `accept` in
//! another table's chain does not spare a packet the later chains of the
//! same hook: so one rule is inserted at the head of the gateway's
//! `forward` chain, accepting exactly (f)'s DNATed connections. Before
//! anything is timed, the check of each of (e) and (f) verifies the path:
//! (e)'s connection is seen by the gateway (`packets_in`) and not by (f)'s
//! DNAT, (f)'s by (f)'s DNAT and forward counters and not by the gateway.
//!
//! Servers are sockets created inside `local-0` and `remote-0` by this
//! process (a socket stays in the namespace it was created in) and served
//! on plain threads: a sink on [`SINK_PORT`] (reads until EOF, answers with
//! the byte count) and a request/response echo on [`ECHO_PORT`]
//! ([`MSG`]-byte messages, `TCP_NODELAY`), a thread per connection.
//!
//! Per path and round: bulk throughput (one connection, [`CHUNK`]-byte
//! writes for a fixed time; bytes the sink counted over the time until its
//! count arrived) and request/response latency (one connection, N round
//! trips, p50 and p99); for (a), (e) and (f) also the new-connection rate
//! (for [`conn_secs`], at most [`CONN_MAX`] times: connect, one [`MSG`]-byte
//! round trip on the echo, close; connections per second). Paths are
//! interleaved round by round (a b c d e f a b ...) and the median of the
//! rounds is reported.
//!
//! Veths: the harness makes every veth carry one segment per GSO packet
//! (`gso_max_segs 1`, so captures show wire-sized frames). That caps the
//! kernel paths far below what a container's veth does, so every round
//! measures the six paths twice (by default the kernel's setting first):
//! with the kernel's default, 64 KiB GSO packets ([`Veths::Gso`]) and
//! with the harness's veths ([`Veths::Harness`]), switched on every veth
//! end of the scenario in between (the router's and the external's
//! included). The net managers and the gateway run with their defaults:
//! offloads on, so with GSO veths their TUNs and the tunnel carry
//! super-packets; with the harness's veths they get wire-sized packets.
//!
//! CPU: around each bulk transfer, the CPU time of this process and of
//! the dataplane processes ([`cpu`]), per Gbit moved.
//!
//! Conntrack on n1: the nat chains of (b) turn on connection tracking for
//! everything n1 routes, which would tax (c) and (d) with work a node
//! without those rules does not do. A raw-priority `notrack` rule exempts
//! all traffic but (b)'s. On gw, the gateway's own DNAT tracks every
//! connection of (e) and (f) alike.
//!
//! [`run_exposure`] (`cargo xtask bench exposure`) measures path (e)'s
//! latency with and without exposure changes every 10 ms, and under the
//! same firewall work done without the gateway (over netlink, and by `nft`
//! processes), in the same scenario.
//!
//! Here: the paths, the configuration and [`run()`], which checks and
//! times them; [`scenario`] makes the lab, `measure` the servers and
//! clients, `nodes` the veth, nftables and counter work on the hosts,
//! [`Results`] what was measured. It prints nothing and writes no report:
//! the caller prints [`Results`] (JSON), `cargo xtask bench dataplane`
//! renders them.

mod cpu;
mod exposure;
mod measure;
mod nodes;
mod results;
mod scenario;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::lab::sandbox;
use crate::lab::topology::Topology;
use crate::oakestra::Expanded;
use crate::{run, Error};

pub use exposure::{
    run_exposure, ExposureConfig, ExposureResults, ExposureRound, NetlinkChanger, NetlinkControl,
    CHURN_PORT, CHURN_SET, CHURN_TABLE,
};
pub use results::{is_gateway_drop, PathResult, PathsCheck, Results, Sample};
pub use scenario::{baseline_rules, scenario};

use cpu::CpuTimes;
use measure::{bulk, conn_rate, latency, Servers};
use nodes::{baseline_counters, delta, gateway_counters, nft, set_veths};
use scenario::local_ns_ip;

/// The sink's port in the server instances (and exposed by the gateway).
pub const SINK_PORT: u16 = 5001;
/// The request/response echo's port in the server instances (and exposed
/// by the gateway).
pub const ECHO_PORT: u16 = 5002;
/// Path (f)'s port for the sink: gw's kernel DNATs it to `remote-0`.
pub const BASELINE_SINK_PORT: u16 = 6001;
/// Path (f)'s port for the echo.
pub const BASELINE_ECHO_PORT: u16 = 6002;
/// Path (b)'s virtual IP, DNATed by n1.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Service `local`'s round-robin IP (its instance runs on n1).
pub const LOCAL_SVC: Ipv4Addr = Ipv4Addr::new(10, 30, 1, 1);
/// Service `remote`'s round-robin IP (its instance runs on n2).
pub const REMOTE_SVC: Ipv4Addr = Ipv4Addr::new(10, 30, 2, 1);
/// The gateway's public address (on gw's `pub`).
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(24, 0, 5, 8);
/// The external client's address.
pub const EXTERNAL: Ipv4Addr = Ipv4Addr::new(93, 6, 1, 78);
/// The Forward table bound given to the gateway: every connection of a
/// run fits, closed ones included (they stay 10 s).
pub const MAX_FLOWS: usize = 65536;
/// Path (f)'s nftables table on gw.
pub const BASELINE_TABLE: &str = "hoplab_bench_baseline";
/// Bulk write size.
pub const CHUNK: usize = 128 * 1024;
/// Request and response size of the latency and connection tests.
pub const MSG: usize = 64;
/// At most this many connections per connection-rate measurement.
pub const CONN_MAX: usize = 5000;

/// The gateway node.
pub const GW_NODE: &str = "gw";
/// The client instance, the external client and the two server hosts.
const CLIENT: &str = "web-0";
const EXTERNAL_CLIENT: &str = "client";
const LOCAL_SERVER: &str = "local-0";
const REMOTE_SERVER: &str = "remote-0";
/// The gateway's nftables table (its `forward` chain gets (f)'s accept).
const GATEWAY_TABLE: &str = "hoplab_gateway";
/// Round trips before the recorded ones, on each latency connection.
const WARMUP_ROUND_TRIPS: usize = 20;
/// No single socket operation waits longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection-rate measurement runs: the bulk time, at most
/// 0.5 s.
pub fn conn_secs(cfg: &Config) -> f64 {
    cfg.secs.min(0.5)
}

/// How much to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Bulk send time per measurement, seconds.
    pub secs: f64,
    /// Recorded round trips per latency measurement.
    pub round_trips: usize,
    /// Rounds over the six paths; medians are taken over them.
    pub rounds: usize,
    /// The veth settings to measure the six paths with, each round.
    pub veths: Vec<Veths>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            secs: 0.8,
            round_trips: 2000,
            rounds: 3,
            veths: vec![Veths::Gso, Veths::Harness],
        }
    }
}

/// How the scenario's veths hand TCP segments on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Veths {
    /// The harness's setting: one segment per GSO packet
    /// (`gso_max_segs 1`), as every scenario runs.
    Harness,
    /// The kernel's default (`gso_max_segs 65535`): up to 64 KiB GSO
    /// packets, as a container's veth carries them.
    Gso,
}

impl Veths {
    /// `harness` or `gso`.
    pub fn key(self) -> &'static str {
        match self {
            Veths::Harness => "harness",
            Veths::Gso => "gso",
        }
    }

    pub fn from_key(k: &str) -> Option<Veths> {
        match k {
            "harness" => Some(Veths::Harness),
            "gso" => Some(Veths::Gso),
            _ => None,
        }
    }

    fn gso_max_segs(self) -> &'static str {
        match self {
            Veths::Harness => "1",
            Veths::Gso => "65535",
        }
    }
}

/// One of the six measured paths.
/// Written by its letter ([`BenchPath::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BenchPath {
    #[serde(rename = "a")]
    Kernel,
    #[serde(rename = "b")]
    KernelDnat,
    #[serde(rename = "c")]
    NetManager,
    #[serde(rename = "d")]
    Tunnel,
    #[serde(rename = "e")]
    Gateway,
    #[serde(rename = "f")]
    GatewayKernelDnat,
}

impl BenchPath {
    pub const ALL: [BenchPath; 6] = [
        BenchPath::Kernel,
        BenchPath::KernelDnat,
        BenchPath::NetManager,
        BenchPath::Tunnel,
        BenchPath::Gateway,
        BenchPath::GatewayKernelDnat,
    ];

    /// Its letter: `a` to `f`.
    pub fn key(self) -> &'static str {
        match self {
            BenchPath::Kernel => "a",
            BenchPath::KernelDnat => "b",
            BenchPath::NetManager => "c",
            BenchPath::Tunnel => "d",
            BenchPath::Gateway => "e",
            BenchPath::GatewayKernelDnat => "f",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            BenchPath::Kernel => "kernel: web-0 → local-0's namespace IP over n1's bridge",
            BenchPath::KernelDnat => {
                "kernel nftables DNAT: web-0 → VIP, n1 DNATs (and masquerades) to local-0"
            }
            BenchPath::NetManager => {
                "net manager, local: web-0 → local's service IP via n1's TUN and net manager"
            }
            BenchPath::Tunnel => {
                "net manager, remote: web-0 → remote's service IP, n1 → n2 over the UDP tunnel"
            }
            BenchPath::Gateway => {
                "gateway: client → public:5001/5002, gw's gateway and net manager, tunnel to n2"
            }
            BenchPath::GatewayKernelDnat => {
                "kernel DNAT on gw: client → public:6001/6002, gw DNATs to remote-0 over the underlay"
            }
        }
    }

    /// Whether the new-connection rate is measured on this path.
    pub fn measures_connections(self) -> bool {
        matches!(
            self,
            BenchPath::Kernel | BenchPath::Gateway | BenchPath::GatewayKernelDnat
        )
    }

    /// Userspace programs a round trip crosses (each direction counted):
    /// (c) n1's net manager twice; (d) n1's and n2's net managers, twice
    /// each; (e) the gateway and gw's and n2's net managers, twice each.
    pub fn userspace_hops(self) -> u32 {
        match self {
            BenchPath::NetManager => 2,
            BenchPath::Tunnel => 4,
            BenchPath::Gateway => 6,
            BenchPath::Kernel | BenchPath::KernelDnat | BenchPath::GatewayKernelDnat => 0,
        }
    }

    /// Who dials what on this path.
    pub fn target(self, sc: &Expanded) -> Target {
        let (client, ip, sink_port, echo_port) = match self {
            BenchPath::Kernel => (CLIENT, local_ns_ip(sc), SINK_PORT, ECHO_PORT),
            BenchPath::KernelDnat => (CLIENT, VIP, SINK_PORT, ECHO_PORT),
            BenchPath::NetManager => (CLIENT, LOCAL_SVC, SINK_PORT, ECHO_PORT),
            BenchPath::Tunnel => (CLIENT, REMOTE_SVC, SINK_PORT, ECHO_PORT),
            BenchPath::Gateway => (EXTERNAL_CLIENT, PUBLIC, SINK_PORT, ECHO_PORT),
            BenchPath::GatewayKernelDnat => (
                EXTERNAL_CLIENT,
                PUBLIC,
                BASELINE_SINK_PORT,
                BASELINE_ECHO_PORT,
            ),
        };
        Target {
            client: client.to_string(),
            ip,
            sink_port,
            echo_port,
        }
    }
}

/// What a path's client dials: from which host, which address, which
/// ports lead to the sink and the echo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The client host.
    pub client: String,
    pub ip: Ipv4Addr,
    pub sink_port: u16,
    pub echo_port: u16,
}

impl Target {
    fn sink(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.sink_port))
    }

    fn echo(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.echo_port))
    }
}

fn check_interrupt() -> Result<(), Error> {
    if sandbox::interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Run `f` in the client host of path `p`.
fn on_client<T: Send>(
    topo: &Topology,
    sc: &Expanded,
    p: BenchPath,
    what: &str,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> Result<T, Error> {
    let t = p.target(sc);
    topo.hosts[&t.client]
        .ns
        .run(f)
        .and_then(|r| r)
        .map_err(|source| Error::Io {
            what: format!(
                "path ({}) {what} from {} to {}:{}/{}",
                p.key(),
                t.client,
                t.ip,
                t.sink_port,
                t.echo_port
            ),
            source,
        })
}

/// Check path `p` with one round trip; for (e) and (f), also that the
/// connection went where it should, by the gateway's and (f)'s counters.
fn check_path(topo: &Topology, sc: &Expanded, out: &Path, p: BenchPath) -> Result<(), Error> {
    let echo = p.target(sc).echo();
    let check = || on_client(topo, sc, p, "check", || latency(echo, 1).map(|_| ()));
    if !matches!(p, BenchPath::Gateway | BenchPath::GatewayKernelDnat) {
        return check();
    }
    let gw = &topo.hosts[GW_NODE].ns;
    let (g0, b0) = (gateway_counters(sc, out)?, baseline_counters(gw)?);
    let r = check();
    let (g1, b1) = (gateway_counters(sc, out)?, baseline_counters(gw)?);
    let seen = format!(
        "over its one check connection, the gateway process saw {} packets (refused by its firewall's forward chain: {}), (f)'s DNAT {} connections, (f)'s forward counter {}",
        delta(&g0, &g1, "packets_in"),
        delta(&g0, &g1, "firewall.refused_forward"),
        delta(&b0, &b1, "dnat_new"),
        delta(&b0, &b1, "forward_new"),
    );
    tracing::info!(target: "hoplab", "path ({}): {seen}", p.key());
    if let Err(e) = r {
        return Err(Error::Failed(format!("{e}; {seen}")));
    }
    let ok = match p {
        BenchPath::Gateway => delta(&g0, &g1, "packets_in") > 0 && delta(&b0, &b1, "dnat_new") == 0,
        _ => {
            delta(&g0, &g1, "packets_in") == 0
                && delta(&g0, &g1, "firewall.refused_forward") == 0
                && delta(&b0, &b1, "dnat_new") == 1
                && delta(&b0, &b1, "forward_new") == 1
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "path ({}) did not take its way: {seen}",
            p.key()
        )))
    }
}

/// Build the scenario, start its net managers, the gateway and the
/// servers, load (f)'s rules, measure the six paths, tear everything
/// down. Logs and counters go under `out`. Call inside the sandbox.
pub fn run(cfg: &Config, out: &Path) -> Result<Results, Error> {
    if !(cfg.secs > 0.0 && cfg.secs <= 60.0)
        || cfg.round_trips == 0
        || cfg.rounds == 0
        || cfg.veths.is_empty()
    {
        return Err(Error::Failed(format!(
            "bad benchmark settings {cfg:?}: secs in (0, 60], round trips, rounds and veth settings at least 1"
        )));
    }
    let sc = scenario();
    let rt = run::runtime()?;
    let mut started = run::start(&sc, out, &rt)?;
    let topo = &started.topo;
    nft(
        &topo.hosts[GW_NODE].ns,
        &["-f", "-"],
        Some(&baseline_rules(&sc)),
    )?;
    let local = Servers::start(&topo.hosts[LOCAL_SERVER].ns)?;
    let remote = Servers::start(&topo.hosts[REMOTE_SERVER].ns)?;
    let mut connections = BTreeMap::new();

    // Check every path once (and let the net managers resolve the
    // services) before anything is timed.
    for p in BenchPath::ALL {
        check_path(topo, &sc, out, p)?;
        *connections.entry(p).or_insert(0) += 1;
    }
    let samples = measure_rounds(topo, &sc, cfg, &mut connections)?;
    let gateway_counters = gateway_counters(&sc, out)?;
    let baseline_counters = baseline_counters(&topo.hosts[GW_NODE].ns)?;
    drop(local);
    drop(remote);
    started.stop_processes();
    let paths = cfg
        .veths
        .iter()
        .flat_map(|&v| BenchPath::ALL.into_iter().map(move |p| (v, p)))
        .zip(samples)
        .map(|((v, p), rounds)| PathResult::new(p, v, p.target(&sc), rounds))
        .collect();
    let netmanager_drops = netmanager_drops(&sc, out);
    drop(started);
    Ok(Results {
        config: cfg.clone(),
        paths,
        netmanager_drops,
        gateway_counters,
        baseline_counters,
        connections,
    })
}

/// `cfg.rounds` rounds, each over the veth settings, each over the six
/// paths: the samples per (veth setting, path), in that order, one per
/// round. Counts the connections opened per path into `connections`.
fn measure_rounds(
    topo: &Topology,
    sc: &Expanded,
    cfg: &Config,
    connections: &mut BTreeMap<BenchPath, u64>,
) -> Result<Vec<Vec<Sample>>, Error> {
    let n_paths = BenchPath::ALL.len();
    let conn_secs = conn_secs(cfg);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cfg.veths.len() * n_paths];
    for round in 0..cfg.rounds {
        for (vi, &v) in cfg.veths.iter().enumerate() {
            set_veths(topo, sc, v)?;
            for (pi, p) in BenchPath::ALL.into_iter().enumerate() {
                check_interrupt()?;
                let t = p.target(sc);
                let (s, opened) = on_client(topo, sc, p, "measure", || {
                    let (c0, t0) = (CpuTimes::now(), Instant::now());
                    let gbps = bulk(t.sink(), cfg.secs)?;
                    let cpu = CpuTimes::now().since(c0);
                    let gbit = (gbps * t0.elapsed().as_secs_f64()).max(f64::MIN_POSITIVE);
                    let (p50_us, p99_us) = latency(t.echo(), cfg.round_trips)?;
                    let (n, conn_per_s) = if p.measures_connections() {
                        let (n, r) = conn_rate(t.echo(), conn_secs, CONN_MAX)?;
                        (n, Some(r))
                    } else {
                        (0, None)
                    };
                    let s = Sample {
                        gbps,
                        p50_us,
                        p99_us,
                        conn_per_s,
                        cpu_own_s_per_gbit: cpu.own / gbit,
                        cpu_dataplane_s_per_gbit: cpu.dataplane / gbit,
                    };
                    Ok((s, 2 + n))
                })?;
                *connections.entry(p).or_insert(0) += opened;
                tracing::info!(
                    target: "hoplab",
                    "round {} veths {} path ({}): {:.3} Gbit/s, p50 {:.1} µs, p99 {:.1} µs, CPU s/Gbit {:.3} + {:.3}{}",
                    round + 1,
                    v.key(),
                    p.key(),
                    s.gbps,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_own_s_per_gbit,
                    s.cpu_dataplane_s_per_gbit,
                    s.conn_per_s
                        .map(|c| format!(", {c:.0} connections/s"))
                        .unwrap_or_default()
                );
                samples[vi * n_paths + pi].push(s);
            }
        }
    }
    Ok(samples)
}

/// Per worker node, its net manager's non-zero `drop_*` counters from the
/// file it wrote at exit (none when it wrote none).
fn netmanager_drops(sc: &Expanded, out: &Path) -> BTreeMap<String, BTreeMap<String, u64>> {
    sc.plan
        .nodes
        .keys()
        .map(|node| {
            let text = std::fs::read_to_string(
                out.join("counters").join(format!("{node}.netmanager.txt")),
            )
            .unwrap_or_default();
            let drops = text
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    let v: u64 = v.trim().parse().ok()?;
                    (k.starts_with("drop_") && v > 0).then(|| (k.to_string(), v))
                })
                .collect();
            (node.clone(), drops)
        })
        .collect()
}
