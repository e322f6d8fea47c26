//! `gateway`: the gateway of an Oakestra network, the I/O shell around
//! [`GatewayCore`]. It loads its firewall (nftables: DNAT of the public
//! address and exposed ports to the internal address, masquerade out,
//! spoofed sources dropped), reads the packets the kernel routes to its
//! TUN (DNATed requests from outside; replies the net manager translated
//! back), lets the core rewrite them (seed 000 steps 2 and 5), and writes
//! them back to the TUN: requests go on to the node's net manager, replies
//! to the firewall, which restores the public address.
//!
//! One current-thread runtime; one task owns the core. Readiness for the
//! harness: the control socket accepts connections (bound last, after the
//! firewall and the TUN).

mod args;
mod control;
mod firewall;
#[path = "../../shared/socket.rs"]
mod socket;
#[path = "../../shared/tun.rs"]
mod tun;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hoplab::shell::clock::{Clock, ExpiryTimer};
use hoplab_dataplane::gateway::{ExposedPort, Exposure, GatewayCore, Verdict};
use hoplab_dataplane::Millis;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::Receiver;
use tracing::{info, trace, warn};
use tun_rs::SyncDevice;

use args::Cli;
use control::{Command, Request};
use firewall::Firewall;

/// Receive buffer size: the largest IP packet.
const BUF: usize = 65536;
/// Packets handled before the loop looks at its other sources.
const BATCH: usize = 64;

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let mut control_bound = false;
    let result = rt.block_on(serve(&cli, &mut core, &mut control_bound));
    // Whatever ended the run: the final counters, no table, no socket.
    let mut text = core.counters().to_string();
    match firewall::counters() {
        Ok(cs) => {
            for (name, n) in cs {
                text.push_str(&format!("firewall.{name} {n}\n"));
            }
        }
        Err(e) => warn!("{e:#}"),
    }
    info!("final counters:\n{}", text.trim_end());
    let written = std::fs::write(&cli.counters, &text)
        .with_context(|| format!("writing the counters to {}", cli.counters.display()));
    if let Err(e) = Firewall::remove() {
        warn!("{e:#}");
    }
    if control_bound {
        socket::remove(&cli.control);
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

async fn serve(cli: &Cli, core: &mut GatewayCore, control_bound: &mut bool) -> anyhow::Result<()> {
    let clock = Clock::start();
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let tun =
        tun::attach(&cli.tun).with_context(|| format!("attaching to TUN device {}", cli.tun))?;
    let listener = socket::bind(&cli.control)
        .with_context(|| format!("binding the control socket {}", cli.control.display()))?;
    *control_bound = true;
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(control::serve(listener, ctl_tx));
    info!(
        tun = %cli.tun,
        public = %cli.public,
        internal = %cli.internal,
        exposures = core.exposures().len(),
        "gateway ready"
    );
    run(&tun, core, ctl_rx, clock, &mut sigterm, &mut sigint).await
}

/// Logs an I/O error at most once a second, with the number left out.
#[derive(Debug, Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
    total: u64,
}

impl RateLimited {
    fn warn(&mut self, what: &str, e: &std::io::Error) {
        self.total += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            warn!(
                "{what}: {e} ({} more since the last report)",
                self.suppressed
            );
        } else {
            warn!("{what}: {e}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

async fn run(
    tun: &AsyncFd<SyncDevice>,
    core: &mut GatewayCore,
    mut control: Receiver<Request>,
    clock: Clock,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let now = || clock.now();
    let mut buf = vec![0u8; BUF];
    let mut write_errors = RateLimited::default();
    let mut expiry = ExpiryTimer::new(clock);
    let result = loop {
        expiry.arm(core.next_deadline());
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()); }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break Ok(()); }
            r = tun.readable() => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => break Err(anyhow::Error::new(e).context("waiting for the TUN")),
                };
                let t = now();
                for _ in 0..BATCH {
                    match guard.try_io(|d| d.get_ref().recv(&mut buf)) {
                        Ok(Ok(n)) => match core.packet_in_place(t, &mut buf[..n]) {
                            Verdict::Request | Verdict::Reply => {
                                if let Err(e) = tun.get_ref().send(&buf[..n]) {
                                    write_errors.warn("writing to the TUN", &e);
                                }
                            }
                            Verdict::Drop(why) => trace!(%why, "dropped"),
                        },
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => return Err(e).context("reading the TUN"),
                        // WouldBlock: readiness cleared.
                        Err(_would_block) => break,
                    }
                }
            }
            Some((cmd, reply)) = control.recv() => {
                let _ = reply.send(answer(core, cmd, now()));
            }
            () = expiry.wait() => {
                let n = core.expire(now());
                if n > 0 {
                    trace!(expired = n, "flows expired");
                }
            }
        }
    };
    if write_errors.total > 0 {
        warn!(
            tun_write = write_errors.total,
            "packets lost to TUN write errors"
        );
    }
    result
}

/// The reply text of a control command. Exposure changes update the core
/// and the firewall's sets together: the firewall only admits ports the
/// core maps.
fn answer(core: &mut GatewayCore, cmd: Command, now: Millis) -> String {
    match cmd {
        // The firewall's counters are added by the control task.
        Command::Counters => core.counters().to_string(),
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
        Command::Expose(e) => {
            let port = e.exposed_port();
            let had = exposed_ports(core).contains(&port);
            if let Err(err) = core.expose(e.clone()) {
                return format!("error {err}\n");
            }
            if !had {
                if let Err(err) = Firewall::set_port(port, true) {
                    let _ = core.unexpose(e.proto, e.port, e.service.is_ipv6());
                    return format!("error {err:#}\n");
                }
            }
            info!(%e, "exposed");
            "ok\n".to_string()
        }
        Command::Unexpose { proto, port, v6 } => {
            let removed = match core.unexpose(proto, port, v6) {
                Ok(r) => r,
                Err(err) => return format!("error {err}\n"),
            };
            let port = ExposedPort { proto, port, v6 };
            if !exposed_ports(core).contains(&port) {
                if let Err(err) = Firewall::set_port(port, false) {
                    return format!("error {err:#}\n");
                }
            }
            info!(%removed, "unexposed");
            format!("ok removed {removed}\n")
        }
    }
}
