//! L7 steps end to end: hoplab's own HTTP, TLS 1.3 and WebSocket client
//! against its built-in server and Debian's HAProxy, in a scenario run as
//! CI runs it; the run's certificates and key log; the same trace on every
//! run; bad L7 input refused with the file, line and field.

mod common;

use common::*;

/// HAProxy in front of the built-in server: plain HTTP, and TLS ended
/// with the run's certificate `lb` (Ed25519, read by OpenSSL).
const HAPROXY_CFG: &str = "global
    log stderr format short local0 info
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend plain
    bind :8080
    default_backend web
frontend edge
    bind :8446 ssl crt tls/lb.pem
    default_backend web
backend web
    server web1 127.0.0.1:80
";

const BUILT_IN: &str = r#"version: 1
tls:
  certs:
    server1: {dns: [server1.internal], ip: [10.0.1.1]}
    rogue: {dns: [app.example], self_signed: true}
hosts:
  client: {}
  server:
    files:
      note.txt: {text: "hello\n"}
    processes:
      - {name: web, http: {listen: 80}}
      - {name: tls, http: {listen: 8443, tls: {cert: server1}}}
      - {name: mtls, http: {listen: 8444, tls: {cert: server1, client_ca: true}}}
      - {name: rogue, http: {listen: 8445, tls: {cert: rogue}}}
      - {name: flaky, http: {listen: 81, fail: {nth: 1, status: 503}, reset: {nth: 2}, body: "x"}}
      - {name: echo, echo: {tcp: [7]}}
      - {name: slow, http: {listen: 82, delay_ms: 5000}}
links:
  - a: {host: client, ifname: eth0, addr: [10.0.1.2/24]}
    b: {host: server, ifname: eth0, addr: [10.0.1.1/24]}
traffic:
  - name: get
    from: client
    to: "10.0.1.1:80"
    http: {path: /hello, host: app.example, headers: {X-Extra: "1"}}
    expect: {status: 200, headers: {X-Served-By: server/web, X-Request-Id: hoplab-0-1}, body: "served by server/web\n"}
  - name: post
    from: client
    to: "10.0.1.1:80"
    http: {method: POST, path: /form, body: "a=1", headers: {X-Request-Id: mine, Connection: keep-alive}}
    expect: {headers: {X-Request-Id: mine}}
  - name: https
    from: client
    to: "10.0.1.1:8443"
    http: {host: server1.internal, tls: {alpn: [http/1.1]}}
    expect: {status: 200, headers: {X-Served-By: server/tls}}
  - name: https-by-ip
    from: client
    to: "10.0.1.1:8443"
    http: {tls: {}}
  - name: mtls
    from: client
    to: "10.0.1.1:8444"
    http: {host: server1.internal, tls: {cert: client1}}
    expect: {headers: {X-Served-By: server/mtls}}
  - name: mtls-no-cert
    from: client
    to: "10.0.1.1:8444"
    http: {host: server1.internal, tls: {}}
    expect: {error: "TLS error: received fatal alert: CertificateRequired"}
  - name: unknown-issuer
    from: client
    to: "10.0.1.1:8445"
    http: {tls: {sni: app.example}}
    expect: {error: "TLS error: invalid peer certificate: UnknownIssuer"}
  - name: wrong-name
    from: client
    to: "10.0.1.1:8443"
    http: {tls: {sni: other.example}}
    expect: {error: "certificate not valid for name"}
  - name: not-http
    from: client
    to: "10.0.1.1:7"
    http: {path: /}
    expect: {error: "not HTTP: \"GET / HTTP/1.1"}
  - name: fail-first
    from: client
    to: "10.0.1.1:81"
    http: {}
    expect: {status: 503, body: x}
  - name: reset-second
    from: client
    to: "10.0.1.1:81"
    http: {}
    expect: {error: connection reset}
  - name: ws
    from: client
    to: "10.0.1.1:80"
    websocket: {path: /chat, messages: [{text: hello}, {binary: "01020304"}, {text: bye}]}
  - name: wss
    from: client
    to: "10.0.1.1:8443"
    websocket: {host: server1.internal, messages: [{text: hi}], tls: {}}
  - name: slow
    from: client
    to: "10.0.1.1:82"
    http: {}
    timeout_ms: 300
    expect: silence
  - name: head
    from: client
    to: "10.0.1.1:8443"
    http: {method: HEAD, host: server1.internal, tls: {}}
