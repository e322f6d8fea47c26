//! Seed 004's request path as its reviewed snapshot shows it: the DNS
//! exchange before the first SYN, one leg per proxy in order, the mesh's
//! retry on another pod, nothing past the gateway for the requests it
//! answers itself (an expired token among them), pod-4 never reached, one
//! pod for an affine client. `every_scenario_matches_its_snapshot` keeps the
//! snapshot equal to a fresh run; this test keeps the snapshot saying
//! what the seed says.

mod common;

use common::root;
use hoplab_sim::trace::{End, Flow, Trace};

fn trace(name: &str) -> Trace {
    let snap = std::fs::read_to_string(hoplab_sim::snapshot::path(root(), name)).unwrap();
    Trace::from_yaml(hoplab_sim::snapshot::read_body(&snap)).unwrap()
}

fn flow<'a>(t: &'a Trace, step: &str) -> &'a Flow {
    t.flows.iter().find(|f| f.step == step).unwrap()
}

/// Hosts a flow's packets (every leg) were delivered to.
fn delivered(f: &Flow) -> Vec<String> {
    let legs = f.legs.iter().flat_map(|l| &l.packets);
    (f.packets.iter().chain(legs))
        .filter_map(|p| match &p.end {
            End::Delivered { host } => Some(host.clone()),
            End::LastSeen(_) | End::Dropped { .. } => None,
        })
        .collect()
}

#[test]
fn seed_004_request_path_shows_every_stage() {
    let t = trace("seed-004-request-path");
    let valid = flow(&t, "valid");
    // DNS first: the query and the answer, then the connection.
    let l7 = |i: usize| valid.packets[i].l7.clone().unwrap_or_default();
    assert_eq!(l7(0), "DNS query A api.yourapp.com");
    assert_eq!(l7(1), "DNS answer A api.yourapp.com 35.244.179.100");
    assert!(valid.packets[2]
        .packet
        .starts_with("tcp S 203.0.113.10:40000 > 35.244.179.100:443"));
    // One leg per proxy, in the seed's order, each joined by the request id.
    let vias: Vec<&str> = valid.legs.iter().map(|l| l.via.as_str()).collect();
    assert_eq!(vias.len(), 3, "{vias:#?}");
    for (v, proxy) in vias.iter().zip(["cloud-lb", "api-gateway", "mesh"]) {
        assert!(v.starts_with(&format!("ended at {proxy} (haproxy)")), "{v}");
    }
    assert!(valid
        .legs
        .iter()
        .all(|l| l.joined_by.contains("hoplab-0-1")));
    assert!(delivered(valid).iter().any(|h| h == "pod-1"));

    // The mesh retries pod-1's 503 on another pod: both attempts are legs.
    let retried = flow(&t, "pod-1-fails-retried");
    let last = retried.legs.last().unwrap();
    assert!(
        last.via.starts_with("retried by mesh (haproxy)"),
        "{}",
        last.via
    );
    assert!(last.via.ends_with("(the attempt before ended at pod-1)"));
    let before = &retried.legs[retried.legs.len() - 2];
    assert!(before
        .packets
        .iter()
        .any(|p| p.l7.as_deref() == Some("HTTP 503 Service Unavailable id=hoplab-3-1")));
    assert!(delivered(retried).iter().any(|h| h == "pod-2"));

    // The gateway's own answers: nothing beyond it.
    for (step, status) in [
        ("no-jwt", "HTTP 401"),
        ("bad-jwt", "HTTP 401"),
        ("expired-jwt", "HTTP 401"),
        ("cors-preflight", "HTTP 204"),
        ("over-rate-limit", "HTTP 429"),
    ] {
        let f = flow(&t, step);
        assert_eq!(f.legs.len(), 1, "{step}: only the cloud LB's leg");
        let answered = f.legs[0].packets.iter().filter_map(|p| p.l7.as_deref());
        assert!(answered.clone().any(|l| l.starts_with(status)), "{step}");
        assert!(!delivered(f)
            .iter()
            .any(|h| h == "mesh" || h.starts_with("pod-")));
    }

    // A typo: NXDOMAIN, and no TCP at all.
    let typo = flow(&t, "nxdomain");
    assert!(typo.packets.iter().all(|p| p.packet.starts_with("udp ")));
    assert_eq!(
        typo.packets[1].l7.as_deref(),
        Some("DNS answer NXDOMAIN api.yourap.com")
    );

    // pod-4 is not ready: no flow reaches it.
    assert!(t
        .flows
        .iter()
        .all(|f| !delivered(f).iter().any(|h| h == "pod-4")));
    // Affinity: one client, one pod (which one is numgen random's pick).
    let affinity = flow(&t, "affinity");
    assert!(affinity.packets.is_empty(), "a random pick keeps no hops");
    assert_eq!(affinity.load.as_ref().unwrap().ok, 5);
    assert!(affinity
        .result
        .to_string()
        .contains("all by one of pod-1/app, pod-2/app, pod-3/app (chosen at random)"));
    // The load step through the ClusterIP spread over the ready pods.
    let load = flow(&t, "load-60");
    assert!(load.packets.is_empty(), "a random pick keeps no hops");
    assert_eq!(load.load.as_ref().unwrap().ok, 60);
    assert!(load.result.to_string().contains(
        "each of pod-1/app, pod-2/app, pod-3/app at least 5 (chosen at random), never pod-4/app"
    ));
    // The gateway's and the mesh's metrics, scraped.
    let gw = &t.counters["api-gateway/haproxy"];
    assert_eq!(
        gw["haproxy_frontend_requests_denied_total{proxy=\"kong\"}"],
        4
    );
    assert!(t.counters["mesh/haproxy"]
        .contains_key("haproxy_backend_retry_warnings_total{proxy=\"user-service\"}"));
}

