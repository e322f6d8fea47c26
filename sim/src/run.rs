//! One scenario run, inside the sandbox: build, start, capture, traffic,
//! trace, report. Every artifact lands in the output directory, also when a
//! step does not meet its expectation or the run is interrupted after the
//! capture started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::capture::{self, Capture};
use crate::process;
use crate::scenario::Scenario;
use crate::topology;
use crate::trace::{self, StepReport, Trace};
use crate::traffic;
use crate::{report, sandbox, Error};

pub struct Outcome {
    pub trace: Trace,
    /// Steps whose reply was not what the scenario expected.
    pub unmet: Vec<String>,
    pub pcapng: PathBuf,
}

fn phase(sc: &Scenario, name: &str, t: Instant) {
    crate::progress::phase(&sc.name, name, t.elapsed());
}

fn check_interrupt() -> Result<(), Error> {
    if sandbox::interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// A built topology with its processes and control plane running.
/// Dropping it stops the processes, then the control plane, then removes
/// the namespaces.
pub struct Started {
    pub topo: topology::Topology,
    procs: Vec<process::Running>,
    control: Option<crate::control_plane::ControlPlane>,
}

impl Started {
    /// The simulated control plane, if the scenario has clusters.
    pub fn control(&self) -> Option<&crate::control_plane::ControlPlane> {
        self.control.as_ref()
    }

    /// Stop the processes (SIGTERM, then SIGKILL after a grace period).
    pub fn stop_processes(&mut self) {
        for p in self.procs.drain(..) {
            p.stop(Duration::from_millis(500));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop_processes();
        self.control.take();
    }
}

/// The current-thread runtime a run drives netlink with.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "start runtime".into(),
            source,
        })
}

/// Build `sc`'s topology, start its control plane and processes (logs
/// under `out/logs`).
pub fn start(sc: &Scenario, out: &Path, rt: &tokio::runtime::Runtime) -> Result<Started, Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    std::fs::create_dir_all(out.join("logs")).map_err(io(format!("create {}", out.display())))?;
    let t = Instant::now();
    let topo = rt.block_on(topology::build(sc))?;
    tracing::debug!(
        hosts = sc.hosts.len(),
        links = sc.links.len(),
        "{}: topology built",
        sc.name
    );
    phase(sc, "build", t);
    check_interrupt()?;

    let t = Instant::now();
    let control = crate::control_plane::ControlPlane::start(&sc.plan, out)?;
    let mut started = Started {
        topo,
        procs: Vec::new(),
        control,
    };
    for (h, host) in &sc.hosts {
        for p in &host.processes {
            let r = process::start(&started.topo.hosts[h].ns, p, out)?;
            tracing::debug!("{}: started process {} on {h}", sc.name, p.name);
            started.procs.push(r);
            check_interrupt()?;
        }
    }
    phase(sc, "start", t);
    Ok(started)
}

