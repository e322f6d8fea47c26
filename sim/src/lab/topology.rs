//! Builds a lab's hosts, bridges, TUNs, links, addresses, routes, sysctls
//! and firewalls inside the sandbox, over one rtnetlink connection per
//! host.
//!
//! Order: namespaces with their base sysctls → bridges → TUNs → veth pairs
//! (both ends created in one message, the peer placed straight into its
//! host; an impaired link is two pairs through the impairment namespace,
//! whose element thread starts here, see [`super::impair`]) → the lab's
//! sysctls → bridge ports, addresses, links up → routes → links
//! operationally up → nftables. Hosts are worked on concurrently; the
//! kernel does the rest.
//!
//! Builds what the [`super::Lab`] says, checked beforehand; knows nothing
//! of the scenario file or Oakestra, and starts no process (the impairment
//! element is a thread of the run).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Stdio;

use futures::future::try_join_all;
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::impair;

mod reattach;
use super::{default_bridge_mac, default_link_mac, Cidr, Host, Lab, Mac, Route, RouteDst};
use crate::lab::netns::NetNs;
use crate::Error;

/// A built host: its namespace and its netlink handle.
pub struct HostNs {
    pub ns: NetNs,
    handle: Handle,
}

/// Everything a run built. Dropping it releases the namespaces.
pub struct Topology {
    pub hosts: BTreeMap<String, HostNs>,
    /// Impaired links: the element moving their frames, then the
    /// namespace of their inner ends (dropped in this order).
    impair: Option<(Option<impair::Element>, HostNs)>,
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

impl HostNs {
    async fn index_of(&self, ifname: &str) -> Result<u32, Error> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(m.header.index),
            Ok(None) => Err(Error::Failed(format!(
                "host {}: no interface {ifname}",
                self.ns.name()
            ))),
            Err(e) => Err(nl(format!("host {}: look up {ifname}", self.ns.name()))(e)),
        }
    }

    /// Wait until every interface in `names` is operationally up.
    async fn wait_oper_up(&self, names: &[&str], within: std::time::Duration) -> Result<(), Error> {
        use rtnetlink::packet_route::link::{LinkAttribute, State};
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut down = Vec::new();
            let mut links = self.handle.link().get().execute();
            while let Some(m) = links
                .try_next()
                .await
                .map_err(nl(format!("host {}: list links", self.ns.name())))?
            {
                let name = m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                let up = m
                    .attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::OperState(State::Up)));
                if let Some(n) = name {
                    if names.contains(&n.as_str()) && !up {
                        down.push(n);
                    }
                }
            }
            if down.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Failed(format!(
                    "host {}: links not up after {} ms: {}",
                    self.ns.name(),
                    within.as_millis(),
                    down.join(", ")
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn set(&self, what: String, msg: LinkMessageBuilder<LinkUnspec>) -> Result<(), Error> {
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(nl(what))
    }
}

impl Topology {
    /// The IP packets the impaired links dropped so far.
    pub fn impairment_losses(&self) -> Vec<impair::Lost> {
        (self.impair.iter())
            .flat_map(|(e, _)| e.iter().flat_map(|e| e.lost()))
            .collect()
    }

    /// Set interface `ifname` of host `host` administratively up or down;
    /// up, wait (at most 3 s) until it is operationally up, which a veth
    /// end is only while its peer is up too. Returns whether it is
    /// operationally up.
    pub async fn set_link(&self, host: &str, ifname: &str, up: bool) -> Result<bool, Error> {
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| Error::Failed(format!("no host {host}")))?;
        let idx = h.index_of(ifname).await?;
        let msg = LinkUnspec::new_with_index(idx);
        let (msg, word) = if up {
            (msg.up(), "up")
        } else {
            (msg.down(), "down")
        };
        h.set(format!("host {host}: {ifname} {word}"), msg).await?;
        if !up {
            return Ok(false);
        }
        Ok(h.wait_oper_up(&[ifname], std::time::Duration::from_secs(3))
            .await
            .is_ok())
    }

    /// Wait (at most 3 s) until interface `ifname` of host `host` is no
    /// longer operationally up: a TUN whose process ended loses its
    /// carrier only when the kernel's link watch gets to it, and until
    /// then what is routed to it is still handed to the device. Returns
    /// whether it went down.
    pub async fn wait_oper_down(&self, host: &str, ifname: &str) -> Result<bool, Error> {
        use rtnetlink::packet_route::link::{LinkAttribute, State};
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| Error::Failed(format!("no host {host}")))?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let mut s = h
                .handle
                .link()
                .get()
                .match_name(ifname.to_string())
                .execute();
            let up = match s.try_next().await {
                Ok(Some(m)) => m
                    .attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::OperState(State::Up))),
                Ok(None) => false,
                Err(e) => return Err(nl(format!("host {host}: look up {ifname}"))(e)),
            };
            if !up {
                return Ok(true);
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

/// Create the namespace of one host with the sysctls that keep captures quiet.
fn make_host(name: &str, ipv6: bool, rt: &tokio::runtime::Handle) -> Result<HostNs, Error> {
    let ns = NetNs::create(name).map_err(|source| Error::Io {
        what: format!("host {name}: create network namespace"),
        source,
    })?;
    let base: &[(&str, &str)] = if ipv6 {
        &[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.router_solicitations", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
        ]
    } else {
        &[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ]
    };
    for (k, v) in base {
        ns.sysctl(k, v).map_err(|source| Error::Io {
            what: format!("host {name}"),
            source,
        })?;
    }
    // The netlink socket must be created inside the host; the connection
    // task then runs on the shared runtime.
    let (conn, handle, _) = ns
        .run(|| {
            let _guard = rt.enter();
            rtnetlink::new_connection()
        })
        .and_then(|r| r)
        .map_err(|source| Error::Io {
            what: format!("host {name}: open netlink"),
            source,
        })?;
    rt.spawn(conn);
    Ok(HostNs { ns, handle })
}

/// Build the whole topology of `sc`, in the order of the module doc.
pub async fn build(sc: &Lab) -> Result<Topology, Error> {
    let rt = tokio::runtime::Handle::current();
    let mut hosts = BTreeMap::new();
    for (name, h) in &sc.hosts {
        hosts.insert(name.clone(), make_host(name, h.ipv6, &rt)?);
    }
    let impair = if sc.links.iter().any(|l| l.impair.is_some()) {
        Some((None, make_host("impair", false, &rt)?))
    } else {
        None
    };
    let mut topo = Topology { hosts, impair };
    make_bridges(sc, &topo).await?;
    make_tuns(sc, &topo)?;
    make_veths(sc, &topo).await?;
    start_impairments(sc, &mut topo).await?;
    // The lab's sysctls, now that their interfaces exist.
    for (hname, h) in &sc.hosts {
        for (k, v) in &h.sysctls {
            topo.hosts[hname]
                .ns
                .sysctl(k, v)
                .map_err(|source| Error::Io {
                    what: format!("hosts.{hname}.sysctls"),
                    source,
                })?;
        }
    }
    let per_host = sc
        .hosts
        .iter()
        .map(|(hname, h)| configure_host(sc, hname, h, &topo.hosts[hname]));
    try_join_all(per_host).await?;
    wait_links_up(sc, &topo).await?;
    for (hname, h) in &sc.hosts {
        if let Some(script) = &h.firewall {
            load_nft(&topo.hosts[hname].ns, script).map_err(|m| {
                Error::Failed(format!(
                    "hosts.{hname}.firewall: nft rejected the rules:\n{m}"
                ))
            })?;
        }
    }
    Ok(topo)
}

/// Bridges, with fixed MACs.
async fn make_bridges(sc: &Lab, topo: &Topology) -> Result<(), Error> {
    let mut bridges = Vec::new();
    let mut bi = 0;
    for (hname, h) in &sc.hosts {
        for (bname, b) in &h.bridges {
            let mac = b.mac.unwrap_or(default_bridge_mac(bi));
            bi += 1;
            let host = &topo.hosts[hname];
            bridges.push(async move {
                let msg = LinkBridge::new(bname).address(mac.0.to_vec()).build();
                host.handle
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("host {hname}: create bridge {bname}")))
            });
        }
    }
    try_join_all(bridges).await?;
    Ok(())
}

