//! One scenario run, inside the sandbox: build, start, capture, traffic,
//! trace, report. Every artifact lands in the output directory, also when a
//! step does not meet its expectation or the run is interrupted: an
//! interrupted run writes what it captured until then (nothing, before the
//! traffic), and its trace says by which signal, in which phase and when,
//! the step that was cut short and the steps that did not run.
//!
//! Before the processes start, each host's working directory
//! (`<out>/hosts/HOST/`) gets its files and the run's certificates
//! (`tls/`); hoplab's own TLS sessions append to `<out>/tls-keys.log`.
//!
//! Reads the expanded scenario ([`crate::oakestra::Expanded`]: the lab and
//! the service managers' plan); the phases themselves are `crate::lab`'s,
//! `crate::capture`'s, `crate::trace`'s and the reports'.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::capture::kernel_drops::KernelDrops;
use crate::capture::verdicts::{NftTrace, Verdicts, Where};
use crate::capture::{self, Capture};
use crate::l7::client::ClientCtx;
use crate::l7::pki::Pki;
use crate::l7::spec::FileSource;
use crate::lab::netns::NetNs;
use crate::lab::{gateway_ctl, process, sandbox, topology, traffic, Lab, Session, Step};
use crate::oakestra::control_plane::ControlPlane;
use crate::oakestra::Expanded;
use crate::trace::{self, StepReport, Trace};
use crate::{report, Error};

mod faults;

pub struct Outcome {
    pub trace: Trace,
    /// Steps whose reply was not what the scenario expected.
    pub unmet: Vec<String>,
    pub pcapng: PathBuf,
}

fn phase(sc: &Lab, name: &str, t: Instant) {
    crate::progress::phase(&sc.name, name, t.elapsed());
}

/// Where a run is, so that an interrupt is told with the phase it came in.
struct Phases {
    t0: Instant,
    during: String,
    seen: Option<trace::Interrupted>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            t0: Instant::now(),
            during: "build".into(),
            seen: None,
        }
    }

    /// Go on to phase `next`; an interrupt that came before is the current
    /// phase's.
    fn enter(&mut self, next: impl Into<String>) {
        self.note();
        self.during = next.into();
    }

    /// Whether the run was interrupted; the first time it is seen, the
    /// signal is noted with the current phase.
    fn note(&mut self) -> bool {
        if self.seen.is_none() {
            if let Some(sig) = sandbox::signal() {
                self.seen = Some(trace::Interrupted {
                    signal: sig.as_str().to_string(),
                    during: self.during.clone(),
                    after_ms: self.t0.elapsed().as_millis() as u64,
                });
            }
        }
        self.seen.is_some()
    }

    fn check(&mut self) -> Result<(), Error> {
        if self.note() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}

/// Returns once the run is interrupted (checked every slice).
async fn until_interrupted() {
    while !sandbox::interrupted() {
        tokio::time::sleep(traffic::SLICE).await;
    }
}

/// A built topology with its processes and control plane running.
/// Dropping it stops the processes, then the control plane, then removes
/// the namespaces.
pub struct Started {
    pub topo: topology::Topology,
    procs: Vec<process::Running>,
    control: Option<ControlPlane>,
    /// The run's CA and key log, for the L7 clients.
    pub l7: ClientCtx,
    /// What happened to the processes, for the trace's `processes`.
    events: Vec<String>,
    /// Processes whose end is told already (by a fault step or a death).
    told: std::collections::BTreeSet<String>,
    /// The kernel's drops, recorded from before the processes start (the
    /// program's load takes a while), taken by the capture.
    kernel: Option<Result<KernelDrops, crate::capture::kernel_drops::Error>>,
}

impl Started {
    /// Processes that ended by themselves since the last look, each told
    /// once in the trace as `HOST/NAME died during WHEN: STATUS`; returns
    /// those lines.
    fn deaths(&mut self, during: &str) -> Vec<String> {
        let mut died = Vec::new();
        for p in &mut self.procs {
            if self.told.contains(&p.id()) {
                continue;
            }
            if let Some(how) = p.ended() {
                self.told.insert(p.id());
                died.push(format!("{} died during {during}: {how}", p.id()));
            }
        }
        self.events.extend(died.iter().cloned());
        died
    }

    /// How process `id` (`HOST/NAME`) ended, or `None` while it runs (or
    /// when the lab has no such process).
    fn ended(&mut self, id: &str) -> Option<String> {
        self.procs
            .iter_mut()
            .find(|p| p.id() == id)
            .and_then(|p| p.ended())
    }

