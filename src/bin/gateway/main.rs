//! `gateway`: the gateway of an Oakestra network, the I/O shell around
//! [`GatewayCore`]. It loads its firewall (nftables: DNAT of the public
//! address and exposed ports to the internal address, masquerade out,
//! spoofed sources dropped), reads the packets the kernel routes to its
//! TUN (DNATed requests from outside; replies the net manager translated
//! back), lets the core rewrite them (seed 000 steps 2 and 5), and writes
//! them back to the TUN: requests go on to the node's net manager, replies
//! to the firewall, which restores the public address. With offloads on
//! (the default), a read may be a TCP super-packet of up to 64 KiB: the
//! core rewrites it once and it is written back whole
//! ([`hoplab::shell::batch`]).
//!
//! Each packet the core drops is written to the drop log beside the
//! counters ([`hoplab::shell::droplog`]): the packet just read, or a
//! fragment the core held (discarded with its datagram, timed out or
//! overlapped), named by the quote the core keeps of it.
//!
//! One current-thread runtime; one task owns the core. Neither the
//! firewall's work nor the control socket's connections run on it:
//! exposure changes go to a firewall thread (netlink batches) and are
//! applied to the core when their firewall part is done ([`changes`]);
//! the control socket is served on a thread of its own, which hands the
//! packet task each parsed command ([`hoplab::shell::control`]). Readiness for the
//! harness: the control socket accepts connections (bound last, after the
//! firewall and the TUN).

mod args;
mod changes;
mod conntrack;
mod control;
mod firewall;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hoplab::shell::batch::{write_one, Read, TunRead};
use hoplab::shell::clock::{Clock, ExpiryTimer};
use hoplab::shell::control::Request;
use hoplab::shell::droplog::{DropLog, Via};
use hoplab::shell::log::{self, RateLimited};
use hoplab::shell::signals::Signals;
use hoplab::shell::{self as lib, sched, tun};
use hoplab_dataplane::gateway::{ExposedPort, Exposure, GatewayCore, Verdict};
use hoplab_dataplane::Millis;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::Receiver;
use tracing::{info, trace, warn};
use tun_rs::SyncDevice;

use args::Cli;
use control::Command;
use firewall::Firewall;

/// The gateway's public addresses (IPv4, and IPv6 if it has one).
type Public = (std::net::Ipv4Addr, Option<std::net::Ipv6Addr>);

/// TUN reads (each a packet or a super-packet) handled before the loop
/// looks at its other sources.
const BATCH: usize = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init();
    log::exit_code(real_main(cli))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config();
    let internal_nets = config.internal_nets.clone();
    let mut core = GatewayCore::new(config);
    for e in &cli.expose {
        core.expose(e.clone())
            .with_context(|| format!("--expose {e}"))?;
    }
    let fw = Firewall {
        public_if: cli.public_if.clone(),
        tun: cli.tun.clone(),
        public: cli.public,
        internal: cli.internal,
        v6: cli.public6.zip(cli.internal6),
        internal_nets,
    };
    fw.install(&exposed_ports(&core))?;
    let rt = lib::runtime()?;
    let mut control_bound = false;
    let mut errors = Errors::default();
    let result = rt.block_on(serve(&cli, &mut core, &mut control_bound, &mut errors));
    // Whatever ended the run: the final counters, no table, no socket.
    let mut text = core.counters().to_string();
    text.push_str(&errors.counters());
    match firewall::counters() {
        Ok(cs) => {
            for (name, n) in cs {
                text.push_str(&format!("firewall.{name} {n}\n"));
            }
        }
        Err(e) => warn!("{e:#}"),
    }
    let written = lib::write_counters(&cli.counters, &text);
    if let Err(e) = Firewall::remove() {
        warn!("{e:#}");
    }
    if control_bound {
        lib::control::remove(&cli.control);
    }
    result.and(written)
}

/// The exposed ports, per family: the firewall's sets.
fn exposed_ports(core: &GatewayCore) -> Vec<ExposedPort> {
    core.exposures()
        .iter()
        .map(Exposure::exposed_port)
        .collect()
}

