//! The exposure-change benchmark: request/response latency through the
//! gateway (path (e) of the dataplane benchmark: client → public address,
//! the gateway, gw's and n2's net managers, `remote-0`'s echo) with the
//! exposures left alone, and again while another port is exposed and
//! unexposed every `churn_ms` over the gateway's control socket (each
//! change runs `nft`). The ratio of the two p99s says whether exposure
//! changes stall the packets: `nft` runs off the task that owns the
//! gateway's core.
//!
//! On a machine with few cores the changes' own work (an `nft` process
//! every `churn_ms`, a ruleset commit in the gateway node's namespace)
//! competes with the path's processes for CPU, which raises the p99
//! whether or not the gateway blocks. So each round also measures the path
//! while the bench itself runs the same `nft` work on a table of its own
//! in the gateway node's namespace, the gateway not involved: the ratio of
//! the changed p99 to that one isolates what going through the gateway
//! adds.
//!
//! Rounds alternate which measurement goes first; medians over the rounds
//! are reported. It prints nothing and writes no report: the caller prints
//! [`ExposureResults`] as JSON.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::measure::{latency, median, Servers};
use super::{
    check_interrupt, check_path, on_client, scenario, BenchPath, GW_NODE, REMOTE_SERVER, REMOTE_SVC,
};
use crate::lab::gateway_ctl;
use crate::{run, Error};

/// The port exposed and unexposed while latency is measured (UDP, never
/// dialled).
pub const CHURN_PORT: u16 = 7000;

/// How much to measure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExposureConfig {
    /// Recorded round trips per latency measurement.
    pub round_trips: usize,
    /// Rounds (each: one measurement without changes, one with).
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

/// One round.
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
    /// The same `nft` work, on a table of the bench's own, the gateway
    /// not involved.
    pub nft_p50_us: f64,
    pub nft_p99_us: f64,
    pub nft_changes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExposureResults {
    pub config: ExposureConfig,
    pub rounds: Vec<ExposureRound>,
    pub median_quiet_p99_us: f64,
    pub median_churn_p99_us: f64,
    /// Median churn p99 ÷ median quiet p99.
    pub p99_ratio: f64,
    pub median_nft_p99_us: f64,
    /// Median churn p99 ÷ median p99 under the same `nft` work without
    /// the gateway.
    pub p99_ratio_vs_nft: f64,
    pub median_quiet_p50_us: f64,
    pub median_churn_p50_us: f64,
}

/// Exposes and unexposes [`CHURN_PORT`] every `every` until `stop`;
/// returns the changes answered `ok`, or the first error.
fn churn(sock: &Path, every: Duration, stop: &AtomicBool) -> std::io::Result<u64> {
    let expose = format!("expose udp {CHURN_PORT} {REMOTE_SVC}:{CHURN_PORT}");
    let unexpose = format!("unexpose udp {CHURN_PORT}");
    let mut n = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let line = if n % 2 == 0 { &expose } else { &unexpose };
        gateway_ctl::control(sock, line)?;
        n += 1;
        next += every;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    if n % 2 == 1 {
        gateway_ctl::control(sock, &unexpose)?;
    }
    Ok(n)
}

/// The bench's own table in the gateway node's namespace, for
/// [`nft_churn`]: a set of the exposed sets' kind.
const CHURN_TABLE: &str =
    "table inet hoplab_bench_churn {\n  set ports { type inet_service; }\n}\n";

/// What the gateway's firewall thread does per change, with the gateway
/// not involved: one `nft` process adding or deleting [`CHURN_PORT`] in
/// the bench's own set, every `every` until `stop`.
fn nft_churn(
    ns: &crate::lab::netns::NetNs,
    every: Duration,
    stop: &AtomicBool,
) -> Result<u64, Error> {
    let mut n = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let verb = if n.is_multiple_of(2) { "add" } else { "delete" };
        let line = format!("{verb} element inet hoplab_bench_churn ports {{ {CHURN_PORT} }}\n");
        super::nodes::nft(ns, &["-f", "-"], Some(&line))?;
        n += 1;
        next += every;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    Ok(n)
}