"#;

/// The scenario written beside HAProxy's configuration, and its path.
fn scenario(tag: &str, text: &str) -> std::path::PathBuf {
    let p = write_scenario(tag, text);
    std::fs::write(p.with_file_name("lb.cfg"), HAPROXY_CFG).unwrap();
    p
}

fn results(trace: &str) -> Vec<String> {
    trace
        .lines()
        .filter_map(|l| l.trim().strip_prefix("result: "))
        .map(|r| r.trim_matches('\'').to_string())
        .collect()
}

#[test]
fn http_tls_and_websocket_steps_against_the_built_in_server() {
    let sc = scenario("l7-built-in", BUILT_IN);
    let out = out_dir("l7-built-in-out");
    let t0 = std::time::Instant::now();
    let o = run(&sc, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The slow server (5 s) does not hold the run: its step ends at its
    // timeout.
    assert!(t0.elapsed() < std::time::Duration::from_secs(4));
    let trace = std::fs::read_to_string(out.join("trace.yaml")).unwrap();
    assert!(!trace.contains("FAILED"), "{trace}");
    let r = results(&trace);
    assert_eq!(r.len(), 15, "{r:?}");
    assert_eq!(r[0], "ok: HTTP 200 (21 B body)");
    assert_eq!(
        r[6],
        "ok: TLS error: invalid peer certificate: UnknownIssuer"
    );
    assert!(r[8].starts_with("ok: not HTTP: "), "{}", r[8]);
    assert_eq!(r[10], "ok: connection reset");
    assert_eq!(r[11], "ok: WebSocket: 3 messages echoed");
    assert_eq!(r[13], "ok: no reply");
    assert_eq!(r[14], "ok: HTTP 200 (0 B body)");
    assert!(trace.contains(
        "sent: HTTP GET / over TLS, SNI server1.internal, ALPN http/1.1 from client port 40002 to 10.0.1.1:8443"
    ));

    // The host's working directory: its files and the run's certificates.
    let dir = out.join("hosts/server");
    assert_eq!(
        std::fs::read_to_string(dir.join("note.txt")).unwrap(),
        "hello\n"
    );
    for f in [
        "ca.crt",
        "server1.crt",
        "server1.key",
        "server1.pem",
        "client1.crt",
    ] {
        assert!(dir.join("tls").join(f).is_file(), "{f}");
    }
    // Every TLS session that completed is in the key log, by both ends.
    let keys = std::fs::read_to_string(out.join("tls-keys.log")).unwrap();
    let traffic0 = keys
        .lines()
        .filter(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 "))
        .count();
    // https, https-by-ip, mtls, wss: client and server each log (8); the
    // server of mtls-no-cert, unknown-issuer and wrong-name has its
    // traffic secrets before the client refuses (3), and the client of
    // mtls-no-cert before the server refuses (1); head (2).
    assert_eq!(traffic0, 14, "{keys}");
    for l in keys.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 3, "{l}");
        assert_eq!(f[1].len(), 64, "{l}");
    }

    // Same certificates and the same trace on a second run.
    let out2 = out_dir("l7-built-in-out");
    let o = run(&sc, &out2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(dir.join("tls/server1.pem")).unwrap(),
        std::fs::read(out2.join("hosts/server/tls/server1.pem")).unwrap()
    );
    let trace2 = std::fs::read_to_string(out2.join("trace.yaml")).unwrap();
    assert!(trace == trace2, "the trace changed between runs");
}

