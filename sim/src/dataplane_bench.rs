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
//! measures the six paths twice: with the harness's veths
//! ([`Veths::Harness`]) and with the kernel's default, 64 KiB GSO packets
//! ([`Veths::Gso`]), switched on every veth end of the scenario in between
//! (the router's and the external's included). The net managers' and the
//! gateway's TUNs have no offloads either way: the kernel segments before
//! a TUN.
//!
//! Conntrack on n1: the nat chains of (b) turn on connection tracking for
//! everything n1 routes, which would tax (c) and (d) with work a node
//! without those rules does not do. A raw-priority `notrack` rule exempts
//! all traffic but (b)'s. On gw, the gateway's own DNAT tracks every
//! connection of (e) and (f) alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lab::netns::NetNs;
use crate::lab::sandbox;
use crate::lab::topology::Topology;
use crate::oakestra::{self, Expanded};
use crate::{run, Error};

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
const GW_NODE: &str = "gw";
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
#[derive(Debug, Clone)]
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
            veths: vec![Veths::Harness, Veths::Gso],
        }
    }
}

/// How the scenario's veths hand TCP segments on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPath {
    Kernel,
    KernelDnat,
    NetManager,
    Tunnel,
    Gateway,
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
            client,
            ip,
            sink_port,
            echo_port,
        }
    }
}

/// What a path's client dials: from which host, which address, which
/// ports lead to the sink and the echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub client: &'static str,
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

/// One measurement of one path.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Bulk throughput, Gbit/s.
    pub gbps: f64,
    /// Round-trip time, median, microseconds.
    pub p50_us: f64,
    /// Round-trip time, 99th percentile, microseconds.
    pub p99_us: f64,
    /// New connections per second (connect, one round trip, close), on
    /// the paths that measure it.
    pub conn_per_s: Option<f64>,
}

/// All rounds of one path.
#[derive(Debug, Clone)]
pub struct PathResult {
    pub path: BenchPath,
    pub veths: Veths,
    /// What the client dialled.
    pub target: Target,
    /// One sample per round, in round order.
    pub rounds: Vec<Sample>,
    /// Field by field median over the rounds.
    pub median: Sample,
}

/// What one benchmark run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub config: Config,
    /// Per veth setting (in [`Config::veths`] order), the paths in
    /// [`BenchPath::ALL`] order.
    pub paths: Vec<PathResult>,
    /// Per worker node: its net manager's non-zero `drop_*` counters at
    /// the end of the run (empty when the file was not written).
    pub netmanager_drops: Vec<(String, Vec<(String, u64)>)>,
    /// The gateway's counters (its own, and its firewall's as
    /// `firewall.NAME`) at the end of the traffic, all of them.
    pub gateway_counters: BTreeMap<String, u64>,
    /// (f)'s nftables counters on gw at the end of the traffic
    /// (`dnat_new`: connections DNATed; `forward_new`: their first packets
    /// forwarded).
    pub baseline_counters: BTreeMap<String, u64>,
    /// Connections the benchmark opened, per path in [`BenchPath::ALL`]
    /// order.
    pub connections: Vec<u64>,
}

/// The gateway's counters that count dropped or refused packets.
pub fn is_gateway_drop(name: &str) -> bool {
    name.starts_with("dropped_")
        || matches!(
            name,
            "firewall.spoofed_source" | "firewall.not_exposed" | "firewall.refused_forward"
        )
}

impl Results {
    pub fn get(&self, v: Veths, p: BenchPath) -> Option<&PathResult> {
        self.paths.iter().find(|r| r.path == p && r.veths == v)
    }

