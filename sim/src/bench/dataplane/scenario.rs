//! The dataplane benchmark's generated scenario and (f)'s nftables rules
//! for the gateway node. It builds nothing and measures nothing.

use std::net::Ipv4Addr;

use super::{
    BASELINE_ECHO_PORT, BASELINE_SINK_PORT, BASELINE_TABLE, CLIENT, ECHO_PORT, EXTERNAL,
    EXTERNAL_CLIENT, GATEWAY_TABLE, GW_NODE, LOCAL_SVC, MAX_FLOWS, PUBLIC, REMOTE_SVC, SINK_PORT,
    VIP,
};
use crate::oakestra::{self, Expanded};

/// The benchmark's scenario: the clusters, services, gateway and external
/// from YAML, plus n1's nftables rules and sysctls for path (b), set on
/// the generated host. (f)'s rules are loaded once the gateway runs
/// ([`baseline_rules`]).
pub fn scenario() -> Expanded {
    let yaml = format!(
        "version: 1
description: dataplane benchmark (generated)
clusters:
  - name: c1
    nodes:
      - {{name: n1, coords: [0, 0]}}
      - {{name: n2, coords: [10, 0]}}
      - {{name: {GW_NODE}, coords: [0, 10]}}
services:
  - name: local
    round_robin: {LOCAL_SVC}
    instances:
      - {{node: n1, ip: 10.30.1.11}}
  - name: remote
    round_robin: {REMOTE_SVC}
    instances:
      - {{node: n2, ip: 10.30.2.11}}
  - name: web
    instances:
      - {{node: n1, ip: 10.30.3.11}}
gateway:
  node: {GW_NODE}
  public: {PUBLIC}
  max_flows: {MAX_FLOWS}
  expose:
    - {{proto: tcp, port: {SINK_PORT}, service: \"{REMOTE_SVC}:{SINK_PORT}\"}}
    - {{proto: tcp, port: {ECHO_PORT}, service: \"{REMOTE_SVC}:{ECHO_PORT}\"}}
externals:
  - {{name: {EXTERNAL_CLIENT}, addr: {EXTERNAL}}}
"
    );
    let mut sc = oakestra::parse(
        std::path::Path::new("(dataplane bench)"),
        "bench-dataplane",
        &yaml,
    )
    .expect("the dataplane benchmark scenario is valid");
    let local = local_ns_ip(&sc);
    let n1 = sc
        .lab
        .hosts
        .get_mut("n1")
        .expect("the cluster expansion makes n1");
    let bridge = sc.plan.nodes["n1"].bridge_ip();
    n1.firewall = Some(format!(
        "table ip bench {{
  # Only path (b) is tracked: the net manager's paths pay no conntrack.
  chain raw_prerouting {{
    type filter hook prerouting priority raw; policy accept;
    ip daddr != {{ {VIP}, {bridge} }} notrack
  }}
  chain raw_output {{
    type filter hook output priority raw; policy accept;
    notrack
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {VIP} tcp dport {{ {SINK_PORT}, {ECHO_PORT} }} dnat ip to {local}
  }}
  # The client and the server share n1's bridge: without the masquerade
  # the reply would be bridged straight back, never un-NATed.
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat ip daddr {local} masquerade
  }}
}}
"
    ));
    // Forwarding from br0 back out of br0 would make n1 send ICMP
    // redirects, which would point web-0 at local-0 for the VIP.
    for key in [
        "net.ipv4.conf.all.send_redirects",
        "net.ipv4.conf.br0.send_redirects",
    ] {
        n1.sysctls.insert(key.into(), "0".into());
    }
    // The connection-rate test leaves a socket in TIME_WAIT per
    // connection on the clients: give them every ephemeral port.
    for client in [CLIENT, EXTERNAL_CLIENT] {
        sc.hosts
            .get_mut(client)
            .expect("the expansion makes the clients")
            .sysctls
            .insert("net.ipv4.ip_local_port_range".into(), "1024 65535".into());
    }
    sc
}

