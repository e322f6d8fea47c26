//! The L7 benchmark (`hoplab __bench-l7`): requests per second and
//! per-request latency through HAProxy beside the same requests straight to
//! the server, for three modes, in one run.
//!
//! One embedded scenario ([`SCENARIO`], `l7.yaml` beside this file):
//! `client - lb - server1`, lb running Debian's HAProxy with three frontends
//! (plain HTTP; TLS edge: TLS ends at lb, plain HTTP to the backend; TLS
//! re-encrypt: a second TLS session from lb to the backend, verified against
//! the run's CA) and routing for the direct requests; server1 running
//! hoplab's built-in HTTP server on a plain and a TLS port. It is started by
//! the run machinery the scenarios use ([`run::start`]: host files, the run's
//! CA, processes and their readiness). Its six traffic steps are the
//! benchmark's targets: for each [`Mode`], the request through lb and the
//! same request straight to server1 (plain for HTTP and for the edge's
//! backend, TLS for re-encrypt).
//!
//! In the client's namespace, hoplab's own L7 client
//! ([`crate::l7::client::exchange`]) sends each request on a new TCP
//! connection (`Connection: close`, as a scenario's step does; the client
//! logs no TLS secrets here), one request at a time. Every response is
//! checked: status 200, served by server1, and HAProxy's `X-Via` header
//! present exactly when the request went through lb. Before anything is
//! timed, one request per target checks the path. Then [`Config::rounds`]
//! rounds, each measuring the six targets in turn, through lb and direct
//! side by side (their order swapped every other round); a measurement is
//! [`Config::requests`] requests, cut short after [`Config::max_secs`] or
//! [`MAX_FAILED`] failures. Reported per target: the median over the rounds
//! of requests/s, p50 and p99 latency (connect to the end of the response).
//! Last, unless [`Config::capture_requests`] is 0, one more round of that
//! many requests per target with every interface of the lab captured as a
//! scenario's run does: what capturing costs, and how many frames it took.
//!
//! It traces nothing, writes no capture file, and does not write any report
//! (xtask renders them from the JSON the benchmark process prints).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::capture::Capture;
use crate::l7::client::{self, ClientCtx, Seen};
use crate::l7::spec::L7Step;
use crate::lab::{sandbox, traffic};
use crate::oakestra::{self, Expanded};
use crate::{run, scenario, Error};

/// The benchmark's lab, as a scenario file.
pub const SCENARIO: &str = include_str!("l7.yaml");

/// A measurement gives up after this many failed requests.
pub const MAX_FAILED: usize = 10;

/// The host the requests are sent from.
const CLIENT: &str = "client";

/// The benchmark's lab, parsed and expanded.
pub fn scenario() -> Expanded {
    oakestra::parse(Path::new("(bench-l7)"), "bench-l7", SCENARIO)
        .expect("the L7 benchmark's scenario is valid")
}

/// What a run does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Requests per measurement.
    pub requests: usize,
    /// Rounds over the six targets; medians are reported.
    pub rounds: usize,
    /// Each request's timeout (connect to the end of the response), ms.
    pub timeout_ms: u64,
    /// A measurement stops after this long, whatever its count.
    pub max_secs: f64,
    /// Requests per target in one more round, with every interface of the
    /// lab captured as a scenario's run does (0: no captured round).
    #[serde(default)]
    pub capture_requests: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            requests: 2000,
            rounds: 5,
            timeout_ms: 5000,
            max_secs: 30.0,
            capture_requests: 500,
        }
    }
}

/// What is proxied: HTTP, TLS ended at lb, TLS ended and started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Http,
    TlsEdge,
    TlsReencrypt,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Http, Mode::TlsEdge, Mode::TlsReencrypt];

    /// The scenario's steps: through lb, straight to server1.
    pub fn steps(self) -> [&'static str; 2] {
        match self {
            Mode::Http => ["http-via", "http-direct"],
            Mode::TlsEdge => ["edge-via", "edge-direct"],
            Mode::TlsReencrypt => ["reencrypt-via", "reencrypt-direct"],
        }
    }
}

/// One target: where its requests go and what they are.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    to: SocketAddr,
    step: L7Step,
    /// Through lb (the response must carry HAProxy's `X-Via`).
    via: bool,
}

impl Target {
    fn of(sc: &Expanded, name: &str, via: bool) -> Target {
        let s = sc
            .traffic
            .iter()
            .find(|s| s.name == name)
            .expect("the scenario has every target's step");
        Target {
            name: name.to_string(),
            to: SocketAddr::new(s.target.addr, s.target.port),
            step: s.l7.clone().expect("an HTTP step"),
            via,
        }
    }

    fn described(&self) -> Endpoint {
        Endpoint {
            step: self.name.clone(),
            to: self.to,
            tls: self.step.tls().is_some(),
        }
    }
}

/// A target as the results name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The scenario's step.
    pub step: String,
    pub to: SocketAddr,
    pub tls: bool,
}