async fn serve(
    cli: &Cli,
    core: &mut GatewayCore,
    control_bound: &mut bool,
    errors: &mut Errors,
) -> anyhow::Result<()> {
    let clock = Clock::start();
    let mut signals = Signals::install()?;
    let offload = tun::offload_setting(cli.offload)?;
    let rt_priority = sched::rt_priority_setting(cli.rt_priority)?;
    sched::apply(rt_priority)?;
    let tun = tun::attach(&cli.tun, offload)?;
    let listener = lib::control::bind(&cli.control)?;
    *control_bound = true;
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(16);
    lib::control::serve_on_thread(listener, move |l| control::serve(l, ctl_tx))?;
    info!(
        tun = %cli.tun,
        public = %cli.public,
        internal = %cli.internal,
        exposures = core.exposures().len(),
        offload,
        rt_priority = rt_priority.unwrap_or(0),
        "gateway ready"
    );
    let public = (cli.public, cli.public6);
    // Each packet the core drops, for the run's drop verdicts.
    let mut drops = DropLog::open(&DropLog::beside(&cli.counters), &cli.tun);
    let r = run(
        &tun,
        core,
        ctl_rx,
        (clock, &mut drops),
        &mut signals,
        errors,
        public,
    )
    .await;
    drops.close();
    r
}

async fn run(
    tun: &AsyncFd<SyncDevice>,
    core: &mut GatewayCore,
    mut control: Receiver<Request<Command>>,
    (clock, drops): (Clock, &mut DropLog),
    signals: &mut Signals,
    errors: &mut Errors,
    public: Public,
) -> anyhow::Result<()> {
    let now = || clock.now();
    let mut read = TunRead::new();
    let mut worker = changes::Worker::spawn().context("starting the firewall thread")?;
    let mut changes = changes::Changes::default();
    let mut expiry = ExpiryTimer::new(clock);
    let result = loop {
        expiry.arm(core.next_deadline());
        tokio::select! {
            () = signals.stop() => break Ok(()),
            r = tun.readable() => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => break Err(anyhow::Error::new(e).context("waiting for the TUN")),
                };
                let t = now();
                for _ in 0..BATCH {
                    match guard.try_io(|d| read.recv(d.get_ref())) {
                        Ok(Ok(r)) => packets(
                            core,
                            t,
                            &mut read,
                            r,
                            tun.get_ref(),
                            (&mut *errors, &mut *drops),
                        ),
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        // Not a system call's error: a read tun-rs could
                        // not split (bad virtio header or GSO geometry).
                        Ok(Err(e)) if e.raw_os_error().is_none() => {
                            errors.tun_read.warn("splitting a TUN read", &e);
                        }
                        Ok(Err(e)) => return Err(e).context("reading the TUN"),
                        // WouldBlock: readiness cleared.
                        Err(_would_block) => break,
                    }
                }
            }
            Some(req) = control.recv() => match req.command {
                Command::Expose(_) | Command::Unexpose { .. } => {
                    changes.submit(core, &worker, req);
                }
                cmd => {
                    let _ = req.reply.send(answer(core, cmd, now(), errors));
                }
            },
            Some(done) = worker.done.recv() => changes.completed(core, &worker, public, done),
            () = expiry.wait() => {
                let n = core.expire(now());
                if n > 0 {
                    trace!(expired = n, "flows expired");
                }
                log_held(core, drops);
            }
        }
    };
    let (tun_write, tun_read) = (errors.tun_write.total(), errors.tun_read.total());
    if tun_write + tun_read > 0 {
        warn!(tun_write, tun_read, "packets lost to TUN I/O errors");
    }
    result
}

/// The shell's own I/O errors (the core does not see them): every one is
/// counted, in the counters the control socket and the exit file show,
/// and warned about at a limited rate.
#[derive(Debug, Default)]
struct Errors {
    /// Writes to the TUN that failed: the packets (a super-packet or a
    /// coalesced batch counts once) are lost.
    tun_write: RateLimited,
    /// TUN reads that could not be split into packets (bad virtio-net
    /// header or GSO geometry): lost.
    tun_read: RateLimited,
}