const GATEWAY: &str = r#"version: 1
hosts:
  client:
    resolver: 10.0.2.53
  dns:
    processes:
      - {name: dns, dns: {records: {api.example: 10.0.1.1}}}
  gateway:
    files:
      haproxy.cfg:
        text: |
          defaults
              mode http
              timeout connect 2s
              timeout client 5s
              timeout server 5s
          frontend in
              bind :80
              http-request deny deny_status 401 hdr X-Served-By gateway/haproxy unless { http_auth_bearer,jwt_verify("HS256","lab-secret") -m int 1 }
              http-request return status 200
    processes:
      - {name: haproxy, cmd: [haproxy, -db, -f, haproxy.cfg], ready: {tcp_listen: 80}}
links:
  - a: {host: client, ifname: eth0, addr: [10.0.1.10/24]}
    b: {host: gateway, ifname: eth0, addr: [10.0.1.1/24]}
  - a: {host: client, ifname: eth1, addr: [10.0.2.10/24]}
    b: {host: dns, ifname: eth0, addr: [10.0.2.53/24]}
traffic:
  - {name: typo, from: client, to: "api.exampel:80", http: {path: /, host: api.exampel}, expect: {status: 200}}
  - {name: no-token, from: client, to: "api.example:80", http: {path: /, host: api.example}, expect: {status: 200}}
"#;

/// A step that dials a name that does not resolve fails with the DNS
/// answer; a step whose status is not the expected one names who
/// answered (the gateway's own 401, its X-Served-By).
#[test]
fn unmet_steps_say_nxdomain_and_who_answered() {
    let p = common::write_scenario("seed004-unmet", GATEWAY);
    let out = common::out_dir("seed004-unmet");
    let o = common::run(&p, &out);
    assert!(!o.status.success(), "both steps fail their expectation");
    let t = std::fs::read_to_string(out.join("trace.yaml")).unwrap();
    assert!(
        t.contains("FAILED: expected HTTP 200, got NXDOMAIN for api.exampel (DNS answer from 10.0.2.53:53)"),
        "{t}"
    );
    assert!(
        t.contains("FAILED: expected HTTP 200, got HTTP 401 (0 B body) (answered by gateway/haproxy, from its x-served-by)"),
        "{t}"
    );
}

/// A policy HAProxy rejects (an unknown JWT algorithm) fails the run
/// before any traffic, with HAProxy's own message and the process's field.
#[test]
fn a_policy_haproxy_rejects_fails_the_run_with_its_message() {
    let text = GATEWAY.replace("\"HS256\"", "\"HS257\"");
    let p = common::write_scenario("seed004-badjwt", &text);
    let o = common::run(&p, &common::out_dir("seed004-badjwt"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("hosts.gateway.processes haproxy"), "{err}");
    assert!(err.contains("unknown JWT algorithm: HS257"), "{err}");
}

/// The pod's sidecar in front of the app: the request's second leg runs
/// over pod-1's loopback (captured because the scenario lists `pod-1/lo`),
/// joined by the request id, and every packet of it is delivered inside
/// pod-1; the pod without a sidecar answers in one leg.
#[test]
fn seed_004_sidecar_forwards_over_the_pods_loopback() {
    let t = trace("seed-004-sidecar");
    let f = flow(&t, "via-sidecar");
    assert_eq!(f.legs.len(), 1, "one leg past the sidecar");
    let leg = &f.legs[0];
    assert!(
        leg.via.starts_with(
            "ended at pod-1 (sidecar, app), re-opened 127.0.0.1:eph1 > 127.0.0.1:3001"
        ),
        "{}",
        leg.via
    );
    assert!(
        leg.joined_by.contains("X-Request-Id hoplab-0-1"),
        "{}",
        leg.joined_by
    );
    assert!(leg.packets.iter().all(|p| {
        p.hops
            .iter()
            .all(|h| h.at.host == "pod-1" && h.at.ifname == "lo")
            && matches!(&p.end, End::Delivered { host } if host == "pod-1")
    }));
    let l7: Vec<&str> = leg.packets.iter().filter_map(|p| p.l7.as_deref()).collect();
    assert_eq!(
        l7,
        [
            "HTTP GET /users/123 host=user-service.default.svc.cluster.local id=hoplab-0-1",
            "HTTP 200 OK id=hoplab-0-1"
        ]
    );
    assert!(flow(&t, "no-sidecar").legs.is_empty());
}
