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
#[path = "../../shared/socket.rs"]
mod socket;
#[path = "../../shared/tun.rs"]
mod tun;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hoplab::shell::clock::Clock;
use hoplab_dataplane::netmanager::NetManagerCore;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use args::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let mut core = NetManagerCore::new(cli.config());
    for li in &cli.instances {
        core.add_local_instance(*li);
    }
    let mut control_bound = false;
    let result = rt.block_on(serve(&cli, &mut core, &mut control_bound));
    // Whatever ended the run: the final counters, and no stale socket.
    let text = core.counters().to_string();
    info!("final counters:\n{}", text.trim_end());
    let written = std::fs::write(&cli.counters, &text)
        .with_context(|| format!("writing the counters to {}", cli.counters.display()));
    if control_bound {
        socket::remove(&cli.control);
    }
    result.and(written)
}

/// Sets everything up in order (signals, TUN, manager, control socket,
/// tunnel socket last) and runs the loop until SIGTERM or SIGINT.
async fn serve(
    cli: &Cli,
    core: &mut NetManagerCore,
    control_bound: &mut bool,
) -> anyhow::Result<()> {
    let clock = Clock::start();
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let tun =
        tun::attach(&cli.tun).with_context(|| format!("attaching to TUN device {}", cli.tun))?;
    let first = manager::connect_initial(&cli.manager)
        .await
        .with_context(|| {
            format!(
                "connecting to the service manager at {}",
                cli.manager.display()
            )
        })?;
    let listener = control::bind(&cli.control)
        .with_context(|| format!("binding the control socket {}", cli.control.display()))?;
    *control_bound = true;
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(control::serve(listener, ctl_tx));
    let (query_tx, query_rx) = tokio::sync::mpsc::unbounded_channel();
    let (event_tx, event_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(manager::run(cli.manager.clone(), first, query_rx, event_tx));
    let udp = shell::bind_tunnel(cli.node_addr)?;
    info!(
        tun = %cli.tun,
        node = %cli.node_addr,
        instances = cli.instances.len(),
        "net manager ready"
    );

    let mut shell = shell::Shell::new(&tun, &udp, query_tx, clock);
    let r = shell
        .run(core, event_rx, ctl_rx, &mut sigterm, &mut sigint)
        .await;
    shell.log_io_errors();
    r
}
