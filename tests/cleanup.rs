//! A run that fails halfway, is interrupted or is killed leaves nothing
//! behind: no process, namespace, link, mount or firewall table.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use hoplab_sim::trace::{StepResult, Trace};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn wait_gone(marker: &str, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if pids_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn wait_present(marker: &str, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if !pids_with(&format!("sleep {marker}")).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_run_that_fails_halfway_leaves_nothing() {
    let before = host_state();
    // Host c's process exits at once: the run fails while starting processes,
    // after the topology and host a's process are up.
    let marker = "4242.101";
    let text = sleeper_scenario(
        marker,
        100,
        "  c:\n    processes:\n      - {name: broken, cmd: [\"false\"], ready: {tcp_listen: 80}}",
    );
    let sc = write_scenario("fail-halfway", &text);
    let out = out_dir("fail-halfway-out");
    let o = run(&sc, &out);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("hosts.c.processes broken: exited"), "{err}");
    assert!(
        wait_gone(marker, Duration::from_secs(2)),
        "process of the failed run survived"
    );
    assert_eq!(before, host_state());
}

#[test]
fn bad_firewall_rules_fail_the_run_cleanly() {
    let before = host_state();
    let text = sleeper_scenario("4242.102", 100, "").replace("policy drop;", "policy sideways;");
    let sc = write_scenario("bad-nft", &text);
    let o = run(&sc, &out_dir("bad-nft-out"));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    // Caught by the checks before the run (nft --check in a namespace of
    // its own), with the script's line.
    assert!(
        err.contains("hosts.b.firewall: nft rejects the script"),
        "{err}"
    );
    assert!(wait_gone("4242.102", Duration::from_secs(2)));
    assert_eq!(before, host_state());
}

#[test]
fn an_interrupted_run_stops_and_leaves_nothing() {
    let before = host_state();
    let marker = "4242.103";
    let sc = write_scenario("sigint", &sleeper_scenario(marker, 30_000, ""));
    let out = out_dir("sigint-out");
    let mut child = hoplab()
        .args(["--quiet", "run"])
        .arg(&sc)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    assert!(
        wait_present(marker, Duration::from_secs(10)),
        "the run never started its process"
    );
    // Into the 30 s traffic step, with something captured to keep.
    assert!(
        sleeper_step_sent(marker, Duration::from_secs(10)),
        "the run's step never sent its datagram"
    );
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the run did not stop on SIGINT"
    );
    assert!(!st.success());
    assert!(
        wait_gone(marker, Duration::from_secs(2)),
        "a process survived the interrupted run"
    );
    // What was captured before the interruption is kept.
    let trace =
        std::fs::read_to_string(out.join("trace.yaml")).expect("trace of the interrupted run");
    assert!(trace.contains("a/eth0 out"), "{trace}");
    assert!(out.join("capture.pcapng").exists());
    assert_eq!(before, host_state());
}

#[test]
fn a_killed_run_takes_every_process_with_it() {
    let before = host_state();
    let marker = "4242.104";
    let sc = write_scenario("sigkill", &sleeper_scenario(marker, 30_000, ""));
    let mut child = hoplab()
        .args(["--quiet", "run"])
        .arg(&sc)
        .arg("--out")
        .arg(out_dir("sigkill-out"))
        .spawn()
        .unwrap();
    assert!(
        wait_present(marker, Duration::from_secs(10)),
        "the run never started its process"
    );
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    assert!(
        wait_gone(marker, Duration::from_secs(2)),
        "a process survived the killed run"
    );
    assert_eq!(before, host_state());
}

/// A SIGTERM in the first milliseconds of a run is never lost: sent 0 to
/// 20 ms after `hoplab` starts, or after its sandboxed child appears (the
/// moment the signal used to be forwarded to a pid 1 without handlers),
/// every run ends promptly with the status of a run ended by SIGTERM, and
/// nothing is left behind.
#[test]
fn a_signal_in_the_first_milliseconds_ends_the_run() {
    let before = host_state();
    let marker = "4242.105";
    let sc = write_scenario("early-sigterm", &sleeper_scenario(marker, 10_000, ""));
    for round in 0..3 {
        for after_child in [false, true] {
            for delay_ms in [0, 1, 2, 5, 10, 20] {
                let out = out_dir("early-sigterm-out");
                let mut cmd = hoplab();
                cmd.args(["--quiet", "run"]).arg(&sc).arg("--out").arg(&out);
                let what = sigterm_early(cmd, &out, after_child, delay_ms);
                assert!(
                    wait_gone(marker, Duration::from_secs(2)),
                    "round {round}: {what}: a process survived"
                );
            }
        }
    }
    assert_eq!(before, host_state());
}

