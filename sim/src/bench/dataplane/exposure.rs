//! The exposure-change benchmark: request/response latency through the
//! gateway (path (e) of the dataplane benchmark: client → public address,
//! the gateway, gw's and n2's net managers, `remote-0`'s echo) with the
//! exposures left alone, and again while another port is exposed and
//! unexposed every `churn_ms` over the gateway's control socket (each
//! change: one set element added or deleted over the gateway firewall
//! thread's netlink socket, an nf_tables batch). The ratio of the two p99s
//! says whether exposure changes stall the packets.
//!
//! On a machine with few cores the changes' own work (a ruleset commit in
//! the gateway node's namespace) competes with the path's processes for
//! CPU, which raises the p99 whether or not the gateway blocks. So each
//! round also measures the path while the bench itself does the same
//! firewall work every `churn_ms` in the gateway node's namespace, on a
//! table of its own, the gateway not involved, twice: over netlink (the
//! same batch the gateway sends, made by the caller's [`NetlinkControl`]:
//! the harness knows no netlink) and with one `nft` process per change
//! (what the gateway did before). The ratio of the changed p99 to the
//! netlink control's isolates what going through the gateway adds. A
//! fifth measurement sends a read-only command (`exposures`) to the
//! gateway's control socket every `churn_ms`: what the command's handling
//! on the gateway's thread costs the packets, without firewall work.
//!
//! Each change is timed where it is made (for the gateway: the control
//! socket's round trip, from the command to its answer): the report gives
//! the median per-change cost of each kind.
//!
//! Rounds alternate the order of the five measurements; medians over the
//! rounds are reported. It prints nothing and writes no report: the
//! caller prints [`ExposureResults`] as JSON.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::measure::{latency, median, Servers};
use super::{
    check_interrupt, check_path, on_client, scenario, BenchPath, GW_NODE, REMOTE_SERVER, REMOTE_SVC,
};
use crate::lab::gateway_ctl;
use crate::lab::netns::NetNs;
use crate::lab::topology::Topology;
use crate::oakestra::Expanded;
use crate::{run, Error};

/// The port exposed and unexposed while latency is measured (UDP, never
/// dialled).
pub const CHURN_PORT: u16 = 7000;

/// The bench's own table (family `inet`) in the gateway node's namespace,
/// for the controls, and its set of the exposed sets' kind
/// (`inet_service`).
pub const CHURN_TABLE: &str = "hoplab_bench_churn";
pub const CHURN_SET: &str = "ports";

/// Adds (`true`) or deletes (`false`) [`CHURN_PORT`] in [`CHURN_SET`] of
/// [`CHURN_TABLE`] over netlink, the way the gateway's firewall thread
/// changes its sets.
pub type NetlinkChanger = Box<dyn FnMut(bool) -> Result<(), String>>;

/// Makes a [`NetlinkChanger`]; called on a thread inside the gateway
/// node's namespace (where its socket must be opened).
pub type NetlinkControl = dyn Fn() -> Result<NetlinkChanger, String> + Sync;

/// How much to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExposureConfig {
    /// Recorded round trips per latency measurement.
    pub round_trips: usize,
    /// Rounds (each: one measurement without changes, one with, one under
    /// each control).
    pub rounds: usize,
    /// An exposure change every this many milliseconds.
    pub churn_ms: u64,
}

impl Default for ExposureConfig {
    fn default() -> ExposureConfig {
        ExposureConfig {
            round_trips: 5000,
            rounds: 5,
            churn_ms: 10,
        }
    }
}