    /// The simulated control plane, if the scenario has clusters.
    pub fn control(&self) -> Option<&ControlPlane> {
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
pub fn start(sc: &Expanded, out: &Path, rt: &tokio::runtime::Runtime) -> Result<Started, Error> {
    start_in(sc, out, rt, &mut Phases::new())
}

/// [`start`], telling `ph` its phases. An interrupt ends it within a slice,
/// also while the topology is built (what was built goes with the
/// sandbox).
fn start_in(
    sc: &Expanded,
    out: &Path,
    rt: &tokio::runtime::Runtime,
    ph: &mut Phases,
) -> Result<Started, Error> {
    std::fs::create_dir_all(out.join("logs")).map_err(io(format!("create {}", out.display())))?;
    ph.enter("build");
    ph.check()?;
    let t = Instant::now();
    let topo = rt.block_on(async {
        tokio::select! {
            built = topology::build(sc) => built,
            () = until_interrupted() => Err(Error::Interrupted),
        }
    })?;
    tracing::debug!(
        hosts = sc.hosts.len(),
        links = sc.links.len(),
        "{}: topology built",
        sc.name
    );
    phase(sc, "build", t);
    ph.enter("start");
    ph.check()?;

    let t = Instant::now();
    let l7 = lay_files(sc, out)?;
    let control = ControlPlane::start(&sc.plan, out)?;
    // Processes append to their drop logs (a restart adds its part): an
    // earlier run's are removed.
    for (_, _, log) in drop_logs(sc, out) {
        match std::fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("remove {}", log.display()))(e))
            }
            _ => {}
        }
    }
    let mut started = Started {
        topo,
        procs: Vec::new(),
        control,
        l7,
        events: Vec::new(),
        told: Default::default(),
        kernel: None,
    };
    started.kernel = Some(KernelDrops::start(&all_hosts(sc, &started)));
    for (h, host) in &sc.hosts {
        for p in &host.processes {
            let r = process::start(&started.topo.hosts[h].ns, p, out)?;
            tracing::debug!("{}: started process {} on {h}", sc.name, p.name);
            started.procs.push(r);
            ph.check()?;
        }
    }
    phase(sc, "start", t);
    Ok(started)
}

/// The run's CA (when the lab has certificates), and each host's
/// working directory with its files and `tls/`; an old key log removed.
fn lay_files(sc: &Lab, out: &Path) -> Result<ClientCtx, Error> {
    let keylog =
        std::path::absolute(process::keylog_path(out)).map_err(io("locate the key log".into()))?;
    match std::fs::remove_file(&keylog) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("remove {}", keylog.display()))(e))
        }
        _ => {}
    }
    let pki = if sc.certs.is_empty() {
        None
    } else {
        let p = Pki::new(&sc.name, &sc.certs).map_err(|e| Error::Failed(format!("tls: {e}")))?;
        Some(std::sync::Arc::new(p))
    };
    for (h, host) in &sc.hosts {
        if host.files.is_empty() && pki.is_none() {
            continue;
        }
        let dir = process::host_dir(out, h);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        for (name, f) in &host.files {
            let field = format!(
                "hosts.{}.files.{}",
                crate::values::key(h),
                crate::values::key(name)
            );
            let text = match f {
                FileSource::Text(t) => t.as_bytes().to_vec(),
                FileSource::Path(p) => {
                    std::fs::read(p).map_err(io(format!("{field}: read {p}")))?
                }
            };
            let to = dir.join(name);
            std::fs::write(&to, text).map_err(io(format!("{field}: write {}", to.display())))?;
        }
        if let Some(p) = &pki {
            p.write(&dir.join("tls"))
                .map_err(|e| Error::Failed(format!("tls: {e}")))?;
        }
    }
    Ok(ClientCtx {
        pki,
        keylog: Some(keylog),
    })
}

/// Run `sc`, writing `capture.pcapng`, `trace.yaml`, `report.md`,
/// `report.html` and `logs/` under `out`.
pub fn run(sc: &Expanded, out: &Path) -> Result<Outcome, Error> {
    let rt = runtime()?;
    let mut ph = Phases::new();
    let started = match start_in(sc, out, &rt, &mut ph) {
        Ok(s) => s,
        Err(Error::Interrupted) => {
            // Nothing captured yet: the trace says so, and that no step ran.
            ph.note();
            let reports = not_run(sc, 0);
            let pcapng = out.join("capture.pcapng");
            capture::write_pcapng(&pcapng, &sc.name, &[], &[], &[], &[])?;
            let extra = Extra {
                interrupted: ph.seen.take(),
                ..Extra::default()
            };
            write_trace(sc, out, &pcapng, (&[], &[]), &reports, extra)?;
            return Err(Error::Interrupted);
        }
        Err(e) => return Err(e),
    };
    capture_and_trace((sc, &rt), out, started, &mut ph)
}