/// Build the dataplane benchmark's scenario, check path (e), then
/// `cfg.rounds` rounds of latency without and with exposure changes.
/// Logs go under `out`. Call inside the sandbox.
pub fn run_exposure(cfg: &ExposureConfig, out: &Path) -> Result<ExposureResults, Error> {
    if cfg.round_trips == 0 || cfg.rounds == 0 || cfg.churn_ms == 0 {
        return Err(Error::Failed(format!(
            "bad benchmark settings {cfg:?}: round trips, rounds and churn_ms at least 1"
        )));
    }
    let sc = scenario();
    let rt = run::runtime()?;
    let mut started = run::start(&sc, out, &rt)?;
    let topo = &started.topo;
    // Path (e)'s check reads (f)'s counters too (to show (e) skips them).
    super::nodes::nft(
        &topo.hosts[GW_NODE].ns,
        &["-f", "-"],
        Some(&super::baseline_rules(&sc)),
    )?;
    super::nodes::nft(&topo.hosts[GW_NODE].ns, &["-f", "-"], Some(CHURN_TABLE))?;
    let remote = Servers::start(&topo.hosts[REMOTE_SERVER].ns)?;
    let p = BenchPath::Gateway;
    check_path(topo, &sc, out, p)?;
    let sock = super::nodes::gateway_socket(&sc, out);
    let echo = p.target(&sc).echo();
    let mut rounds = Vec::new();
    for round in 0..cfg.rounds {
        let quiet = |()| on_client(topo, &sc, p, "latency", || latency(echo, cfg.round_trips));
        let churned = |()| -> Result<((f64, f64), u64, f64), Error> {
            let stop = Arc::new(AtomicBool::new(false));
            let (s, sock) = (stop.clone(), sock.clone());
            let every = Duration::from_millis(cfg.churn_ms);
            let t = Instant::now();
            let changer = std::thread::spawn(move || churn(&sock, every, &s));
            let r = on_client(topo, &sc, p, "latency under exposure changes", || {
                latency(echo, cfg.round_trips)
            });
            stop.store(true, Ordering::Relaxed);
            let secs = t.elapsed().as_secs_f64();
            let n = changer
                .join()
                .map_err(|_| Error::Failed("the exposure changer panicked".into()))?
                .map_err(|source| Error::Io {
                    what: "changing exposures".into(),
                    source,
                })?;
            Ok((r?, n, secs))
        };
        let nft_only = |()| -> Result<((f64, f64), u64), Error> {
            let stop = AtomicBool::new(false);
            let every = Duration::from_millis(cfg.churn_ms);
            let ns = &topo.hosts[GW_NODE].ns;
            std::thread::scope(|s| {
                let changer = s.spawn(|| nft_churn(ns, every, &stop));
                let r = on_client(topo, &sc, p, "latency under the same nft work", || {
                    latency(echo, cfg.round_trips)
                });
                stop.store(true, Ordering::Relaxed);
                let n = changer
                    .join()
                    .map_err(|_| Error::Failed("the nft changer panicked".into()))??;
                Ok((r?, n))
            })
        };
        check_interrupt()?;
        // Which measurement goes first alternates.
        let (q, (c, changes, churn_secs), (nf, nft_changes)) = if round % 2 == 0 {
            let q = quiet(())?;
            let c = churned(())?;
            (q, c, nft_only(())?)
        } else {
            let nf = nft_only(())?;
            let c = churned(())?;
            (quiet(())?, c, nf)
        };
        tracing::info!(
            target: "hoplab",
            "round {}: p99 {:.1} µs quiet, {:.1} µs with {changes} exposure changes, {:.1} µs with {nft_changes} nft changes elsewhere",
            round + 1,
            q.1,
            c.1,
            nf.1
        );
        rounds.push(ExposureRound {
            quiet_p50_us: q.0,
            quiet_p99_us: q.1,
            churn_p50_us: c.0,
            churn_p99_us: c.1,
            changes,
            churn_secs,
            nft_p50_us: nf.0,
            nft_p99_us: nf.1,
            nft_changes,
        });
    }
    drop(remote);
    started.stop_processes();
    drop(started);
    let med = |f: fn(&ExposureRound) -> f64| median(rounds.iter().map(f).collect());
    let (q99, c99, n99) = (
        med(|r| r.quiet_p99_us),
        med(|r| r.churn_p99_us),
        med(|r| r.nft_p99_us),
    );
    Ok(ExposureResults {
        config: cfg.clone(),
        median_quiet_p99_us: q99,
        median_churn_p99_us: c99,
        p99_ratio: c99 / q99,
        median_nft_p99_us: n99,
        p99_ratio_vs_nft: c99 / n99,
        median_quiet_p50_us: med(|r| r.quiet_p50_us),
        median_churn_p50_us: med(|r| r.churn_p50_us),
        rounds,
    })
}