/// (f)'s nftables script for gw: its own table (DNAT of the public address
/// on [`BASELINE_SINK_PORT`] and [`BASELINE_ECHO_PORT`] to `remote-0`,
/// counters), and one rule at the head of the gateway's `forward` chain
/// that lets exactly those connections through (the gateway refuses what
/// comes from `pub` and was not DNATed to its TUN, and an accept in
/// another table does not spare a packet from a later chain's drop).
/// Loaded when the gateway runs: it creates its table at start.
pub fn baseline_rules(sc: &Expanded) -> String {
    let remote = ns_ip(sc, "remote");
    let pif = crate::lab::dataplane::PUBLIC_IF;
    format!(
        "table ip {BASELINE_TABLE} {{
  counter dnat_new {{ }}
  counter forward_new {{ }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{pif}\" ip daddr {PUBLIC} tcp dport {BASELINE_SINK_PORT} counter name \"dnat_new\" dnat ip to {remote}:{SINK_PORT}
    iifname \"{pif}\" ip daddr {PUBLIC} tcp dport {BASELINE_ECHO_PORT} counter name \"dnat_new\" dnat ip to {remote}:{ECHO_PORT}
  }}
  # Counts only: the gateway's forward chain (priority filter) decides.
  chain forward {{
    type filter hook forward priority filter - 1; policy accept;
    iifname \"{pif}\" ip daddr {remote} ct status dnat ct state new counter name \"forward_new\"
  }}
}}
insert rule inet {GATEWAY_TABLE} forward iifname \"{pif}\" ip daddr {remote} tcp dport {{ {SINK_PORT}, {ECHO_PORT} }} ct status dnat accept comment \"hoplab bench: path (f)\"
"
    )
}

pub(super) fn ns_ip(sc: &Expanded, service: &str) -> Ipv4Addr {
    sc.plan.services[service].1[0].ns_ip
}

pub(super) fn local_ns_ip(sc: &Expanded) -> Ipv4Addr {
    ns_ip(sc, "local")
}

#[cfg(test)]
mod tests {
    use super::super::{BenchPath, LOCAL_SERVER, REMOTE_SERVER};
    use super::*;
    use std::path::Path;

    #[test]
    fn scenario_has_the_six_paths_hosts() {
        let sc = scenario();
        for h in [
            CLIENT,
            LOCAL_SERVER,
            REMOTE_SERVER,
            EXTERNAL_CLIENT,
            "n1",
            "n2",
            GW_NODE,
            crate::oakestra::gateway::INTERNET_HOST,
        ] {
            assert!(sc.hosts.contains_key(h), "{h}");
        }
        // Client and local server share n1's subnet; the remote is on n2;
        // the gateway node, third, shifts neither.
        assert_eq!(ns_ip(&sc, "local"), Ipv4Addr::new(10, 18, 0, 1));
        assert_eq!(ns_ip(&sc, "web"), Ipv4Addr::new(10, 18, 0, 2));
        assert_eq!(ns_ip(&sc, "remote"), Ipv4Addr::new(10, 18, 0, 65));
        assert_eq!(sc.plan.nodes["n1"].underlay, Ipv4Addr::new(10, 10, 0, 1));
        assert_eq!(sc.plan.nodes["n2"].underlay, Ipv4Addr::new(10, 10, 0, 2));
        assert_eq!(sc.plan.nodes[GW_NODE].underlay, Ipv4Addr::new(10, 10, 0, 3));
        let fw = sc.hosts["n1"].firewall.as_deref().unwrap();
        assert!(fw.contains("dnat ip to 10.18.0.1"), "{fw}");
        assert!(fw.contains("10.18.0.62"), "{fw}");
        // The gateway exposes remote's sink and echo, with room for every
        // connection of a run.
        let g = sc.hosts[GW_NODE]
            .processes
            .iter()
            .find_map(|p| p.gateway.as_ref())
            .unwrap();
        let argv = g
            .argv("gateway", Path::new("/c"), Path::new("/o"))
            .join(" ");
        assert!(argv.contains("--public 24.0.5.8"), "{argv}");
        assert!(argv.contains("--max-flows 65536"), "{argv}");
        assert!(argv.contains("--expose tcp:5001=10.30.2.1:5001"), "{argv}");
        assert!(argv.contains("--expose tcp:5002=10.30.2.1:5002"), "{argv}");
        // (f): DNAT to remote-0, reached over the underlay from gw.
        let rules = baseline_rules(&sc);
        assert!(
            rules.contains("tcp dport 6001 counter name \"dnat_new\" dnat ip to 10.18.0.65:5001"),
            "{rules}"
        );
        assert!(
            rules.contains(
                "insert rule inet hoplab_gateway forward iifname \"pub\" ip daddr 10.18.0.65"
            ),
            "{rules}"
        );
        let routes = format!("{:?}", sc.hosts[GW_NODE].routes);
        assert!(
            routes.contains("10.18.0.64") && routes.contains("10.10.0.2"),
            "{routes}"
        );
        let t = BenchPath::GatewayKernelDnat.target(&sc);
        assert_eq!(
            (t.client.as_str(), t.ip, t.sink_port, t.echo_port),
            (EXTERNAL_CLIENT, PUBLIC, 6001, 6002)
        );
    }
}