    fn opened(&self, p: BenchPath) -> u64 {
        BenchPath::ALL
            .iter()
            .position(|&q| q == p)
            .and_then(|i| self.connections.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Machine-readable: one line per path and veth setting, then one per
    /// net manager, one for the gateway's drops, one for its other
    /// counters, one checking (e) and (f) against the counters.
    pub fn to_lines(&self) -> String {
        let mut s = String::new();
        let list = |f: &dyn Fn(&Sample) -> f64, rs: &[Sample]| {
            rs.iter()
                .map(|x| format!("{:.3}", f(x)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let pairs = |it: &mut dyn Iterator<Item = (&String, &u64)>| {
            let d: Vec<String> = it.map(|(k, v)| format!("{k}:{v}")).collect();
            if d.is_empty() {
                "none".to_string()
            } else {
                d.join(",")
            }
        };
        for r in &self.paths {
            let _ = write!(
                s,
                "path={} veths={} client={} dialled={} sink_port={} echo_port={} gbps={:.3} p50_us={:.1} p99_us={:.1} gbps_rounds={} p50_rounds={} p99_rounds={}",
                r.path.key(),
                r.veths.key(),
                r.target.client,
                r.target.ip,
                r.target.sink_port,
                r.target.echo_port,
                r.median.gbps,
                r.median.p50_us,
                r.median.p99_us,
                list(&|x| x.gbps, &r.rounds),
                list(&|x| x.p50_us, &r.rounds),
                list(&|x| x.p99_us, &r.rounds),
            );
            if let Some(c) = r.median.conn_per_s {
                let _ = write!(
                    s,
                    " conn_per_s={c:.0} conn_rounds={}",
                    list(&|x| x.conn_per_s.unwrap_or(0.0), &r.rounds)
                );
            }
            s.push('\n');
        }
        for (node, drops) in &self.netmanager_drops {
            let d: Vec<String> = drops.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let _ = writeln!(
                s,
                "netmanager={node} drops={}",
                if d.is_empty() {
                    "none".to_string()
                } else {
                    d.join(",")
                }
            );
        }
        let g = &self.gateway_counters;
        let _ = writeln!(
            s,
            "gateway={GW_NODE} drops={} counters={}",
            pairs(&mut g.iter().filter(|(k, v)| is_gateway_drop(k) && **v > 0)),
            pairs(&mut g.iter().filter(|(k, v)| !is_gateway_drop(k) && **v > 0)),
        );
        let c = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "paths_check e_connections={} gateway_exposed_new={} gateway_flows_created={} f_connections={} baseline_dnat_new={} baseline_forward_new={}",
            self.opened(BenchPath::Gateway),
            c(g, "firewall.exposed_new"),
            c(g, "flows_created"),
            self.opened(BenchPath::GatewayKernelDnat),
            c(&self.baseline_counters, "dnat_new"),
            c(&self.baseline_counters, "forward_new"),
        );
        s
    }
}

/// The benchmark's scenario: the clusters, services, gateway and external
/// from YAML, plus n1's nftables rules and sysctls for path (b), set on
/// the generated host. (f)'s rules are loaded once the gateway runs
/// ([`baseline_rules`]).
pub fn scenario() -> Expanded {
    let yaml = format!(
        "version: 1
description: dataplane benchmark (generated)
clusters:
  - name: c1
    nodes:
      - {{name: n1, coords: [0, 0]}}
      - {{name: n2, coords: [10, 0]}}
      - {{name: {GW_NODE}, coords: [0, 10]}}
services:
  - name: local
    round_robin: {LOCAL_SVC}
    instances:
      - {{node: n1, ip: 10.30.1.11}}
  - name: remote
    round_robin: {REMOTE_SVC}
    instances:
      - {{node: n2, ip: 10.30.2.11}}
  - name: web
    instances:
      - {{node: n1, ip: 10.30.3.11}}
gateway:
  node: {GW_NODE}
  public: {PUBLIC}
  max_flows: {MAX_FLOWS}
  expose:
    - {{proto: tcp, port: {SINK_PORT}, service: \"{REMOTE_SVC}:{SINK_PORT}\"}}
    - {{proto: tcp, port: {ECHO_PORT}, service: \"{REMOTE_SVC}:{ECHO_PORT}\"}}
externals:
  - {{name: {EXTERNAL_CLIENT}, addr: {EXTERNAL}}}
"
    );
    let mut sc = oakestra::parse(
        std::path::Path::new("(dataplane bench)"),
        "bench-dataplane",
        &yaml,
    )
    .expect("the dataplane benchmark scenario is valid");
    let local = local_ns_ip(&sc);
    let n1 = sc
        .lab
        .hosts
        .get_mut("n1")
        .expect("the cluster expansion makes n1");
    let bridge = sc.plan.nodes["n1"].bridge_ip();
    n1.firewall = Some(format!(
        "table ip bench {{
  # Only path (b) is tracked: the net manager's paths pay no conntrack.
  chain raw_prerouting {{
    type filter hook prerouting priority raw; policy accept;
    ip daddr != {{ {VIP}, {bridge} }} notrack
  }}
  chain raw_output {{
    type filter hook output priority raw; policy accept;
    notrack
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {VIP} tcp dport {{ {SINK_PORT}, {ECHO_PORT} }} dnat ip to {local}
  }}
  # The client and the server share n1's bridge: without the masquerade
  # the reply would be bridged straight back, never un-NATed.
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat ip daddr {local} masquerade
  }}
}}
"
    ));
    // Forwarding from br0 back out of br0 would make n1 send ICMP
    // redirects, which would point web-0 at local-0 for the VIP.
    for key in [
        "net.ipv4.conf.all.send_redirects",
        "net.ipv4.conf.br0.send_redirects",
    ] {
        n1.sysctls.insert(key.into(), "0".into());
    }
    // The connection-rate test leaves a socket in TIME_WAIT per
    // connection on the clients: give them every ephemeral port.
    for client in [CLIENT, EXTERNAL_CLIENT] {
        sc.hosts
            .get_mut(client)
            .expect("the expansion makes the clients")
            .sysctls
            .insert("net.ipv4.ip_local_port_range".into(), "1024 65535".into());
    }
    sc
}

/// (f)'s nftables script for gw: its own table (DNAT of the public address
/// on [`BASELINE_SINK_PORT`] and [`BASELINE_ECHO_PORT`] to `remote-0`,
/// counters), and one rule at the head of the gateway's `forward` chain
/// that lets exactly those connections through (the gateway refuses what
/// comes from `pub` and was not DNATed to its TUN, and an accept in
/// another table does not spare a packet from a later chain's drop).
/// Loaded when the gateway runs: it creates its table at start.
pub fn baseline_rules(sc: &Expanded) -> String {
    let remote = ns_ip(sc, "remote");
    let pif = crate::oakestra::gateway::PUBLIC_IF;
    format!(
        "table ip {BASELINE_TABLE} {{
  counter dnat_new {{ }}
  counter forward_new {{ }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{pif}\" ip daddr {PUBLIC} tcp dport {BASELINE_SINK_PORT} counter name \"dnat_new\" dnat ip to {remote}:{SINK_PORT}
    iifname \"{pif}\" ip daddr {PUBLIC} tcp dport {BASELINE_ECHO_PORT} counter name \"dnat_new\" dnat ip to {remote}:{ECHO_PORT}
  }}
  # Counts only: the gateway's forward chain (priority filter) decides.
  chain forward {{
    type filter hook forward priority filter - 1; policy accept;
    iifname \"{pif}\" ip daddr {remote} ct status dnat ct state new counter name \"forward_new\"
  }}
}}
insert rule inet {GATEWAY_TABLE} forward iifname \"{pif}\" ip daddr {remote} tcp dport {{ {SINK_PORT}, {ECHO_PORT} }} ct status dnat accept comment \"hoplab bench: path (f)\"
"
    )
}

fn ns_ip(sc: &Expanded, service: &str) -> Ipv4Addr {
    sc.plan.services[service].1[0].ns_ip
}

fn local_ns_ip(sc: &Expanded) -> Ipv4Addr {
    ns_ip(sc, "local")
}
/// The sink and the echo of one server host, served by threads of this
/// process. Dropping it closes the listeners and joins the threads.
struct Servers {
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(ns: &NetNs) -> Result<Servers, Error> {
        let bind = |port: u16| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port));
        let (sink, echo) = ns
            .run(|| -> io::Result<_> { Ok((bind(SINK_PORT)?, bind(ECHO_PORT)?)) })
            .and_then(|r| r)
            .map_err(|source| Error::Io {
                what: format!("{}: listen on {SINK_PORT} and {ECHO_PORT}", ns.name()),
                source,
            })?;
        let clone = |l: &TcpListener| {
            l.try_clone().map_err(|source| Error::Io {
                what: "clone listener".into(),
                source,
            })
        };
        let listeners = vec![clone(&sink)?, clone(&echo)?];
        let threads = vec![
            std::thread::spawn(move || accept_loop(sink, sink_conn)),
            std::thread::spawn(move || accept_loop(echo, echo_conn)),
        ];
        Ok(Servers { listeners, threads })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept(2) with
        // EINVAL on Linux: the accept loops end.
        for l in &self.listeners {
            let _ = socket2::SockRef::from(l).shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: TcpListener, handle: fn(TcpStream) -> io::Result<()>) {
    let mut conns = Vec::new();
    while let Ok((s, _)) = l.accept() {
        conns.push(std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            let _ = handle(s);
        }));
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Read and discard until EOF, then answer with the byte count (u64, big
/// endian).
fn sink_conn(mut s: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    s.write_all(&n.to_be_bytes())
}

/// Echo [`MSG`]-byte messages until EOF.
fn echo_conn(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = [0u8; MSG];
    loop {
        match s.read_exact(&mut buf) {
            Ok(()) => s.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// One connection, [`CHUNK`]-byte writes for `secs`; Gbit/s of what the
/// sink counted, over the time until its count arrived.
fn bulk(to: SocketAddr, secs: f64) -> io::Result<f64> {
    let mut s = connect(to)?;
    let buf = vec![0x5au8; CHUNK];
    let dur = Duration::from_secs_f64(secs);
    let t = Instant::now();
    while t.elapsed() < dur {
        s.write_all(&buf)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let elapsed = t.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(count) as f64 * 8.0 / elapsed / 1e9)
}

/// One connection, `TCP_NODELAY`, `n` recorded round trips of [`MSG`]
/// bytes each way (after a short warm-up). Returns (p50, p99) in µs.
fn latency(to: SocketAddr, n: usize) -> io::Result<(f64, f64)> {
    let mut s = connect(to)?;
    s.set_nodelay(true)?;
    let mut req = [0u8; MSG];
    let mut resp = [0u8; MSG];
    let mut rtts = Vec::with_capacity(n);
    // Never much longer than the round trips would take at 5 ms each.
    let deadline = Instant::now() + Duration::from_secs(5) + Duration::from_millis(5 * n as u64);
    for i in 0..WARMUP_ROUND_TRIPS + n {
        req[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let t = Instant::now();
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        let rtt = t.elapsed();
        if resp != req {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo answered something else",
            ));
        }
        if i >= WARMUP_ROUND_TRIPS {
            rtts.push(rtt.as_secs_f64() * 1e6);
        }
        if Instant::now() > deadline && !rtts.is_empty() {
            break;
        }
    }
    if rtts.is_empty() {
        return Err(io::Error::other("no round trip recorded"));
    }
    rtts.sort_by(f64::total_cmp);
    Ok((percentile(&rtts, 50.0), percentile(&rtts, 99.0)))
}

/// For `secs`, at most `max` times: connect, one [`MSG`]-byte round trip
/// (`TCP_NODELAY`), close. Returns (connections, connections per second).
fn conn_rate(to: SocketAddr, secs: f64, max: usize) -> io::Result<(u64, f64)> {
    let mut req = [0u8; MSG];
    let mut resp = [0u8; MSG];
    let dur = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut n = 0u64;
    while (n as usize) < max && t.elapsed() < dur {
        let mut s = connect(to)?;
        s.set_nodelay(true)?;
        req[..8].copy_from_slice(&n.to_be_bytes());
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        if resp != req {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo answered something else",
            ));
        }
        drop(s);
        n += 1;
    }
    Ok((n, n as f64 / t.elapsed().as_secs_f64()))
}

/// Nearest-rank percentile of sorted, non-empty `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Set `gso_max_segs` on both ends of every veth of the scenario.
fn set_veths(topo: &Topology, sc: &Expanded, v: Veths) -> Result<(), Error> {
    for l in &sc.links {
        for e in [&l.a, &l.b] {
            let what = format!("{}/{}: gso_max_segs {}", e.host, e.ifname, v.gso_max_segs());
            let out = topo.hosts[&e.host]
                .ns
                .command("ip")
                .args(["link", "set", "dev", &e.ifname, "gso_max_segs"])
                .arg(v.gso_max_segs())
                .output()
                .map_err(|source| Error::Io {
                    what: what.clone(),
                    source,
                })?;
            if !out.status.success() {
                return Err(Error::Failed(format!(
                    "{what}: ip: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
    }
    Ok(())
}

fn check_interrupt() -> Result<(), Error> {
    if sandbox::interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Run `nft args` inside `ns`, `script` on its standard input if any;
/// returns what it printed.
fn nft(ns: &NetNs, args: &[&str], script: Option<&str>) -> Result<String, Error> {
    let what = format!("{}: nft {}", ns.name(), args.join(" "));
    let io = |source| Error::Io {
        what: what.clone(),
        source,
    };
    let mut cmd = ns.command("nft");
    cmd.args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(io)?;
    if let Some(s) = script {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(s.as_bytes())
            .map_err(io)?;
    }
    let out = child.wait_with_output().map_err(io)?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The packet counts of `nft list counters`' named counters.
fn named_counters(text: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            current = rest.split_whitespace().next();
        } else if let (Some(name), Some(rest)) = (current, line.strip_prefix("packets ")) {
            if let Some(n) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                found.insert(name.to_string(), n);
            }
            current = None;
        }
    }
    found
}

/// (f)'s counters on gw.
fn baseline_counters(gw: &NetNs) -> Result<BTreeMap<String, u64>, Error> {
    nft(
        gw,
        &["list", "counters", "table", "ip", BASELINE_TABLE],
        None,
    )
    .map(|t| named_counters(&t))
}

/// The gateway's counters (its own and its firewall's), through its
/// control socket.
fn gateway_counters(sc: &Expanded, out: &Path) -> Result<BTreeMap<String, u64>, Error> {
    let g = sc.hosts[GW_NODE]
        .processes
        .iter()
        .find_map(|p| p.gateway.as_ref())
        .expect("the scenario has a gateway on gw");
    let text = crate::lab::gateway_ctl::control(&g.control(&out.join("ctl")), "counters").map_err(
        |source| Error::Io {
            what: "reading the gateway's counters".into(),
            source,
        },
    )?;
    Ok(crate::lab::gateway_ctl::parse_counters(&text))
}

/// `k` in `after` minus `k` in `before`.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, k: &str) -> u64 {
    let v = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0);
    v(after).saturating_sub(v(before))
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
    topo.hosts[t.client]
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
    let n_paths = BenchPath::ALL.len();
    let mut connections = vec![0u64; n_paths];

    // Check every path once (and let the net managers resolve the
    // services) before anything is timed.
    for (pi, p) in BenchPath::ALL.into_iter().enumerate() {
        check_path(topo, &sc, out, p)?;
        connections[pi] += 1;
    }

    let conn_secs = conn_secs(cfg);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cfg.veths.len() * n_paths];
    for round in 0..cfg.rounds {
        for (vi, &v) in cfg.veths.iter().enumerate() {
            set_veths(topo, &sc, v)?;
            for (pi, p) in BenchPath::ALL.into_iter().enumerate() {
                check_interrupt()?;
                let t = p.target(&sc);
                let (s, opened) = on_client(topo, &sc, p, "measure", || {
                    let gbps = bulk(t.sink(), cfg.secs)?;
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
                    };
                    Ok((s, 2 + n))
                })?;
                connections[pi] += opened;
                tracing::info!(
                    target: "hoplab",
                    "round {} veths {} path ({}): {:.3} Gbit/s, p50 {:.1} µs, p99 {:.1} µs{}",
                    round + 1,
                    v.key(),
                    p.key(),
                    s.gbps,
                    s.p50_us,
                    s.p99_us,
                    s.conn_per_s
                        .map(|c| format!(", {c:.0} connections/s"))
                        .unwrap_or_default()
                );
                samples[vi * n_paths + pi].push(s);
            }
        }
    }
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
        .map(|((v, p), rounds)| {
            let m = |f: fn(&Sample) -> f64| median(rounds.iter().map(f).collect());
            let conns: Vec<f64> = rounds.iter().filter_map(|s| s.conn_per_s).collect();
            PathResult {
                path: p,
                veths: v,
                target: p.target(&sc),
                median: Sample {
                    gbps: m(|s| s.gbps),
                    p50_us: m(|s| s.p50_us),
                    p99_us: m(|s| s.p99_us),
                    conn_per_s: (!conns.is_empty()).then(|| median(conns)),
                },
                rounds,
            }
        })
        .collect();
    let netmanager_drops = sc
        .plan
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
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_has_the_six_paths_hosts() {
        let sc = scenario();
        for h in [
            CLIENT,
            LOCAL_SERVER,
            REMOTE_SERVER,
            EXTERNAL_CLIENT,
            "n1",
            "n2",
            GW_NODE,
            crate::oakestra::gateway::INTERNET_HOST,
        ] {
            assert!(sc.hosts.contains_key(h), "{h}");
        }
        // Client and local server share n1's subnet; the remote is on n2;
        // the gateway node, third, shifts neither.
        assert_eq!(ns_ip(&sc, "local"), Ipv4Addr::new(10, 18, 0, 1));
        assert_eq!(ns_ip(&sc, "web"), Ipv4Addr::new(10, 18, 0, 2));
        assert_eq!(ns_ip(&sc, "remote"), Ipv4Addr::new(10, 18, 0, 65));
        assert_eq!(sc.plan.nodes["n1"].underlay, Ipv4Addr::new(10, 10, 0, 1));
        assert_eq!(sc.plan.nodes["n2"].underlay, Ipv4Addr::new(10, 10, 0, 2));
        assert_eq!(sc.plan.nodes[GW_NODE].underlay, Ipv4Addr::new(10, 10, 0, 3));
        let fw = sc.hosts["n1"].firewall.as_deref().unwrap();
        assert!(fw.contains("dnat ip to 10.18.0.1"), "{fw}");
        assert!(fw.contains("10.18.0.62"), "{fw}");
        // The gateway exposes remote's sink and echo, with room for every
        // connection of a run.
        let g = sc.hosts[GW_NODE]
            .processes
            .iter()
            .find_map(|p| p.gateway.as_ref())
            .unwrap();
        let argv = g
            .argv("gateway", Path::new("/c"), Path::new("/o"))
            .join(" ");
        assert!(argv.contains("--public 24.0.5.8"), "{argv}");
        assert!(argv.contains("--max-flows 65536"), "{argv}");
        assert!(argv.contains("--expose tcp:5001=10.30.2.1:5001"), "{argv}");
        assert!(argv.contains("--expose tcp:5002=10.30.2.1:5002"), "{argv}");
        // (f): DNAT to remote-0, reached over the underlay from gw.
        let rules = baseline_rules(&sc);
        assert!(
            rules.contains("tcp dport 6001 counter name \"dnat_new\" dnat ip to 10.18.0.65:5001"),
            "{rules}"
        );
        assert!(
            rules.contains(
                "insert rule inet hoplab_gateway forward iifname \"pub\" ip daddr 10.18.0.65"
            ),
            "{rules}"
        );
        let routes = format!("{:?}", sc.hosts[GW_NODE].routes);
        assert!(
            routes.contains("10.18.0.64") && routes.contains("10.10.0.2"),
            "{routes}"
        );
        let t = BenchPath::GatewayKernelDnat.target(&sc);
        assert_eq!(
            (t.client, t.ip, t.sink_port, t.echo_port),
            (EXTERNAL_CLIENT, PUBLIC, 6001, 6002)
        );
    }

    #[test]
    fn named_counters_parse() {
        let text = "table ip t {\n\tcounter dnat_new {\n\t\tpackets 3 bytes 180\n\t}\n\tcounter forward_new {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
        let c = named_counters(text);
        assert_eq!(c["dnat_new"], 3);
        assert_eq!(c["forward_new"], 0);
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }
}