/// The rest of [`run`] once everything is started: capture, traffic, the
/// capture written, trace and reports.
fn capture_and_trace(
    (sc, rt): (&Expanded, &tokio::runtime::Runtime),
    out: &Path,
    mut started: Started,
    ph: &mut Phases,
) -> Result<Outcome, Error> {
    let t = Instant::now();
    ph.enter("traffic");
    let ifaces = sc.capture_interfaces();
    let targets: Vec<_> = ifaces
        .iter()
        .map(|(h, i)| (&started.topo.hosts[h].ns, i.as_str()))
        .collect();
    let nftrace = NftTrace::start(&traced_hosts(sc, &started));
    let kernel =
        (started.kernel.take()).unwrap_or_else(|| KernelDrops::start(&all_hosts(sc, &started)));
    let kernel_since = crate::capture::kernel_drops::now();
    let cap = Capture::start(&targets).map_err(io("start capture".into()))?;
    drop(targets);
    let drops_before = interface_drops(sc, &started)?;
    let (reports, mut unmet) = traffic((sc, rt), &mut started, out, ph)?;
    unmet.extend(started.deaths("traffic"));
    phase(sc, "traffic", t);

    let t = Instant::now();
    ph.enter("capture");
    let (ifs, frames) = cap
        .finish(
            Duration::from_millis(sc.capture.settle_ms),
            &sandbox::interrupted,
        )
        .map_err(io("capture".into()))?;
    let mut drops = nftrace.finish(&traced_hosts(sc, &started));
    kernel_drops(
        (kernel, kernel_since),
        (sc, &started),
        (&ifs, &frames),
        out,
        &mut drops,
    )?;
    impairment_drops(sc, &started, &mut drops);
    unmet.extend(started.deaths("capture"));
    let mut counters = dataplane_counters(sc, out, &mut started);
    firewall_counters(sc, &started, &mut counters)?;
    metrics_counters(sc, &started, &mut counters)?;
    for (h, m) in since(interface_drops(sc, &started)?, &drops_before) {
        counters.insert(format!("{h}/interfaces"), m);
    }
    started.stop_processes();
    for (host, who, log) in drop_logs(sc, out) {
        let text = std::fs::read_to_string(&log).ok();
        crate::capture::dataplane_drops::read(&host, who, text.as_deref(), &mut drops);
    }
    remove_stale_sockets(sc, out);
    let control_plane = started.control().map(|c| c.answers()).unwrap_or_default();
    tracing::debug!(
        "{}: captured {} frames on {} interfaces",
        sc.name,
        frames.len(),
        ifs.len()
    );
    let pcapng = out.join("capture.pcapng");
    let stored = (tls_keys(out)?, drops);
    let annex = (stored.0.as_slice(), Some(&stored.1));
    capture::write_pcapng_with(&pcapng, &sc.name, &ifs, &frames, &[], annex)?;
    phase(sc, "capture", t);

    let t = Instant::now();
    ph.enter("trace");
    ph.note();
    let extra = Extra {
        control_plane,
        counters,
        processes: std::mem::take(&mut started.events),
        interrupted: ph.seen.clone(),
    };
    let tr = write_trace(sc, out, &pcapng, (&ifs, &frames), &reports, extra)?;
    phase(sc, "trace", t);
    for f in tr.flows.iter().filter(|f| f.load.is_some()) {
        if let trace::StepResult::Failed(Some(why)) = &f.result {
            unmet.push(format!("{}: {why}", f.step));
        }
    }
    drop(started);
    // What was captured before an interruption is written all the same.
    ph.check()?;
    Ok(Outcome {
        trace: tr,
        unmet,
        pcapng,
    })
}

/// What a trace holds besides the capture's packets and the steps' results.
#[derive(Default)]
struct Extra {
    control_plane: Vec<String>,
    counters: CounterMap,
    processes: Vec<String>,
    interrupted: Option<trace::Interrupted>,
}

/// The kernel's drops in the run's hosts since `since` (see
/// [`crate::capture::kernel_drops`]), into `drops` and
/// `<out>/kernel-drops.txt`; where they could not be recorded, why.
fn kernel_drops(
    (kernel, since): (
        Result<KernelDrops, crate::capture::kernel_drops::Error>,
        u64,
    ),
    (sc, started): (&Lab, &Started),
    (ifs, frames): (&[capture::Iface], &[capture::Frame]),
    out: &Path,
    drops: &mut Verdicts,
) -> Result<(), Error> {
    use crate::capture::kernel_drops as kd;
    let kernel = match kernel {
        Ok(k) => k,
        Err(e) => {
            drops
                .unavailable
                .push(format!("kernel: its drops are not recorded: {e}"));
            return Ok(());
        }
    };
    let hosts_of = kernel.hosts().clone();
    let (mut records, lost) = kernel.finish();
    // Only what happened while the run captured.
    records.retain(|r| r.time_ns >= since);
    let reasons = kd::reason_names();
    if reasons.is_empty() {
        drops.unavailable.push(
            "kernel: the tracepoint's format file does not read: reasons shown by number".into(),
        );
    }
    if lost > 0 {
        drops.unavailable.push(format!(
            "kernel: {lost} drops found the ring buffer full and are not recorded"
        ));
    }
    let names = kd::Names {
        hosts: &hosts_of,
        ifnames: &kd::interface_names(&all_hosts(sc, started)),
        reasons: &reasons,
        capture: (ifs, frames),
    };
    let lines = kd::add(&records, &names, drops);
    let path = out.join("kernel-drops.txt");
    kd::write(&path, &lines).map_err(io(format!("write {}", path.display())))
}

/// Every host of the lab, for the kernel's drops.
fn all_hosts<'a>(sc: &'a Lab, started: &'a Started) -> Vec<(&'a str, &'a NetNs)> {
    (sc.hosts.keys())
        .map(|n| (n.as_str(), &started.topo.hosts[n].ns))
        .collect()
}