/// Run `sc`, writing `capture.pcapng`, `trace.yaml`, `report.md` and
/// `logs/` under `out`.
pub fn run(sc: &Scenario, out: &Path) -> Result<Outcome, Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    let rt = runtime()?;
    let mut started = start(sc, out, &rt)?;
    let topo = &started.topo;

    let t = Instant::now();
    let ifaces = sc.capture_interfaces();
    let targets: Vec<_> = ifaces
        .iter()
        .map(|(h, i)| (&topo.hosts[h].ns, i.as_str()))
        .collect();
    let cap = Capture::start(&targets).map_err(io("start capture".into()))?;

    let mut reports = Vec::new();
    let mut unmet = Vec::new();
    for (i, step) in sc.traffic.iter().enumerate() {
        if sandbox::interrupted() {
            break;
        }
        if let Some(c) = started.control() {
            if let Some(m) = &step.fail_manager {
                c.fail(m);
            }
            if !step.invalidate.is_empty() {
                for ip in &step.invalidate {
                    c.invalidate(*ip);
                }
                // The net managers read pushed lines between packets; give
                // them time to before the step's first packet.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !step.expose.is_empty() || !step.unexpose.is_empty() {
            let g = sc
                .hosts
                .values()
                .flat_map(|h| &h.processes)
                .find_map(|p| p.gateway.as_ref());
            let sock = g.expect("validated: a gateway").control(&out.join("ctl"));
            let lines = step
                .unexpose
                .iter()
                .map(|u| {
                    let v6 = if u.v6 { " v6" } else { "" };
                    format!("unexpose {} {}{v6}", u.proto, u.port)
                })
                .chain(
                    step.expose
                        .iter()
                        .map(|e| format!("expose {} {} {}", e.proto, e.port, e.service)),
                );
            for line in lines {
                crate::gateway::control(&sock, &line)
                    .map_err(io(format!("traffic[{i}] {}: gateway `{line}`", step.name)))?;
            }
        }
        let sport = step.source_port(i);
        let seen = topo.hosts[&step.from]
            .ns
            .run(|| traffic::run_step(step, sport, &sandbox::interrupted))
            .map_err(io(format!("traffic[{i}] {}", step.name)))?;
        let ok = seen.meets(step);
        tracing::info!(
            "{}: traffic[{i}] {}: {} ({})",
            sc.name,
            step.name,
            seen.describe(),
            if ok { "as expected" } else { "NOT as expected" }
        );
        if !ok {
            unmet.push(format!(
                "{}: expected {:?}, got {}",
                step.name,
                step.expect,
                seen.describe()
            ));
        }
        reports.push(StepReport {
            sent: format!(
                "{} from {} port {sport} to {}, payload {} B",
                step.proto,
                step.from,
                step.to,
                step.payload.len()
            ),
            result: if ok {
                trace::StepResult::Ok(Some(seen.describe()))
            } else {
                trace::StepResult::Failed(Some(format!(
                    "expected {}, got {}",
                    step.expect,
                    seen.describe()
                )))
            },
        });
    }
    phase(sc, "traffic", t);

    let t = Instant::now();
    let (ifs, frames) = cap
        .finish(Duration::from_millis(sc.capture.settle_ms))
        .map_err(io("capture".into()))?;
    let counters = gateway_counters(sc, out)?;
    started.stop_processes();
    let control_answers = started.control().map(|c| c.answers()).unwrap_or_default();
    tracing::debug!(
        "{}: captured {} frames on {} interfaces",
        sc.name,
        frames.len(),
        ifs.len()
    );
    let pcapng = out.join("capture.pcapng");
    capture::write_pcapng(&pcapng, &sc.name, &ifs, &frames, &[])?;
    phase(sc, "capture", t);

    let t = Instant::now();
    // The capture is on disk before anything else can fail; the trace is
    // built from the file as written, as `hoplab trace` would, and the file
    // is written again with each frame's flow and hop as comments.
    let captured = capture::read_capture(&pcapng)?;
    let (mut tr, comments) = trace::build_annotated(&trace::Lab::of(sc), &captured, &reports);
    capture::write_pcapng(&pcapng, &sc.name, &ifs, &frames, &comments)?;
    tr.control_plane = control_answers;
    tr.counters = counters;
    std::fs::write(out.join("trace.yaml"), tr.to_yaml()).map_err(io("write trace.yaml".into()))?;
    std::fs::write(out.join("report.md"), report::markdown(&tr, &pcapng))
        .map_err(io("write report.md".into()))?;
    std::fs::write(
        out.join("report.html"),
        crate::report::html::report(&tr, "capture.pcapng"),
    )
    .map_err(io("write report.html".into()))?;
    phase(sc, "trace", t);
    drop(started);
    // What was captured before an interruption is written all the same.
    check_interrupt()?;
    Ok(Outcome {
        trace: tr,
        unmet,
        pcapng,
    })
}

/// Counters that depend on when the run looked, not on what it sent.
const TIMING_COUNTERS: &[&str] = &["flows_expired"];

/// Every gateway's counters (with its firewall's), by `host/gateway`:
/// those not zero and not timing-dependent.
fn gateway_counters(
    sc: &Scenario,
    out: &Path,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>, Error> {
    let mut all = std::collections::BTreeMap::new();
    for (h, host) in &sc.hosts {
        for g in host.processes.iter().filter_map(|p| p.gateway.as_ref()) {
            let text = crate::gateway::control(&g.control(&out.join("ctl")), "counters").map_err(
                |source| Error::Io {
                    what: format!("reading the counters of the gateway on {h}"),
                    source,
                },
            )?;
            let m: std::collections::BTreeMap<String, u64> = crate::gateway::parse_counters(&text)
                .into_iter()
                .filter(|(k, v)| *v != 0 && !TIMING_COUNTERS.contains(&k.as_str()))
                .collect();
            all.insert(format!("{h}/gateway"), m);
        }
    }
    Ok(all)
}

/// Timings of one chain benchmark run, in milliseconds.
pub struct ChainTimings {
    /// Baseline in the same process: create and drop `n` bare namespaces.
    pub bare_ms: f64,
    pub build_ms: f64,
    pub traffic_ms: f64,
    pub teardown_ms: f64,
}

/// Build a chain of `n` hosts, run its two pings, tear it down.
pub fn bench_chain(n: usize) -> Result<ChainTimings, Error> {
    let sc = crate::bench::chain(n);
    let rt = runtime()?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let bare: Vec<_> = (0..n)
        .map(|i| crate::netns::NetNs::create(&format!("bare{i}")))
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Io {
            what: "bare namespace".into(),
            source,
        })?;
    drop(bare);
    let bare_ms = ms(t);
    let t = Instant::now();
    let topo = rt.block_on(topology::build(&sc))?;
    let build_ms = ms(t);
    let t = Instant::now();
    for (i, step) in sc.traffic.iter().enumerate() {
        let seen = topo.hosts[&step.from]
            .ns
            .run(|| traffic::run_step(step, step.source_port(i), &|| false))
            .map_err(|source| Error::Io {
                what: step.name.clone(),
                source,
            })?;
        if !seen.meets(step) {
            return Err(Error::Failed(format!(
                "chain-{n} {}: {}",
                step.name,
                seen.describe()
            )));
        }
    }
    let traffic_ms = ms(t);
    let t = Instant::now();
    drop(topo);
    drop(rt);
    Ok(ChainTimings {
        bare_ms,
        build_ms,
        traffic_ms,
        teardown_ms: ms(t),
    })
}
