//! Bad scenarios are refused before anything is built, with the file, line,
//! column and field in the message.

mod common;

use common::*;

const GOOD: &str = "version: 1
hosts:
  a: {}
  b: {}
links:
  - a: {host: a, ifname: eth0, addr: [10.0.0.1/24]}
    b: {host: b, ifname: eth0, addr: [10.0.0.2/24]}
traffic:
  - {name: ping, from: a, proto: icmp, to: 10.0.0.2}
";

fn refused(tag: &str, text: &str) -> String {
    let sc = write_scenario(tag, text);
    let out = out_dir(&format!("{tag}-out"));
    let o = run(&sc, &out);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{tag}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        !out.exists(),
        "{tag}: a refused scenario still produced output"
    );
    let v = hoplab().arg("validate").arg(&sc).output().unwrap();
    assert_eq!(v.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains(&format!("{}:", sc.display())), "{err}");
    err
}

#[test]
fn the_good_scenario_validates() {
    let sc = write_scenario("good", GOOD);
    let v = hoplab().arg("validate").arg(&sc).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let e = refused("syntax", &GOOD.replace("  b: {}", "  b: {]"));
    assert!(e.contains(".yaml:4:"), "{e}");
}

#[test]
fn unknown_field_is_refused_with_its_path() {
    let e = refused(
        "unknown",
        &GOOD.replace("proto: icmp", "proto: icmp, colour: red"),
    );
    assert!(
        e.contains(".yaml:9:") && e.contains("traffic[0]") && e.contains("unknown field `colour`"),
        "{e}"
    );
}

#[test]
fn undefined_host_and_interface_are_refused() {
    let e = refused("undef-host", &GOOD.replace("{host: b,", "{host: c,"));
    assert!(
        e.contains(".yaml:7:") && e.contains("links[0].b.host: undefined host `c`"),
        "{e}"
    );
    let e = refused(
        "undef-if",
        &format!("{GOOD}capture:\n  interfaces: [a/eth7]\n"),
    );
    assert!(
        e.contains(".yaml:11:") && e.contains("host `a` has no interface `eth7`"),
        "{e}"
    );
    let e = refused(
        "undef-dev",
        &GOOD.replace("  a: {}", "  a:\n    routes: [{to: default, dev: wlan0}]"),
    );
    assert!(e.contains("hosts.a.routes[0].dev"), "{e}");
}

#[test]
fn missing_file_is_named() {
    let o = hoplab()
        .args(["run", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.yaml: cannot read scenario")
    );
}

#[test]
fn validate_prints_every_error_and_the_count() {
    let sc = write_scenario(
        "every-error",
        &GOOD
            .replace("  a: {}", "  a: {sysctls: {kernel.x: 1}}")
            .replace("{host: b,", "{host: c,")
            .replace("from: a", "from: z"),
    );
    let v = hoplab().arg("validate").arg(&sc).output().unwrap();
    assert_eq!(v.status.code(), Some(1));
    let err = String::from_utf8_lossy(&v.stderr);
    let f = sc.display();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{f}:3:27: hosts.a.sysctls.\"kernel.x\": only net.* sysctls are per network namespace"),
            format!("{f}:7:15: links[0].b.host: undefined host `c`: define it under `hosts:` (e.g. `hosts: {{c: {{}}}}`, with a link giving it an interface); hosts defined: `a`, `b`"),
            format!("{f}:9:24: traffic[0].from: undefined host `z`: define it under `hosts:` (e.g. `hosts: {{z: {{}}}}`, with a link giving it an interface); hosts defined: `a`, `b`"),
            format!("{f}: 3 errors"),
        ],
        "{err}"
    );
}

#[test]
fn hostile_files_are_refused_quickly() {
    for (tag, text) in [
        (
            "deep",
            format!("version: 1\nhosts: {}\n", "[".repeat(100_000)),
        ),
        (
            "huge",
            format!("version: 1\ndescription: {}\n", "x".repeat(2 << 20)),
        ),
    ] {
        let sc = write_scenario(tag, &text);
        let start = std::time::Instant::now();
        let v = hoplab().arg("validate").arg(&sc).output().unwrap();
        assert_eq!(v.status.code(), Some(1), "{tag}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{tag}");
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(err.contains(&format!("{}:", sc.display())), "{err}");
    }
}

/// Mistakes that used to pass `validate` and fail only halfway through a
/// run: each is refused with its line, and nothing is built.
#[test]
fn what_the_machine_lacks_is_refused_before_the_run() {
    let text = GOOD.replace(
        "  a: {}",
        "  a:
    sysctls:
      net.ipv4.conf.eth0.rp_filter: 0
      net.ipv4.no_such_key: 1
    firewall: |
      table ip t {
        chain c {
          type filter hook input priority 0;
          iif \"eth0\" tcp dport 80 dropp
        }
      }
    processes:
      - {name: p, cmd: [no-such-program-4242], ready: {delay_ms: 1}}
      - {name: q, cmd: [sleep, \"1\"], ready: {delay_ms: 1}}",
    );
    let e = refused("machine", &text);
    let lines: Vec<&str> = e.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(
        lines[0].contains(".yaml:6:29: hosts.a.sysctls.\"net.ipv4.no_such_key\": unknown sysctl"),
        "{e}"
    );
    assert!(
        lines[1].contains(
            ".yaml:15:25: hosts.a.processes[0].cmd[0]: no program `no-such-program-4242` on PATH"
        ),
        "{e}"
    );
    assert!(
        lines[2].contains(".yaml:11:44: hosts.a.firewall: nft rejects the script"),
        "{e}"
    );
}
