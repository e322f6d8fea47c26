//! The loop that owns the core: packets from the TUN and the tunnel
//! socket, messages from the service manager, control commands, the
//! core's next expiry deadline and the signals; and the execution of the
//! core's actions.
//!
//! Packets take the core's in-place entry points
//! ([`hoplab::shell::batch`]): a TUN read (with offloads on, possibly a
//! TCP super-packet of up to 64 KiB) is rewritten once and written back
//! whole; for the tunnel it is split into wire-sized packets, sent with
//! `UDP_SEGMENT`, one system call for a run of equal datagrams to one peer
//! ([`hoplab::shell::udp`]). A tunnel receive (with `UDP_GRO`, datagrams
//! the kernel coalesced) is one batch translated packet by packet, and
//! what goes to the TUN is written together, coalesced again (GRO). The
//! core's other actions for a packet go to one reused vector. Buffers are
//! allocated once; a packet is copied when split, once on the tunnel's
//! receive side (into the TUN batch) and once into a tunnel send.
//!
//! The core's copied actions (ICMP errors, packets released after a
//! resolution, the fragments of a reassembled datagram) are written and
//! sent one by one; a released TCP super-packet, longer than the MTU, is
//! first split into wire-sized segments ([`batch::split_tcp`]).
//!
//! Threads ([`Readers`]): by default one task owns the core and reads
//! both the TUN and the tunnel socket. With a reader per direction
//! (`--reader-per-direction on`), a second thread with a runtime of its
//! own reads the tunnel socket (tunnel → core → TUN, or on to another
//! peer) while the first reads the TUN (TUN → core → TUN or tunnel) and
//! serves the resolutions, control commands and expiry; the core is
//! shared behind a mutex held only for one core call, never across a
//! system call ([`Core`]). The tunnel socket is registered with the
//! second thread's runtime only, so its arrivals wake that thread alone;
//! the first thread sends on it too (a send does not wait for readiness
//! unless the socket buffer is full).
//!
//! Every error of the shell's own I/O (TUN read and write, tunnel send
//! and receive) is counted ([`IoErrors`]: `io_err_*` beside the core's
//! counters, on the control socket and in the counters file) and logged
//! at most once a second.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use hoplab::shell::batch::{self, Read, TunBatch, TunRead};
use hoplab::shell::clock::{Clock, ExpiryTimer};
use hoplab::shell::control::Request;
use hoplab::shell::droplog::{DropLog, Via};
use hoplab::shell::log::RateLimited;
use hoplab::shell::signals::Signals;
use hoplab::shell::udp::{self, GsoBatch};
use hoplab_dataplane::netmanager::control::Message;
use hoplab_dataplane::netmanager::{Action, Forward, NetManagerCore, TUNNEL_PORT};
use hoplab_dataplane::Millis;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tracing::{debug, info, trace, warn};
use tun_rs::SyncDevice;

use crate::control::Command;

/// Receive buffer size: the largest IP packet.
const BUF: usize = 65536;
/// Reads from one source (each a packet, or a super-packet, or coalesced
/// datagrams) handled before the loop looks at the others.
const BATCH: usize = 64;
/// Socket buffer sizes asked for the tunnel socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Access to the core: owned by the one task ([`NetManagerCore`]
/// itself), or shared by the two readers ([`Locked`]).
pub trait Core {
    /// Runs `f` on the core (under the lock, if shared: `f` makes no
    /// system call).
    fn with<R>(&mut self, f: impl FnOnce(&mut NetManagerCore) -> R) -> R;
}

impl Core for NetManagerCore {
    fn with<R>(&mut self, f: impl FnOnce(&mut NetManagerCore) -> R) -> R {
        f(self)
    }
}

/// The core shared by the two readers: locked for one core call.
pub struct Locked<'a>(pub &'a Mutex<NetManagerCore>);

impl Core for Locked<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut NetManagerCore) -> R) -> R {
        f(&mut lock(self.0))
    }
}

