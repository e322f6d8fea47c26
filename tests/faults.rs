//! A run survives what dies in it: the gateway killed from outside in the
//! middle of the traffic, a scenario process that exits by itself. The run
//! keeps its capture, trace and reports, says in the trace which process
//! died, when and how, and exits 1 (expectations not met), not 2.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const GATEWAY: &str = r#"version: 1
clusters:
  - name: c1
    nodes:
      - {name: n1, coords: [0, 0]}
      - {name: gw, coords: [0, 0]}
services:
  - name: api
    round_robin: 10.30.30.30
    echo: {tcp: [80]}
    instances:
      - {node: n1}
gateway:
  node: gw
  public: 24.0.5.8
  expose:
    - {proto: tcp, port: 8080, service: "10.30.30.30:80"}
externals:
  - {name: client, addr: 93.6.1.78}
traffic:
  - {name: get, from: client, proto: tcp, to: "24.0.5.8:8080", payload: GET /}
  - {name: wait, from: client, proto: tcp, to: "24.0.5.8:9999", expect: silence, timeout_ms: 4000}
"#;

fn trace_of(out: &std::path::Path) -> String {
    std::fs::read_to_string(out.join("trace.yaml")).expect("trace.yaml written")
}

fn evidence(out: &std::path::Path) {
    for f in ["capture.pcapng", "trace.yaml", "report.md", "report.html"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
}

#[test]
fn a_gateway_killed_mid_run_leaves_its_evidence_and_exit_1() {
    let sc = write_scenario("gw-killed", GATEWAY);
    let out = out_dir("gw-killed");
    let mut child = hoplab()
        .arg("run")
        .arg(&sc)
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The progress line of the `start` phase comes once every process is
    // ready; the traffic then runs for about four seconds.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        said.push_str(&line);
        if line.contains(" start ") {
            break;
        }
        line.clear();
    }
    std::thread::sleep(Duration::from_millis(1000));
    let marker = out.join("ctl").join("gw-gw.sock");
    let marker = marker.to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(5);
    let pids = loop {
        let p = pids_with(&format!("--control {marker}"));
        if !p.is_empty() || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(pids.len(), 1, "the gateway of this run ({said})");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut err, &mut rest);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{said}{rest}");
    evidence(&out);
    let t = trace_of(&out);
    assert!(
        t.contains("gw/gateway died during traffic[1] wait: killed by signal SIGKILL"),
        "{t}"
    );
    assert!(
        t.contains("gw/gateway counters unavailable: process ended (killed by signal SIGKILL)"),
        "{t}"
    );
    assert!(
        rest.contains("unmet expectation: gw/gateway died"),
        "{rest}"
    );
    assert!(
        !out.join("ctl").join("gw-gw.sock").exists(),
        "stale control socket left"
    );
}

#[test]
fn a_process_that_exits_by_itself_is_told_with_its_status() {
    let sc = write_scenario(
        "exits",
        r#"version: 1
hosts:
  a:
    processes:
      - {name: quitter, cmd: [sh, -c, "sleep 0.3; exit 3"], ready: {delay_ms: 1}}
  b: {}
links:
  - a: {host: a, ifname: eth0, addr: [10.0.0.1/24]}
    b: {host: b, ifname: eth0, addr: [10.0.0.2/24]}
traffic:
  - {name: first, from: a, proto: udp, to: "10.0.0.3:9", expect: silence, timeout_ms: 800}
  - {name: second, from: a, proto: udp, to: "10.0.0.3:9", expect: silence, timeout_ms: 100}
"#,
    );
    let out = out_dir("exits");
    let o = run(&sc, &out);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    evidence(&out);
    let t = trace_of(&out);
    assert!(
        t.contains("a/quitter died during traffic[0] first: exited with status 3"),
        "{t}"
    );
}

#[test]
fn fault_steps_say_what_they_did() {
    let sc = write_scenario(
        "fault-steps",
        r#"version: 1
hosts:
  a:
    processes:
      - {name: srv, echo: {udp: [7]}}
  b: {}
links:
  - a: {host: a, ifname: eth0, addr: [10.0.0.1/24]}
    b: {host: b, ifname: eth0, addr: [10.0.0.2/24]}
traffic:
  - {name: up, from: b, proto: udp, to: "10.0.0.1:7"}
  - {name: killed, from: b, proto: udp, to: "10.0.0.1:7", kill: [a/srv], expect: refused}
  - {name: back, from: b, proto: udp, to: "10.0.0.1:7", restart: [a/srv]}
  - {name: stopped, from: b, proto: udp, to: "10.0.0.1:7", terminate: [a/srv], expect: refused}
  - {name: cut, from: b, proto: udp, to: "10.0.0.1:7", restart: [a/srv], link: {down: [a/eth0]}, expect: silence, timeout_ms: 300}
  - {name: mended, from: b, proto: udp, to: "10.0.0.1:7", link: {up: [a/eth0]}}
"#,
    );
    let out = out_dir("fault-steps");
    let o = run(&sc, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = trace_of(&out);
    for want in [
        "traffic[1] killed: kill a/srv: killed by signal SIGKILL",
        "traffic[2] back: restart a/srv (it had ended: killed by signal SIGKILL): ready again",
        "traffic[3] stopped: terminate a/srv: killed by signal SIGTERM",
        "traffic[4] cut: link down a/eth0",
        "traffic[5] mended: link up a/eth0: operationally up",
    ] {
        assert!(t.contains(want), "{want}:\n{t}");
    }
    assert!(!t.contains("died"), "{t}");
}

#[test]
fn a_service_manager_that_recovers_answers_again() {
    let sc = write_scenario(
        "recover",
        r#"version: 1
clusters:
  - name: c1
    nodes:
      - {name: n1, coords: [0, 0]}
services:
  - name: db
    round_robin: 10.30.3.1
    echo: {udp: [5432]}
    instances:
      - {node: n1}
  - name: web
    instances:
      - {node: n1}
traffic:
  - {name: fails, from: web-0, proto: udp, to: "10.30.3.1:5432", fail_manager: c1, expect: refused}
  - {name: answers, from: web-0, proto: udp, to: "10.30.3.1:5432", recover_manager: c1, attempts: 3}
"#,
    );
    let out = out_dir("recover");
    let o = run(&sc, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = trace_of(&out);
    assert!(t.contains("(attempt 1 of 3)"), "{t}");
    let log = std::fs::read_to_string(out.join("logs/control-plane.log")).unwrap();
    assert!(log.contains("c1: answering again"), "{log}");
}