/// One round. Per-change costs are medians over the round's changes, µs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExposureRound {
    pub quiet_p50_us: f64,
    pub quiet_p99_us: f64,
    pub churn_p50_us: f64,
    pub churn_p99_us: f64,
    /// Exposure changes made (and answered `ok`) during the churn
    /// measurement.
    pub changes: u64,
    /// How long the churn measurement took, seconds.
    pub churn_secs: f64,
    /// One exposure change: the control socket's command to its answer.
    pub churn_change_us: f64,
    /// The same firewall work over netlink, on a table of the bench's
    /// own, the gateway not involved.
    pub netlink_p50_us: f64,
    pub netlink_p99_us: f64,
    pub netlink_changes: u64,
    pub netlink_change_us: f64,
    /// The same work with one `nft` process per change.
    pub nft_p50_us: f64,
    pub nft_p99_us: f64,
    pub nft_changes: u64,
    pub nft_change_us: f64,
    /// Read-only commands (`exposures`) on the gateway's control socket.
    pub ctl_p50_us: f64,
    pub ctl_p99_us: f64,
    pub ctl_commands: u64,
    pub ctl_command_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExposureResults {
    pub config: ExposureConfig,
    pub rounds: Vec<ExposureRound>,
    pub median_quiet_p99_us: f64,
    pub median_churn_p99_us: f64,
    /// Median churn p99 ÷ median quiet p99.
    pub p99_ratio: f64,
    pub median_netlink_p99_us: f64,
    /// Median churn p99 ÷ median p99 under the same netlink work without
    /// the gateway.
    pub p99_ratio_vs_netlink: f64,
    pub median_nft_p99_us: f64,
    /// Median churn p99 ÷ median p99 under one `nft` process per change
    /// without the gateway.
    pub p99_ratio_vs_nft: f64,
    pub median_quiet_p50_us: f64,
    pub median_churn_p50_us: f64,
    pub median_netlink_p50_us: f64,
    pub median_churn_change_us: f64,
    pub median_netlink_change_us: f64,
    pub median_nft_change_us: f64,
    pub median_ctl_p99_us: f64,
    pub median_ctl_command_us: f64,
}

/// Calls `change(add)` every `every` until `stop`, alternating add and
/// delete (add first), and a last delete if the last change was an add.
/// Returns the changes made and each one's duration, µs.
fn alternate<E>(
    every: Duration,
    stop: &AtomicBool,
    mut change: impl FnMut(bool) -> Result<(), E>,
) -> Result<(u64, Vec<f64>), E> {
    let mut n = 0u64;
    let mut took = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        change(n.is_multiple_of(2))?;
        took.push(t.elapsed().as_secs_f64() * 1e6);
        n += 1;
        next += every;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    if !n.is_multiple_of(2) {
        change(false)?;
    }
    Ok((n, took))
}

/// Exposes and unexposes [`CHURN_PORT`] over the gateway's control socket
/// `sock`.
fn churn(sock: &Path, every: Duration, stop: &AtomicBool) -> Result<(u64, Vec<f64>), Error> {
    let expose = format!("expose udp {CHURN_PORT} {REMOTE_SVC}:{CHURN_PORT}");
    let unexpose = format!("unexpose udp {CHURN_PORT}");
    alternate(every, stop, |add| {
        gateway_ctl::control(sock, if add { &expose } else { &unexpose }).map(|_| ())
    })
    .map_err(|source| Error::Io {
        what: "changing exposures".into(),
        source,
    })
}

/// Asks the gateway's control socket `sock` for its exposures.
fn ctl_churn(sock: &Path, every: Duration, stop: &AtomicBool) -> Result<(u64, Vec<f64>), Error> {
    alternate(every, stop, |_| {
        gateway_ctl::control(sock, "exposures").map(|_| ())
    })
    .map_err(|source| Error::Io {
        what: "asking for the exposures".into(),
        source,
    })
}

/// The bench's own table, for the controls.
fn churn_table() -> String {
    format!("table inet {CHURN_TABLE} {{\n  set {CHURN_SET} {{ type inet_service; }}\n}}\n")
}

/// The control with one `nft` process per change.
fn nft_churn(ns: &NetNs, every: Duration, stop: &AtomicBool) -> Result<(u64, Vec<f64>), Error> {
    alternate(every, stop, |add| {
        let verb = if add { "add" } else { "delete" };
        let line = format!("{verb} element inet {CHURN_TABLE} {CHURN_SET} {{ {CHURN_PORT} }}\n");
        super::nodes::nft(ns, &["-f", "-"], Some(&line)).map(|_| ())
    })
}

