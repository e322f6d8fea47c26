//! The command line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::Parser;
use hoplab_dataplane::netmanager::{Config, Coords, LocalInstance};
use hoplab_dataplane::Millis;

#[derive(Parser, Debug)]
#[command(
    name = "netmanager",
    version,
    about = "The net manager of one worker node: service IP translation between its TUN and the tunnel"
)]
pub struct Cli {
    /// The node's TUN device; it must exist (persistent, IFF_TUN|IFF_NO_PI,
    /// addresses and routes set).
    #[arg(long, value_name = "IFNAME")]
    pub tun: String,
    /// This node's underlay address; the tunnel socket takes port 50103 on
    /// the wildcard address of its family (IPv6: dual-stack).
    #[arg(long, value_name = "IP")]
    pub node_addr: IpAddr,
    /// The IPv4 subnet of this node's instances.
    #[arg(long, value_name = "NET/LEN", value_parser = parse_net4)]
    pub subnet: (Ipv4Addr, u8),
    /// The IPv6 subnet of this node's instances.
    #[arg(long, value_name = "NET/LEN", value_parser = parse_net6)]
    pub subnet6: Option<(Ipv6Addr, u8)>,
    /// This node's coordinates, for "closest" service IPs.
    #[arg(long, value_name = "X,Y", value_parser = parse_coords, default_value = "0,0")]
    pub coords: Coords,
    /// The cluster service manager's unix stream socket.
    #[arg(long, value_name = "PATH")]
    pub manager: PathBuf,
    /// The unix stream socket to listen on for `counters` and `flows`.
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
    /// Where to write the final counters on exit.
    #[arg(long, value_name = "FILE")]
    pub counters: PathBuf,
    /// How long an unused resolution is kept.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub cache_ttl_ms: u64,
    /// How long a query may stay unanswered.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub query_timeout_ms: u64,
    /// How long after its first fragment a datagram may take to become
    /// whole before its fragments are dropped.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub frag_timeout_ms: u64,
    /// A node whose tunnel datagrams are accepted from the start (its
    /// underlay address; repeat for each). The nodes of the instances the
    /// service manager describes are added as they come; datagrams from
    /// any other address are dropped (`drop_unknown_peer`).
    #[arg(long = "peer", value_name = "IP")]
    pub peers: Vec<IpAddr>,
    /// An instance on this node: `ns=IPV4[,ip=IPV4][,ns6=IPV6][,ip6=IPV6]`
    /// (namespace addresses and the instance's own instance IPs).
    #[arg(long = "instance", value_name = "SPEC", value_parser = parse_instance)]
    pub instances: Vec<LocalInstance>,
    /// Segmentation offloads: the TUN with a virtio-net header (TCP
    /// segmentation and checksum offload, UDP L4 where the kernel has it)
    /// and UDP GSO/GRO on the tunnel socket. `off`: one packet per read and
    /// write. Default: the HOPLAB_OFFLOAD environment variable, else `on`.
    #[arg(long, value_name = "on|off", value_parser = hoplab::shell::tun::parse_on_off)]
    pub offload: Option<bool>,
    /// A reader per direction: a second thread reads the tunnel socket
    /// (tunnel → core → TUN) while the first reads the TUN and serves the
    /// rest, the core shared behind a lock held for one core call.
    /// `off`: one task reads both. Default: the
    /// HOPLAB_READER_PER_DIRECTION environment variable, else `off`.
    #[arg(long, value_name = "on|off", value_parser = hoplab::shell::tun::parse_on_off)]
    pub reader_per_direction: Option<bool>,
    /// A real-time priority (1–99): the process's threads run under
    /// SCHED_FIFO, so a packet's wake-up does not wait for a CPU held by
    /// ordinary processes (needs CAP_SYS_NICE). 0: none. Default: the
    /// HOPLAB_RT_PRIORITY environment variable, else none.
    #[arg(long, value_name = "N", value_parser = hoplab::shell::sched::parse_priority)]
    pub rt_priority: Option<u8>,
}

