//! What a dataplane benchmark run measured, as plain data: the medians and
//! rounds per path and veth setting, and the counters that say where the
//! connections went. The benchmark process prints [`Results`] once as
//! JSON; `cargo xtask bench dataplane` and the tests read it back. It does
//! not measure anything, know the scenario, or render a report.

use std::collections::BTreeMap;

use super::measure::median;
use serde::{Deserialize, Serialize};

use super::{BenchPath, Config, Target, Veths};

/// One measurement of one path.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
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
    /// CPU seconds per Gbit moved during the bulk transfer: the
    /// benchmark's own process (clients, servers, and the kernel's work
    /// on their system calls).
    pub cpu_own_s_per_gbit: f64,
    /// The same for the dataplane processes (net managers, gateway).
    pub cpu_dataplane_s_per_gbit: f64,
}

/// All rounds of one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl PathResult {
    /// `rounds` of path `path` with `veths`, and their medians.
    pub fn new(path: BenchPath, veths: Veths, target: Target, rounds: Vec<Sample>) -> PathResult {
        let m = |f: fn(&Sample) -> f64| median(rounds.iter().map(f).collect());
        let conns: Vec<f64> = rounds.iter().filter_map(|s| s.conn_per_s).collect();
        PathResult {
            path,
            veths,
            target,
            median: Sample {
                gbps: m(|s| s.gbps),
                p50_us: m(|s| s.p50_us),
                p99_us: m(|s| s.p99_us),
                conn_per_s: (!conns.is_empty()).then(|| median(conns)),
                cpu_own_s_per_gbit: m(|s| s.cpu_own_s_per_gbit),
                cpu_dataplane_s_per_gbit: m(|s| s.cpu_dataplane_s_per_gbit),
            },
            rounds,
        }
    }
}

/// What one benchmark run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub config: Config,
    /// Per veth setting (in [`Config::veths`] order), the paths in
    /// [`BenchPath::ALL`] order.
    pub paths: Vec<PathResult>,
    /// Per worker node: its net manager's non-zero `drop_*` counters at
    /// the end of the run (empty when the file was not written).
    pub netmanager_drops: BTreeMap<String, BTreeMap<String, u64>>,
    /// The gateway's counters (its own, and its firewall's as
    /// `firewall.NAME`) at the end of the traffic, all of them.
    pub gateway_counters: BTreeMap<String, u64>,
    /// (f)'s nftables counters on gw at the end of the traffic
    /// (`dnat_new`: connections DNATed; `forward_new`: their first packets
    /// forwarded).
    pub baseline_counters: BTreeMap<String, u64>,
    /// Connections the benchmark opened, per path.
    pub connections: BTreeMap<BenchPath, u64>,
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
    /// The result of path `p` with veths `v`.
    pub fn get(&self, v: Veths, p: BenchPath) -> Option<&PathResult> {
        self.paths.iter().find(|r| r.path == p && r.veths == v)
    }

    /// Connections the benchmark opened on path `p`.
    pub fn opened(&self, p: BenchPath) -> u64 {
        self.connections.get(&p).copied().unwrap_or(0)
    }

    /// The gateway's non-zero counters that count dropped or refused
    /// packets (`drops`), or the others (`!drops`).
    pub fn gateway_nonzero(&self, drops: bool) -> BTreeMap<&str, u64> {
        self.gateway_counters
            .iter()
            .filter(|(k, v)| is_gateway_drop(k) == drops && **v > 0)
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    /// Where (e)'s and (f)'s connections went, by the counters.
    pub fn paths_check(&self) -> PathsCheck {
        let c = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let g = &self.gateway_counters;
        PathsCheck {
            e_connections: self.opened(BenchPath::Gateway),
            gateway_exposed_new: c(g, "firewall.exposed_new"),
            gateway_flows_created: c(g, "flows_created"),
            f_connections: self.opened(BenchPath::GatewayKernelDnat),
            baseline_dnat_new: c(&self.baseline_counters, "dnat_new"),
            baseline_forward_new: c(&self.baseline_counters, "forward_new"),
        }
    }
}

/// (e)'s and (f)'s connections against the counters that saw them: each
/// of (e)'s should be DNATed by the gateway's firewall and make a flow in
/// the gateway; each of (f)'s DNATed and forwarded by gw's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathsCheck {
    /// Connections opened on (e).
    pub e_connections: u64,
    /// New connections the gateway's firewall DNATed to it.
    pub gateway_exposed_new: u64,
    /// Flows the gateway created.
    pub gateway_flows_created: u64,
    /// Connections opened on (f).
    pub f_connections: u64,
    /// New connections (f)'s table DNATed.
    pub baseline_dnat_new: u64,
    /// First packets of (f)'s DNATed connections forwarded.
    pub baseline_forward_new: u64,
}
