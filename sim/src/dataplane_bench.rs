//! The dataplane benchmark: one client, four paths to the same kind of
//! server, measured in one run (same process, same machine moment).
//!
//! One generated scenario: cluster `c1` with worker nodes `n1` and `n2`;
//! service `local` (round robin [`LOCAL_SVC`], one instance on n1),
//! `remote` (round robin [`REMOTE_SVC`], one instance on n2) and `web` (the
//! client, on n1, with an instance IP so that replies of local services
//! come back through n1's TUN). From `web-0`:
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
//! Servers are sockets created inside `local-0` and `remote-0` by this
//! process (a socket stays in the namespace it was created in) and served
//! on plain threads: a sink on [`SINK_PORT`] (reads until EOF, answers with
//! the byte count) and a request/response echo on [`ECHO_PORT`]
//! ([`MSG`]-byte messages, `TCP_NODELAY`).
//!
//! Per path and round: bulk throughput (one connection, [`CHUNK`]-byte
//! writes for a fixed time; bytes the sink counted over the time until its
//! count arrived) and request/response latency (one connection, N round
//! trips, p50 and p99). Paths are interleaved round by round (a b c d a b
//! c d ...) and the median of the rounds is reported.
//!
//! Veths: the harness makes every veth carry one segment per GSO packet
//! (`gso_max_segs 1`, so captures show wire-sized frames). That caps the
//! kernel paths far below what a container's veth does, so every round
//! measures the four paths twice: with the harness's veths
//! ([`Veths::Harness`]) and with the kernel's default, 64 KiB GSO packets
//! ([`Veths::Gso`]), switched on every veth end of the scenario in between.
//! The net manager's TUN has no offloads either way: the kernel segments
//! before the TUN.
//!
//! Conntrack on n1: the nat chains of (b) turn on connection tracking for
//! everything n1 routes, which would tax (c) and (d) with work a node
//! without those rules does not do. A raw-priority `notrack` rule exempts
//! all traffic but (b)'s.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::scenario::{self, Scalar, Scenario};
use crate::topology::Topology;
use crate::{run, sandbox, Error};

/// The sink's port in the server instances.
pub const SINK_PORT: u16 = 5001;
/// The request/response echo's port in the server instances.
pub const ECHO_PORT: u16 = 5002;
/// Path (b)'s virtual IP, DNATed by n1.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Service `local`'s round-robin IP (its instance runs on n1).
pub const LOCAL_SVC: Ipv4Addr = Ipv4Addr::new(10, 30, 1, 1);
/// Service `remote`'s round-robin IP (its instance runs on n2).
pub const REMOTE_SVC: Ipv4Addr = Ipv4Addr::new(10, 30, 2, 1);
/// Bulk write size.
pub const CHUNK: usize = 128 * 1024;
/// Request and response size of the latency test.
pub const MSG: usize = 64;

/// The client host and the two server hosts.
const CLIENT: &str = "web-0";
const LOCAL_SERVER: &str = "local-0";
const REMOTE_SERVER: &str = "remote-0";
/// Round trips before the recorded ones, on each latency connection.
const WARMUP_ROUND_TRIPS: usize = 20;
/// No single socket operation waits longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bulk send time per measurement, seconds.
    pub secs: f64,
    /// Recorded round trips per latency measurement.
    pub round_trips: usize,
    /// Rounds over the four paths; medians are taken over them.
    pub rounds: usize,
    /// The veth settings to measure the four paths with, each round.
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

/// One of the four measured paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchPath {
    Kernel,
    KernelDnat,
    NetManager,
    Tunnel,
}

impl BenchPath {
    pub const ALL: [BenchPath; 4] = [
        BenchPath::Kernel,
        BenchPath::KernelDnat,
        BenchPath::NetManager,
        BenchPath::Tunnel,
    ];

    /// Its letter: `a`, `b`, `c`, `d`.
    pub fn key(self) -> &'static str {
        match self {
            BenchPath::Kernel => "a",
            BenchPath::KernelDnat => "b",
            BenchPath::NetManager => "c",
            BenchPath::Tunnel => "d",
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
        }
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
}

/// All rounds of one path.
#[derive(Debug, Clone)]
pub struct PathResult {
    pub path: BenchPath,
    pub veths: Veths,
    /// The address the client dialled (server port aside).
    pub dialled: Ipv4Addr,
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
}

impl Results {
    pub fn get(&self, v: Veths, p: BenchPath) -> Option<&PathResult> {
        self.paths.iter().find(|r| r.path == p && r.veths == v)
    }

