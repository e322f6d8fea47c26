//! Helpers shared by the integration tests: run the real `hoplab` binary,
//! each run in its own output directory, as CI does.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn hoplab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hoplab"))
}

/// A fresh, empty directory for one run's output.
pub fn out_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Run `scenario` (a path) into `out`; returns the process output.
pub fn run(scenario: &Path, out: &Path) -> Output {
    hoplab()
        .args(["--quiet", "run"])
        .arg(scenario)
        .arg("--out")
        .arg(out)
        .output()
        .expect("hoplab runs")
}

pub fn scenario_path(name: &str) -> PathBuf {
    root().join("scenarios").join(format!("{name}.yaml"))
}

/// Names of the shipped scenarios, sorted.
pub fn scenario_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("scenarios"))
        .expect("scenarios/")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

/// Write a scenario file for a test and return its path.
pub fn write_scenario(tag: &str, text: &str) -> PathBuf {
    let dir = out_dir(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{tag}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Pids of processes whose command line contains `marker`.
pub fn pids_with(marker: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(marker)
            {
                v.push(pid);
            }
        }
    }
    v
}

/// What a run could leave behind in this (the host's) namespaces: links,
/// named network namespaces, mounts, nftables tables.
pub fn host_state() -> String {
    let cmd = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let links: Vec<String> = cmd("ip", &["-o", "link", "show"])
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .count();
    format!(
        "links: {links:?}\nnetns: {:?}\nmounts: {mounts}\nnft: {:?}",
        cmd("ip", &["netns", "list"]),
        cmd("nft", &["list", "tables"])
    )
}

/// A scenario whose process on host `a` is `sleep MARKER` (so a test can
/// look for it), and whose traffic takes about `wait_ms` (a step that
/// expects silence).
pub fn sleeper_scenario(marker: &str, wait_ms: u64, extra_host: &str) -> String {
    format!(
        r#"version: 1
hosts:
  a:
    processes:
      - {{name: sleeper, cmd: [sleep, "{marker}"], ready: {{delay_ms: 1}}}}
  b:
    firewall: |
      table inet filter {{
        chain input {{ type filter hook input priority 0; policy drop; }}
      }}
{extra_host}
links:
  - a: {{host: a, ifname: eth0, addr: [10.9.0.1/24]}}
    b: {{host: b, ifname: eth0, addr: [10.9.0.2/24]}}
traffic:
  - {{name: slow, from: a, proto: udp, to: "10.9.0.2:9", expect: silence, timeout_ms: {wait_ms}}}
"#
    )
}

/// `child`'s status if it ends within `within`; else it is killed and the
/// test fails with `what`.
pub fn wait_within(
    child: &mut std::process::Child,
    within: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let t = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {within:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `st` is how a run ended by `sig` exits: 128 + its number, or
/// killed by it (before `hoplab` could install a handler).
pub fn ended_by(st: std::process::ExitStatus, sig: nix::sys::signal::Signal) -> bool {
    use std::os::unix::process::ExitStatusExt;
    st.code() == Some(128 + sig as i32) || st.signal() == Some(sig as i32)
}

/// Start `cmd` (a `hoplab run` into `out`), wait `delay_ms` from its start
/// or, with `after_child`, from when its sandboxed child appears, and send
/// it SIGTERM: it must end within 5 s as a run ended by SIGTERM. Returns
/// what was done, for messages.
pub fn sigterm_early(mut cmd: Command, out: &Path, after_child: bool, delay_ms: u64) -> String {
    use nix::sys::signal::{kill, Signal};
    let mut child = cmd.stderr(std::process::Stdio::null()).spawn().unwrap();
    let from = if after_child {
        // Both processes have `out` on their command line.
        let out = out.display().to_string();
        while pids_with(&out).len() < 2 && child.try_wait().unwrap().is_none() {}
        "its sandboxed child appeared"
    } else {
        "it started"
    };
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let what = format!("SIGTERM {delay_ms} ms after {from}");
    let st = wait_within(&mut child, std::time::Duration::from_secs(5), &what);
    assert!(ended_by(st, Signal::SIGTERM), "{what}: {st}");
    what
}

/// Whether, within `within`, host a of a [`sleeper_scenario`] run put its
/// step's datagram on the link: a/eth0 has sent two frames, the ARP request
/// for 10.9.0.2 and the datagram the kernel held until the answer (the
/// host has IPv6 off and sends nothing else). A device counts a frame as
/// sent after packet sockets saw it, so the run's capture has it. Read in
/// `/proc/PID/net/dev` of the sleeper, which runs in host a's namespace.
pub fn sleeper_step_sent(marker: &str, within: std::time::Duration) -> bool {
    let sleeper = format!("sleep {marker}");
    let t = std::time::Instant::now();
    while t.elapsed() < within {
        let sent = pids_with(&sleeper).into_iter().any(|pid| {
            let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
            dev.lines()
                .filter_map(|l| l.trim_start().strip_prefix("eth0:"))
                .filter_map(|c| c.split_whitespace().nth(9)?.parse::<u64>().ok())
                .any(|tx_packets| tx_packets >= 2)
        });
        if sent {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

pub mod ns;

/// Runs shipped scenario `name` with `var=setting` (`on` or `off`) in the
/// environment and returns its trace, after checking that every "ready"
/// line in the logs whose names end with one of `logs` says
/// `key=true|false` as set, and that there was one.
pub fn trace_with_setting(
    name: &str,
    (var, setting): (&str, &str),
    key: &str,
    logs: &[&str],
) -> String {
    let out = out_dir(&format!("{key}-{setting}-{name}"));
    let o = hoplab()
        .env(var, setting)
        .args(["--quiet", "run"])
        .arg(scenario_path(name))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("hoplab runs");
    assert!(
        o.status.success(),
        "{name} with {var}={setting}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let want = format!("{key}={}", setting == "on");
    let mut seen = 0;
    for e in std::fs::read_dir(out.join("logs")).expect("logs").flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if !logs.iter().any(|s| f.ends_with(s)) {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines().filter(|l| l.contains(" ready ")) {
            assert!(l.contains(&want), "{name}: {l:?} lacks {want}");
            seen += 1;
        }
    }
    assert!(seen > 0, "{name}: no ready line in {logs:?}");
    std::fs::read_to_string(out.join("trace.yaml")).expect("trace.yaml written")
}