/// The control over netlink: `make`'s changer, inside `ns`.
fn netlink_churn(
    ns: &NetNs,
    make: &NetlinkControl,
    every: Duration,
    stop: &AtomicBool,
) -> Result<(u64, Vec<f64>), Error> {
    let failed = |e: String| Error::Failed(format!("{}: netlink set change: {e}", ns.name()));
    ns.run(|| {
        let mut changer = make()?;
        alternate(every, stop, &mut changer)
    })
    .map_err(|source| Error::Io {
        what: format!("{}: entering the namespace", ns.name()),
        source,
    })?
    .map_err(failed)
}

/// One latency measurement while something changes: p50, p99, changes,
/// their median cost (µs), seconds taken.
struct Under {
    p50: f64,
    p99: f64,
    changes: u64,
    change_us: f64,
    secs: f64,
}

/// Path (e)'s latency while `changer` runs on another thread, stopped
/// when the measurement ends.
fn measure_under(
    topo: &Topology,
    sc: &Expanded,
    round_trips: usize,
    what: &str,
    changer: impl FnOnce(&AtomicBool) -> Result<(u64, Vec<f64>), Error> + Send,
) -> Result<Under, Error> {
    let p = BenchPath::Gateway;
    let echo = p.target(sc).echo();
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    std::thread::scope(|s| {
        let c = s.spawn(|| changer(&stop));
        let r = on_client(topo, sc, p, what, || latency(echo, round_trips));
        stop.store(true, Ordering::Relaxed);
        let secs = t.elapsed().as_secs_f64();
        let (changes, took) = c
            .join()
            .map_err(|_| Error::Failed(format!("the changer of `{what}` panicked")))??;
        let (p50, p99) = r?;
        Ok(Under {
            p50,
            p99,
            changes,
            change_us: if took.is_empty() { 0.0 } else { median(took) },
            secs,
        })
    })
}

