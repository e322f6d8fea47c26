//! The control socket: a unix stream socket the net manager listens on.
//! One command per line; replies:
//!
//! ```text
//! counters   → one `name value` line per counter, then an empty line
//! flows      → `flows N` (conversion table entries) and `cache N`
//! (other)    → `error unknown command`
//! ```
//!
//! Blank lines are ignored. Connections run on their own tasks
//! ([`hoplab::shell::control`]); the answers come from the task that owns
//! the core, through a channel.

use hoplab::shell::control::{self, ask, Request};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// A command the core's task answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Counters,
    Flows,
}

/// Answers the control socket's connections until the runtime ends.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request<Command>>) {
    control::serve(listener, move |line: String| {
        let requests = requests.clone();
        async move {
            match line.trim() {
                "counters" => ask(&requests, Command::Counters).await,
                "flows" => ask(&requests, Command::Flows).await,
                _ => Some("error unknown command\n".to_string()),
            }
        }
    })
    .await;
}