/// Locks `m`; a panic of the other reader while it held the lock ends
/// the process anyway, so a poisoned lock is taken as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which thread reads what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// One task reads the TUN and the tunnel socket.
    One,
    /// This task reads the TUN (and serves the rest); another thread
    /// reads the tunnel socket ([`Shell::run_tunnel`]).
    TunOnly,
}

/// What the two readers tell each other: the expiry deadline the TUN
/// reader's timer is armed at, so that the tunnel reader wakes it when a
/// packet it handled made the core's next deadline earlier (a flow or a
/// resolution created while the timer was disarmed).
#[derive(Debug)]
pub struct Rearm {
    /// The armed deadline in milliseconds, `u64::MAX` when disarmed.
    armed: AtomicU64,
    notify: Notify,
}

impl Default for Rearm {
    fn default() -> Rearm {
        Rearm {
            armed: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
        }
    }
}

impl Rearm {
    fn armed(&self, at: Option<Millis>) {
        self.armed
            .store(at.map_or(u64::MAX, |m| m.0), Ordering::Relaxed);
    }

    /// Wakes the TUN reader if `next` is earlier than its timer.
    fn check(&self, next: Option<Millis>) {
        if next.is_some_and(|n| n.0 < self.armed.load(Ordering::Relaxed)) {
            self.armed(next);
            self.notify.notify_one();
        }
    }
}

/// Binds the tunnel socket on the wildcard address of `node_addr`'s
/// family, port [`TUNNEL_PORT`]; IPv6 is dual-stack.
pub fn bind_tunnel(node_addr: IpAddr) -> anyhow::Result<UdpSocket> {
    let addr = match node_addr {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, TUNNEL_PORT)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, TUNNEL_PORT)),
    };
    let bind = || -> std::io::Result<UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(false)?;
        }
        // Best effort: the kernel caps them at rmem_max / wmem_max.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        UdpSocket::from_std(s.into())
    };
    bind().with_context(|| format!("binding the tunnel socket {addr}"))
}

/// Errors of the shell's own I/O (the core does not see them): failed
/// system calls (a write of a batch may have carried several packets)
/// and reads refused by the offload code, by direction.
#[derive(Debug, Default)]
pub struct IoErrors {
    tun_write: RateLimited,
    tun_read: RateLimited,
    tunnel_send: RateLimited,
    tunnel_recv: RateLimited,
}

impl IoErrors {
    /// The counters, one `name value` line each, as the core's are
    /// written.
    pub fn counters(&self) -> String {
        format!(
            "io_err_tun_read {}\nio_err_tun_write {}\nio_err_tunnel_send {}\nio_err_tunnel_recv {}\n",
            self.tun_read.total(),
            self.tun_write.total(),
            self.tunnel_send.total(),
            self.tunnel_recv.total()
        )
    }
}

/// The loop's buffers, allocated once.
struct Batches {
    /// TUN reads.
    tun_in: TunRead,
    /// Tunnel receives split into datagrams, and their packets for the TUN.
    udp_in: TunBatch,
    /// Datagrams for the tunnel.
    udp_out: GsoBatch,
    udp_buf: Vec<u8>,
    cmsg: Vec<u8>,
}

/// Segments of a released TCP super-packet (allocated on first use).
type SplitBuf = Option<Box<TunBatch>>;

impl Batches {
    fn new(gso: bool) -> Batches {
        Batches {
            tun_in: TunRead::new(),
            udp_in: TunBatch::new(),
            udp_out: GsoBatch::new(gso),
            udp_buf: vec![0u8; BUF],
            cmsg: udp::cmsg_buffer(),
        }
    }
}

/// The I/O side: the TUN, the tunnel socket, the query channel.
pub struct Shell<'a> {
    tun: &'a AsyncFd<SyncDevice>,
    udp: &'a UdpSocket,
    /// True if the tunnel socket is IPv6 (dual-stack): IPv4 peers are
    /// addressed as IPv4-mapped.
    udp_v6: bool,
    queries: UnboundedSender<Message>,
    clock: Clock,
    errors: &'a Mutex<IoErrors>,
    /// Whether tunnel sends may use `UDP_SEGMENT`.
    gso: bool,
    offload: OffloadStats,
    /// The TUN's MTU: a released TCP packet longer than this is split.
    mtu: usize,
    split: SplitBuf,
    /// Each packet the core drops, for the run's drop verdicts.
    drops: &'a Mutex<DropLog>,
    /// Whether this task reads the tunnel socket too.
    readers: Readers,
    rearm: &'a Rearm,
}