/// The packets the impaired links dropped, as drops of the host that sent
/// them, at the interface they left by (a tunnel datagram: its inner
/// packet, on the encapsulated hop). A link's own `impair` is named
/// `impairment a_to_b of links[N]`; one named by its end in the top-level
/// section `impairment out of HOST/IFNAME` (or `into`).
fn impairment_drops(sc: &Lab, started: &Started, drops: &mut Verdicts) {
    use crate::capture::verdicts::{Drop, Key};
    for l in started.topo.impairment_losses() {
        let link = &sc.links[l.link];
        let Some(im) = link.impair.as_ref() else {
            continue;
        };
        let (from, dir, d) = if l.a_to_b {
            (&link.a, "a_to_b", &im.a_to_b)
        } else {
            (&link.b, "b_to_a", &im.b_to_a)
        };
        let Some(d) = d else { continue };
        let by = match &im.named {
            Some(end) if *end == format!("{}/{}", from.host, from.ifname) => {
                format!("impairment out of {end}")
            }
            Some(end) => format!("impairment into {end}"),
            None => format!("impairment {dir} of links[{}]", l.link),
        };
        let tunnel = hoplab_dataplane::netmanager::TUNNEL_PORT;
        let (key, at) = match l.packet.tunnelled(tunnel) {
            Some(inner) => (Key::of(&inner), Where::Tunnel),
            None => (Key::of(&l.packet), Where::Chain(from.ifname.clone())),
        };
        let drop = Drop {
            host: from.host.clone(),
            at,
            by,
            why: format!("loss {}%, seed {}", d.loss, im.seed),
        };
        drops.add(key, drop);
    }
}

/// The drop logs the lab's net managers and gateways write beside their
/// counters (`hoplab::shell::droplog`): host, who, path. The path is the
/// process's own `--counters` argument with the extension `drops`.
fn drop_logs(sc: &Lab, out: &Path) -> Vec<(String, &'static str, std::path::PathBuf)> {
    let (ctl, counters) = (out.join("ctl"), out.join("counters"));
    let mut v = Vec::new();
    for (h, host) in &sc.hosts {
        for p in &host.processes {
            let (who, argv) = match (&p.gateway, &p.netmanager) {
                (Some(g), _) => ("the gateway", g.argv("", &ctl, &counters)),
                (None, Some(nm)) => ("the net manager", nm.argv("", &ctl, &counters)),
                (None, None) => continue,
            };
            let at = argv.iter().position(|a| a == "--counters");
            if let Some(c) = at.and_then(|i| argv.get(i + 1)) {
                let log = std::path::Path::new(c).with_extension("drops");
                v.push((h.clone(), who, log));
            }
        }
    }
    v
}

/// The hosts whose nftables drops are recorded: those with a `firewall`
/// script or a gateway (which loads its own table).
fn traced_hosts<'a>(sc: &'a Lab, started: &'a Started) -> Vec<(&'a str, &'a NetNs)> {
    (sc.hosts.iter())
        .filter(|(_, h)| h.firewall.is_some() || h.processes.iter().any(|p| p.gateway.is_some()))
        .map(|(n, _)| (n.as_str(), &started.topo.hosts[n].ns))
        .collect()
}

/// Trace the capture `pcapng` (its interfaces and frames as captured), and
/// write `trace.yaml`, `report.md`, `report.html`, and the capture again
/// with each frame's flow and hop as comments, merged and per interface
/// (`interfaces/HOST.IFNAME.pcapng`).
fn write_trace(
    sc: &Expanded,
    out: &Path,
    pcapng: &Path,
    (ifs, frames): (&[capture::Iface], &[capture::Frame]),
    reports: &[StepReport],
    extra: Extra,
) -> Result<Trace, Error> {
    // The capture is on disk before anything else can fail; the trace is
    // built from the file as written, as `hoplab trace` would: its frames,
    // key log and drop verdicts.
    let file = capture::read_whole(pcapng)?;
    let keys = tls_keys(out)?;
    let mut lab = trace::LabView::of(sc);
    lab.tls_keys = trace::KeyLog::parse(&keys);
    lab.drops = file.verdicts.unwrap_or_default();
    let (mut tr, comments) = trace::build_annotated(&lab, &file.frames, reports);
    let annex = (keys.as_slice(), Some(&lab.drops));
    capture::write_pcapng_with(pcapng, &sc.name, ifs, frames, &comments, annex)?;
    let per_interface = out.join(capture::PER_INTERFACE_DIR);
    capture::write_per_interface(&per_interface, &sc.name, ifs, frames, &comments, annex)?;
    tr.control_plane = extra.control_plane;
    tr.counters = extra.counters;
    let overflow: Vec<(String, crate::load::LoadExpect)> = (lab.steps.iter())
        .filter_map(|s| Some((s.name.clone(), s.load.as_ref()?.1.clone())))
        .filter(|(_, e)| e.overflow)
        .collect();
    trace::queues::settle(&mut tr, &overflow);
    tr.processes = extra.processes;
    tr.interrupted = extra.interrupted;
    std::fs::write(out.join("trace.yaml"), tr.to_yaml()).map_err(io("write trace.yaml".into()))?;
    std::fs::write(out.join("report.md"), report::markdown(&tr, pcapng))
        .map_err(io("write report.md".into()))?;
    std::fs::write(
        out.join("report.html"),
        crate::report::html::report(&tr, "capture.pcapng"),
    )
    .map_err(io("write report.html".into()))?;
    Ok(tr)
}