/// The transmit queue length of the TUNs the lab creates: packets the
/// kernel routes to a TUN wait there for its process to read them. The
/// kernel's default for a TUN, 500, overflowed at 1,000 concurrent flows
/// through the gateway (about 15,000 of 10,000 flows' packets dropped on
/// `gw0`, shown as `gw/interfaces gw0.tx_dropped`).
pub const TUN_TXQUEUELEN: u32 = 10_000;

/// TUNs: created persistent inside their host, so that they outlive
/// this file descriptor and wait for the process that attaches to them;
/// they go away with the namespace. Their transmit queue length is set
/// with the host's other link settings ([`configure_host`]).
fn make_tuns(sc: &Lab, topo: &Topology) -> Result<(), Error> {
    for (hname, h) in &sc.hosts {
        for t in h.tuns.keys() {
            topo.hosts[hname]
                .ns
                .run(|| {
                    let dev = tun_rs::DeviceBuilder::new()
                        .name(t)
                        .enable(false)
                        .build_sync()?;
                    dev.persist()
                })
                .and_then(|r| r)
                .map_err(|source| Error::Io {
                    what: format!("hosts.{hname}.tuns.{t}: create TUN"),
                    source,
                })?;
        }
    }
    Ok(())
}

/// One veth pair, created in `a`'s namespace, its peer placed into `b`'s.
/// One segment per GSO packet: TCP hands the device MSS-sized segments,
/// so every capture shows the frames a real wire would carry rather than
/// 64 KiB super-packets.
async fn veth(
    what: String,
    (a, a_if, mac_a): (&HostNs, &str, Option<Mac>),
    (b, b_if, mac_b): (&HostNs, &str, Option<Mac>),
) -> Result<(), Error> {
    let mut peer = LinkUnspec::new_with_name(b_if);
    if let Some(m) = mac_b {
        peer = peer.address(m.0.to_vec());
    }
    let peer = peer
        .append_extra_attribute(LinkAttribute::GsoMaxSegs(1))
        .setns_by_fd(b.ns.raw_fd())
        .build();
    let mut msg = LinkVeth::new(a_if, b_if).set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
    if let Some(m) = mac_a {
        msg = msg.address(m.0.to_vec());
    }
    let msg = msg
        .append_extra_attribute(LinkAttribute::GsoMaxSegs(1))
        .build();
    a.handle.link().add(msg).execute().await.map_err(nl(what))
}

