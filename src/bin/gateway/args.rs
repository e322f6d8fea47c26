//! The command line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::Parser;
use hoplab_dataplane::gateway::{Exposure, GatewayConfig};
use hoplab_dataplane::Millis;

#[derive(Parser, Debug)]
#[command(
    name = "gateway",
    version,
    about = "The gateway: exposed services from a public address into the Oakestra network, and masquerade out"
)]
pub struct Cli {
    /// The gateway's TUN device; it must exist (persistent,
    /// IFF_TUN|IFF_NO_PI) with a route for the internal address to it.
    #[arg(long, value_name = "IFNAME")]
    pub tun: String,
    /// The interface facing the outside.
    #[arg(long, value_name = "IFNAME")]
    pub public_if: String,
    /// The public IPv4 address (on the public interface).
    #[arg(long, value_name = "IP")]
    pub public: Ipv4Addr,
    /// The internal IPv4 address: exposed ports are DNATed to it, and the
    /// gateway's packets into the network come from it.
    #[arg(long, value_name = "IP", default_value = "10.30.255.253")]
    pub internal: Ipv4Addr,
    /// The public IPv6 address, to expose IPv6 services too.
    #[arg(long, value_name = "IP", requires = "internal6")]
    pub public6: Option<Ipv6Addr>,
    /// The internal IPv6 address.
    #[arg(long, value_name = "IP", requires = "public6")]
    pub internal6: Option<Ipv6Addr>,
    /// The networks inside: packets from outside claiming one as their
    /// source are dropped, and traffic from them to outside is
    /// masqueraded. Default: 10.10.0.0/16, 10.18.0.0/16, 10.30.0.0/16,
    /// fd18::/16, fdff::/16.
    #[arg(long = "internal-net", value_name = "NET/LEN", value_parser = parse_net)]
    pub internal_nets: Vec<(IpAddr, u8)>,
    /// An exposed service at start: `PROTO:PORT=SERVICE_IP:PORT`, e.g.
    /// `tcp:8080=10.30.30.30:80` (`[v6]:port` for IPv6 services), or
    /// `icmp=SERVICE_IP` (echo requests to the public address).
    #[arg(long = "expose", value_name = "SPEC", value_parser = parse_expose)]
    pub expose: Vec<Exposure>,
    /// The Forward table's bound: new flows beyond it are refused.
    #[arg(long, value_name = "N")]
    pub max_flows: Option<usize>,
    /// How long an idle UDP flow stays.
    #[arg(long, value_name = "MS")]
    pub udp_timeout_ms: Option<u64>,
    /// How long an idle open TCP flow stays.
    #[arg(long, value_name = "MS")]
    pub tcp_timeout_ms: Option<u64>,
    /// How long a TCP flow stays after RST, or FIN both ways.
    #[arg(long, value_name = "MS")]
    pub tcp_closing_ms: Option<u64>,
    /// How long after its first fragment a datagram may take to become
    /// whole before its fragments are dropped (default 30000).
    #[arg(long, value_name = "MS")]
    pub frag_timeout_ms: Option<u64>,
    /// The unix stream socket to listen on (`counters`, `flows`,
    /// `exposures`, `expose`, `unexpose`).
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// Where to write the final counters on exit.
    #[arg(long, value_name = "FILE")]
    pub counters: PathBuf,
    /// Segmentation offloads on the TUN (a virtio-net header: TCP
    /// segmentation and checksum offload, UDP L4 where the kernel has it).
    /// `off`: one packet per read and write. Default: the HOPLAB_OFFLOAD
    /// environment variable, else `on`.
    #[arg(long, value_name = "on|off", value_parser = hoplab::shell::tun::parse_on_off)]
    pub offload: Option<bool>,
    /// A real-time priority (1–99): the process's threads run under
    /// SCHED_FIFO, so a packet's wake-up does not wait for a CPU held by
    /// ordinary processes (needs CAP_SYS_NICE). 0: none. Default: the
    /// HOPLAB_RT_PRIORITY environment variable, else none.
    #[arg(long, value_name = "N", value_parser = hoplab::shell::sched::parse_priority)]
    pub rt_priority: Option<u8>,
}

impl Cli {
    /// The core's configuration.
    pub fn config(&self) -> GatewayConfig {
        let mut c = GatewayConfig {
            internal4: self.internal,
            internal6: self.internal6,
            ..GatewayConfig::default()
        };
        if !self.internal_nets.is_empty() {
            c.internal_nets = self.internal_nets.clone();
        }
        if let Some(m) = self.max_flows {
            c.max_flows = m;
        }
        if let Some(t) = self.udp_timeout_ms {
            c.udp_ms = Millis(t);
        }
        if let Some(t) = self.frag_timeout_ms {
            c.fragments.timeout = Millis(t);
        }
        if let Some(t) = self.tcp_timeout_ms {
            c.tcp_established_ms = Millis(t);
        }
        if let Some(t) = self.tcp_closing_ms {
            c.tcp_closing_ms = Millis(t);
        }
        c
    }
}

fn parse_net(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not NET/LEN"))?;
    let a: IpAddr = a.parse().map_err(|e| format!("`{a}`: {e}"))?;
    let l: u8 = l.parse().map_err(|e| format!("`{l}`: {e}"))?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    if l > max {
        return Err(format!("prefix length {l} is over {max}"));
    }
    Ok((a, l))
}

/// `tcp:8080=10.30.30.30:80`; ICMP, without ports: `icmp=10.30.30.30`.
pub fn parse_expose(s: &str) -> Result<Exposure, String> {
    let (lhs, service) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not PROTO:PORT=SERVICE_IP:PORT"))?;
    if lhs == "icmp" {
        return Ok(Exposure::icmp(
            service
                .parse()
                .map_err(|e| format!("service `{service}`: {e}"))?,
        ));
    }
    let (proto, port) = lhs
        .split_once(':')
        .ok_or_else(|| format!("`{lhs}` is not PROTO:PORT"))?;
    Ok(Exposure {
        proto: proto.parse().map_err(|e| format!("`{proto}`: {e}"))?,
        port: port.parse().map_err(|e| format!("port `{port}`: {e}"))?,
        service: service
            .parse()
            .map_err(|e| format!("service `{service}`: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expose_specs_parse_and_errors_say_which_part() {
        let e = parse_expose("tcp:8080=10.30.30.30:80").unwrap();
        assert_eq!(e.port, 8080);
        assert_eq!(e.service, "10.30.30.30:80".parse().unwrap());
        assert!(parse_expose("udp:53=[fdff::1]:53").is_ok());
        let icmp = parse_expose("icmp=10.30.30.30").unwrap();
        assert_eq!(icmp.to_string(), "icmp -> 10.30.30.30");
        assert!(parse_expose("icmp=10.30.30.30:80")
            .unwrap_err()
            .contains("service"));
        assert!(parse_expose("tcp:8080")
            .unwrap_err()
            .contains("PROTO:PORT="));
        assert!(parse_expose("sctp:1=10.30.0.1:1")
            .unwrap_err()
            .contains("sctp"));
        assert!(parse_expose("tcp:x=10.30.0.1:1")
            .unwrap_err()
            .contains("port"));
        assert!(parse_expose("tcp:1=10.30.0.1")
            .unwrap_err()
            .contains("service"));
    }
}
