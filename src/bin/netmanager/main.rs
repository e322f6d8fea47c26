//! `netmanager`: the net manager process of one worker node, the I/O shell
//! around [`NetManagerCore`]. It reads the node's TUN device and the UDP
//! tunnel port, asks the cluster's service manager for resolutions over a
//! unix socket, carries out the core's actions, and answers `counters` and
//! `flows` on its own control socket.
//!
//! One current-thread runtime; by default one task owns the core. With a
//! reader per direction (`--reader-per-direction on`), a second thread
//! with a current-thread runtime of its own reads the tunnel socket, the
//! core shared behind a lock ([`shell`]). The control socket is served
//! on a thread of its own that hands the core's task parsed commands
//! ([`hoplab::shell::control`]). Readiness for the harness: UDP
//! port 50103 is bound (last, after everything else is up).

mod args;
mod control;
mod manager;
mod shell;

use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use clap::Parser;
use hoplab::shell::clock::Clock;
use hoplab::shell::control::Request;
use hoplab::shell::droplog::DropLog;
use hoplab::shell::signals::Signals;
use hoplab::shell::{self as lib, log, sched, tun};
use hoplab_dataplane::netmanager::control::Message;
use hoplab_dataplane::netmanager::NetManagerCore;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{Receiver, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tracing::{info, warn};
use tun_rs::SyncDevice;

use args::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init();
    log::exit_code(real_main(cli))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let rt = lib::runtime()?;
    let core = Mutex::new(NetManagerCore::new(cli.config()));
    for li in &cli.instances {
        shell::lock(&core).add_local_instance(*li);
    }
    let mut control_bound = false;
    let io = Mutex::new(shell::IoErrors::default());
    let result = rt
        .block_on(setup(&cli, &core, &mut control_bound))
        .and_then(|ready| serve(&cli, &rt, ready, &core, &io));
    // Whatever ended the run: the final counters, and no stale socket.
    let text = format!(
        "{}{}",
        shell::lock(&core).counters(),
        shell::lock(&io).counters()
    );
    let written = lib::write_counters(&cli.counters, &text);
    if control_bound {
        lib::control::remove(&cli.control);
    }
    result.and(written)
}

/// What [`setup`] made, for the loop.
struct Ready {
    clock: Clock,
    signals: Signals,
    tun: AsyncFd<SyncDevice>,
    udp: UdpSocket,
    offload: bool,
    mtu: usize,
    queries: UnboundedSender<Message>,
    events: UnboundedReceiver<Message>,
    control: Receiver<Request<control::Command>>,
    /// With a reader per direction: the tunnel reader's runtime, which
    /// the tunnel socket is registered with.
    tunnel_rt: Option<tokio::runtime::Runtime>,
    /// The real-time priority the reading threads run at, if any.
    rt_priority: Option<u8>,
}

