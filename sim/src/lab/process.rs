//! Processes of a lab: started inside their host, in the host's working
//! directory (`<out>/hosts/HOST/`), checked for readiness, stopped at the
//! end of the run (and killed with the run's pid namespace whatever
//! happens). A process that ends before it is ready fails the run with the
//! last lines it wrote. The built-in servers are this executable again
//! (`__echo`, `__http`). The net manager and gateway binaries are found next
//! to the running executable (or by `$HOPLAB_NETMANAGER`,
//! `$HOPLAB_GATEWAY`) and given their command lines by [`super::dataplane`].
//!
//! Knows how to start and watch a process, not why the lab has it.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Process, Ready};
use crate::lab::netns::NetNs;
use crate::Error;

pub struct Running {
    pub host: String,
    pub name: String,
    /// What was started, to start it again.
    pub spec: Process,
    child: Child,
    /// How it ended, once seen ([`Running::ended`]).
    ended: Option<String>,
}

/// What a readiness check looks for, from the scenario or implied by `echo`.
#[derive(Debug, Clone)]
enum Check {
    TcpListen(u16),
    UdpBound(u16),
    DelayMs(u64),
    /// Something accepts connections on this unix socket.
    UnixSocket(std::path::PathBuf),
}

fn checks(p: &Process, out: &Path) -> Vec<Check> {
    if let Some(g) = &p.gateway {
        // The gateway binds its control socket last, after the firewall
        // and the TUN.
        return vec![Check::UnixSocket(g.control(&out.join("ctl")))];
    }
    if let Some(r) = &p.ready {
        let c = match *r {
            Ready::TcpListen(t) => Check::TcpListen(t),
            Ready::UdpBound(u) => Check::UdpBound(u),
            Ready::DelayMs(d) => Check::DelayMs(d),
        };
        return vec![c];
    }
    if let Some(h) = &p.http {
        return vec![Check::TcpListen(h.listen)];
    }
    match &p.echo {
        Some(e) => e
            .tcp
            .iter()
            .map(|&t| Check::TcpListen(t))
            .chain(e.udp.iter().map(|&u| Check::UdpBound(u)))
            .collect(),
        None => Vec::new(),
    }
}

/// Is a socket of `proto` (`tcp`/`udp`) bound to `port` in the calling
/// thread's namespace? TCP must be listening (state 0A).
fn port_bound(proto: &str, port: u16) -> bool {
    ["", "6"].iter().any(|v| {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{proto}{v}")) else {
            return false;
        };
        text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && (proto == "udp" || f.get(3) == Some(&"0A"))
        })
    })
}

/// A dataplane binary: `$<env>`, else `name` next to the running
/// executable (cargo builds them all into the same folder).
fn dataplane_bin(name: &str, env: &str) -> Result<String, Error> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.to_string_lossy().into_owned());
    }
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "locate the running executable".into(),
        source,
    })?;
    let bin = exe.with_file_name(name);
    if !bin.exists() {
        return Err(Error::Failed(format!(
            "{name} binary {} not found: build it (`cargo build --bins`) or set {env}",
            bin.display()
        )));
    }
    Ok(bin.display().to_string())
}

/// The working directory of host `host`'s processes.
pub fn host_dir(out: &Path, host: &str) -> std::path::PathBuf {
    out.join("hosts").join(host)
}

/// The run's key log, which hoplab's own TLS client and server append to.
pub fn keylog_path(out: &Path) -> std::path::PathBuf {
    out.join("tls-keys.log")
}

/// The built-in HTTP server's command line in host `host`: certificates
/// from the host's `tls/`, the key log by its absolute path.
fn http_argv(host: &str, p: &Process, out: &Path) -> Vec<String> {
    let h = p.http.as_ref().expect("checked");
    let opts = crate::l7::server::ServerOpts {
        listen: h.listen,
        served_by: format!("{host}/{}", p.name),
        status: h.status,
        delay_ms: h.delay_ms,
        body: h.body.clone(),
        fail: h.fail.map(|f| (f.nth, f.status)),
        reset: h.reset.map(|r| r.nth),
        tls: h.tls.as_ref().map(|t| crate::l7::tls::ServerFiles {
            cert: format!("tls/{}.crt", t.cert).into(),
            key: format!("tls/{}.key", t.cert).into(),
            client_ca: t.client_ca.then(|| "tls/ca.crt".into()),
        }),
        keylog: h.tls.as_ref().map(|_| keylog_path(out)),
    };
    let mut v = vec!["/proc/self/exe".to_string(), "__http".to_string()];
    v.extend(opts.argv());
    v
}

/// The last lines of a log (at most 20 lines, 2000 characters), for an
/// error: what a process said before it ended.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    let start = tail
        .char_indices()
        .rev()
        .nth(1999)
        .map(|(i, _)| i)
        .unwrap_or(0);
    tail[start..].to_string()
}

/// Start `p` in host `ns`; its output goes to `<out>/logs/<host>.<name>.log`;
/// a net manager's or gateway's counters go to `<out>/counters/`.
pub fn start(ns: &NetNs, p: &Process, out: &Path) -> Result<Running, Error> {
    spawn(ns, p, out, false)
}

/// [`start`] again, for a process that ended: its log is appended to.
pub fn restart(ns: &NetNs, p: &Process, out: &Path) -> Result<Running, Error> {
    spawn(ns, p, out, true)
}

