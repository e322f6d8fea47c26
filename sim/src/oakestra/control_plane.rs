//! The simulated control plane: one service manager per cluster and the
//! root, answering the net managers' table queries over unix sockets in
//! `<out>/ctl/` with the line protocol of
//! [`hoplab_dataplane::netmanager::control`].
//!
//! A cluster manager answers for its own services; on a miss it asks the
//! root (a real query over the root's socket), which knows every cluster.
//! Each manager records who asked for what, so that a change can be
//! pushed as `invalidate <ip>`. Managers are threads of the harness: they
//! are not the system under test. Every query is logged to
//! `<out>/logs/control-plane.log`.
//!
//! Serves the expansion's [`super::Plan`]; knows nothing of the file, and
//! of the lab only where the run's `ctl/` and `logs/` are.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoplab_dataplane::netmanager::control::Message;
use hoplab_dataplane::netmanager::{Resolution, ResolveError};

use super::plan::Plan;
use crate::Error;

const ROOT: &str = "root";

struct Shared {
    plan: Plan,
    /// Managers (cluster names, or `root`) told to fail every query.
    failing: Mutex<BTreeSet<String>>,
    /// (manager, service IP, connection) for every answered query.
    interests: Mutex<Vec<(String, IpAddr, UnixStream)>>,
    log: Mutex<std::fs::File>,
    /// One line per answered query, for the trace.
    answers: Mutex<Vec<String>>,
    dir: PathBuf,
    stop: AtomicBool,
}

impl Shared {
    fn log(&self, line: String) {
        let mut f = self.log.lock().expect("log lock");
        let _ = writeln!(f, "{line}");
    }
}

/// The running managers. Dropping it stops them and removes their sockets.
pub struct ControlPlane {
    shared: Arc<Shared>,
    sockets: Vec<PathBuf>,
}

/// Unix socket paths are limited to 107 bytes.
const SUN_PATH_MAX: usize = 107;

impl ControlPlane {
    /// Starts the root and one manager per cluster of `plan`, with their
    /// sockets in `out/ctl`. Nothing starts when the plan has no cluster.
    pub fn start(plan: &Plan, out: &Path) -> Result<Option<ControlPlane>, Error> {
        let mut clusters: Vec<String> = plan.nodes.values().map(|n| n.cluster.clone()).collect();
        clusters.dedup();
        if clusters.is_empty() {
            return Ok(None);
        }
        let io = |what: String| move |source| Error::Io { what, source };
        let dir = out.join("ctl");
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let log_path = out.join("logs").join("control-plane.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let shared = Arc::new(Shared {
            plan: plan.clone(),
            failing: Mutex::new(BTreeSet::new()),
            interests: Mutex::new(Vec::new()),
            log: Mutex::new(log),
            answers: Mutex::new(Vec::new()),
            dir: dir.clone(),
            stop: AtomicBool::new(false),
        });
        let mut cp = ControlPlane {
            shared: shared.clone(),
            sockets: Vec::new(),
        };
        for name in std::iter::once(ROOT.to_string()).chain(clusters) {
            let path = socket_path(&dir, &name);
            if path.as_os_str().len() > SUN_PATH_MAX {
                return Err(Error::Failed(format!(
                    "control socket path {} is over {SUN_PATH_MAX} bytes: choose a shorter --out directory",
                    path.display()
                )));
            }
            let _ = std::fs::remove_file(&path);
            let listener =
                UnixListener::bind(&path).map_err(io(format!("bind {}", path.display())))?;
            listener
                .set_nonblocking(true)
                .map_err(io(format!("{}", path.display())))?;
            cp.sockets.push(path);
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("mgr-{name}"))
                .spawn(move || accept_loop(shared, name, listener))
                .map_err(io("start service manager".into()))?;
        }
        Ok(Some(cp))
    }

    /// From now on, `manager` (a cluster name or `root`) fails every query.
    pub fn fail(&self, manager: &str) {
        self.shared
            .failing
            .lock()
            .expect("lock")
            .insert(manager.to_string());
        self.shared.log(format!("{manager}: failing from now on"));
    }

    /// `manager` answers again (after [`Self::fail`]).
    pub fn recover(&self, manager: &str) {
        self.shared.failing.lock().expect("lock").remove(manager);
        self.shared.log(format!("{manager}: answering again"));
    }

    /// One line per query answered so far, in the order answered:
    /// `c1: 10.30.1.1 -> 10.18.0.65 (n 10.10.0.2), from root`.
    pub fn answers(&self) -> Vec<String> {
        self.shared.answers.lock().expect("lock").clone()
    }

    /// Pushes `invalidate <ip>` to every net manager that asked for `ip`.
    pub fn invalidate(&self, ip: IpAddr) -> usize {
        let mut n = 0;
        let mut interests = self.shared.interests.lock().expect("lock");
        interests.retain_mut(|(_, i, conn)| {
            if *i != ip {
                return true;
            }
            let ok = writeln!(conn, "{}", Message::Invalidate(ip).to_line()).is_ok();
            n += usize::from(ok);
            false
        });
        self.shared.log(format!("invalidate {ip}: pushed to {n}"));
        n
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        let _ = std::fs::remove_dir(&self.shared.dir);
    }
}

fn socket_path(dir: &Path, manager: &str) -> PathBuf {
    dir.join(format!("{manager}.sock"))
}

fn accept_loop(shared: Arc<Shared>, name: String, listener: UnixListener) {
    while !shared.stop.load(Ordering::Relaxed) {
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

fn serve(shared: Arc<Shared>, name: String, conn: UnixStream) {
    let _ = conn.set_nonblocking(false);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let reader = BufReader::new(conn);
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let answer = match Message::parse(&line) {
            Ok(Message::Resolve(ip)) => {
                let a = answer(&shared, &name, ip);
                if matches!(a, Message::Resolved(_)) {
                    if let Ok(c) = writer.try_clone() {
                        shared
                            .interests
                            .lock()
                            .expect("lock")
                            .push((name.clone(), ip, c));
                    }
                }
                a
            }
            Ok(other) => {
                shared.log(format!("{name}: unexpected {other:?}"));
                continue;
            }
            Err(e) => {
                shared.log(format!("{name}: {e}"));
                continue;
            }
        };
        let out = answer.to_line();
        shared.log(format!("{name}: {line} -> {out}"));
        let short = match &answer {
            Message::Resolved(r) => {
                let list: Vec<String> = r
                    .instances
                    .iter()
                    .map(|i| format!("{} on {}", i.ns_ip, i.node))
                    .collect();
                let via = match shared.plan.resolve(r.service_ip) {
                    Some((owner, _)) if name != ROOT && owner != name => ", from root",
                    _ => "",
                };
                format!("{}{via}", list.join(", "))
            }
            Message::Failed(_, e) => format!("failed: {e}"),
            _ => String::new(),
        };
        if let Ok(Message::Resolve(ip)) = Message::parse(&line) {
            shared
                .answers
                .lock()
                .expect("lock")
                .push(format!("{name}: {ip} -> {short}"));
        }
        if writeln!(writer, "{out}").is_err() {
            return;
        }
    }
}

/// The answer of manager `name` to a query for `ip`.
fn answer(shared: &Shared, name: &str, ip: IpAddr) -> Message {
    if shared.failing.lock().expect("lock").contains(name) {
        return Message::Failed(ip, ResolveError::Unavailable(format!("{name}_failing")));
    }
    match shared.plan.resolve(ip) {
        Some((owner, instances)) if name == ROOT || owner == name => {
            Message::Resolved(Resolution::new(ip, instances))
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