/// One measurement of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Requests answered as expected.
    pub ok: usize,
    pub failed: usize,
    pub secs: f64,
    pub req_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Every round's measurement of one target, and their medians.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub target: Endpoint,
    pub rounds: Vec<Sample>,
    pub median: Sample,
    /// The first failure, in words (`TLS error: ...`, `HTTP 503 ...`).
    pub first_error: Option<String>,
    /// The captured round's measurement.
    #[serde(default)]
    pub captured: Option<Sample>,
}

impl Measured {
    fn new(target: Endpoint, rounds: Vec<Sample>, first_error: Option<String>) -> Measured {
        let med = |f: fn(&Sample) -> f64| median(rounds.iter().map(f).collect());
        let median = Sample {
            ok: med(|s| s.ok as f64).round() as usize,
            failed: rounds.iter().map(|s| s.failed).sum(),
            secs: med(|s| s.secs),
            req_per_s: med(|s| s.req_per_s),
            p50_us: med(|s| s.p50_us),
            p99_us: med(|s| s.p99_us),
        };
        Measured {
            target,
            rounds,
            median,
            first_error,
            captured: None,
        }
    }
}

/// One mode: through lb, and direct.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeResult {
    pub mode: Mode,
    pub via: Measured,
    pub direct: Measured,
}

/// What `hoplab __bench-l7` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub config: Config,
    /// `haproxy -v`'s first line.
    pub haproxy: String,
    pub modes: Vec<ModeResult>,
    /// What the captured round captured.
    #[serde(default)]
    pub capture: Option<Captured>,
}

/// The captured round's capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub interfaces: usize,
    pub frames: usize,
    pub bytes: usize,
}

impl Results {
    pub fn get(&self, m: Mode) -> Option<&ModeResult> {
        self.modes.iter().find(|r| r.mode == m)
    }
}

/// Start the lab under `out` (logs, host directories), check every path,
/// measure, stop.
pub fn run(cfg: &Config, out: &Path) -> Result<Results, Error> {
    if cfg.requests == 0 || cfg.rounds == 0 {
        return Err(Error::Failed(
            "the L7 benchmark needs at least one request and one round".into(),
        ));
    }
    let sc = scenario();
    let found = crate::lab::check::system::check(&sc.lab);
    scenario::check_all(Path::new("(bench-l7)"), SCENARIO, found)
        .map_err(|e| Error::Scenario(e.into()))?;
    let haproxy = haproxy_version()?;
    let rt = run::runtime()?;
    let started = run::start(&sc, out, &rt)?;
    let ctx = ClientCtx {
        pki: started.l7.pki.clone(),
        keylog: None,
    };
    let targets: Vec<Target> = Mode::ALL
        .iter()
        .flat_map(|m| {
            let [v, d] = m.steps();
            [Target::of(&sc, v, true), Target::of(&sc, d, false)]
        })
        .collect();
    let ns = &started.topo.hosts[CLIENT].ns;
    for t in &targets {
        ns.run(|| request(t, "check", &ctx, cfg))
            .map_err(io(&t.name))?
            .map_err(|e| Error::Failed(format!("{}: {e}", t.name)))?;
    }
    let mut rounds: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    let mut errors: Vec<Option<String>> = vec![None; targets.len()];
    for r in 0..cfg.rounds {
        for m in 0..Mode::ALL.len() {
            let order = if r % 2 == 1 { [1, 0] } else { [0, 1] };
            for k in order {
                let i = 2 * m + k;
                let (s, e) = ns
                    .run(|| measure(&targets[i], r, &ctx, cfg))
                    .map_err(io(&targets[i].name))??;
                rounds[i].push(s);
                errors[i] = errors[i].take().or(e);
            }
        }
    }
    let (capture, mut captured) = if cfg.capture_requests > 0 {
        let (c, s) = captured_round(&sc, &started, &targets, &ctx, cfg)?;
        (Some(c), s.into_iter().map(Some).collect())
    } else {
        (None, vec![None; targets.len()])
    };
    drop(started);
    let mut measured = targets
        .iter()
        .zip(rounds)
        .zip(errors)
        .map(|((t, r), e)| Measured::new(t.described(), r, e))
        .zip(&mut captured)
        .map(|(mut m, c)| {
            m.captured = c.take();
            m
        });
    let modes = Mode::ALL
        .iter()
        .map(|&mode| ModeResult {
            mode,
            via: measured.next().expect("a target per step"),
            direct: measured.next().expect("a target per step"),
        })
        .collect();
    Ok(Results {
        config: cfg.clone(),
        haproxy,
        modes,
        capture,
    })
}