/// The run's TLS key log, `tls-keys.log` under `out`, where hoplab's own
/// TLS clients and servers write their sessions' secrets (NSS
/// `SSLKEYLOGFILE` format); empty when no TLS session logged any.
fn tls_keys(out: &Path) -> Result<Vec<u8>, Error> {
    match std::fs::read(out.join(TLS_KEY_LOG)) {
        Ok(k) => Ok(k),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(format!("read {TLS_KEY_LOG}"))(e)),
    }
}

/// The key log's file name in a run's directory.
pub const TLS_KEY_LOG: &str = "tls-keys.log";

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// What step `i` sends, for its report.
fn sent(step: &Step, i: usize) -> String {
    if let Some(l) = &step.load {
        let what = match &step.l7 {
            Some(l7) => l7.describe(),
            None => format!("{}, payload {} B each", step.proto, step.payload_bytes),
        };
        return format!(
            "{} flows of {what} from {} ports {}..={} to {}, {} at once",
            l.flows,
            step.from,
            l.ports().start(),
            l.ports().end(),
            step.to,
            l.concurrency
        );
    }
    if let Some(l7) = &step.l7 {
        return format!(
            "{} from {} port {} to {}",
            l7.describe(),
            step.from,
            step.source_port(i),
            step.to
        );
    }
    let (on, then) = match &step.session {
        None => (String::new(), String::new()),
        Some(Session::Open(n)) => (String::new(), format!(", connection {n} kept open")),
        Some(Session::On { name, close }) => (
            format!(" on connection {name}"),
            if *close { ", then closed" } else { "" }.to_string(),
        ),
    };
    format!(
        "{}{on} from {} port {} to {}, payload {} B{then}",
        step.proto,
        step.from,
        step.source_port(i),
        step.to,
        step.payload.len()
    )
}

/// The client of a step of a connection that spans steps: opened in the
/// client's namespace and kept in `conns`, used, then closed if the step
/// says so.
fn session_step(
    started: &Started,
    conns: &mut std::collections::BTreeMap<String, traffic::Conn>,
    i: usize,
    step: &Step,
    session: &Session,
) -> Result<traffic::Observed, Error> {
    match session {
        Session::Open(name) => {
            let (seen, conn) = started.topo.hosts[&step.from]
                .ns
                .run(|| traffic::open(step, step.source_port(i), &sandbox::interrupted))
                .map_err(io(format!("traffic[{i}] {}", step.name)))?;
            if let Some(c) = conn {
                conns.insert(name.clone(), c);
            }
            Ok(seen)
        }
        Session::On { name, close } => {
            let Some(c) = conns.get_mut(name) else {
                return Ok(traffic::Observed::Error(format!(
                    "connection {name} was never made (its opening step got none)"
                )));
            };
            let seen = traffic::send_on(c, step, &sandbox::interrupted);
            if *close {
                if let Some(c) = conns.remove(name) {
                    traffic::close(c, step.timeout_ms, &sandbox::interrupted);
                }
            }
            Ok(seen)
        }
    }
}

/// The reports of the steps from `from` on, which an interrupt kept from
/// running.
fn not_run(sc: &Expanded, from: usize) -> Vec<StepReport> {
    sc.traffic
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, step)| StepReport {
            sent: sent(step, i),
            result: trace::StepResult::Interrupted(Some("not run".into())),
            load: None,
        })
        .collect()
}

