//! The simulated control plane: one service manager per cluster and the
//! root, answering the net managers' table queries over unix sockets in
//! `<out>/ctl/` with the line protocol of
//! [`hoplab_dataplane::netmanager::control`].
//!
//! A cluster manager answers for its own services; on a miss it asks the
//! root (a real query over the root's socket), which knows every cluster.
//! Each connection of a net manager records the service IPs it was given
//! (its interests), so that a change can be pushed as `invalidate <ip>`;
//! [`ControlPlane::invalidate`] waits until every net manager it pushed to
//! has acknowledged (`invalidated <ip>`), for at most [`ACK_WAIT`]. Every
//! service IP has a version ([`Versions`]), raised by each invalidation,
//! so that a net manager that was away learns on its sync what it missed.
//!
//! A manager can fail every query ([`ControlPlane::fail`]) or be down
//! ([`ControlPlane::stop`]: its socket gone, its net managers'
//! connections closed); [`ControlPlane::recover`] brings it back and, after
//! a stop, waits until each net manager it had has reconnected, synced
//! and acknowledged what its sync invalidated, for at most
//! [`RESYNC_WAIT`]. The plan can be replaced while the managers run
//! ([`ControlPlane::replace_plan`], an instance moved): every service IP
//! whose answer changed is invalidated.
//!
//! Managers are threads of the harness: they are not the system under
//! test. Every line is logged to `<out>/logs/control-plane.log`; what the
//! trace shows ([`ControlPlane::answers`] and the words returned for a
//! step) does not depend on timing.
//!
//! Serves the expansion's [`super::Plan`]; knows nothing of the file, and
//! of the lab only where the run's `ctl/` and `logs/` are.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hoplab_dataplane::netmanager::control::{Message, Version, Versions};
use hoplab_dataplane::netmanager::{Resolution, ResolveError};

use super::plan::Plan;
use crate::Error;

const ROOT: &str = "root";

/// How long an invalidation waits for the net managers' acknowledgements:
/// a net manager reads the line between two packets, so this is long
/// only on a loaded machine.
pub const ACK_WAIT: Duration = Duration::from_secs(2);

/// How long [`ControlPlane::recover`] waits for the syncs after a stop: a
/// net manager retries with a backoff of up to 2 s, then syncs.
pub const RESYNC_WAIT: Duration = Duration::from_secs(5);

/// How often the waits look again (and at the run's interrupt).
const POLL: Duration = Duration::from_millis(5);

/// One net manager's connection to a cluster manager.
struct Conn {
    manager: String,
    writer: Arc<Mutex<UnixStream>>,
    /// Service IPs given on this connection, not invalidated since.
    interests: BTreeSet<IpAddr>,
    /// Invalidations pushed and not yet acknowledged.
    unacked: BTreeSet<IpAddr>,
    /// Set by `synced`: the net manager's node.
    synced: Option<IpAddr>,
    /// What its sync found: (service IP, version held, version now).
    stale: Vec<(IpAddr, Version, Version)>,
}

struct Shared {
    plan: Mutex<Plan>,
    versions: Mutex<Versions>,
    /// Managers (cluster names, or `root`) told to fail every query.
    failing: Mutex<BTreeSet<String>>,
    /// Managers that are down, with their listener's stop flag.
    listening: Mutex<BTreeMap<String, Arc<AtomicBool>>>,
    conns: Mutex<BTreeMap<u64, Conn>>,
    next_conn: AtomicU64,
    log: Mutex<std::fs::File>,
    /// One line per answered query, for the trace.
    answers: Mutex<Vec<String>>,
    dir: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn log(&self, line: String) {
        let mut f = lock(&self.log);
        let _ = writeln!(f, "{line}");
    }
}

/// The running managers. Dropping it stops them and removes their sockets.
pub struct ControlPlane {
    shared: Arc<Shared>,
    sockets: Vec<PathBuf>,
    /// Per stopped manager, the connections the stop closed.
    stopped: Mutex<BTreeMap<String, usize>>,
}

