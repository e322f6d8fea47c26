//! Parsing and checking a scenario file: errors name the file, line,
//! column and field.

use std::path::Path;

use super::parse;
use crate::scenario::ScenarioError;
use crate::values::Expect;

const OK: &str = "version: 1\nhosts:\n  a: {}\n  b: {}\nlinks:\n  - a: {host: a, ifname: eth0, addr: [10.0.0.1/24]}\n    b: {host: b, ifname: eth0, addr: [10.0.0.2/24]}\ntraffic:\n  - {name: ping, from: a, proto: icmp, to: 10.0.0.2}\n";

fn err(text: &str) -> ScenarioError {
    parse(Path::new("s.yaml"), "s", text).unwrap_err()
}

#[test]
fn valid_scenario_parses() {
    let sc = parse(Path::new("s.yaml"), "s", OK).unwrap();
    assert_eq!(sc.links.len(), 1);
    assert_eq!(sc.capture_interfaces().len(), 2);
}

#[test]
fn unknown_field_names_file_line_column_and_field() {
    let e = err(&OK.replace("  a: {}", "  a: {colour: red}"));
    assert_eq!((e.line, e.field.as_str()), (3, "hosts.a"), "{e}");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    assert!(e.to_string().starts_with("s.yaml:3:"), "{e}");
}

#[test]
fn undefined_host_is_located() {
    let e = err(&OK.replace("b: {host: b,", "b: {host: c,"));
    assert_eq!(e.field, "links[0].b.host");
    assert_eq!(e.line, 7, "{e}");
    assert!(e.message.contains("undefined host `c`"));
}

#[test]
fn undefined_traffic_host_and_bad_target() {
    let e = err(&OK.replace("from: a", "from: z"));
    assert_eq!((e.field.as_str(), e.line), ("traffic[0].from", 9));
    let e = err(&OK.replace("to: 10.0.0.2}", "to: nowhere}"));
    assert_eq!(e.field, "traffic[0].to");
}

#[test]
fn duplicate_interface_and_long_names_rejected() {
    let e = err(&OK.replace("host: b, ifname: eth0", "host: a, ifname: eth0"));
    assert_eq!(e.field, "links[0].b.ifname");
    let e = err(&OK.replace("host: b, ifname: eth0", "host: b, ifname: abcdefghijklmnop"));
    assert!(e.message.contains("15 bytes"));
}

#[test]
fn expectations_and_readiness_parse() {
    let t = OK.replace("to: 10.0.0.2}", "to: 10.0.0.2, expect: {reply: pong}}");
    let sc = parse(Path::new("s.yaml"), "s", &t).unwrap();
    assert_eq!(sc.traffic[0].expect, Expect::Reply("pong".into()));
    let e = err(&OK.replace("to: 10.0.0.2}", "to: 10.0.0.2, expect: maybe}"));
    assert_eq!((e.field.as_str(), e.line), ("traffic[0].expect", 9), "{e}");
    let p = "  a:\n    processes: [{name: p, cmd: [x], ready: {tcp_listen: 1, delay_ms: 2}}]";
    let e = err(&OK.replace("  a: {}", p));
    assert_eq!(
        (e.field.as_str(), e.line),
        ("hosts.a.processes[0].ready", 4),
        "{e}"
    );
}

#[test]
fn bad_address_and_version() {
    let e = err(&OK.replace("10.0.0.2/24", "10.0.0.2"));
    assert!(e.message.contains("no prefix length"), "{e}");
    assert_eq!(e.line, 7);
    let e = err(&OK.replace("version: 1", "version: 2"));
    assert_eq!((e.field.as_str(), e.line), ("version", 1));
}

#[test]
fn capture_reference_checked() {
    let e = err(&format!("{OK}capture:\n  interfaces: [a/eth9]\n"));
    assert_eq!(e.field, "capture.interfaces[0]");
    assert_eq!(e.line, 11);
}

/// Steps past index 25535 without a `sport` would send from a port over
/// 65535: refused at the first such step, not a panic.
#[test]
fn too_many_steps_for_default_ports_are_refused() {
    let mut t = OK.replace("  - {name: ping, from: a, proto: icmp, to: 10.0.0.2}\n", "");
    for i in 0..25_537 {
        t.push_str(&format!(
            "  - {{name: s{i}, from: a, proto: icmp, to: 10.0.0.2}}\n"
        ));
    }
    let e = err(&t);
    assert_eq!((e.field.as_str(), e.line), ("traffic[25536]", 25545), "{e}");
    assert!(e.message.contains("give this step a `sport`"), "{e}");
}