    /// Machine-readable: one line per path and veth setting, then one per
    /// net manager.
    pub fn to_lines(&self) -> String {
        let mut s = String::new();
        let list = |f: &dyn Fn(&Sample) -> f64, rs: &[Sample]| {
            rs.iter()
                .map(|x| format!("{:.3}", f(x)))
                .collect::<Vec<_>>()
                .join(",")
        };
        for r in &self.paths {
            let _ = writeln!(
                s,
                "path={} veths={} dialled={} gbps={:.3} p50_us={:.1} p99_us={:.1} gbps_rounds={} p50_rounds={} p99_rounds={}",
                r.path.key(),
                r.veths.key(),
                r.dialled,
                r.median.gbps,
                r.median.p50_us,
                r.median.p99_us,
                list(&|x| x.gbps, &r.rounds),
                list(&|x| x.p50_us, &r.rounds),
                list(&|x| x.p99_us, &r.rounds),
            );
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
        s
    }
}

/// The benchmark's scenario: the clusters and services from YAML, plus
/// n1's nftables rules and sysctls for path (b), set on the generated host.
pub fn scenario() -> Scenario {
    let yaml = format!(
        "version: 1
description: dataplane benchmark (generated)
clusters:
  - name: c1
    nodes:
      - {{name: n1, coords: [0, 0]}}
      - {{name: n2, coords: [10, 0]}}
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
"
    );
    let mut sc = scenario::parse(
        std::path::Path::new("(dataplane bench)"),
        "bench-dataplane",
        &yaml,
    )
    .expect("the dataplane benchmark scenario is valid");
    let local = local_ns_ip(&sc);
    let n1 = sc
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
        n1.sysctls.insert(key.into(), Scalar("0".into()));
    }
    sc
}

fn ns_ip(sc: &Scenario, service: &str) -> Ipv4Addr {
    sc.plan.services[service].1[0].ns_ip
}

fn local_ns_ip(sc: &Scenario) -> Ipv4Addr {
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
fn set_veths(topo: &Topology, sc: &Scenario, v: Veths) -> Result<(), Error> {
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

/// Build the scenario, start its net managers and the servers, measure the
/// four paths, tear everything down. Logs and counters go under `out`.
/// Call inside the sandbox.
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
    let hosts = &started.topo.hosts;
    let local = Servers::start(&hosts[LOCAL_SERVER].ns)?;
    let remote = Servers::start(&hosts[REMOTE_SERVER].ns)?;
    let client = &hosts[CLIENT].ns;
    let dialled = |p: BenchPath| match p {
        BenchPath::Kernel => local_ns_ip(&sc),
        BenchPath::KernelDnat => VIP,
        BenchPath::NetManager => LOCAL_SVC,
        BenchPath::Tunnel => REMOTE_SVC,
    };
    let on_client = |p: BenchPath, what: &str, f: &(dyn Fn() -> io::Result<Sample> + Sync)| {
        client.run(f).and_then(|r| r).map_err(|source| Error::Io {
            what: format!("path ({}) {what} from {CLIENT} to {}", p.key(), dialled(p)),
            source,
        })
    };

    // Check every path once (and let the net managers resolve the
    // services) before anything is timed.
    for p in BenchPath::ALL {
        let to = SocketAddr::from((dialled(p), ECHO_PORT));
        on_client(p, "check", &|| {
            latency(to, 1).map(|_| Sample {
                gbps: 0.0,
                p50_us: 0.0,
                p99_us: 0.0,
            })
        })?;
    }

    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cfg.veths.len() * BenchPath::ALL.len()];
    for round in 0..cfg.rounds {
        for (vi, &v) in cfg.veths.iter().enumerate() {
            set_veths(&started.topo, &sc, v)?;
            for (pi, p) in BenchPath::ALL.into_iter().enumerate() {
                check_interrupt()?;
                let ip = dialled(p);
                let s = on_client(p, "measure", &|| {
                    let gbps = bulk(SocketAddr::from((ip, SINK_PORT)), cfg.secs)?;
                    let (p50_us, p99_us) =
                        latency(SocketAddr::from((ip, ECHO_PORT)), cfg.round_trips)?;
                    Ok(Sample {
                        gbps,
                        p50_us,
                        p99_us,
                    })
                })?;
                tracing::info!(
                    target: "hoplab",
                    "round {} veths {} path ({}): {:.3} Gbit/s, p50 {:.1} µs, p99 {:.1} µs",
                    round + 1,
                    v.key(),
                    p.key(),
                    s.gbps,
                    s.p50_us,
                    s.p99_us
                );
                samples[vi * BenchPath::ALL.len() + pi].push(s);
            }
        }
    }
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
            PathResult {
                path: p,
                veths: v,
                dialled: dialled(p),
                median: Sample {
                    gbps: m(|s| s.gbps),
                    p50_us: m(|s| s.p50_us),
                    p99_us: m(|s| s.p99_us),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_has_the_four_paths_hosts() {
        let sc = scenario();
        for h in [CLIENT, LOCAL_SERVER, REMOTE_SERVER, "n1", "n2"] {
            assert!(sc.hosts.contains_key(h), "{h}");
        }
        // Client and local server share n1's subnet; the remote is on n2.
        assert_eq!(ns_ip(&sc, "local"), Ipv4Addr::new(10, 18, 0, 1));
        assert_eq!(ns_ip(&sc, "web"), Ipv4Addr::new(10, 18, 0, 2));
        assert_eq!(ns_ip(&sc, "remote"), Ipv4Addr::new(10, 18, 0, 65));
        let fw = sc.hosts["n1"].firewall.as_deref().unwrap();
        assert!(fw.contains("dnat ip to 10.18.0.1"), "{fw}");
        assert!(fw.contains("10.18.0.62"), "{fw}");
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