/// Veth pairs: created in a's host, the peer placed into b's host. An
/// impaired link is two pairs through the impairment namespace
/// ([`impair`]): `a — i{N}a` and `i{N}b — b`.
async fn make_veths(sc: &Lab, topo: &Topology) -> Result<(), Error> {
    let veths = sc.links.iter().enumerate().map(|(i, l)| {
        let a = &topo.hosts[&l.a.host];
        let b = &topo.hosts[&l.b.host];
        let mac_a: Mac = l.a.mac.unwrap_or(default_link_mac(i, 0));
        let mac_b: Mac = l.b.mac.unwrap_or(default_link_mac(i, 1));
        let what = format!(
            "links[{i}]: create veth {}/{} <-> {}/{}",
            l.a.host, l.a.ifname, l.b.host, l.b.ifname
        );
        let inner = (topo.impair.as_ref())
            .filter(|_| l.impair.is_some())
            .map(|(_, ns)| ns);
        async move {
            let (a_end, b_end) = (
                (a, &*l.a.ifname, Some(mac_a)),
                (b, &*l.b.ifname, Some(mac_b)),
            );
            match inner {
                None => veth(what, a_end, b_end).await,
                Some(ns) => {
                    let (ia, ib) = impair::inner_names(i);
                    veth(what.clone(), a_end, (ns, &ia, None)).await?;
                    veth(what, (ns, &ib, None), b_end).await?;
                    for n in [&ia, &ib] {
                        let idx = ns.index_of(n).await?;
                        ns.set(
                            format!("links[{i}]: impairment end {n} up"),
                            LinkUnspec::new_with_index(idx).up(),
                        )
                        .await?;
                    }
                    Ok(())
                }
            }
        }
    });
    try_join_all(veths).await?;
    Ok(())
}

/// Start the element that moves the impaired links' frames.
async fn start_impairments(sc: &Lab, topo: &mut Topology) -> Result<(), Error> {
    let Some((element, ns)) = topo.impair.as_mut() else {
        return Ok(());
    };
    let specs = (sc.links.iter().enumerate())
        .filter_map(|(i, l)| {
            l.impair.as_ref().map(|im| impair::Spec {
                link: i,
                ends: impair::inner_names(i),
                seed: im.seed,
                a_to_b: im.a_to_b.clone(),
                b_to_a: im.b_to_a.clone(),
            })
        })
        .collect();
    let e = impair::Element::start(&ns.ns, specs).map_err(|source| Error::Io {
        what: "start the link impairments".into(),
        source,
    })?;
    *element = Some(e);
    Ok(())
}

/// An interface of a host to configure: name, addresses, bridge, MTU.
type Iface<'a> = (&'a str, &'a [Cidr], Option<&'a str>, Option<u32>);