impl Cli {
    /// The core's configuration.
    pub fn config(&self) -> Config {
        let mut cfg = Config::new(self.node_addr, self.subnet);
        cfg.subnet_v6 = self.subnet6;
        cfg.node_coords = self.coords;
        cfg.peers = self.peers.clone();
        cfg.cache.ttl = Millis(self.cache_ttl_ms);
        cfg.cache.query_timeout = Millis(self.query_timeout_ms);
        cfg.fragments.timeout = Millis(self.frag_timeout_ms);
        cfg
    }
}

fn parse_net<A: std::str::FromStr>(s: &str, max: u8) -> Result<(A, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX-LENGTH"))?;
    let a = a.parse().map_err(|_| format!("{s:?}: bad address {a:?}"))?;
    let l: u8 = l
        .parse()
        .map_err(|_| format!("{s:?}: bad prefix length {l:?}"))?;
    if l > max {
        return Err(format!("{s:?}: prefix length {l} > {max}"));
    }
    Ok((a, l))
}

fn parse_net4(s: &str) -> Result<(Ipv4Addr, u8), String> {
    parse_net(s, 32)
}

fn parse_net6(s: &str) -> Result<(Ipv6Addr, u8), String> {
    parse_net(s, 128)
}

fn parse_coords(s: &str) -> Result<Coords, String> {
    let (x, y) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected X,Y"))?;
    let f = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("{s:?}: bad coordinate {v:?}"))
    };
    Ok(Coords::new(f(x)?, f(y)?))
}

fn parse_instance(s: &str) -> Result<LocalInstance, String> {
    s.parse()
        .map_err(|e: hoplab_dataplane::netmanager::BadInstanceSpec| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_command_line_parses() {
        let cli = Cli::try_parse_from([
            "netmanager",
            "--tun",
            "nm0",
            "--node-addr",
            "10.10.1.1",
            "--subnet",
            "10.18.0.0/26",
            "--subnet6",
            "fd18:0:0:1::/64",
            "--coords",
            "1.5,-2",
            "--manager",
            "/x/c1.sock",
            "--control",
            "/x/nm.sock",
            "--counters",
            "/x/n1.txt",
            "--cache-ttl-ms",
            "500",
            "--instance",
            "ns=10.18.0.1,ip=10.30.1.11,ns6=fd18:0:0:1::1,ip6=fdff::1:11",
            "--instance",
            "ns=10.18.0.2",
            "--peer",
            "10.10.1.2",
            "--peer",
            "10.10.1.3",
        ])
        .unwrap();
        let cfg = cli.config();
        assert_eq!(cfg.subnet_v4, (Ipv4Addr::new(10, 18, 0, 0), 26));
        assert_eq!(cfg.subnet_v6, Some(("fd18:0:0:1::".parse().unwrap(), 64)));
        assert_eq!(cfg.node_coords, Coords::new(1.5, -2.0));
        assert_eq!(cfg.cache.ttl, Millis(500));
        assert_eq!(cfg.cache.query_timeout, Millis(5_000));
        assert_eq!(cli.instances.len(), 2);
        assert_eq!(
            cli.instances[0].instance_ip6,
            Some("fdff::1:11".parse().unwrap())
        );
        assert_eq!(cli.instances[1].instance_ip, None);
        assert_eq!(
            cfg.peers,
            [IpAddr::from([10, 10, 1, 2]), IpAddr::from([10, 10, 1, 3])]
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse_net4("10.18.0.0/33").is_err());
        assert!(parse_net4("10.18.0.0").is_err());
        assert!(parse_coords("1").is_err());
        assert!(parse_coords("1,NaN").is_err());
        assert!(parse_instance("ip=10.30.1.1").is_err());
        assert!(parse_instance("ns=10.18.0.1,ns=10.18.0.2").is_err());
        assert!(parse_instance("ns=10.18.0.1,foo=1").is_err());
    }
}