/// Sets everything up in order (signals, TUN, manager, control socket,
/// tunnel socket last).
async fn setup(
    cli: &Cli,
    core: &Mutex<NetManagerCore>,
    control_bound: &mut bool,
) -> anyhow::Result<Ready> {
    let clock = Clock::start();
    let signals = Signals::install()?;
    let offload = tun::offload_setting(cli.offload)?;
    let per_direction = tun::reader_per_direction_setting(cli.reader_per_direction)?;
    let rt_priority = sched::rt_priority_setting(cli.rt_priority)?;
    sched::apply(rt_priority)?;
    let tun = tun::attach(&cli.tun, offload)?;
    let mtu = usize::from(tun.get_ref().mtu().context("reading the TUN's MTU")?);
    shell::lock(core).set_mtu(mtu);
    let first = manager::connect_initial(&cli.manager)
        .await
        .with_context(|| {
            format!(
                "connecting to the service manager at {}",
                cli.manager.display()
            )
        })?;
    let listener = lib::control::bind(&cli.control)?;
    *control_bound = true;
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(16);
    lib::control::serve_on_thread(listener, move |l| control::serve(l, ctl_tx))?;
    let (query_tx, query_rx) = tokio::sync::mpsc::unbounded_channel();
    let (event_tx, event_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(manager::run(
        cli.manager.clone(),
        first,
        cli.node_addr,
        query_rx,
        event_tx,
    ));
    let tunnel_rt = if per_direction {
        Some(lib::runtime()?)
    } else {
        None
    };
    let udp = {
        // Registered with the tunnel reader's runtime, if there is one:
        // its arrivals then wake that thread only.
        let _in_tunnel_rt = tunnel_rt.as_ref().map(|rt| rt.enter());
        shell::bind_tunnel(cli.node_addr)?
    };
    if offload && !hoplab::shell::udp::enable_gro(&udp) {
        warn!("UDP_GRO refused on the tunnel socket: datagrams come one by one");
    }
    info!(
        tun = %cli.tun,
        node = %cli.node_addr,
        instances = cli.instances.len(),
        peers = cli.peers.len(),
        offload,
        reader_per_direction = per_direction,
        rt_priority = rt_priority.unwrap_or(0),
        "net manager ready"
    );
    Ok(Ready {
        clock,
        signals,
        tun,
        udp,
        offload,
        mtu,
        queries: query_tx,
        events: event_rx,
        control: ctl_rx,
        tunnel_rt,
        rt_priority,
    })
}

/// Runs the loop until SIGTERM or SIGINT: one task on `rt`, or with a
/// reader per direction, the TUN reader on `rt` and the tunnel reader on
/// a thread of its own, stopped when the first ends.
fn serve(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    mut ready: Ready,
    core: &Mutex<NetManagerCore>,
    io: &Mutex<shell::IoErrors>,
) -> anyhow::Result<()> {
    let drops = Mutex::new(DropLog::open(&DropLog::beside(&cli.counters), &cli.tun));
    let rearm = shell::Rearm::default();
    let shared = shell::Shared {
        errors: io,
        drops: &drops,
        rearm: &rearm,
    };
    let settings = |readers| (ready.offload, ready.mtu, readers);
    let r = match ready.tunnel_rt.take() {
        None => {
            let mut shell = shell::Shell::new(
                &ready.tun,
                &ready.udp,
                ready.queries.clone(),
                ready.clock,
                settings(shell::Readers::One),
                &shared,
            );
            let mut owned = shell::lock(core);
            let r = rt.block_on(shell.run(
                &mut *owned,
                ready.events,
                ready.control,
                &mut ready.signals,
                &mut None,
            ));
            shell.log_io_errors();
            r
        }
        Some(tunnel_rt) => {
            let stop = Notify::new();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let (tun, udp) = (&ready.tun, &ready.udp);
            let (queries, clock) = (ready.queries.clone(), ready.clock);
            let settings_b = settings(shell::Readers::TunOnly);
            let rt_priority = ready.rt_priority;
            std::thread::scope(|s| {
                let (shared, stop) = (&shared, &stop);
                std::thread::Builder::new()
                    .name("tunnel-reader".into())
                    .spawn_scoped(s, move || {
                        if let Err(e) = sched::apply(rt_priority) {
                            warn!("the tunnel reader: {e:#}");
                        }
                        let mut shell =
                            shell::Shell::new(tun, udp, queries, clock, settings_b, shared);
                        let r =
                            tunnel_rt.block_on(shell.run_tunnel(&mut shell::Locked(core), stop));
                        shell.log_io_errors();
                        let _ = done_tx.send(r);
                    })
                    .context("starting the tunnel reader thread")?;
                let mut shell = shell::Shell::new(
                    tun,
                    udp,
                    ready.queries.clone(),
                    ready.clock,
                    settings(shell::Readers::TunOnly),
                    shared,
                );
                let r = rt.block_on(shell.run(
                    &mut shell::Locked(core),
                    ready.events,
                    ready.control,
                    &mut ready.signals,
                    &mut Some(done_rx),
                ));
                shell.log_io_errors();
                stop.notify_one();
                r
            })
        }
    };
    drops
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .close();
    r
}
