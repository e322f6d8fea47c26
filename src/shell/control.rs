//! The control socket of a dataplane binary: a unix stream socket bound at
//! a path (replacing only a stale socket file), one command per line, each
//! answered by the task that owns the core through a channel.
//!
//! It knows the transport only: which lines are commands, and what they
//! answer, is each binary's (`answer` of [`serve`]).

use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// A command for the task that owns the core, and where its reply text
/// goes.
#[derive(Debug)]
pub struct Request<C> {
    pub command: C,
    pub reply: oneshot::Sender<String>,
}

/// Binds the control socket at `path`, replacing a stale socket file (one
/// nobody listens on). A live socket or a non-socket file is an error.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    bind_replacing_stale(path)
        .with_context(|| format!("binding the control socket {}", path.display()))
}

fn bind_replacing_stale(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another process is listening on it");
            }
            std::fs::remove_file(path).context("removing the stale socket file")?;
        }
        Ok(_) => bail!("it exists and is not a socket"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("inspecting the path"),
    }
    UnixListener::bind(path).map_err(Into::into)
}

/// Removes the socket file, if it is still there.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => warn!("removing {}: {e}", path.display()),
    }
}

/// Accepts connections until the runtime ends, each on a task of its own.
/// Every line but blank ones is handed to `answer`; its reply is written
/// back, and `None` (the core's task is gone: shutting down) closes the
/// connection.
pub async fn serve<A, F>(listener: UnixListener, answer: A)
where
    A: Fn(String) -> F + Clone + Send + 'static,
    F: Future<Output = Option<String>> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, answer.clone()));
            }
            Err(e) => {
                warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection<A, F>(stream: UnixStream, answer: A)
where
    A: Fn(String) -> F,
    F: Future<Output = Option<String>>,
{
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
        if line.trim().is_empty() {
            continue;
        }
        let Some(reply) = answer(line).await else {
            return;
        };
        if let Err(e) = w.write_all(reply.as_bytes()).await {
            debug!("control connection: {e}");
            return;
        }
    }
}

/// The reply of the core's task to `command`; `None` when the task is
/// gone (shutting down).
pub async fn ask<C>(requests: &mpsc::Sender<Request<C>>, command: C) -> Option<String> {
    let (reply, rx) = oneshot::channel();
    requests.send(Request { command, reply }).await.ok()?;
    rx.await.ok()
}