/// Build the dataplane benchmark's scenario, check path (e), then
/// `cfg.rounds` rounds of latency without exposure changes, with them,
/// and under each control (`netlink` brings the netlink one). Logs go
/// under `out`. Call inside the sandbox.
pub fn run_exposure(
    cfg: &ExposureConfig,
    out: &Path,
    netlink: &NetlinkControl,
) -> Result<ExposureResults, Error> {
    if cfg.round_trips == 0 || cfg.rounds == 0 || cfg.churn_ms == 0 {
        return Err(Error::Failed(format!(
            "bad benchmark settings {cfg:?}: round trips, rounds and churn_ms at least 1"
        )));
    }
    let sc = scenario();
    let rt = run::runtime()?;
    let mut started = run::start(&sc, out, &rt)?;
    let topo = &started.topo;
    let gw = &topo.hosts[GW_NODE].ns;
    // Path (e)'s check reads (f)'s counters too (to show (e) skips them).
    super::nodes::nft(gw, &["-f", "-"], Some(&super::baseline_rules(&sc)))?;
    super::nodes::nft(gw, &["-f", "-"], Some(&churn_table()))?;
    let remote = Servers::start(&topo.hosts[REMOTE_SERVER].ns)?;
    let p = BenchPath::Gateway;
    check_path(topo, &sc, out, p)?;
    let sock = super::nodes::gateway_socket(&sc, out);
    let echo = p.target(&sc).echo();
    let every = Duration::from_millis(cfg.churn_ms);
    let n = cfg.round_trips;
    let mut rounds = Vec::new();
    for round in 0..cfg.rounds {
        check_interrupt()?;
        // 0: quiet, 1: through the gateway, 2: netlink control, 3: nft
        // control, 4: control socket only; the order is reversed every
        // other round.
        let mut order = [0, 1, 2, 3, 4];
        if round % 2 == 1 {
            order.reverse();
        }
        let (mut q, mut c, mut nl, mut nf, mut ctl) = (None, None, None, None, None);
        for m in order {
            match m {
                0 => q = Some(on_client(topo, &sc, p, "latency", || latency(echo, n))?),
                1 => {
                    let what = "latency under exposure changes";
                    c = Some(measure_under(topo, &sc, n, what, |stop| {
                        churn(&sock, every, stop)
                    })?)
                }
                2 => {
                    let what = "latency under the same netlink work";
                    nl = Some(measure_under(topo, &sc, n, what, |stop| {
                        netlink_churn(gw, netlink, every, stop)
                    })?)
                }
                4 => {
                    let what = "latency under read-only control commands";
                    ctl = Some(measure_under(topo, &sc, n, what, |stop| {
                        ctl_churn(&sock, every, stop)
                    })?)
                }
                _ => {
                    let what = "latency under nft processes";
                    nf = Some(measure_under(topo, &sc, n, what, |stop| {
                        nft_churn(gw, every, stop)
                    })?)
                }
            }
        }
        let (q, c, nl, nf, ctl) = (
            q.expect("measured"),
            c.expect("measured"),
            nl.expect("measured"),
            nf.expect("measured"),
            ctl.expect("measured"),
        );
        tracing::info!(
            target: "hoplab",
            "round {}: p99 {:.1} µs quiet, {:.1} µs with {} exposure changes ({:.0} µs each), {:.1} µs with {} netlink changes ({:.0} µs each), {:.1} µs with {} nft changes ({:.0} µs each) elsewhere",
            round + 1,
            q.1,
            c.p99,
            c.changes,
            c.change_us,
            nl.p99,
            nl.changes,
            nl.change_us,
            nf.p99,
            nf.changes,
            nf.change_us,
        );
        rounds.push(ExposureRound {
            quiet_p50_us: q.0,
            quiet_p99_us: q.1,
            churn_p50_us: c.p50,
            churn_p99_us: c.p99,
            changes: c.changes,
            churn_secs: c.secs,
            churn_change_us: c.change_us,
            netlink_p50_us: nl.p50,
            netlink_p99_us: nl.p99,
            netlink_changes: nl.changes,
            netlink_change_us: nl.change_us,
            nft_p50_us: nf.p50,
            nft_p99_us: nf.p99,
            nft_changes: nf.changes,
            nft_change_us: nf.change_us,
            ctl_p50_us: ctl.p50,
            ctl_p99_us: ctl.p99,
            ctl_commands: ctl.changes,
            ctl_command_us: ctl.change_us,
        });
    }
    drop(remote);
    started.stop_processes();
    drop(started);
    Ok(summarize(cfg, rounds))
}

/// Medians over the rounds, and the ratios.
fn summarize(cfg: &ExposureConfig, rounds: Vec<ExposureRound>) -> ExposureResults {
    let med = |f: fn(&ExposureRound) -> f64| median(rounds.iter().map(f).collect());
    let (q99, c99, l99, n99) = (
        med(|r| r.quiet_p99_us),
        med(|r| r.churn_p99_us),
        med(|r| r.netlink_p99_us),
        med(|r| r.nft_p99_us),
    );
    ExposureResults {
        config: cfg.clone(),
        median_quiet_p99_us: q99,
        median_churn_p99_us: c99,
        p99_ratio: c99 / q99,
        median_netlink_p99_us: l99,
        p99_ratio_vs_netlink: c99 / l99,
        median_nft_p99_us: n99,
        p99_ratio_vs_nft: c99 / n99,
        median_quiet_p50_us: med(|r| r.quiet_p50_us),
        median_churn_p50_us: med(|r| r.churn_p50_us),
        median_netlink_p50_us: med(|r| r.netlink_p50_us),
        median_churn_change_us: med(|r| r.churn_change_us),
        median_netlink_change_us: med(|r| r.netlink_change_us),
        median_nft_change_us: med(|r| r.nft_change_us),
        median_ctl_p99_us: med(|r| r.ctl_p99_us),
        median_ctl_command_us: med(|r| r.ctl_command_us),
        rounds,
    }
}
