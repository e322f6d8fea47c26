//! The control socket: a unix stream socket the net manager listens on.
//! One command per line; replies:
//!
//! ```text
//! counters   → one `name value` line per counter, then an empty line
//! flows      → `flows N` (conversion table entries) and `cache N`
//! (other)    → `error unknown command`
//! ```
//!
//! Blank lines are ignored. Connections run on their own tasks; the
//! answers come from the task that owns the core, through a channel.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// A command the core's task answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Counters,
    Flows,
}

/// A command and where to send its reply text.
pub type Request = (Command, oneshot::Sender<String>);

pub use crate::socket::bind;

/// Accepts connections until the runtime ends.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Request>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, requests.clone()));
            }
            Err(e) => {
                warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, requests: mpsc::Sender<Request>) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                debug!("control connection: {e}");
                return;
            }
        };
        let reply = match line.trim() {
            "" => continue,
            "counters" => ask(&requests, Command::Counters).await,
            "flows" => ask(&requests, Command::Flows).await,
            _ => Some("error unknown command\n".to_string()),
        };
        let Some(reply) = reply else { return };
        if let Err(e) = w.write_all(reply.as_bytes()).await {
            debug!("control connection: {e}");
            return;
        }
    }
}

/// The reply of the core's task; `None` when it is gone (shutting down).
async fn ask(requests: &mpsc::Sender<Request>, cmd: Command) -> Option<String> {
    let (tx, rx) = oneshot::channel();
    requests.send((cmd, tx)).await.ok()?;
    rx.await.ok()
}