/// Every step in turn, until an interrupt: its control actions, then its
/// client. Returns each step's report (a step cut short, and those not
/// run, say they were interrupted) and the steps not as expected.
fn traffic(
    (sc, rt): (&Expanded, &tokio::runtime::Runtime),
    started: &mut Started,
    out: &Path,
    ph: &mut Phases,
) -> Result<(Vec<StepReport>, Vec<String>), Error> {
    let mut reports = Vec::new();
    let mut unmet = Vec::new();
    // Connections that span steps, by name, while open.
    let mut conns = std::collections::BTreeMap::new();
    for (i, step) in sc.traffic.iter().enumerate() {
        if ph.note() {
            break;
        }
        let during = format!("traffic[{i}] {}", step.name);
        let t_step = Instant::now();
        unmet.extend(started.deaths(&format!("the run before {during}")));
        ph.enter(during.clone());
        let actions = faults::before_step((sc, rt), started, out, i, step)
            .and_then(|()| faults::control_plane(started, i, step))
            .and_then(|()| before_step(sc, out, i, step));
        let refusals = match actions {
            Ok(r) => r,
            Err(e) => {
                // The lab did not do what the step asks (a dead gateway
                // does not answer its control socket): the step fails, the
                // run goes on and keeps its evidence.
                let why = format!("before the step: {e}");
                unmet.push(format!("{}: {why}", step.name));
                reports.push(StepReport {
                    sent: sent(step, i),
                    result: trace::StepResult::Failed(Some(why)),
                    load: None,
                });
                unmet.extend(started.deaths(&during));
                continue;
            }
        };
        if step.load.is_some() {
            reports.push(load_step(sc, started, i, step, refusals)?);
            unmet.extend(started.deaths(&during));
            continue;
        }
        let sport = step.source_port(i);
        let (mut seen, mut tries) = (None, 0);
        while tries < step.attempts.max(1) && !sandbox::interrupted() {
            tries += 1;
            let s = match &step.session {
                Some(session) => session_step(started, &mut conns, i, step, session)?,
                None => started.topo.hosts[&step.from]
                    .ns
                    .run(|| {
                        traffic::run_step_with(step, i, sport, &started.l7, &sandbox::interrupted)
                    })
                    .map_err(io(format!("traffic[{i}] {}", step.name)))?,
            };
            let met = s.meets(step);
            seen = Some(s);
            if met {
                break;
            }
        }
        let Some(seen) = seen else {
            reports.push(StepReport {
                sent: sent(step, i),
                result: trace::StepResult::Interrupted(Some("not run".into())),
                load: None,
            });
            continue;
        };
        let cut = sandbox::interrupted();
        let ok = seen.meets(step);
        tracing::info!(
            "{}: traffic[{i}] {}: {tries} tr{} in {} ms (faults and actions included)",
            sc.name,
            step.name,
            if tries == 1 { "y" } else { "ies" },
            t_step.elapsed().as_millis()
        );
        let tried = match step.attempts {
            0 | 1 => String::new(),
            n => format!(" (attempt {tries} of {n})"),
        };
        tracing::info!(
            "{}: traffic[{i}] {}: {}{}",
            sc.name,
            step.name,
            seen.describe(),
            match (cut, ok) {
                (true, _) => " (interrupted)",
                (false, true) => " (as expected)",
                (false, false) => " (NOT as expected)",
            }
        );
        let result = if cut {
            trace::StepResult::Interrupted(Some(format!("{} so far{tried}", seen.describe())))
        } else if ok {
            trace::StepResult::Ok(Some(format!("{}{tried}", seen.describe())))
        } else {
            unmet.push(format!(
                "{}: expected {}, got {}{}{tried}",
                step.name,
                step.expect,
                seen.describe(),
                seen.answered_by()
            ));
            trace::StepResult::Failed(Some(format!(
                "expected {}, got {}{}{tried}",
                step.expect,
                seen.describe(),
                seen.answered_by()
            )))
        };
        reports.push(StepReport {
            sent: format!("{refusals}{}", sent(step, i)),
            result,
            load: None,
        });
        unmet.extend(started.deaths(&during));
    }
    let done = reports.len();
    reports.extend(not_run(sc, done));
    Ok((reports, unmet))
}

/// A load step's flows, sent from its client's namespace: its report
/// carries what the clients saw, which the trace completes with what the
/// capture shows and judges (see `trace::build`).
fn load_step(
    sc: &Expanded,
    started: &Started,
    i: usize,
    step: &Step,
    refusals: String,
) -> Result<StepReport, Error> {
    let seen = started.topo.hosts[&step.from]
        .ns
        .run(|| crate::lab::load::run_load(step, i, &started.l7, &sandbox::interrupted))
        .map_err(io(format!("traffic[{i}] {}", step.name)))?;
    let cut = sandbox::interrupted();
    tracing::info!(
        "{}: traffic[{i}] {}: {}{}",
        sc.name,
        step.name,
        seen.line(),
        if cut { " (interrupted)" } else { "" }
    );
    let result = if cut {
        trace::StepResult::Interrupted(Some(format!("{} so far", seen.line())))
    } else {
        trace::StepResult::Unknown
    };
    Ok(StepReport {
        sent: format!("{refusals}{}", sent(step, i)),
        result,
        load: Some(seen),
    })
}

/// A step's gateway actions (after the service managers',
/// [`faults::control_plane`]): the gateway's exposures change, or are
/// asked for and must be refused. Returns what the gateway refused, each as
/// ``gateway refused `LINE`: WHY; `` for the step's `sent`.
fn before_step(sc: &Expanded, out: &Path, i: usize, step: &Step) -> Result<String, Error> {
    if !step.expose.is_empty() || !step.unexpose.is_empty() {
        let sock = gateway_socket(sc, out);
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
            gateway_ctl::control(&sock, &line)
                .map_err(io(format!("traffic[{i}] {}: gateway `{line}`", step.name)))?;
        }
    }
    expose_refused(sc, out, i, step)
}

/// The gateway's control socket (a step that changes exposures was
/// validated to have a gateway).
fn gateway_socket(sc: &Expanded, out: &Path) -> std::path::PathBuf {
    let g = sc
        .hosts
        .values()
        .flat_map(|h| &h.processes)
        .find_map(|p| p.gateway.as_ref());
    g.expect("validated: a gateway").control(&out.join("ctl"))
}

