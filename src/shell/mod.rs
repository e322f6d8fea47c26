//! The I/O shell pieces both dataplane binaries are made of: the clock and
//! the expiry timer that hand a core its time ([`clock`]), the control
//! socket ([`control`]), logging ([`log`]), the stop signals
//! ([`signals`]), the TUN attach ([`tun`]), batched TUN reads and writes
//! with segmentation offload ([`batch`]) and the tunnel socket's UDP
//! GSO/GRO ([`udp`]), the log of each packet a core dropped
//! ([`droplog`]), the optional real-time scheduling class ([`sched`]),
//! and nfnetlink by hand: set element changes and the gateway's conntrack
//! deletes ([`nfnetlink`]).
//!
//! It knows neither core's packets nor commands: each binary's own loop
//! owns its core and decides what a packet or a command does. Everything
//! here runs on current-thread tokio runtimes ([`runtime`]): one per
//! reading thread.

pub mod batch;
pub mod clock;
pub mod control;
pub mod droplog;
pub mod log;
pub mod nfnetlink;
pub mod sched;
pub mod signals;
pub mod tun;
pub mod udp;

use anyhow::Context;

/// The current-thread runtime a binary runs on (I/O and timers enabled).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// Logs a core's final counters (their `name value` lines) and writes
/// them to `path`, as both binaries do at exit, whatever ended the run.
pub fn write_counters(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    tracing::info!("final counters:\n{}", text.trim_end());
    std::fs::write(path, text)
        .with_context(|| format!("writing the counters to {}", path.display()))
}