/// One more round of [`Config::capture_requests`] requests per target,
/// with every interface of the lab captured (packet sockets read by a
/// thread of this process, as a scenario's run captures): what capturing
/// costs the requests, and what it holds.
fn captured_round(
    sc: &Expanded,
    started: &run::Started,
    targets: &[Target],
    ctx: &ClientCtx,
    cfg: &Config,
) -> Result<(Captured, Vec<Sample>), Error> {
    let ifaces = sc.capture_interfaces();
    let on: Vec<_> = ifaces
        .iter()
        .map(|(h, i)| (&started.topo.hosts[h].ns, i.as_str()))
        .collect();
    let cap = Capture::start(&on).map_err(io("start capture"))?;
    let one = Config {
        requests: cfg.capture_requests,
        ..cfg.clone()
    };
    let ns = &started.topo.hosts[CLIENT].ns;
    let mut samples = Vec::with_capacity(targets.len());
    for t in targets {
        let (s, _) = ns
            .run(|| measure(t, cfg.rounds, ctx, &one))
            .map_err(io(&t.name))??;
        samples.push(s);
    }
    let (ifs, frames) = cap
        .finish(Duration::from_millis(50), &sandbox::interrupted)
        .map_err(io("capture"))?;
    let captured = Captured {
        interfaces: ifs.len(),
        frames: frames.len(),
        bytes: frames.iter().map(|f| f.data.len()).sum(),
    };
    Ok((captured, samples))
}

/// An I/O error of `what`.
fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_string();
    move |source| Error::Io { what, source }
}

fn haproxy_version() -> Result<String, Error> {
    let out = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .map_err(io("haproxy -v"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// One measurement of `t` in round `round`: its sample and first failure.
fn measure(
    t: &Target,
    round: usize,
    ctx: &ClientCtx,
    cfg: &Config,
) -> Result<(Sample, Option<String>), Error> {
    let mut lat = Vec::with_capacity(cfg.requests);
    let (mut failed, mut first) = (0, None);
    let t0 = Instant::now();
    for n in 0..cfg.requests {
        if sandbox::interrupted() {
            return Err(Error::Interrupted);
        }
        if t0.elapsed().as_secs_f64() >= cfg.max_secs || failed >= MAX_FAILED {
            break;
        }
        match request(t, &format!("r{round}-{n}"), ctx, cfg) {
            Ok(d) => lat.push(d.as_secs_f64() * 1e6),
            Err(e) => {
                failed += 1;
                first = first.or(Some(e));
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let sample = Sample {
        ok: lat.len(),
        failed,
        secs,
        req_per_s: lat.len() as f64 / secs,
        p50_us: percentile(&lat, 50.0),
        p99_us: percentile(&lat, 99.0),
    };
    Ok((sample, first))
}

/// One request to `t` on a new connection, with request id
/// `bench-STEP-ID`: its time from connect to the end of the response, or
/// why it failed.
fn request(t: &Target, id: &str, ctx: &ClientCtx, cfg: &Config) -> Result<Duration, String> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let start = Instant::now();
    let tcp = TcpStream::connect_timeout(&t.to, timeout).map_err(|e| format!("connect: {e}"))?;
    let id = format!("bench-{}-{id}", t.name);
    let seen = client::exchange(
        tcp,
        &t.step,
        t.to,
        &id,
        ctx,
        (start + timeout, traffic::SLICE),
        &sandbox::interrupted,
    );
    let took = start.elapsed();
    match seen {
        Seen::Http(m) => {
            let served = m.header("x-served-by").unwrap_or("");
            let via = m.header("x-via").is_some();
            if m.status == 200 && served.starts_with("server1/") && via == t.via {
                Ok(took)
            } else {
                Err(format!(
                    "HTTP {} served by `{served}`, X-Via {}",
                    m.status,
                    if via { "present" } else { "absent" }
                ))
            }
        }
        Seen::WebSocket(_) => Err("a WebSocket answer to an HTTP request".into()),
        Seen::Silence => Err(format!("no reply within {} ms", cfg.timeout_ms)),
        Seen::Failed(e) => Err(e),
    }
}

/// The `p`th percentile of sorted `v` (nearest rank); 0 when empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_has_every_target_and_haproxy() {
        let sc = scenario();
        for m in Mode::ALL {
            let [v, d] = m.steps();
            let (v, d) = (Target::of(&sc, v, true), Target::of(&sc, d, false));
            assert_eq!(v.to.ip().to_string(), "10.0.1.1");
            assert_eq!(d.to.ip().to_string(), "10.0.2.10");
            let tls = m != Mode::Http;
            assert_eq!(v.step.tls().is_some(), tls);
            assert_eq!(d.step.tls().is_some(), m == Mode::TlsReencrypt);
        }
        let lb = &sc.hosts["lb"];
        assert_eq!(lb.processes[0].cmd.as_ref().unwrap()[0], "haproxy");
        assert!(lb.files.contains_key("haproxy.cfg"));
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
    }

    #[test]
    fn medians_over_rounds_and_failures_summed() {
        let s = |ok, failed, rps| Sample {
            ok,
            failed,
            secs: 1.0,
            req_per_s: rps,
            p50_us: rps / 10.0,
            p99_us: rps / 5.0,
        };
        let ep = Endpoint {
            step: "x".into(),
            to: "10.0.1.1:80".parse().unwrap(),
            tls: false,
        };
        let m = Measured::new(
            ep,
            vec![s(5, 0, 300.0), s(4, 1, 100.0), s(5, 2, 200.0)],
            None,
        );
        assert_eq!(m.median, s(5, 3, 200.0));
    }
}