/// How a process ended, in words that do not depend on timing:
/// `exited with status 1`, `killed by signal SIGKILL`.
pub fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(s) => match nix::sys::signal::Signal::try_from(s) {
            Ok(sig) => format!("killed by signal {}", sig.as_str()),
            Err(_) => format!("killed by signal {s}"),
        },
        None => format!("ended ({status})"),
    }
}

fn spawn(ns: &NetNs, p: &Process, out: &Path, append: bool) -> Result<Running, Error> {
    let host = ns.name();
    // Absolute: the process runs in its host's directory.
    let out = &std::path::absolute(out).map_err(|source| Error::Io {
        what: format!("locate {}", out.display()),
        source,
    })?;
    let cwd = host_dir(out, host);
    std::fs::create_dir_all(&cwd).map_err(|source| Error::Io {
        what: format!("create {}", cwd.display()),
        source,
    })?;
    let logs = out.join("logs");
    let counters = || -> Result<std::path::PathBuf, Error> {
        let counters = out.join("counters");
        std::fs::create_dir_all(&counters).map_err(|source| Error::Io {
            what: format!("create {}", counters.display()),
            source,
        })?;
        Ok(counters)
    };
    let argv: Vec<String> = match (&p.cmd, &p.echo) {
        (None, None) if p.netmanager.is_some() => {
            let nm = p.netmanager.as_ref().expect("checked");
            let bin = dataplane_bin("netmanager", "HOPLAB_NETMANAGER")?;
            nm.argv(&bin, &out.join("ctl"), &counters()?)
        }
        (None, None) if p.gateway.is_some() => {
            let g = p.gateway.as_ref().expect("checked");
            let bin = dataplane_bin("gateway", "HOPLAB_GATEWAY")?;
            g.argv(&bin, &out.join("ctl"), &counters()?)
        }
        (Some(c), _) => c.clone(),
        (None, None) if p.http.is_some() => http_argv(host, p, out),
        (None, Some(e)) => {
            let mut v = vec!["/proc/self/exe".to_string(), "__echo".to_string()];
            for t in &e.tcp {
                v.extend(["--tcp".to_string(), t.to_string()]);
            }
            for u in &e.udp {
                v.extend(["--udp".to_string(), u.to_string()]);
            }
            v
        }
        (None, None) => unreachable!("validated: cmd or echo"),
    };
    let log_path = logs.join(format!("{host}.{}.log", p.name));
    let io_err = |what: String| move |source| Error::Io { what, source };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&log_path)
        .map_err(io_err(format!("create {}", log_path.display())))?;
    let mut cmd = ns.command(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err("log".into()))?)
        .stderr(log);
    let mut child = cmd.spawn().map_err(io_err(format!(
        "hosts.{host}.processes {}: start `{}`",
        p.name, argv[0]
    )))?;

    wait_ready(ns, p, out, &mut child, &log_path)?;
    Ok(Running {
        host: host.to_string(),
        name: p.name.clone(),
        spec: p.clone(),
        child,
        ended: None,
    })
}

/// Wait until `child` (process `p` in host `ns`) passes every readiness
/// check, polling every 5 ms and sleeping a delay in slices. It is killed
/// if the run is interrupted or the time is up.
fn wait_ready(
    ns: &NetNs,
    p: &Process,
    out: &Path,
    child: &mut Child,
    log_path: &Path,
) -> Result<(), Error> {
    let host = ns.name();
    let deadline = Instant::now() + Duration::from_millis(p.ready_timeout_ms);
    for check in checks(p, out) {
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                let said = log_tail(log_path);
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!(":\n{said}\n")
                };
                return Err(Error::Failed(format!(
                    "hosts.{host}.processes {}: exited with {status} before it was ready{said} (log: {})",
                    p.name,
                    log_path.display()
                )));
            }
            let ready = match &check {
                Check::TcpListen(port) => ns.run(|| port_bound("tcp", *port)).unwrap_or(false),
                Check::UdpBound(port) => ns.run(|| port_bound("udp", *port)).unwrap_or(false),
                Check::UnixSocket(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
                // Sliced: an interrupt is seen below within a slice.
                Check::DelayMs(ms) => super::traffic::sleep(
                    Duration::from_millis(*ms),
                    &crate::lab::sandbox::interrupted,
                ),
            };
            if ready {
                break;
            }
            if crate::lab::sandbox::interrupted() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Interrupted);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Failed(format!(
                    "hosts.{host}.processes {}: not ready after {} ms ({check:?}; log: {})",
                    p.name,
                    p.ready_timeout_ms,
                    log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

impl Running {
    /// `HOST/NAME`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.host, self.name)
    }

    /// How the process ended ([`describe`]), or `None` while it runs.
    /// Once seen, the answer stays.
    pub fn ended(&mut self) -> Option<String> {
        if self.ended.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.ended = Some(describe(status));
            }
        }
        self.ended.clone()
    }

    /// Send `sig`, then wait for the process to end: SIGKILL after
    /// `grace`. Returns how it ended ([`describe`]); a process that had
    /// already ended is not signalled.
    pub fn signal(&mut self, sig: nix::sys::signal::Signal, grace: Duration) -> String {
        if let Some(e) = self.ended() {
            return e;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(e) = self.ended() {
                return e;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => {
                let e = describe(status);
                self.ended = Some(e.clone());
                e
            }
            Err(e) => format!("not seen ending ({e})"),
        }
    }

    /// Stop with SIGTERM, then SIGKILL after a grace period.
    pub fn stop(mut self, grace: Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM, grace);
    }
}