/// What the shells of the two readers share besides the core.
pub struct Shared<'a> {
    pub errors: &'a Mutex<IoErrors>,
    pub drops: &'a Mutex<DropLog>,
    pub rearm: &'a Rearm,
}

/// How often the offloads carried more than one packet, logged at exit.
#[derive(Debug, Default)]
struct OffloadStats {
    /// TUN reads that were a super-packet.
    super_reads: u64,
    /// Tunnel receives that held more than one datagram (`UDP_GRO`).
    gro_receives: u64,
    /// Of those, written to the TUN as one super-packet.
    coalesced: u64,
}

impl<'a> Shell<'a> {
    pub fn new(
        tun: &'a AsyncFd<SyncDevice>,
        udp: &'a UdpSocket,
        queries: UnboundedSender<Message>,
        clock: Clock,
        (gso, mtu, readers): (bool, usize, Readers),
        shared: &Shared<'a>,
    ) -> Shell<'a> {
        let udp_v6 = udp.local_addr().is_ok_and(|a| a.is_ipv6());
        Shell {
            tun,
            udp,
            udp_v6,
            queries,
            clock,
            errors: shared.errors,
            gso,
            offload: OffloadStats::default(),
            mtu,
            split: None,
            drops: shared.drops,
            readers,
            rearm: shared.rearm,
        }
    }

    /// The I/O error counters (locked: only on an error).
    fn errors(&self) -> MutexGuard<'_, IoErrors> {
        lock(self.errors)
    }

    /// The loop. Returns on SIGTERM or SIGINT (`Ok`), on an error of the
    /// TUN or the tunnel socket that is not transient, or when `tunnel`
    /// (the other reader's end, with [`Readers::TunOnly`]) reports one.
    pub async fn run(
        &mut self,
        core: &mut impl Core,
        mut events: UnboundedReceiver<Message>,
        mut control: Receiver<Request<Command>>,
        signals: &mut Signals,
        tunnel: &mut Option<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>,
    ) -> anyhow::Result<()> {
        let mut b = Batches::new(self.gso);
        // The actions of one packet besides its forward; cleared by the
        // core on each call, drained here.
        let mut extra: Vec<Action> = Vec::new();
        let (tun, udp) = (self.tun, self.udp);
        let reads_tunnel = self.readers == Readers::One;
        let rearm = self.rearm;
        let mut expiry = ExpiryTimer::new(self.clock);
        loop {
            let next = core.with(|c| c.next_deadline());
            expiry.arm(next);
            rearm.armed(next);
            tokio::select! {
                () = signals.stop() => return Ok(()),
                r = tun.readable() => {
                    let mut guard = r.context("waiting for the TUN")?;
                    let now = self.clock.now();
                    for _ in 0..BATCH {
                        match guard.try_io(|d| b.tun_in.recv(d.get_ref())) {
                            Ok(Ok(read)) => self.tun_read(core, now, &mut b, read, &mut extra).await,
                            Ok(Err(e)) if transient(&e) => {
                                self.errors().tun_read.warn("reading the TUN", &e);
                            }
                            // Not a system call's error: a read tun-rs
                            // could not split (virtio header, GSO geometry).
                            Ok(Err(e)) if e.raw_os_error().is_none() => {
                                self.errors().tun_read.warn("splitting a TUN read", &e);
                            }
                            Ok(Err(e)) => return Err(e).context("reading the TUN"),
                            // WouldBlock: readiness cleared.
                            Err(_would_block) => break,
                        }
                    }
                }
                r = udp.readable(), if reads_tunnel => {
                    r.context("waiting for the tunnel socket")?;
                    self.tunnel_reads(core, &mut b, &mut extra).await?;
                }
                r = async {
                    match tunnel.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                } => {
                    return match r {
                        Ok(r) => r.context("the tunnel reader"),
                        Err(_) => Err(anyhow::anyhow!("the tunnel reader ended without a word")),
                    };
                }
                () = rearm.notify.notified() => {}
                Some(msg) = events.recv() => {
                    let now = self.clock.now();
                    let acts = match msg {
                        Message::Resolved(res, _) => {
                            core.with(|c| c.on_resolution(now, res.service_ip, Ok(res)))
                        }
                        Message::Failed(ip, e) => {
                            debug!(%ip, "resolution failed: {e}");
                            core.with(|c| c.on_resolution(now, ip, Err(e)))
                        }
                        Message::Invalidate(ip) => {
                            debug!(%ip, "invalidated");
                            core.with(|c| c.invalidate(ip));
                            // Applied: acknowledged to the manager.
                            let _ = self.queries.send(Message::Invalidated(ip));
                            Vec::new()
                        }
                        _ => Vec::new(),
                    };
                    log_drops(self.drops, None, &acts);
                    self.exec(acts).await;
                }
                Some(req) = control.recv() => {
                    let errors = self.errors;
                    let text = core.with(|c| answer(c, &lock(errors), req.command));
                    let _ = req.reply.send(text);
                }
                () = expiry.wait() => {
                    let now = self.clock.now();
                    let acts = core.with(|c| c.expire(now));
                    log_drops(self.drops, None, &acts);
                    self.exec(acts).await;
                }
            }
        }
    }

    /// The other reader ([`Readers::TunOnly`]'s pair): the tunnel socket
    /// until `stop` is notified (`Ok`) or an error of the socket that is
    /// not transient.
    pub async fn run_tunnel(&mut self, core: &mut impl Core, stop: &Notify) -> anyhow::Result<()> {
        let mut b = Batches::new(self.gso);
        let mut extra: Vec<Action> = Vec::new();
        let udp = self.udp;
        loop {
            tokio::select! {
                () = stop.notified() => return Ok(()),
                r = udp.readable() => {
                    r.context("waiting for the tunnel socket")?;
                    self.tunnel_reads(core, &mut b, &mut extra).await?;
                    let next = core.with(|c| c.next_deadline());
                    self.rearm.check(next);
                }
            }
        }
    }

    /// Up to [`BATCH`] receives from the tunnel socket, each through the
    /// core (until it has nothing more).
    async fn tunnel_reads(
        &mut self,
        core: &mut impl Core,
        b: &mut Batches,
        extra: &mut Vec<Action>,
    ) -> anyhow::Result<()> {
        let udp = self.udp;
        let now = self.clock.now();
        for _ in 0..BATCH {
            match udp::recv(udp, &mut b.udp_buf, &mut b.cmsg) {
                Ok((n, from, segment)) => {
                    let from = from.ip().to_canonical();
                    if segment > 0
                        && n > segment
                        && n.div_ceil(segment) <= batch::SLOTS
                        && self.tun.get_ref().tcp_gso()
                    {
                        self.tunnel_gro(core, now, from, b, (n, segment), extra)
                            .await;
                        continue;
                    }
                    let k = b.udp_in.load_segments(&b.udp_buf[..n], segment);
                    let (batch, out) = (&mut b.udp_in, &mut b.udp_out);
                    self.packets(core, now, Some(from), batch, k, out, extra)
                        .await;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if transient(&e) => {
                    self.errors()
                        .tunnel_recv
                        .warn("receiving on the tunnel socket", &e);
                }
                Err(e) => return Err(e).context("receiving on the tunnel socket"),
            }
        }
        Ok(())
    }

    /// One TUN read through the core: a packet or a TCP super-packet
    /// rewritten once and written back whole, or split for the tunnel; a
    /// split UDP super-packet packet by packet.
    async fn tun_read(
        &mut self,
        core: &mut impl Core,
        now: Millis,
        b: &mut Batches,
        read: Read,
        extra: &mut Vec<Action>,
    ) {
        if b.tun_in.is_super() {
            self.offload.super_reads += 1;
        }
        match read {
            Read::Whole(_) => {
                let fwd = core.with(|c| c.tun_packet_in_place(now, b.tun_in.packet_mut(), extra));
                log_drops(self.drops, Some((Via::Tun, b.tun_in.packet_mut())), extra);
                self.exec(extra.drain(..)).await;
                match fwd {
                    Some(Forward::Tun { len }) => {
                        if let Err(e) = b.tun_in.write(self.tun.get_ref(), len) {
                            self.errors().tun_write.warn("writing to the TUN", &e);
                        }
                    }
                    Some(Forward::Tunnel { node, port, len }) => {
                        // Datagrams of the core's other actions go first.
                        self.send_batch(&mut b.udp_out).await;
                        match b.tun_in.wire_packets(len) {
                            Ok(n) => self.send_segments(node, port, &b.tun_in.segments, n).await,
                            Err(e) => self.errors().tun_read.warn("splitting for the tunnel", &e),
                        }
                    }
                    None => {}
                }
                self.send_batch(&mut b.udp_out).await;
            }
            Read::Split(n) => {
                let (batch, out) = (&mut b.tun_in.segments, &mut b.udp_out);
                self.packets(core, now, None, batch, n, out, extra).await;
            }
        }
    }

    /// The datagrams of one `UDP_GRO` receive (`n` bytes, `segment` each
    /// but the last) through the core in place; if all go to the TUN and
    /// are one TCP flow's consecutive segments, written as the one
    /// super-packet they were split from (no copy but the payloads moved
    /// together); else as a batch (coalesced by tun-rs where it can).
    async fn tunnel_gro(
        &mut self,
        core: &mut impl Core,
        now: Millis,
        from: IpAddr,
        b: &mut Batches,
        (n, segment): (usize, usize),
        extra: &mut Vec<Action>,
    ) {
        self.offload.gro_receives += 1;
        let k = n.div_ceil(segment);
        let mut keep = [0usize; batch::SLOTS];
        let mut whole = true;
        for (i, kept) in keep.iter_mut().enumerate().take(k) {
            let r = i * segment..n.min((i + 1) * segment);
            let d = &mut b.udp_buf[r.clone()];
            let fwd = core.with(|c| c.tunnel_datagram_in_place(now, from, d, extra));
            log_drops(self.drops, Some((Via::Tunnel, d)), extra);
            self.exec(extra.drain(..)).await;
            match fwd {
                Some(Forward::Tun { len }) => {
                    *kept = len;
                    whole &= len == r.len();
                }
                Some(Forward::Tunnel { node, port, len }) => {
                    whole = false;
                    let d = &b.udp_buf[r.start..r.start + len];
                    self.queue_tunnel(&mut b.udp_out, node, port, d).await;
                }
                None => whole = false,
            }
        }
        let coalesced = if whole {
            batch::coalesce_tcp(&mut b.udp_buf[..n], segment)
        } else {
            None
        };
        let written = match coalesced {
            Some((hdr, len)) => {
                self.offload.coalesced += 1;
                batch::write_super(self.tun.get_ref(), hdr, &b.udp_buf[..len])
            }
            None => {
                for (i, &len) in keep.iter().enumerate().take(k).filter(|(_, l)| **l > 0) {
                    b.udp_in.push(&b.udp_buf[i * segment..i * segment + len]);
                }
                b.udp_in.flush(self.tun.get_ref())
            }
        };
        if let Err(e) = written {
            self.errors().tun_write.warn("writing to the TUN", &e);
        }
        self.send_batch(&mut b.udp_out).await;
    }

    /// The packets in `batch` (segments of a split TUN read, or datagrams
    /// of one tunnel receive from `from`) through the core; then the
    /// batch's TUN writes (coalesced) and tunnel sends.
    #[allow(clippy::too_many_arguments)]
    async fn packets(
        &mut self,
        core: &mut impl Core,
        now: Millis,
        from: Option<IpAddr>,
        batch: &mut TunBatch,
        n: usize,
        out: &mut GsoBatch,
        extra: &mut Vec<Action>,
    ) {
        for i in 0..n {
            let p = batch.packet_mut(i);
            let (fwd, via) = match from {
                Some(from) => (
                    core.with(|c| c.tunnel_datagram_in_place(now, from, p, extra)),
                    Via::Tunnel,
                ),
                None => (
                    core.with(|c| c.tun_packet_in_place(now, p, extra)),
                    Via::Tun,
                ),
            };
            log_drops(self.drops, Some((via, p)), extra);
            self.exec(extra.drain(..)).await;
            match fwd {
                Some(Forward::Tun { len }) => batch.keep(i, len),
                Some(Forward::Tunnel { node, port, len }) => {
                    self.queue_tunnel(out, node, port, &batch.packet_mut(i)[..len])
                        .await;
                }
                None => {}
            }
        }
        if let Err(e) = batch.flush(self.tun.get_ref()) {
            self.errors().tun_write.warn("writing to the TUN", &e);
        }
        self.send_batch(out).await;
    }

    /// Queues a datagram for the tunnel, sending what was queued first if
    /// it cannot go in the same send.
    async fn queue_tunnel(&mut self, out: &mut GsoBatch, node: IpAddr, port: u16, d: &[u8]) {
        let to = udp::peer(self.udp_v6, node, port);
        if !out.fits(to, d.len()) {
            self.send_batch(out).await;
        }
        out.push(to, d);
    }

    /// Sends the first `n` packets of `segs` to a peer, with as few
    /// system calls as `UDP_SEGMENT` allows, without copying them.
    async fn send_segments(&mut self, node: IpAddr, port: u16, segs: &TunBatch, n: usize) {
        let to = udp::peer(self.udp_v6, node, port);
        let mut all: [&[u8]; batch::SLOTS] = [&[]; batch::SLOTS];
        for (i, d) in all.iter_mut().enumerate().take(n) {
            *d = segs.packet(i);
        }
        if let Err(e) = udp::send_all(self.udp, to, &all[..n], self.gso).await {
            self.errors()
                .tunnel_send
                .warn(&format!("sending to the tunnel peer {node}"), &e);
        }
    }

    async fn send_batch(&mut self, out: &mut GsoBatch) {
        let to = out.pending().map(|(to, _, _)| to.ip().to_canonical());
        if let Err(e) = udp::send(self.udp, out).await {
            let to = to.map(|t| t.to_string()).unwrap_or_default();
            self.errors()
                .tunnel_send
                .warn(&format!("sending to the tunnel peer {to}"), &e);
        }
    }

    /// Carries out the core's actions. Write and send errors drop the
    /// packet (counted here, logged at most once a second).
    async fn exec(&mut self, actions: impl IntoIterator<Item = Action>) {
        for a in actions {
            match a {
                Action::WriteTun(mut p) => {
                    if !self.split_released(None, &mut p).await {
                        self.write_tun(&p);
                    }
                }
                Action::SendTunnel {
                    node,
                    port,
                    mut datagram,
                } => {
                    if !self.split_released(Some((node, port)), &mut datagram).await {
                        self.send_tunnel(node, port, &datagram).await;
                    }
                }
                Action::Query(ip) => {
                    trace!(%ip, "query");
                    // The manager task lives as long as the runtime; were
                    // it gone, the core's query timeout fails the query.
                    let _ = self.queries.send(Message::Resolve(ip));
                }
                Action::Drop(reason) => trace!(%reason, "dropped"),
                Action::DropHeld(h) => trace!(reason = %h.reason, "dropped a held packet"),
            }
        }
    }

    /// A TCP packet of an action longer than the MTU (a super-packet the
    /// core kept while its service was resolved): split into wire-sized
    /// segments, written to the TUN as a batch (coalesced again where the
    /// device has offloads on) or sent to the tunnel peer `to`. False if
    /// it is no such packet (to be written or sent as it is).
    async fn split_released(&mut self, to: Option<(IpAddr, u16)>, packet: &mut [u8]) -> bool {
        let segs = self.split.get_or_insert_with(|| Box::new(TunBatch::new()));
        let n = match batch::split_tcp(packet, self.mtu, segs) {
            Ok(Some(n)) => n,
            Ok(None) => return false,
            Err(e) => {
                let mut errors = self.errors();
                let lost = match to {
                    None => &mut errors.tun_write,
                    Some(_) => &mut errors.tunnel_send,
                };
                lost.warn("splitting a released packet", &e);
                return true;
            }
        };
        let Some(mut segs) = self.split.take() else {
            return true;
        };
        match to {
            None => {
                segs.keep_all();
                if let Err(e) = segs.flush(self.tun.get_ref()) {
                    self.errors().tun_write.warn("writing to the TUN", &e);
                }
            }
            Some((node, port)) => self.send_segments(node, port, &segs, n).await,
        }
        self.split = Some(segs);
        true
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if let Err(e) = batch::write_one(self.tun.get_ref(), packet) {
            self.errors().tun_write.warn("writing to the TUN", &e);
        }
    }

    async fn send_tunnel(&mut self, node: IpAddr, port: u16, datagram: &[u8]) {
        let to = udp::peer(self.udp_v6, node, port);
        if let Err(e) = self.udp.send_to(datagram, to).await {
            self.errors()
                .tunnel_send
                .warn(&format!("sending to the tunnel peer {node}"), &e);
        }
    }

    /// Logs the shell's own I/O errors, if there were any, and how often
    /// the offloads carried more than one packet.
    pub fn log_io_errors(&self) {
        let o = &self.offload;
        info!(
            super_reads = o.super_reads,
            gro_receives = o.gro_receives,
            coalesced = o.coalesced,
            "offloads"
        );
        let e = self.errors();
        let (tun_write, tun_read) = (e.tun_write.total(), e.tun_read.total());
        let (tunnel_send, tunnel_recv) = (e.tunnel_send.total(), e.tunnel_recv.total());
        if tun_write + tun_read + tunnel_send + tunnel_recv > 0 {
            warn!(tun_write, tun_read, tunnel_send, tunnel_recv, "I/O errors");
        }
    }
}

