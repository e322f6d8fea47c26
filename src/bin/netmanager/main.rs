//! `netmanager`: the net manager process of one worker node, the I/O shell
//! around [`NetManagerCore`]. It reads the node's TUN device and the UDP
//! tunnel port, asks the cluster's service manager for resolutions over a
//! unix socket, carries out the core's actions, and answers `counters` and
//! `flows` on its own control socket.
//!
//! One current-thread runtime; one task owns the core. Readiness for the
//! harness: UDP port 50103 is bound (last, after everything else is up).

mod args;
mod control;
mod manager;
mod shell;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hoplab::shell::clock::Clock;
use hoplab::shell::droplog::DropLog;
use hoplab::shell::signals::Signals;
use hoplab::shell::{self as lib, log, tun};
use hoplab_dataplane::netmanager::NetManagerCore;
use tracing::{info, warn};

use args::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init();
    log::exit_code(real_main(cli))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let rt = lib::runtime()?;
    let mut core = NetManagerCore::new(cli.config());
    for li in &cli.instances {
        core.add_local_instance(*li);
    }
    let mut control_bound = false;
    let mut io = shell::IoErrors::default();
    let result = rt.block_on(serve(&cli, &mut core, &mut control_bound, &mut io));
    // Whatever ended the run: the final counters, and no stale socket.
    let text = format!("{}{}", core.counters(), io.counters());
    let written = lib::write_counters(&cli.counters, &text);
    if control_bound {
        lib::control::remove(&cli.control);
    }
    result.and(written)
}

/// Sets everything up in order (signals, TUN, manager, control socket,
/// tunnel socket last) and runs the loop until SIGTERM or SIGINT.
async fn serve(
    cli: &Cli,
    core: &mut NetManagerCore,
    control_bound: &mut bool,
    io: &mut shell::IoErrors,
) -> anyhow::Result<()> {
    let clock = Clock::start();
    let mut signals = Signals::install()?;
    let offload = tun::offload_setting(cli.offload)?;
    let tun = tun::attach(&cli.tun, offload)?;
    let mtu = usize::from(tun.get_ref().mtu().context("reading the TUN's MTU")?);
    core.set_mtu(mtu);
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
    tokio::spawn(control::serve(listener, ctl_tx));
    let (query_tx, query_rx) = tokio::sync::mpsc::unbounded_channel();
    let (event_tx, event_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(manager::run(
        cli.manager.clone(),
        first,
        cli.node_addr,
        query_rx,
        event_tx,
    ));
    let udp = shell::bind_tunnel(cli.node_addr)?;
    if offload && !hoplab::shell::udp::enable_gro(&udp) {
        warn!("UDP_GRO refused on the tunnel socket: datagrams come one by one");
    }
    info!(
        tun = %cli.tun,
        node = %cli.node_addr,
        instances = cli.instances.len(),
        peers = cli.peers.len(),
        offload,
        "net manager ready"
    );

    let mut shell = shell::Shell::new(&tun, &udp, query_tx, clock, offload, (mtu, io));
    shell.drops = DropLog::open(&DropLog::beside(&cli.counters), &cli.tun);
    let r = shell.run(core, event_rx, ctl_rx, &mut signals).await;
    shell.log_io_errors();
    std::mem::replace(&mut shell.drops, DropLog::disabled()).close();
    r
}
