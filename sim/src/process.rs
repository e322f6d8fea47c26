//! Processes of a scenario: started inside their host, checked for
//! readiness, stopped at the end of the run (and killed with the run's pid
//! namespace whatever happens).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::NetNs;
use crate::scenario::Process;
use crate::Error;

pub struct Running {
    pub host: String,
    pub name: String,
    child: Child,
}

/// What a readiness check looks for, from the scenario or implied by `echo`.
#[derive(Debug, Clone, Copy)]
enum Check {
    TcpListen(u16),
    UdpBound(u16),
    DelayMs(u64),
}

fn checks(p: &Process) -> Vec<Check> {
    if let Some(r) = &p.ready {
        let c = match (r.tcp_listen, r.udp_bound, r.delay_ms) {
            (Some(t), _, _) => Check::TcpListen(t),
            (_, Some(u), _) => Check::UdpBound(u),
            (_, _, Some(d)) => Check::DelayMs(d),
            _ => unreachable!("validated: one readiness check"),
        };
        return vec![c];
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

/// The net manager binary: `$HOPLAB_NETMANAGER`, else `netmanager` next
/// to the running executable (cargo builds both into the same folder).
fn netmanager_bin() -> Result<String, Error> {
    if let Some(p) = std::env::var_os("HOPLAB_NETMANAGER") {
        return Ok(p.to_string_lossy().into_owned());
    }
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "locate the running executable".into(),
        source,
    })?;
    let bin = exe.with_file_name("netmanager");
    if !bin.exists() {
        return Err(Error::Failed(format!(
            "net manager binary {} not found: build it (`cargo build --bins`) or set HOPLAB_NETMANAGER",
            bin.display()
        )));
    }
    Ok(bin.display().to_string())
}

/// Start `p` in host `ns`; its output goes to `<out>/logs/<host>.<name>.log`;
/// a net manager's counters go to `<out>/counters/`.
pub fn start(ns: &NetNs, p: &Process, out: &Path) -> Result<Running, Error> {
    let host = ns.name();
    let logs = out.join("logs");
    let argv: Vec<String> = match (&p.cmd, &p.echo) {
        (None, None) if p.netmanager.is_some() => {
            let nm = p.netmanager.as_ref().expect("checked");
            let counters = out.join("counters");
            std::fs::create_dir_all(&counters).map_err(|source| Error::Io {
                what: format!("create {}", counters.display()),
                source,
            })?;
            nm.argv(&netmanager_bin()?, &out.join("ctl"), &counters)
        }
        (Some(c), _) => c.clone(),
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
    let log = File::create(&log_path).map_err(io_err(format!("create {}", log_path.display())))?;
    let mut cmd = ns.command(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err("log".into()))?)
        .stderr(log);
    let mut child = cmd.spawn().map_err(io_err(format!(
        "hosts.{host}.processes {}: start `{}`",
        p.name, argv[0]
    )))?;

    let deadline = Instant::now() + Duration::from_millis(p.ready_timeout_ms);
    for check in checks(p) {
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Err(Error::Failed(format!(
                    "hosts.{host}.processes {}: exited with {status} before it was ready (log: {})",
                    p.name,
                    log_path.display()
                )));
            }
            let ready = match check {
                Check::TcpListen(port) => ns.run(|| port_bound("tcp", port)).unwrap_or(false),
                Check::UdpBound(port) => ns.run(|| port_bound("udp", port)).unwrap_or(false),
                Check::DelayMs(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    true
                }
            };
            if ready {
                break;
            }
            if crate::sandbox::interrupted() {
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
    Ok(Running {
        host: host.to_string(),
        name: p.name.clone(),
        child,
    })
}

impl Running {
    /// Stop with SIGTERM, then SIGKILL after a grace period.
    pub fn stop(mut self, grace: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
