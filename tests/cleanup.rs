//! A run that fails halfway, is interrupted or is killed leaves nothing
//! behind: no process, namespace, link, mount or firewall table.

mod common;

use std::time::{Duration, Instant};

use common::*;

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
    std::thread::sleep(Duration::from_millis(200)); // into the 30 s traffic step
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