/// Asks the gateway for each of the step's `expose_refused`: each answer
/// must be an error line, and is returned as the step's `sent` prefix.
fn expose_refused(sc: &Expanded, out: &Path, i: usize, step: &Step) -> Result<String, Error> {
    let mut refused = String::new();
    if step.expose_refused.is_empty() {
        return Ok(refused);
    }
    let sock = gateway_socket(sc, out);
    for e in &step.expose_refused {
        let line = format!("expose {} {} {}", e.proto, e.port, e.service);
        let what = format!("traffic[{i}] {}: gateway `{line}`", step.name);
        let answer = gateway_ctl::answer(&sock, &line).map_err(io(what.clone()))?;
        match answer.strip_prefix("error ") {
            Some(why) => {
                refused.push_str(&format!("gateway refused `{line}`: {}; ", why.trim_end()))
            }
            None => {
                return Err(io(what)(std::io::Error::other(format!(
                    "accepted ({}), but the scenario expects a refusal",
                    answer.trim_end()
                ))))
            }
        }
    }
    Ok(refused)
}

/// The counters of each host's own `firewall` script (named counters and
/// rules with a `counter`), as `HOST/nftables`, when it has any.
fn firewall_counters(sc: &Lab, started: &Started, all: &mut CounterMap) -> Result<(), Error> {
    for (h, host) in &sc.hosts {
        let Some(script) = &host.firewall else {
            continue;
        };
        let m = crate::lab::nft_counters::read(&started.topo.hosts[h].ns, script)
            .map_err(|e| Error::Failed(format!("reading the nftables counters of {h}: {e}")))?;
        if !m.is_empty() {
            all.insert(format!("{h}/nftables"), m);
        }
    }
    Ok(())
}

/// Each process's metrics endpoint (`metrics`), scraped over loopback
/// inside its host, as `HOST/PROCESS`, when it kept any sample.
fn metrics_counters(sc: &Lab, started: &Started, all: &mut CounterMap) -> Result<(), Error> {
    for (h, host) in &sc.hosts {
        for p in &host.processes {
            let Some(m) = &p.metrics else { continue };
            let got = started.topo.hosts[h]
                .ns
                .run(|| m.scrape())
                .map_err(io(format!("scraping the metrics of {h}/{}", p.name)))?
                .map_err(|e| {
                    Error::Failed(format!("hosts.{h}.processes {}: metrics: {e}", p.name))
                })?;
            if !got.is_empty() {
                all.insert(format!("{h}/{}", p.name), got);
            }
        }
    }
    Ok(())
}

/// The kernel's drops on each host's TUNs and veths (a full transmit
/// queue, a receive backlog overflow), by host, then
/// `IFNAME.rx_dropped` and `IFNAME.tx_dropped`, and its UDP sockets'
/// buffer overflows (`udp.RcvbufErrors`, `udp.SndbufErrors`): a packet
/// lost there appears nowhere else.
fn interface_drops(sc: &Lab, started: &Started) -> Result<CounterMap, Error> {
    let mut all = CounterMap::new();
    for h in sc.hosts.keys() {
        let (dev, snmp) = started.topo.hosts[h]
            .ns
            .run(|| {
                let dev = std::fs::read_to_string("/proc/thread-self/net/dev")?;
                Ok::<_, std::io::Error>((
                    dev,
                    std::fs::read_to_string("/proc/thread-self/net/snmp")?,
                ))
            })
            .and_then(|r| r)
            .map_err(io(format!("reading the interface statistics of {h}")))?;
        // TUNs and veths: a bridge's own drops are link chatter's.
        let ours = |name: &str| {
            sc.hosts[h].tuns.contains_key(name)
                || (sc.links.iter())
                    .flat_map(|l| [&l.a, &l.b])
                    .any(|e| &e.host == h && e.ifname == name)
        };
        let mut m = interface_drop_counts(&dev);
        m.retain(|k, _| k.rsplit_once('.').is_some_and(|(i, _)| ours(i)));
        m.extend(udp_drop_counts(&snmp));
        all.insert(h.clone(), m);
    }
    Ok(all)
}

/// The UDP sockets' drops of `/proc/net/snmp`'s text, those not zero: a
/// full receive buffer (a tunnel socket not read fast enough) or send
/// buffer, as `udp.RcvbufErrors`, `udp.SndbufErrors`.
fn udp_drop_counts(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Default::default();
    };
    (names.split_whitespace().zip(values.split_whitespace()))
        .filter(|(k, _)| matches!(*k, "RcvbufErrors" | "SndbufErrors"))
        .filter_map(|(k, v)| Some((format!("udp.{k}"), v.parse().ok()?)))
        .filter(|(_, v): &(String, u64)| *v != 0)
        .collect()
}

/// What grew from `before` to `now`, only what is not zero: the drops
/// during the traffic, not those of setting the links up.
fn since(now: CounterMap, before: &CounterMap) -> CounterMap {
    let mut out = CounterMap::new();
    for (h, m) in now {
        let grew: std::collections::BTreeMap<String, u64> = m
            .into_iter()
            .map(|(k, v)| {
                let was = before.get(&h).and_then(|b| b.get(&k)).copied();
                (k, v.saturating_sub(was.unwrap_or(0)))
            })
            .filter(|(_, v)| *v != 0)
            .collect();
        if !grew.is_empty() {
            out.insert(h, grew);
        }
    }
    out
}