/// One host: `lo` up; its TUNs' transmit queues [`TUN_TXQUEUELEN`] long
/// unless the scenario says otherwise;
/// its bridges, TUNs and link ends attached to their bridge, addressed,
/// MTU set and up; then its routes.
async fn configure_host(sc: &Lab, hname: &str, h: &Host, host: &HostNs) -> Result<(), Error> {
    let lo = host.index_of("lo").await?;
    host.set(
        format!("host {hname}: lo up"),
        LinkUnspec::new_with_index(lo).up(),
    )
    .await?;
    let mut ifaces: Vec<Iface> = Vec::new();
    for (b, br) in &h.bridges {
        ifaces.push((b, &br.addr, None, None));
    }
    for (t, tun) in &h.tuns {
        // Over rtnetlink, which a rootless run's namespace allows.
        let idx = host.index_of(t).await?;
        let q = tun.txqueuelen.unwrap_or(TUN_TXQUEUELEN);
        host.set(
            format!("host {hname}: {t} txqueuelen {q}"),
            LinkUnspec::new_with_index(idx).append_extra_attribute(LinkAttribute::TxQueueLen(q)),
        )
        .await?;
        ifaces.push((t, &tun.addr, None, tun.mtu));
    }
    for l in &sc.links {
        for e in [&l.a, &l.b] {
            if e.host == hname {
                ifaces.push((&e.ifname, &e.addr, e.bridge.as_deref(), e.mtu));
            }
        }
    }
    for (ifname, addrs, bridge, mtu) in ifaces {
        let idx = host.index_of(ifname).await?;
        if let Some(b) = bridge {
            let bidx = host.index_of(b).await?;
            host.set(
                format!("host {hname}: attach {ifname} to bridge {b}"),
                LinkUnspec::new_with_index(idx).controller(bidx),
            )
            .await?;
        }
        for a in addrs {
            host.handle
                .address()
                .add(idx, a.addr, a.prefix)
                .execute()
                .await
                .map_err(nl(format!("host {hname}: add address {a} to {ifname}")))?;
        }
        if let Some(m) = mtu {
            host.set(
                format!("host {hname}: {ifname} mtu {m}"),
                LinkUnspec::new_with_index(idx).mtu(m),
            )
            .await?;
        }
        host.set(
            format!("host {hname}: {ifname} up"),
            LinkUnspec::new_with_index(idx).up(),
        )
        .await?;
    }
    for (i, r) in h.routes.iter().enumerate() {
        add_route(host, &format!("hosts.{hname}.routes[{i}]"), r).await?;
    }
    Ok(())
}

async fn add_route(host: &HostNs, what: &str, r: &Route) -> Result<(), Error> {
    let v6 = match (&r.to, &r.via) {
        (RouteDst::Prefix(p), _) => p.addr.is_ipv6(),
        (RouteDst::Default, Some(v)) => v.is_ipv6(),
        (RouteDst::Default, None) => false,
    };
    let (dst, len) = match r.to {
        RouteDst::Prefix(p) => (p.addr, p.prefix),
        RouteDst::Default if v6 => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        RouteDst::Default => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, len)
        .map_err(|e| Error::Failed(format!("{what}: {e}")))?;
    if let Some(v) = r.via {
        b = b
            .gateway(v)
            .map_err(|e| Error::Failed(format!("{what}: {e}")))?;
    }
    if let Some(d) = &r.dev {
        b = b.output_interface(host.index_of(d).await?);
    }
    host.handle
        .route()
        .add(b.build())
        .execute()
        .await
        .map_err(nl(what))?;
    Ok(())
}

/// The kernel acts on a link's carrier coming up only when its link
/// watch reports it, asynchronously (on a busy machine, a second or
/// more after the link was set up): until then the link end that came up
/// first, before its peer, has no active transmit queue and drops what
/// it is given (before any capture sees it), a bridge does not forward
/// through the port, and IPv6 does not start on the link. Wait for every
/// link end to be operationally up before any traffic (the kernel sets
/// the operational state in the same step as it activates the queue and
/// updates the bridge port).
async fn wait_links_up(sc: &Lab, topo: &Topology) -> Result<(), Error> {
    let waits = sc.hosts.keys().map(|hname| {
        let host = &topo.hosts[hname];
        let ends: Vec<&str> = sc
            .links
            .iter()
            .flat_map(|l| [&l.a, &l.b])
            .filter(|e| &e.host == hname)
            .map(|e| e.ifname.as_str())
            .collect();
        async move {
            host.wait_oper_up(&ends, std::time::Duration::from_secs(3))
                .await
        }
    });
    try_join_all(waits).await?;
    Ok(())
}

/// Load an nftables script inside a host with `nft -f -`.
fn load_nft(ns: &NetNs, script: &str) -> Result<(), String> {
    let mut cmd = ns.command("nft");
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run nft (install the nftables package): {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| format!("writing to nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    }
}
