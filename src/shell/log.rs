//! Logging of the dataplane binaries: the tracing setup (`RUST_LOG`, else
//! `info`, to stderr), the one line an error exit prints, and
//! [`RateLimited`] warnings for I/O errors that can repeat per packet.
//!
//! It knows nothing of what is logged.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tracing::warn;

/// Installs the tracing subscriber: filter from `RUST_LOG` (default
/// `info`), no targets, colours only on a terminal, to stderr.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// The exit code of a binary's run: success, or 1 after printing
/// `error: ` and the error with its causes.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Warns of an I/O error at most once a second, with the number left out
/// since the last warning; counts them all.
#[derive(Debug, Default)]
pub struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
    total: u64,
}

impl RateLimited {
    /// Counts `e` (an error while doing `what`) and warns of it unless a
    /// warning went out less than a second ago.
    pub fn warn(&mut self, what: &str, e: &std::io::Error) {
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

    /// Every error counted, warned of or not.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_error_and_warns_once_a_second() {
        let mut r = RateLimited::default();
        let e = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        for _ in 0..3 {
            r.warn("writing", &e);
        }
        assert_eq!(r.total(), 3);
        assert_eq!(r.suppressed, 2);
    }
}