/// The non-zero `rx_dropped` and `tx_dropped` of `/proc/net/dev`'s text,
/// `lo` left out.
fn interface_drop_counts(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, stats)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let v: Vec<u64> = stats
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        if name == "lo" || v.len() < 12 {
            continue;
        }
        // Receive: bytes packets errs drop ...; transmit from the 9th.
        for (what, n) in [("rx_dropped", v[3]), ("tx_dropped", v[11])] {
            if n != 0 {
                m.insert(format!("{name}.{what}"), n);
            }
        }
    }
    m
}

/// Counters that depend on when the run looked, not on what it sent, and
/// packet totals, which depend on the kernel's timing: whether a peer
/// sends a pure ACK apart from its next segment, or resends one its
/// receiver had not yet acknowledged (what the trace folds, see
/// `trace::fold`), and under a load step a handshake ACK and first data
/// that swap (a veth queues what a socket sends on the sending CPU).
/// Drops and flows are kept.
const TIMING_COUNTERS: &[&str] = &["flows_expired", "packets_in", "requests", "replies"];

/// Counters by `host/process`, then by name.
type CounterMap = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

/// The dataplane's counters at the end of the traffic, by `host/process`,
/// those not zero: every gateway's (with its firewall's) but those that
/// depend on timing (its packet totals among them); a net manager's drops at the tunnel's trust boundary
/// (datagrams from unknown peers, inner packets that fit no service flow),
/// its fragment counters (`frag_*`, `drop_frag_*`, `drop_fragment`) and
/// its I/O errors (`io_err_*`), listed only when one is not zero.
fn dataplane_counters(sc: &Lab, out: &Path, started: &mut Started) -> CounterMap {
    let trust: Vec<String> = hoplab_dataplane::netmanager::DropReason::TRUST_BOUNDARY
        .iter()
        .map(|r| format!("drop_{r}"))
        .collect();
    let (ctl, mut all) = (out.join("ctl"), CounterMap::new());
    let timing = |k: &str| TIMING_COUNTERS.contains(&k);
    for (h, host) in &sc.hosts {
        for p in &host.processes {
            let (who, sock) = match (&p.gateway, &p.netmanager) {
                (Some(g), _) => ("gateway", g.control(&ctl)),
                (None, Some(nm)) => ("netmanager", nm.control(&ctl)),
                (None, None) => continue,
            };
            let id = format!("{h}/{}", p.name);
            if let Some(how) = started.ended(&id) {
                started
                    .events
                    .push(format!("{id} counters unavailable: process ended ({how})"));
                continue;
            }
            let text = match gateway_ctl::control(&sock, "counters") {
                Ok(t) => t,
                Err(e) => {
                    started
                        .events
                        .push(format!("{id} counters unavailable: {e}"));
                    continue;
                }
            };
            let m: std::collections::BTreeMap<String, u64> = gateway_ctl::parse_counters(&text)
                .into_iter()
                .filter(|(k, v)| {
                    *v != 0
                        && match who {
                            "gateway" => !timing(k),
                            _ => trust.contains(k) || netmanager_shown(k),
                        }
                })
                .collect();
            if who == "gateway" || !m.is_empty() {
                all.insert(format!("{h}/{who}"), m);
            }
        }
    }
    all
}

/// A net manager's counters the trace lists (when not zero) beside those
/// of the trust boundary: reassembly and I/O errors.
fn netmanager_shown(k: &str) -> bool {
    k.starts_with("frag_")
        || k.starts_with("drop_frag")
        || k == "drop_fragment"
        || k.starts_with("io_err_")
}

/// Removes the control sockets the lab's net managers and gateways left
/// behind (one killed by SIGKILL cannot remove its own); every process is
/// stopped by then, so any such file is stale.
fn remove_stale_sockets(sc: &Lab, out: &Path) {
    let ctl = out.join("ctl");
    for p in sc.hosts.values().flat_map(|h| &h.processes) {
        let sock = match (&p.gateway, &p.netmanager) {
            (Some(g), _) => g.control(&ctl),
            (None, Some(nm)) => nm.control(&ctl),
            (None, None) => continue,
        };
        match std::fs::remove_file(&sock) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("removing {}: {e}", sock.display())
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_drops_are_read_from_proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
   gw0: 1000      10    0    0    0     0          0         0     2000      20    0  157    0     0       0          0
  eth0: 1000      10    0    3    0     0          0         0     2000      20    0    0    0     0       0          0
";
        let m = super::interface_drop_counts(text);
        let got: Vec<(&str, u64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("eth0.rx_dropped", 3), ("gw0.tx_dropped", 157)]);
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 10 0 7 10 7 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
";
        let m = super::udp_drop_counts(snmp);
        let got: Vec<(&str, u64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, [("udp.RcvbufErrors", 7)]);
    }
}