#[test]
fn steps_through_haproxy() {
    let text = r#"version: 1
tls:
  certs:
    lb: {dns: [app.example]}
hosts:
  client: {}
  server:
    files: {haproxy.cfg: lb.cfg}
    processes:
      - {name: web, http: {listen: 80}}
      - {name: haproxy, cmd: [haproxy, -db, -f, haproxy.cfg], ready: {tcp_listen: 8446}}
links:
  - a: {host: client, ifname: eth0, addr: [10.0.1.2/24]}
    b: {host: server, ifname: eth0, addr: [10.0.1.1/24]}
traffic:
  - name: plain
    from: client
    to: "10.0.1.1:8080"
    http: {host: app.example}
    expect: {headers: {X-Served-By: server/web, X-Request-Id: hoplab-0-1}}
  - name: edge
    from: client
    to: "10.0.1.1:8446"
    http: {host: app.example, tls: {alpn: [http/1.1]}}
    expect: {headers: {X-Served-By: server/web, X-Request-Id: hoplab-1-1}}
  - name: ws
    from: client
    to: "10.0.1.1:8080"
    websocket: {host: app.example, messages: [{text: one}, {text: two}]}
"#;
    let sc = scenario("l7-haproxy", text);
    let out = out_dir("l7-haproxy-out");
    let o = run(&sc, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trace = std::fs::read_to_string(out.join("trace.yaml")).unwrap();
    assert!(!trace.contains("FAILED"), "{trace}");
    assert_eq!(
        results(&trace),
        [
            "ok: HTTP 200 (21 B body)",
            "ok: HTTP 200 (21 B body)",
            "ok: WebSocket: 2 messages echoed"
        ]
    );
}

#[test]
fn a_config_haproxy_rejects_fails_the_run_with_its_message() {
    let text = r#"version: 1
hosts:
  lb:
    files: {haproxy.cfg: {text: "frontend f\n    bind :80\n    no-such-keyword\n"}}
    processes:
      - {name: haproxy, cmd: [haproxy, -db, -f, haproxy.cfg], ready: {tcp_listen: 80}}
"#;
    let sc = write_scenario("l7-bad-haproxy", text);
    let out = out_dir("l7-bad-haproxy-out");
    let o = run(&sc, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hosts.lb.processes haproxy: exited with"),
        "{err}"
    );
    // HAProxy's own words, with the line of its file.
    assert!(err.contains("no-such-keyword"), "{err}");
    assert!(err.contains("haproxy.cfg:3"), "{err}");
}

#[test]
fn a_missing_file_names_the_file_and_the_field() {
    let text = "version: 1
hosts:
  lb:
    files:
      haproxy.cfg: nowhere/haproxy.cfg
";
    let sc = write_scenario("l7-missing-file", text);
    let v = hoplab().arg("validate").arg(&sc).output().unwrap();
    assert_eq!(v.status.code(), Some(1));
    let err = String::from_utf8_lossy(&v.stderr);
    let want = format!(
        "{}:5:20: hosts.lb.files.\"haproxy.cfg\": cannot read {}",
        sc.display(),
        sc.with_file_name("nowhere/haproxy.cfg").display()
    );
    assert!(err.contains(&want), "{err}\nwanted: {want}");
}

#[test]
fn bad_l7_fields_are_located() {
    let cases = [
        (
            "  - {name: s, from: a, to: \"10.0.0.2:80\", http: {tls: {sni: \"bad name\"}}}\n",
            "traffic[0].http.tls.sni",
        ),
        (
            "  - {name: s, from: a, to: \"10.0.0.2:80\", websocket: {messages: [{binary: zz}]}}\n",
            "traffic[0].websocket.messages[0]",
        ),
        (
            "  - {name: s, from: a, proto: udp, to: \"10.0.0.2:80\", http: {}}\n",
            "traffic[0].proto",
        ),
        (
            "  - {name: s, from: a, to: \"10.0.0.2:80\"}\n",
            "traffic[0]: missing field `proto`",
        ),
        (
            "  - {name: s, from: a, to: \"10.0.0.2:80\", http: {nope: 1}}\n",
            "traffic[0].http",
        ),
    ];
    for (i, (step, field)) in cases.iter().enumerate() {
        let text = format!("version: 1\nhosts: {{a: {{}}}}\ntraffic:\n{step}");
        let sc = write_scenario(&format!("l7-bad-{i}"), &text);
        let v = hoplab().arg("validate").arg(&sc).output().unwrap();
        assert_eq!(v.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(err.contains(":4:"), "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
}
