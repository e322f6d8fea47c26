//! The connection to the cluster's service manager (line protocol of
//! [`hoplab_dataplane::netmanager::control`]), on a task of its own so that
//! a slow or absent manager never holds up packets.
//!
//! Queries (and the core task's acknowledgements of invalidations) come in
//! on a channel and go out as lines; every answer and invalidation read
//! goes to the core's task. While the connection is down, each query (and
//! each one left unanswered when it broke) is failed at once with
//! [`ResolveError::Unavailable`], and the task reconnects with a backoff
//! that doubles up to [`MAX_BACKOFF`].
//!
//! What the manager told is kept ([`Held`]): the first lines on every
//! connection after a lost one are the sync (`sync` per service IP with the
//! version it was told, then `synced <node>`), so an invalidation pushed
//! while the connection was down comes back as an `invalidate` before any
//! answer to a new query.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hoplab_dataplane::netmanager::control::{Held, Message};
use hoplab_dataplane::netmanager::ResolveError;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{debug, info, warn};

/// Connection attempts at startup before giving up.
const STARTUP_ATTEMPTS: u32 = 5;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Connects, retrying a few times with a doubling backoff (about 1.5 s in
/// all) in case the manager is still starting.
pub async fn connect_initial(path: &Path) -> std::io::Result<UnixStream> {
    let mut backoff = MIN_BACKOFF;
    let mut attempt = 1;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if attempt >= STARTUP_ATTEMPTS => return Err(e),
            Err(e) => debug!("service manager: attempt {attempt}: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
}

fn unavailable(ip: IpAddr) -> Message {
    Message::Failed(
        ip,
        ResolveError::Unavailable("service manager not connected".into()),
    )
}

/// Runs until the core's task is gone: serves `first`, then reconnects
/// whenever the connection breaks, and syncs what it holds as node `node`
/// on each new connection.
pub async fn run(
    path: PathBuf,
    first: UnixStream,
    node: IpAddr,
    mut queries: UnboundedReceiver<Message>,
    events: UnboundedSender<Message>,
) {
    let mut conn = Some(first);
    let mut backoff = MIN_BACKOFF;
    let held = Mutex::new(Held::default());
    let mut sync = None;
    loop {
        if let Some(stream) = conn.take() {
            let why = serve(stream, sync.take(), &held, &mut queries, &events).await;
            if events.is_closed() {
                return;
            }
            warn!("service manager connection lost ({why}); failing queries and reconnecting");
            backoff = MIN_BACKOFF;
        }
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                q = queries.recv() => match q {
                    Some(Message::Resolve(ip)) => {
                        debug!(%ip, "service manager down: query failed");
                        if events.send(unavailable(ip)).is_err() {
                            return;
                        }
                    }
                    // An acknowledgement for the lost connection: the
                    // sync makes up for it.
                    Some(_) => {}
                    None => return,
                },
            }
        }
        match UnixStream::connect(&path).await {
            Ok(s) => {
                let lines = lock(&held).sync(node);
                info!(
                    held = lines.len() - 1,
                    "service manager connection back; syncing"
                );
                sync = Some(lines);
                conn = Some(s);
            }
            Err(e) => {
                debug!("service manager: reconnecting: {e}");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Carries queries and answers over one connection until it breaks (or
/// either channel closes), `sync` first when given; then fails the queries
/// it left unanswered. Returns why it ended.
async fn serve(
    mut stream: UnixStream,
    sync: Option<Vec<Message>>,
    held: &Mutex<Held>,
    queries: &mut UnboundedReceiver<Message>,
    events: &UnboundedSender<Message>,
) -> String {
    let (r, mut w) = stream.split();
    // Reader and writer run side by side so that neither can block the
    // other. The locks are never held across an await (never contended).
    let outstanding = Mutex::new(HashSet::new());
    let reader = async {
        let mut lines = BufReader::new(r).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => return "closed by the manager".to_string(),
                Err(e) => return format!("read: {e}"),
            };
            let msg = match Message::parse(&line) {
                Ok(m) => m,
                Err(e) => {
                    warn!("service manager: {e}");
                    continue;
                }
            };
            match &msg {
                Message::Resolved(r, _) => {
                    lock(&outstanding).remove(&r.service_ip);
                }
                Message::Failed(ip, _) => {
                    lock(&outstanding).remove(ip);
                }
                Message::Invalidate(_) => {}
                Message::Resolve(_)
                | Message::Invalidated(_)
                | Message::Sync(..)
                | Message::Synced(_) => {
                    debug!(%line, "service manager sent a net manager's line; ignored");
                    continue;
                }
            }
            lock(held).on_message(&msg);
            if events.send(msg).is_err() {
                return "shutting down".to_string();
            }
        }
    };
    let writer = async {
        let mut text = String::new();
        for m in sync.unwrap_or_default() {
            text.push_str(&m.to_line());
            text.push('\n');
        }
        if let Err(e) = w.write_all(text.as_bytes()).await {
            return format!("write: {e}");
        }
        while let Some(m) = queries.recv().await {
            if let Message::Resolve(ip) = m {
                lock(&outstanding).insert(ip);
            }
            let mut line = m.to_line();
            line.push('\n');
            if let Err(e) = w.write_all(line.as_bytes()).await {
                return format!("write: {e}");
            }
        }
        "shutting down".to_string()
    };
    let why = tokio::select! {
        why = reader => why,
        why = writer => why,
    };
    for ip in outstanding.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let _ = events.send(unavailable(ip));
    }
    why
}
