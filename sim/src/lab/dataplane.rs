//! The command lines of hoplab's dataplane binaries in a lab: a worker
//! node's `netmanager` and the `gateway`, given where the binary is and
//! where the run's control sockets and counter files go.
//!
//! Knows the binaries' flags and device names, not where the addresses
//! come from (the Oakestra address plan).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use hoplab_dataplane::netmanager::{Coords, Instance, LocalInstance, ServiceKind};

use crate::values::Expose;

/// Each worker node's TUN device, the net manager's.
pub const TUN_NAME: &str = "nm0";
/// The gateway's TUN device.
pub const GW_TUN: &str = "gw0";
/// The gateway node's public interface.
pub const PUBLIC_IF: &str = "pub";

/// What the harness needs to start a node's net manager.
#[derive(Debug, Clone)]
pub struct NetManagerArgs {
    pub node: String,
    pub cluster: String,
    /// Its tunnel address (IPv4 or IPv6: the underlay's).
    pub node_addr: IpAddr,
    pub subnet: Ipv4Addr,
    pub subnet6: Option<Ipv6Addr>,
    pub coords: Coords,
    pub instances: Vec<Instance>,
    pub cache_ttl_ms: Option<u64>,
    pub frag_timeout_ms: Option<u64>,
    /// The nodes whose tunnel datagrams it accepts from the start.
    pub peers: Vec<IpAddr>,
}

impl NetManagerArgs {
    /// The control socket, under the run's `ctl/`.
    pub fn control(&self, ctl: &Path) -> PathBuf {
        ctl.join(format!("nm-{}.sock", self.node))
    }

    /// The command line, given where the binary is and where the control
    /// sockets and counter files go.
    pub fn argv(&self, bin: &str, ctl: &Path, counters: &Path) -> Vec<String> {
        let mut v = vec![
            bin.to_string(),
            "--tun".into(),
            TUN_NAME.into(),
            "--node-addr".into(),
            self.node_addr.to_string(),
            "--subnet".into(),
            format!("{}/26", self.subnet),
            format!("--coords={},{}", self.coords.x, self.coords.y),
            "--manager".into(),
            ctl.join(format!("{}.sock", self.cluster))
                .display()
                .to_string(),
            "--control".into(),
            self.control(ctl).display().to_string(),
            "--counters".into(),
            counters
                .join(format!("{}.netmanager.txt", self.node))
                .display()
                .to_string(),
        ];
        if let Some(s6) = self.subnet6 {
            v.extend(["--subnet6".into(), format!("{s6}/64")]);
        }
        if let Some(t) = self.cache_ttl_ms {
            v.extend(["--cache-ttl-ms".into(), t.to_string()]);
        }
        if let Some(t) = self.frag_timeout_ms {
            v.extend(["--frag-timeout-ms".into(), t.to_string()]);
        }
        for p in &self.peers {
            v.extend(["--peer".into(), p.to_string()]);
        }
        for i in &self.instances {
            v.extend(["--instance".into(), local_instance(i).to_string()]);
        }
        v
    }
}

/// `i` as its node's net manager knows it: namespace addresses and its own
/// instance IPs (`--instance`, and `instance add` on a move).
pub fn local_instance(i: &Instance) -> LocalInstance {
    let own = |v6: bool| {
        i.service_ips
            .iter()
            .find(|ip| ip.kind == ServiceKind::Instance && ip.addr.is_ipv6() == v6)
            .map(|ip| ip.addr)
    };
    LocalInstance {
        ns_ip: i.ns_ip,
        ns_ip6: i.ns_ip6,
        instance_ip: match own(false) {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        },
        instance_ip6: match own(true) {
            Some(IpAddr::V6(a)) => Some(a),
            _ => None,
        },
    }
}

/// What the harness needs to start the gateway.
#[derive(Debug, Clone)]
pub struct GatewayArgs {
    pub node: String,
    pub public: Ipv4Addr,
    pub internal: Ipv4Addr,
    pub v6: Option<(Ipv6Addr, Ipv6Addr)>,
    pub expose: Vec<Expose>,
    pub max_flows: Option<usize>,
}

impl GatewayArgs {
    /// The control socket, under the run's `ctl/`.
    pub fn control(&self, ctl: &Path) -> PathBuf {
        ctl.join(format!("gw-{}.sock", self.node))
    }

    /// The command line, given where the binary is and where the control
    /// sockets and counter files go.
    pub fn argv(&self, bin: &str, ctl: &Path, counters: &Path) -> Vec<String> {
        let mut v = vec![
            bin.to_string(),
            "--tun".into(),
            GW_TUN.into(),
            "--public-if".into(),
            PUBLIC_IF.into(),
            "--public".into(),
            self.public.to_string(),
            "--internal".into(),
            self.internal.to_string(),
            "--control".into(),
            self.control(ctl).display().to_string(),
            "--counters".into(),
            counters
                .join(format!("{}.gateway.txt", self.node))
                .display()
                .to_string(),
        ];
        if let Some((p6, i6)) = self.v6 {
            v.extend([
                "--public6".into(),
                p6.to_string(),
                "--internal6".into(),
                i6.to_string(),
            ]);
        }
        if let Some(m) = self.max_flows {
            v.extend(["--max-flows".into(), m.to_string()]);
        }
        for e in &self.expose {
            v.extend(["--expose".into(), expose_arg(e)]);
        }
        v
    }
}

/// `tcp:8080=10.30.30.30:80`, the form `gateway --expose` takes.
pub fn expose_arg(e: &Expose) -> String {
    format!("{}:{}={}", e.proto, e.port, e.service)
}