impl Errors {
    /// `io.tun_read_errors N` and `io.tun_write_errors N`, one a line, in
    /// the core's counter format.
    fn counters(&self) -> String {
        format!(
            "io.tun_read_errors {}\nio.tun_write_errors {}\n",
            self.tun_read.total(),
            self.tun_write.total()
        )
    }
}

/// Records in the drop log the packets the core held and dropped (the
/// fragments of a datagram it discarded), by their quotes; all were read
/// from the TUN.
fn log_held(core: &mut GatewayCore, drops: &mut DropLog) {
    for h in core.take_dropped() {
        trace!(why = %h.reason, "dropped a held fragment");
        drops.packet(Via::Tun, &h.quote, h.reason);
    }
}

/// One TUN read through the core: a packet or a TCP super-packet
/// rewritten once and written back whole; a split UDP super-packet packet
/// by packet, written back coalesced.
fn packets(
    core: &mut GatewayCore,
    now: Millis,
    read: &mut TunRead,
    r: Read,
    dev: &SyncDevice,
    (errors, drops): (&mut Errors, &mut DropLog),
) {
    let written = match r {
        Read::Whole(len) => match core.packet_in_place(now, read.packet_mut()) {
            Verdict::Request | Verdict::Reply => read.write(dev, len).map(|_| ()),
            Verdict::Drop(why) => {
                trace!(%why, "dropped");
                drops.packet(Via::Tun, read.packet_mut(), why);
                log_held(core, drops);
                Ok(())
            }
            Verdict::Held => Ok(()),
            Verdict::Fragments => write_fragments(core, dev),
        },
        Read::Split(n) => {
            let batch = &mut read.segments;
            for i in 0..n {
                let p = batch.packet_mut(i);
                let len = p.len();
                match core.packet_in_place(now, p) {
                    Verdict::Request | Verdict::Reply => batch.keep(i, len),
                    Verdict::Drop(why) => {
                        trace!(%why, "dropped");
                        drops.packet(Via::Tun, batch.packet_mut(i), why);
                        log_held(core, drops);
                    }
                    Verdict::Held => {}
                    Verdict::Fragments => {
                        if let Err(e) = write_fragments(core, dev) {
                            errors.tun_write.warn("writing to the TUN", &e);
                        }
                    }
                }
            }
            batch.flush(dev).map(|_| ())
        }
    };
    if let Err(e) = written {
        errors.tun_write.warn("writing to the TUN", &e);
    }
}

/// Writes the fragments of a datagram the core made whole and
/// translated, one by one; the first error ends the datagram.
fn write_fragments(core: &mut GatewayCore, dev: &SyncDevice) -> std::io::Result<()> {
    for p in core.take_out() {
        write_one(dev, &p)?;
    }
    Ok(())
}

/// The reply text of a control command but an exposure change (those go
/// through [`changes`]: the firewall first, off this task, then the core).
fn answer(core: &mut GatewayCore, cmd: Command, now: Millis, errors: &Errors) -> String {
    match cmd {
        // The firewall's counters are added by the control task.
        Command::Counters => core.counters().to_string() + &errors.counters(),
        Command::Flows => {
            let mut s = String::new();
            for f in core.flows(now) {
                s.push_str(&format!(
                    "{} {} -> {} exposed {} internal {} {} idle {}ms\n",
                    f.proto,
                    f.client,
                    f.service,
                    f.exposed_port,
                    f.internal_port,
                    f.state,
                    f.idle_ms
                ));
            }
            s.push('\n');
            s
        }
        Command::Exposures => {
            let mut s: String = core.exposures().iter().map(|e| format!("{e}\n")).collect();
            s.push('\n');
            s
        }
        // Exposure changes go through `changes` (off this task).
        Command::Expose(_) | Command::Unexpose { .. } => {
            "error an exposure change outside the queue\n".to_string()
        }
    }
}
