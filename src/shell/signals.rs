//! The signals that stop a dataplane binary: SIGTERM (the harness) and
//! SIGINT (a terminal). Handlers are installed before anything is set up,
//! so a signal during start-up is not lost.
//!
//! It does not know what stopping means: the loop that awaits
//! [`Signals::stop`] returns and its caller cleans up.

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::info;

/// SIGTERM and SIGINT, caught.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers (within a tokio runtime).
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Returns once SIGTERM or SIGINT arrives, logging which.
    pub async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM: stopping"),
            _ = self.int.recv() => info!("SIGINT: stopping"),
        }
    }
}