/// Unix socket paths are limited to 107 bytes.
const SUN_PATH_MAX: usize = 107;

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl ControlPlane {
    /// Starts the root and one manager per cluster of `plan`, with their
    /// sockets in `out/ctl`. Nothing starts when the plan has no cluster.
    pub fn start(plan: &Plan, out: &Path) -> Result<Option<ControlPlane>, Error> {
        let mut clusters: Vec<String> = plan.nodes.values().map(|n| n.cluster.clone()).collect();
        clusters.dedup();
        if clusters.is_empty() {
            return Ok(None);
        }
        let dir = out.join("ctl");
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let log_path = out.join("logs").join("control-plane.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let shared = Arc::new(Shared {
            plan: Mutex::new(plan.clone()),
            versions: Mutex::new(Versions::default()),
            failing: Mutex::new(BTreeSet::new()),
            listening: Mutex::new(BTreeMap::new()),
            conns: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(0),
            log: Mutex::new(log),
            answers: Mutex::new(Vec::new()),
            dir: dir.clone(),
        });
        let mut cp = ControlPlane {
            shared,
            sockets: Vec::new(),
            stopped: Mutex::new(BTreeMap::new()),
        };
        for name in std::iter::once(ROOT.to_string()).chain(clusters) {
            let path = socket_path(&dir, &name);
            if path.as_os_str().len() > SUN_PATH_MAX {
                return Err(Error::Failed(format!(
                    "control socket path {} is over {SUN_PATH_MAX} bytes: choose a shorter --out directory",
                    path.display()
                )));
            }
            cp.listen(&name)?;
            cp.sockets.push(path);
        }
        Ok(Some(cp))
    }

    /// Binds manager `name`'s socket and starts its accept loop.
    fn listen(&self, name: &str) -> Result<(), Error> {
        let path = socket_path(&self.shared.dir, name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io(format!("bind {}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(io(format!("{}", path.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        lock(&self.shared.listening).insert(name.to_string(), stop.clone());
        let shared = self.shared.clone();
        let name = name.to_string();
        std::thread::Builder::new()
            .name(format!("mgr-{name}"))
            .spawn(move || accept_loop(shared, name, listener, stop))
            .map_err(io("start service manager".into()))?;
        Ok(())
    }

    /// From now on, `manager` (a cluster name or `root`) fails every query.
    pub fn fail(&self, manager: &str) {
        lock(&self.shared.failing).insert(manager.to_string());
        self.shared.log(format!("{manager}: failing from now on"));
    }

    /// `manager` goes down: its socket is removed (connecting fails) and
    /// its net managers' connections are closed. Returns what it did, in
    /// words for the trace.
    pub fn stop(&self, manager: &str) -> String {
        if let Some(flag) = lock(&self.shared.listening).remove(manager) {
            flag.store(true, Ordering::Relaxed);
        }
        let _ = std::fs::remove_file(socket_path(&self.shared.dir, manager));
        let mut closed = 0;
        lock(&self.shared.conns).retain(|_, c| {
            if c.manager != manager {
                return true;
            }
            let _ = lock(&c.writer).shutdown(std::net::Shutdown::Both);
            closed += 1;
            false
        });
        *lock(&self.stopped).entry(manager.to_string()).or_default() += closed;
        self.shared
            .log(format!("{manager}: down, {closed} connections closed"));
        format!(
            "stop {manager}: the service manager is down, {closed} net manager connection{} closed",
            plural(closed)
        )
    }

    /// `manager` answers again: after [`Self::fail`], at once; after
    /// [`Self::stop`], it listens again and this waits (at most
    /// [`RESYNC_WAIT`], or until `cancelled`) until as many net managers as
    /// the stop disconnected have reconnected, synced and acknowledged
    /// what their sync invalidated. Returns what happened, in words for
    /// the trace (nothing after a fail), or an error naming what is missing.
    pub fn recover(
        &self,
        manager: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<String>, Error> {
        lock(&self.shared.failing).remove(manager);
        self.shared.log(format!("{manager}: answering again"));
        let Some(closed) = lock(&self.stopped).remove(manager) else {
            return Ok(Vec::new());
        };
        self.listen(manager)?;
        let done = |conns: &BTreeMap<u64, Conn>| {
            let synced: Vec<&Conn> = conns
                .values()
                .filter(|c| c.manager == manager && c.synced.is_some())
                .collect();
            (synced.len() >= closed && synced.iter().all(|c| c.unacked.is_empty()))
                .then(|| self.sync_words(manager, &synced))
        };
        let mut lines = vec![format!(
            "recover {manager}: the service manager is back{}",
            if closed == 0 {
                ""
            } else {
                "; its net managers reconnect and sync"
            }
        )];
        match wait(&self.shared, RESYNC_WAIT, cancelled, done) {
            Some(more) => {
                lines.extend(more);
                Ok(lines)
            }
            None if cancelled() => Ok(lines),
            None => Err(Error::Failed(format!(
                "recover {manager}: {closed} net manager{} did not reconnect, sync and \
                 acknowledge within {} s",
                plural(closed),
                RESYNC_WAIT.as_secs()
            ))),
        }
    }

    /// One line per synced connection of `manager`, by node name.
    fn sync_words(&self, manager: &str, synced: &[&Conn]) -> Vec<String> {
        let plan = lock(&self.shared.plan);
        let mut lines: Vec<String> = synced
            .iter()
            .map(|c| {
                let node = c.synced.expect("synced");
                let name = plan
                    .nodes
                    .iter()
                    .find(|(_, n)| n.underlay == node)
                    .map_or_else(|| node.to_string(), |(name, _)| name.clone());
                let what = if c.stale.is_empty() {
                    "nothing it held had changed".to_string()
                } else {
                    let list: Vec<String> = c
                        .stale
                        .iter()
                        .map(|(ip, held, now)| format!("{ip} (held version {held}, now {now})"))
                        .collect();
                    format!("invalidated {}: acknowledged", list.join(", "))
                };
                format!("{manager}: {name}/netmanager synced: {what}")
            })
            .collect();
        lines.sort();
        lines
    }

    /// One line per query answered so far, in the order answered:
    /// `c1: 10.30.1.1 -> 10.18.0.65 (n 10.10.0.2), from root`.
    pub fn answers(&self) -> Vec<String> {
        lock(&self.shared.answers).clone()
    }

    /// `ip`'s resolution may have changed: its version goes up, and
    /// `invalidate <ip>` is pushed to every net manager given it; then
    /// waits (at most [`ACK_WAIT`], or until `cancelled`) until each has
    /// acknowledged (or its connection is gone). Returns how many
    /// acknowledged; an error names those that did not.
    pub fn invalidate(&self, ip: IpAddr, cancelled: &dyn Fn() -> bool) -> Result<usize, Error> {
        let pushed = self.push_invalidate(&[ip]);
        self.wait_acks(&pushed, cancelled)
    }

    /// Raises the version of each of `ips` and pushes their invalidations;
    /// returns the connections pushed to.
    fn push_invalidate(&self, ips: &[IpAddr]) -> Vec<u64> {
        let mut pushed = BTreeSet::new();
        for &ip in ips {
            let v = lock(&self.shared.versions).bump(ip);
            let mut n = 0;
            for (id, c) in lock(&self.shared.conns).iter_mut() {
                if !c.interests.remove(&ip) {
                    continue;
                }
                if send(&c.writer, &Message::Invalidate(ip)) {
                    c.unacked.insert(ip);
                    pushed.insert(*id);
                    n += 1;
                }
            }
            self.shared
                .log(format!("invalidate {ip}: version {v}, pushed to {n}"));
        }
        pushed.into_iter().collect()
    }

    fn wait_acks(&self, pushed: &[u64], cancelled: &dyn Fn() -> bool) -> Result<usize, Error> {
        let done = |conns: &BTreeMap<u64, Conn>| {
            pushed
                .iter()
                .all(|id| conns.get(id).is_none_or(|c| c.unacked.is_empty()))
                .then_some(())
        };
        if wait(&self.shared, ACK_WAIT, cancelled, done).is_some() || cancelled() {
            return Ok(pushed.len());
        }
        let conns = lock(&self.shared.conns);
        let missing: Vec<String> = pushed
            .iter()
            .filter_map(|id| conns.get(id))
            .filter(|c| !c.unacked.is_empty())
            .map(|c| {
                let ips: Vec<String> = c.unacked.iter().map(ToString::to_string).collect();
                format!("{} (a net manager of {})", ips.join(", "), c.manager)
            })
            .collect();
        Err(Error::Failed(format!(
            "invalidate: no acknowledgement within {} s for {}",
            ACK_WAIT.as_secs(),
            missing.join("; ")
        )))
    }

    /// The plan the managers serve now.
    pub fn plan(&self) -> Plan {
        lock(&self.shared.plan).clone()
    }

    /// The plan from now on (an instance moved): every service IP whose
    /// answer differs is invalidated as by [`Self::invalidate`], in
    /// address order. Returns the service IPs invalidated and how many
    /// net managers acknowledged.
    pub fn replace_plan(
        &self,
        plan: Plan,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(Vec<IpAddr>, usize), Error> {
        let changed: Vec<IpAddr> = {
            let mut old = lock(&self.shared.plan);
            let ips: BTreeSet<IpAddr> = old
                .services
                .values()
                .chain(plan.services.values())
                .flat_map(|(_, insts)| insts.iter().flat_map(|i| &i.service_ips))
                .map(|s| s.addr)
                .collect();
            let changed = ips
                .into_iter()
                .filter(|ip| {
                    let (a, b) = (old.resolve(*ip), plan.resolve(*ip));
                    a.map(|(c, i)| (c.to_string(), i)) != b.map(|(c, i)| (c.to_string(), i))
                })
                .collect();
            *old = plan;
            changed
        };
        self.shared
            .log(format!("plan replaced: {changed:?} changed"));
        let pushed = self.push_invalidate(&changed);
        let acked = self.wait_acks(&pushed, cancelled)?;
        Ok((changed, acked))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Polls `done` on the connections until it gives a value, `cancelled`,
/// or `limit` passes.
fn wait<T>(
    shared: &Shared,
    limit: Duration,
    cancelled: &dyn Fn() -> bool,
    done: impl Fn(&BTreeMap<u64, Conn>) -> Option<T>,
) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = done(&lock(&shared.conns)) {
            return Some(v);
        }
        if cancelled() || t.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Writes `m` as one line; false if the connection is gone.
fn send(writer: &Mutex<UnixStream>, m: &Message) -> bool {
    let line = format!("{}\n", m.to_line());
    lock(writer).write_all(line.as_bytes()).is_ok()
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for flag in lock(&self.shared.listening).values() {
            flag.store(true, Ordering::Relaxed);
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::remove_dir(&self.shared.dir);
    }
}

fn socket_path(dir: &Path, manager: &str) -> PathBuf {
    dir.join(format!("{manager}.sock"))
}

fn accept_loop(shared: Arc<Shared>, name: String, listener: UnixListener, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let shared = shared.clone();
                let name = name.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("mgr-{name}-conn"))
                    .spawn(move || serve(shared, name, conn));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                shared.log(format!("{name}: accept: {e}"));
                return;
            }
        }
    }
}

/// One connection, until it closes: each line answered in order.
fn serve(shared: Arc<Shared>, name: String, conn: UnixStream) {
    let _ = conn.set_nonblocking(false);
    let Ok(writer) = conn.try_clone() else {
        return;
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let writer = Arc::new(Mutex::new(writer));
    if name != ROOT {
        // The root's connections come from cluster managers asking once.
        lock(&shared.conns).insert(
            id,
            Conn {
                manager: name.clone(),
                writer: writer.clone(),
                interests: BTreeSet::new(),
                unacked: BTreeSet::new(),
                synced: None,
                stale: Vec::new(),
            },
        );
    }
    let conn_do = |f: &mut dyn FnMut(&mut Conn)| {
        if let Some(c) = lock(&shared.conns).get_mut(&id) {
            f(c);
        }
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { break };
        shared.log(format!("{name}: <- {line}"));
        let msg = match Message::parse(&line) {
            Ok(m) => m,
            Err(e) => {
                shared.log(format!("{name}: {e}"));
                continue;
            }
        };
        let reply = match msg {
            Message::Resolve(ip) => {
                let a = answer(&shared, &name, ip);
                if matches!(a, Message::Resolved(..)) {
                    conn_do(&mut |c| {
                        c.interests.insert(ip);
                    });
                }
                record_answer(&shared, &name, ip, &a);
                Some(a)
            }
            Message::Invalidated(ip) => {
                conn_do(&mut |c| {
                    c.unacked.remove(&ip);
                });
                None
            }
            Message::Sync(ip, held) => {
                let v = lock(&shared.versions);
                let now = v.current(ip);
                let a = v.on_sync(ip, held);
                drop(v);
                conn_do(&mut |c| match &a {
                    Some(_) => {
                        c.unacked.insert(ip);
                        c.stale.push((ip, held, now));
                    }
                    None => {
                        c.interests.insert(ip);
                    }
                });
                a
            }
            Message::Synced(node) => {
                conn_do(&mut |c| c.synced = Some(node));
                None
            }
            other => {
                shared.log(format!("{name}: unexpected {other:?}"));
                None
            }
        };
        if let Some(r) = reply {
            shared.log(format!("{name}: -> {}", r.to_line()));
            if !send(&writer, &r) {
                break;
            }
        }
    }
    lock(&shared.conns).remove(&id);
}

/// Notes the answer to a query, in short, for the trace.
fn record_answer(shared: &Shared, name: &str, ip: IpAddr, answer: &Message) {
    let short = match answer {
        Message::Resolved(r, _) => {
            let list: Vec<String> = r
                .instances
                .iter()
                .map(|i| format!("{} on {}", i.ns_ip, i.node))
                .collect();
            let via = match lock(&shared.plan).resolve(r.service_ip) {
                Some((owner, _)) if name != ROOT && owner != name => ", from root",
                _ => "",
            };
            format!("{}{via}", list.join(", "))
        }
        Message::Failed(_, e) => format!("failed: {e}"),
        _ => String::new(),
    };
    lock(&shared.answers).push(format!("{name}: {ip} -> {short}"));
}

/// The answer of manager `name` to a query for `ip`.
fn answer(shared: &Shared, name: &str, ip: IpAddr) -> Message {
    if lock(&shared.failing).contains(name) {
        return Message::Failed(ip, ResolveError::Unavailable(format!("{name}_failing")));
    }
    let found = lock(&shared.plan)
        .resolve(ip)
        .map(|(owner, instances)| (owner.to_string(), instances));
    match found {
        Some((owner, instances)) if name == ROOT || owner == name => {
            let v = lock(&shared.versions).current(ip);
            Message::Resolved(Resolution::new(ip, instances), v)
        }
        None if name == ROOT => Message::Failed(ip, ResolveError::NotFound),
        // A cluster manager that does not own the service asks the root.
        _ => ask_root(shared, ip)
            .unwrap_or_else(|e| Message::Failed(ip, ResolveError::Unavailable(e))),
    }
}

fn ask_root(shared: &Shared, ip: IpAddr) -> Result<Message, String> {
    let path = socket_path(&shared.dir, ROOT);
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("root_unreachable:{e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    writeln!(conn, "{}", Message::Resolve(ip).to_line()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| format!("root_silent:{e}"))?;
    Message::parse(&line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SC: &str = "version: 1\nclusters:\n  - name: c1\n    nodes:\n      - {name: n1, coords: [0, 0]}\nservices:\n  - name: api\n    round_robin: 10.30.1.1\n    echo: {tcp: [80]}\n    instances:\n      - {node: n1}\ntraffic:\n  - {name: s, from: api-0, proto: tcp, to: \"10.30.1.1:80\"}\n";

    fn started(tag: &str) -> (ControlPlane, PathBuf) {
        let x = super::super::parse(Path::new("s.yaml"), "s", SC).unwrap();
        let out = std::env::temp_dir().join(format!("hoplab-cp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.join("logs")).unwrap();
        let cp = ControlPlane::start(&x.plan, &out).unwrap().unwrap();
        (cp, out)
    }

    /// A net manager's end of a connection to `c1`.
    struct Nm {
        w: UnixStream,
        r: BufReader<UnixStream>,
    }

    impl Nm {
        fn connect(out: &Path) -> Nm {
            let s = UnixStream::connect(out.join("ctl/c1.sock")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Nm {
                w: s.try_clone().unwrap(),
                r: BufReader::new(s),
            }
        }
        fn send(&mut self, m: &Message) {
            writeln!(self.w, "{}", m.to_line()).unwrap();
        }
        fn read(&mut self) -> Message {
            let mut line = String::new();
            self.r.read_line(&mut line).unwrap();
            Message::parse(&line).unwrap()
        }
    }

    const API: &str = "10.30.1.1";

    #[test]
    fn an_invalidation_waits_for_the_acknowledgement_and_fails_without_it() {
        let (cp, out) = started("ack");
        let api: IpAddr = API.parse().unwrap();
        let mut nm = Nm::connect(&out);
        nm.send(&Message::Resolve(api));
        assert!(matches!(nm.read(), Message::Resolved(_, 1)));
        // Never acknowledged: an error naming what is missing, in time.
        let t = Instant::now();
        let e = cp.invalidate(api, &|| false).unwrap_err().to_string();
        assert!(t.elapsed() < ACK_WAIT + Duration::from_secs(1), "{e}");
        assert!(e.contains("no acknowledgement") && e.contains(API), "{e}");
        assert_eq!(nm.read(), Message::Invalidate(api));
        // Asked again, and acknowledged: waited for, counted.
        nm.send(&Message::Resolve(api));
        assert!(matches!(nm.read(), Message::Resolved(_, 2)));
        let acker = std::thread::spawn(move || {
            assert_eq!(nm.read(), Message::Invalidate(api));
            nm.send(&Message::Invalidated(api));
            nm
        });
        assert_eq!(cp.invalidate(api, &|| false).unwrap(), 1);
        drop(acker.join().unwrap());
        // Nobody holds it now: nothing to wait for.
        assert_eq!(cp.invalidate(api, &|| false).unwrap(), 0);
        drop(cp);
        let _ = std::fs::remove_dir_all(out);
    }

    #[test]
    fn a_stopped_manager_comes_back_after_the_sync() {
        let (cp, out) = started("sync");
        let api: IpAddr = API.parse().unwrap();
        let mut nm = Nm::connect(&out);
        nm.send(&Message::Resolve(api));
        assert!(matches!(nm.read(), Message::Resolved(_, 1)));
        assert!(cp.stop("c1").contains("1 net manager connection closed"));
        assert!(UnixStream::connect(out.join("ctl/c1.sock")).is_err());
        // Missed while it was down.
        assert_eq!(cp.invalidate(api, &|| false).unwrap(), 0);
        let out2 = out.clone();
        let nm_thread = std::thread::spawn(move || loop {
            // Reconnects as a net manager does, then syncs.
            let Ok(s) = UnixStream::connect(out2.join("ctl/c1.sock")) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            drop(s);
            let mut nm = Nm::connect(&out2);
            nm.send(&Message::Sync(api, 1));
            nm.send(&Message::Synced("10.10.0.1".parse().unwrap()));
            assert_eq!(nm.read(), Message::Invalidate(api));
            nm.send(&Message::Invalidated(api));
            return nm;
        });
        std::thread::sleep(Duration::from_millis(50));
        let lines = cp.recover("c1", &|| false).unwrap();
        assert_eq!(
            lines[1..],
            ["c1: n1/netmanager synced: invalidated 10.30.1.1 (held version 1, now 2): acknowledged"]
        );
        let _nm = nm_thread.join().unwrap();
        drop(cp);
        let _ = std::fs::remove_dir_all(out);
    }
}