/// Records the drops among `actions` in the drop log: an
/// [`Action::Drop`] is of `packet`, the packet just handled (unidentified
/// if there is none: the core never drops that way without one); an
/// [`Action::DropHeld`] of a packet the core held, named by its quote, as
/// read from the TUN or out of the tunnel.
fn log_drops(log: &Mutex<DropLog>, packet: Option<(Via, &[u8])>, actions: &[Action]) {
    if !actions
        .iter()
        .any(|a| matches!(a, Action::Drop(_) | Action::DropHeld(_)))
    {
        return;
    }
    let mut log = lock(log);
    for a in actions {
        match a {
            Action::Drop(reason) => match packet {
                Some((via, p)) => log.packet(via, p, reason),
                None => log.unidentified(reason),
            },
            Action::DropHeld(h) => {
                let via = match h.from {
                    None => Via::Tun,
                    Some(_) => Via::Tunnel,
                };
                log.packet(via, &h.quote, h.reason);
            }
            _ => {}
        }
    }
}

/// Errors after which the loop goes on.
fn transient(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(
            Errno::EINTR
                | Errno::ECONNREFUSED
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH
                | Errno::ENOBUFS
                | Errno::EMSGSIZE
        )
    )
}

/// The reply text of a control command.
fn answer(core: &mut NetManagerCore, errors: &IoErrors, cmd: Command) -> String {
    match cmd {
        Command::Counters => format!("{}{}\n", core.counters(), errors.counters()),
        Command::Flows => format!(
            "flows {}\ncache {}\nfragments {}\n",
            core.conntrack().len(),
            core.cache().len(),
            core.fragments().len()
        ),
        Command::AddInstance(li) => {
            info!(instance = %li, "local instance added");
            core.add_local_instance(li);
            "ok\n".into()
        }
        Command::RemoveInstance(ns) => match core.remove_local_instance(ns) {
            Some(li) => {
                info!(instance = %li, "local instance removed");
                "ok\n".into()
            }
            None => format!("error no local instance {ns}\n"),
        },
    }
}