/// Run scenario `text` (tagged `tag`), wait until a process with `marker`
/// on its command line runs, then 300 ms more, and send `sig`. The run must
/// end within 5 s (its waits are sliced, whatever their length) as a run
/// ended by `sig`, leaving nothing behind. Returns its output directory.
fn interrupt_a_long_wait(tag: &str, text: &str, marker: &str, sig: Signal) -> std::path::PathBuf {
    let before = host_state();
    let sc = write_scenario(tag, text);
    let out = out_dir(&format!("{tag}-out"));
    let mut child = hoplab()
        .args(["--quiet", "run"])
        .arg(&sc)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if !wait_present(marker, Duration::from_secs(10)) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{tag}: the run never started `sleep {marker}`");
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let st = wait_within(&mut child, Duration::from_secs(5), &format!("{tag}: {sig}"));
    assert!(ended_by(st, sig), "{tag}: {st}");
    eprintln!("{tag}: ended {:?} after {sig}", t.elapsed());
    assert!(
        wait_gone(marker, Duration::from_secs(2)),
        "{tag}: a process survived"
    );
    assert_eq!(before, host_state());
    out
}

/// The trace an interrupted run wrote in `out`, checked to say it was
/// interrupted by `sig` during `during`, at the top of both reports too.
fn interrupted_trace(out: &std::path::Path, sig: Signal, during: &str) -> Trace {
    let text = std::fs::read_to_string(out.join("trace.yaml")).expect("trace.yaml");
    let tr = Trace::from_yaml(&text).unwrap();
    let i = tr
        .interrupted
        .as_ref()
        .expect("the trace says it was interrupted");
    assert_eq!(
        (i.signal.as_str(), i.during.as_str()),
        (sig.as_str(), during),
        "{text}"
    );
    let said = format!("interrupted by {sig} during {during}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let top: String = md.lines().take(4).collect();
    assert!(top.contains(&said), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let head = &html[..html.find("</header>").expect("a header")];
    assert!(head.contains(&said), "{head}");
    tr
}

#[test]
fn a_long_capture_settle_is_interrupted() {
    let marker = "4242.106";
    let text = sleeper_scenario(marker, 100, "") + "capture:\n  settle_ms: 600000\n";
    let out = interrupt_a_long_wait("long-settle", &text, marker, Signal::SIGTERM);
    // The step was over: its result stands; the packet it sent is there.
    let tr = interrupted_trace(&out, Signal::SIGTERM, "capture");
    assert_eq!(tr.flows[0].result, StepResult::Ok(Some("no reply".into())));
    assert!(!tr.flows[0].packets.is_empty());
}

#[test]
fn a_long_ready_delay_is_interrupted() {
    let marker = "4242.107";
    let late = "  c:\n    processes:\n      - {name: late, cmd: [sleep, \"4242.1071\"], \
                ready: {delay_ms: 600000}}";
    let text = sleeper_scenario(marker, 100, late);
    let out = interrupt_a_long_wait("long-ready", &text, "4242.1071", Signal::SIGINT);
    // Nothing was captured, and the step never ran.
    let tr = interrupted_trace(&out, Signal::SIGINT, "start");
    assert_eq!(
        tr.flows[0].result,
        StepResult::Interrupted(Some("not run".into()))
    );
    assert!(tr.flows[0].packets.is_empty());
    assert!(out.join("capture.pcapng").exists());
}

#[test]
fn a_long_tcp_connect_is_interrupted() {
    // Host b drops every packet to it: the connection is never answered.
    let marker = "4242.108";
    let text = sleeper_scenario(marker, 600_000, "").replace("proto: udp", "proto: tcp");
    let out = interrupt_a_long_wait("long-connect", &text, marker, Signal::SIGINT);
    // The step was cut short, not "ok: no reply"; its SYN is in the trace.
    let tr = interrupted_trace(&out, Signal::SIGINT, "traffic[0] slow");
    assert_eq!(
        tr.flows[0].result,
        StepResult::Interrupted(Some("no reply so far".into()))
    );
    assert!(
        tr.flows[0].packets[0].packet.contains("tcp S"),
        "{:?}",
        tr.flows[0]
    );
}

/// SIGKILL in a run's first milliseconds (while the sandboxed child is
/// made: before it has asked to die with its parent, the kernel would not
/// kill it) leaves no run behind.
#[test]
fn a_run_killed_in_its_first_milliseconds_leaves_nothing() {
    let before = host_state();
    let sc = write_scenario("early-kill", &sleeper_scenario("4242.109", 10_000, ""));
    let tag = format!("early-kill-out-{}-", std::process::id());
    for i in 0..100u64 {
        let mut child = hoplab()
            .args(["--quiet", "run"])
            .arg(&sc)
            .arg("--out")
            .arg(out_dir("early-kill-out"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(500 + i * 200));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let gone = wait_gone(&tag, Duration::from_secs(2));
    let left = pids_with(&tag);
    for pid in &left {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    assert!(gone, "{} processes of killed runs survived", left.len());
    assert!(wait_gone(&tag, Duration::from_secs(2)));
    assert_eq!(before, host_state());
}
