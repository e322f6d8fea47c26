//! Parsing and checking a scenario file: errors name the file, line,
//! column and field.

use std::path::Path;

use super::parse;
use crate::expect::Expect;
use crate::scenario::ScenarioErrors;

const OK: &str = "version: 1\nhosts:\n  a: {}\n  b: {}\nlinks:\n  - a: {host: a, ifname: eth0, addr: [10.0.0.1/24]}\n    b: {host: b, ifname: eth0, addr: [10.0.0.2/24]}\ntraffic:\n  - {name: ping, from: a, proto: icmp, to: 10.0.0.2}\n";

fn err(text: &str) -> ScenarioErrors {
    parse(Path::new("s.yaml"), "s", text).unwrap_err()
}

/// The field and line of each error.
pub(super) fn places(e: &ScenarioErrors) -> Vec<(&str, usize)> {
    e.errors()
        .iter()
        .map(|e| (e.field.as_str(), e.line))
        .collect()
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

#[test]
fn loopback_adds_lo_to_every_interface_or_to_those_listed() {
    let sc = parse(
        Path::new("s.yaml"),
        "s",
        &format!("{OK}capture:\n  loopback: [b]\n"),
    )
    .unwrap();
    let lo = ("b".to_string(), "lo".to_string());
    let all = sc.capture_interfaces();
    assert_eq!((all.len(), all.last()), (3, Some(&lo)));
    let listed = format!("{OK}capture:\n  interfaces: [a/eth0, b/lo]\n  loopback: [b, a]\n");
    let sc = parse(Path::new("s.yaml"), "s", &listed).unwrap();
    let names: Vec<String> = (sc.capture_interfaces().iter())
        .map(|(h, i)| format!("{h}/{i}"))
        .collect();
    assert_eq!(names, ["a/eth0", "b/lo", "a/lo"]);
    let e = err(&format!("{OK}capture:\n  loopback: [a, c, a]\n"));
    assert_eq!(
        places(&e),
        [("capture.loopback[1]", 11), ("capture.loopback[2]", 11)]
    );
    assert!(
        e.errors()[0].to_string().contains("undefined host `c`"),
        "{e}"
    );
    assert!(e.errors()[1].to_string().contains("listed twice"), "{e}");
}

#[test]
fn duplicate_keys_are_refused_with_both_locations() {
    let t = OK.replace(
        "  b: {}\n",
        "  b:\n    sysctls:\n      net.ipv4.ip_forward: 1\n      net.ipv4.ip_forward: 0\n  a: {ipv6: true}\n",
    );
    let e = err(&t);
    assert_eq!(e.count(), 2, "{e}");
    let [forward, host] = e.errors() else {
        panic!("{e}")
    };
    assert_eq!(
        (forward.field.as_str(), forward.line, forward.column),
        ("hosts.b.sysctls.\"net.ipv4.ip_forward\"", 7, 28),
        "{e}"
    );
    assert!(forward.message.contains("also at line 6 column 28"), "{e}");
    assert_eq!((host.field.as_str(), host.line), ("hosts.a", 8), "{e}");
    assert!(host.message.contains("also at line 3 column 6"), "{e}");
}

#[test]
fn every_error_is_reported_in_order() {
    let t = OK
        .replace("  a: {}", "  a: {sysctls: {kernel.x: 1}}")
        .replace(
            "ifname: eth0, addr: [10.0.0.2/24]",
            "ifname: eth0, addr: [10.0.0.2/24], mtu: 0",
        )
        .replace("b: {host: b,", "b: {host: c,")
        .replace("from: a", "from: z");
    let e = err(&t);
    let got = places(&e);
    assert_eq!(
        got,
        [
            ("hosts.a.sysctls.\"kernel.x\"", 3),
            ("links[0].b.mtu", 7),
            ("links[0].b.host", 7),
            ("traffic[0].from", 9),
        ],
        "{e}"
    );
    // The first error reads as before; the text has one line per error.
    assert!(e.message.contains("only net.* sysctls"), "{e}");
    assert_eq!(e.to_string().lines().count(), 4, "{e}");
}

#[test]
fn errors_under_dotted_keys_are_located() {
    let t = OK.replace(
        "  b: {}",
        "  b: {}\n  ser.ver:\n    sysctls:\n      net.x.y: 1\n      kernel.z: 1",
    );
    let e = err(&t);
    let got: Vec<(&str, usize, usize)> = e
        .errors()
        .iter()
        .map(|e| (e.field.as_str(), e.line, e.column))
        .collect();
    assert_eq!(
        got,
        [
            ("hosts.\"ser.ver\"", 6, 5),
            ("hosts.\"ser.ver\".sysctls.\"kernel.z\"", 8, 17),
        ],
        "{e}"
    );
}

#[test]
fn an_unclosed_brace_is_a_syntax_error_at_the_brace() {
    let t = OK.replace(
        "  a: {}",
        "  a:\n    routes:\n      - {to: default, via: 10.0.0.1",
    );
    let e = err(&t);
    assert_eq!(
        (e.field.as_str(), e.line, e.column),
        ("(document)", 5, 9),
        "{e}"
    );
    assert!(e.message.starts_with("`{` not closed"), "{e}");
}

#[test]
fn nesting_and_size_are_bounded() {
    let deep = format!("version: 1\ndescription: {}\n", "[".repeat(65));
    let e = err(&deep);
    assert_eq!((e.line, e.column), (2, 78), "{e}");
    assert!(e.message.contains("nested deeper than 64"), "{e}");
    // Block nesting is counted while walking the document.
    let mut block = String::from("version: 1\ndescription:\n");
    for i in 0..70 {
        block.push_str(&format!("{}- \n", "  ".repeat(i)));
    }
    block = block.replace("- \n", "-\n");
    let e = err(&block);
    assert!(e.message.contains("nested deeper than 64"), "{e}");
    // Brackets in quotes, comments and block scalars do not count.
    let quoted = OK.replace(
        "  a: {}",
        &format!(
            "  a:\n    firewall: |\n      {}\n  # {}\n  c: {{}}",
            "{".repeat(80),
            "[".repeat(80)
        ),
    );
    let quoted = quoted.replace(
        "to: 10.0.0.2}",
        &format!("to: 10.0.0.2, payload: '{}'}}", "[".repeat(80)),
    );
    parse(Path::new("s.yaml"), "s", &quoted).unwrap();
    // A block scalar ends where its map goes on, also in a sequence entry.
    let after_block = format!(
        "version: 1\nhosts:\n  a:\n    processes:\n      - name: p\n        cmd: [\"true\"]\n      - cmd: |\n          x\n        name: {}\n",
        "[".repeat(65)
    );
    let e = err(&after_block);
    assert_eq!((e.line, e.column), (9, 79), "{e}");
    assert!(e.message.contains("nested deeper than 64"), "{e}");
    let big = format!("version: 1\ndescription: {}\n", "x".repeat(1 << 20));
    let e = err(&big);
    assert!(e.message.contains("at most 1048576 bytes"), "{e}");
}

#[test]
fn alias_expansion_is_bounded() {
    let mut t = OK.replace(
        "traffic:\n",
        &format!("description: &d {}\ntraffic:\n", "x".repeat(10_000)),
    );
    for i in 0..50 {
        t.push_str(&format!(
            "  - {{name: s{i}, from: a, proto: icmp, to: 10.0.0.2, payload: *d}}\n"
        ));
    }
    let e = err(&t);
    assert!(e.message.contains("aliases expand this document"), "{e}");
    // A few aliases of a small anchor are fine.
    let t = OK.replace("  b: {}", "  b: &empty {}\n  c: *empty");
    parse(Path::new("s.yaml"), "s", &t).unwrap();
}

#[test]
fn mtu_out_of_range_and_duplicate_addresses_are_refused() {
    let t = OK
        .replace(
            "  a: {}",
            "  a:\n    tuns: {tun0: {addr: [10.0.0.1/32], mtu: 70000}}",
        )
        .replace("addr: [10.0.0.2/24]}", "addr: [10.0.0.2/24], mtu: 0}");
    let e = err(&t);
    let got = places(&e);
    assert_eq!(
        got,
        [
            ("hosts.a.tuns.tun0.mtu", 4),
            ("links[0].b.mtu", 8),
            ("links[0].a.addr[0]", 7),
        ],
        "{e}"
    );
    assert!(
        e.errors()[0].message.contains("MTU 70000 is out of range"),
        "{e}"
    );
    assert!(
        e.errors()[2]
            .message
            .contains("address 10.0.0.1 is also given to hosts.a.tuns.tun0.addr[0] on host `a`"),
        "{e}"
    );
}

#[test]
fn one_address_on_both_ends_of_a_link_is_refused() {
    let e = err(&OK.replace("addr: [10.0.0.2/24]", "addr: [10.0.0.1/24]"));
    assert_eq!((e.field.as_str(), e.line), ("links[0].b.addr[0]", 7), "{e}");
    assert!(e.message.contains("the other end, links[0].a"), "{e}");
}

#[test]
fn a_named_target_needs_the_hosts_resolver_and_a_dns_process_its_records() {
    let named = OK.replace(
        "  - {name: ping, from: a, proto: icmp, to: 10.0.0.2}",
        "  - {name: get, from: a, to: \"api.yourapp.com:80\", http: {path: /}}",
    );
    let e = err(&named);
    assert_eq!((e.field.as_str(), e.line), ("traffic[0].to", 9), "{e}");
    assert!(e.message.contains("give host `a` a `resolver`"), "{e}");
    let dns = "  b:\n    processes: [{name: dns, dns: {records: {api.yourapp.com: 10.0.0.2}}}]";
    let ok = named
        .replace("  a: {}", "  a: {resolver: 10.0.0.2}")
        .replace("  b: {}", dns);
    let sc = parse(Path::new("s.yaml"), "s", &ok).unwrap();
    let lab = &sc.lab;
    let r = lab.traffic[0].resolve.as_ref().expect("asks the resolver");
    assert_eq!(
        (
            r.name.as_str(),
            r.server.to_string().as_str(),
            lab.traffic[0].target.port
        ),
        ("api.yourapp.com", "10.0.0.2:53", 80)
    );
    let p = &lab.hosts["b"].processes[0];
    assert_eq!(p.cmd.as_ref().unwrap()[1], "__dns");
    assert_eq!(p.ready, Some(crate::lab::Ready::UdpBound(53)));
    let e = err(&ok.replace("api.yourapp.com: 10.0.0.2", "\"a..b\": 10.0.0.2"));
    assert_eq!(e.field, "hosts.b.processes[0].dns.records.\"a..b\"", "{e}");
    let e = err(&ok
        .replace("cmd", "x")
        .replace("{name: dns, dns:", "{name: dns, cmd: [x], dns:"));
    assert!(e.message.contains("exactly one of"), "{e}");
}

#[test]
fn degenerate_values_are_refused_where_they_are() {
    let mac = OK.replace(
        "addr: [10.0.0.1/24]}",
        "addr: [10.0.0.1/24], mac: \"00:00:00:00:00:00\"}",
    );
    let e = err(&mac);
    assert_eq!(places(&e), [("links[0].a", 6)], "{e}");
    assert!(e.errors()[0].message.contains("all-zero MAC"), "{e}");
    let tcp = OK.replace(
        "proto: icmp, to: 10.0.0.2}",
        "proto: tcp, to: \"10.0.0.2:0\"}",
    );
    let e = err(&tcp);
    assert_eq!(places(&e), [("traffic[0].to", 9)], "{e}");
    assert!(e.errors()[0].message.contains("port 0"), "{e}");
    let udp = OK.replace(
        "proto: icmp, to: 10.0.0.2}",
        "proto: udp, to: \"10.0.0.2:0\"}",
    );
    assert_eq!(places(&err(&udp)), [("traffic[0].to", 9)]);
}

const FAULTS: &str = "version: 1\nclusters:\n  - name: c1\n    nodes:\n      - {name: n1, coords: [0, 0]}\nservices:\n  - name: api\n    round_robin: 10.30.1.1\n    echo: {tcp: [80]}\n    instances:\n      - {node: n1}\n  - name: web\n    instances:\n      - {node: n1}\ntraffic:\n  - {name: call, from: web-0, proto: tcp, to: \"10.30.1.1:80\", STEP}\n";

#[test]
fn fault_steps_name_processes_of_the_lab() {
    let ok = FAULTS.replace(
        "STEP",
        "kill: [n1/netmanager], restart: [n1/netmanager, api-0/echo], recover_manager: c1",
    );
    let sc = parse(Path::new("s.yaml"), "s", &ok).unwrap();
    assert_eq!(sc.traffic[0].restart, ["n1/netmanager", "api-0/echo"]);
    let e = err(&FAULTS.replace("STEP", "recover_manager: c9"));
    assert_eq!(places(&e), [("traffic[0].recover_manager", 16)], "{e}");
    let bad = FAULTS.replace(
        "STEP",
        "kill: [n1/nm], terminate: [n9/netmanager], restart: [n1/netmanager, n1/netmanager]",
    );
    let e = err(&bad);
    let got = places(&e);
    assert_eq!(
        got,
        [
            ("traffic[0].kill[0]", 16),
            ("traffic[0].terminate[0]", 16),
            ("traffic[0].restart[1]", 16),
        ],
        "{e}"
    );
    assert!(
        e.errors()[0].message.contains("no process `n1/nm`")
            && e.errors()[0].message.contains("n1/netmanager"),
        "{e}"
    );
    assert!(e.errors()[2].message.contains("named twice"), "{e}");
}

#[test]
fn a_gateway_with_no_room_for_flows_is_refused() {
    let t = "version: 1\nclusters:\n  - name: c1\n    nodes:\n      - {name: n1, coords: [0, 0]}\n      - {name: gw, coords: [0, 0]}\nservices:\n  - name: api\n    round_robin: 10.30.30.30\n    echo: {tcp: [80]}\n    instances:\n      - {node: n1}\ngateway:\n  node: gw\n  public: 24.0.5.8\n  max_flows: 0\n  expose:\n    - {proto: tcp, port: 8080, service: \"10.30.30.30:80\"}\n";
    let e = err(t);
    assert_eq!(places(&e), [("gateway.max_flows", 16)], "{e}");
}

#[test]
fn a_fragment_timeout_out_of_range_is_refused_and_one_in_range_is_passed_on() {
    let with = |t: &str| {
        FAULTS
            .replace(
                "  - name: c1\n",
                &format!("  - name: c1\n    frag_timeout_ms: {t}\n"),
            )
            .replace(", STEP", "")
    };
    for bad in ["0", "60001"] {
        let e = err(&with(bad));
        assert_eq!(places(&e), [("clusters[0].frag_timeout_ms", 4)], "{e}");
        assert!(e.errors()[0].message.contains("1 to 60000"), "{e}");
    }
    let x = parse(Path::new("s.yaml"), "s", &with("250")).unwrap();
    let nm = x.lab.hosts["n1"]
        .processes
        .iter()
        .find_map(|p| p.netmanager.as_ref())
        .unwrap();
    assert_eq!(nm.frag_timeout_ms, Some(250));
    let argv = nm.argv("netmanager", Path::new("/c"), Path::new("/k"));
    let at = argv.iter().position(|a| a == "--frag-timeout-ms").unwrap();
    assert_eq!(argv[at + 1], "250");
}

#[test]
fn link_faults_name_interfaces_of_the_lab() {
    let ok = OK.replace(
        "to: 10.0.0.2}",
        "to: 10.0.0.2, link: {down: [a/eth0], up: [b/eth0]}}",
    );
    let sc = parse(Path::new("s.yaml"), "s", &ok).unwrap();
    assert_eq!(sc.traffic[0].link_down, ["a/eth0"]);
    let bad = OK.replace(
        "to: 10.0.0.2}",
        "to: 10.0.0.2, link: {down: [a/eth9, a/lo], up: [c/eth0]}}",
    );
    let e = err(&bad);
    assert_eq!(
        places(&e),
        [
            ("traffic[0].link.down[0]", 9),
            ("traffic[0].link.down[1]", 9),
            ("traffic[0].link.up[0]", 9),
        ],
        "{e}"
    );
    assert!(
        e.errors()[0].message.contains("no interface `a/eth9`"),
        "{e}"
    );
}

#[test]
fn attempts_are_one_to_a_hundred() {
    let ok = OK.replace("to: 10.0.0.2}", "to: 10.0.0.2, attempts: 3}");
    let sc = parse(Path::new("s.yaml"), "s", &ok).unwrap();
    assert_eq!(sc.traffic[0].attempts, 3);
    let e = err(&OK.replace("to: 10.0.0.2}", "to: 10.0.0.2, attempts: 0}"));
    assert_eq!(places(&e), [("traffic[0].attempts", 9)], "{e}");
}

/// The top-level `impair` names a link by one of its ends, the generated
/// ones too: the named end is `a` (`out` leaves it); an end no link has,
/// bad values and a link impaired twice are errors at their fields.
#[test]
fn links_are_impaired_by_naming_an_end() {
    let cluster =
        "version: 1\nclusters:\n  - name: c1\n    nodes:\n      - {name: n1, coords: [0, 0]}\n";
    let t = format!("{cluster}impair:\n  - link: n1/eth0\n    seed: 4\n    in: {{loss: 10}}\n");
    let sc = parse(Path::new("s.yaml"), "s", &t).unwrap();
    let l = sc
        .links
        .iter()
        .find(|l| l.impair.is_some())
        .expect("the underlay link is impaired");
    let im = l.impair.as_ref().unwrap();
    // n1/eth0 is the link's end a: what arrives at it is b_to_a.
    assert_eq!((l.a.host.as_str(), l.a.ifname.as_str()), ("n1", "eth0"));
    assert_eq!((im.seed, im.a_to_b.is_none()), (4, true));
    assert_eq!(im.b_to_a.as_ref().unwrap().loss, 10.0);
    assert_eq!(im.named.as_deref(), Some("n1/eth0"));
    // Named by its other end (the underlay switch's port), turned round.
    let t = t.replace("link: n1/eth0", "link: underlay/n1");
    let sc = parse(Path::new("s.yaml"), "s", &t).unwrap();
    let l = sc.links.iter().find(|l| l.impair.is_some()).unwrap();
    assert_eq!(
        l.impair.as_ref().unwrap().a_to_b.as_ref().unwrap().loss,
        10.0
    );

    let e = err(&format!(
        "{cluster}impair:\n  - {{link: n9/eth0, seed: 1, out: {{loss: 5}}}}\n  - {{link: n1/eth0, seed: 1, in: {{loss: 500}}}}\n  - {{link: n1/eth0, seed: 1}}\n"
    ));
    assert_eq!(
        places(&e),
        [
            ("impair[0].link", 7),
            ("impair[1].in.loss", 8),
            ("impair[2]", 9)
        ],
        "{e}"
    );
    let twice = format!(
        "{cluster}impair:\n  - {{link: n1/eth0, seed: 1, out: {{loss: 5}}}}\n  - {{link: underlay/n1, seed: 2, out: {{loss: 5}}}}\n"
    );
    let e = err(&twice);
    assert_eq!(places(&e), [("impair[1].link", 8)], "{e}");
    assert!(e.to_string().contains("impaired already"), "{e}");
}
