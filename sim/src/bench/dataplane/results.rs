//! What a dataplane benchmark run measured, as plain data: the medians and
//! rounds per path and veth setting, and the counters that say where the
//! connections went. It does not measure anything nor know the scenario.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::measure::median;
use super::{BenchPath, Config, Target, Veths, GW_NODE};

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
            },
            rounds,
        }
    }
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
    pub fn get(&self, v: Veths, p: BenchPath) -> Option<&PathResult> {
        self.paths.iter().find(|r| r.path == p && r.veths == v)
    }

    fn opened(&self, p: BenchPath) -> u64 {
        self.connections.get(&p).copied().unwrap_or(0)
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
