//! The control socket of a dataplane binary: a unix stream socket bound at
//! a path (replacing only a stale socket file), one command per line, each
//! answered by the task that owns the core through a channel.
//!
//! Its trust boundary: the socket file is created with mode 0600, so only
//! the binary's user (root in the harness) may connect; and even that user
//! cannot make it hold unbounded memory or descriptors. A line is at most
//! [`MAX_LINE`] bytes (a longer one is answered with an error line and the
//! connection closed, what was read of it dropped); at most
//! [`MAX_CONNECTIONS`] connections are served at once (one more is answered
//! with an error line and closed at once); a line that is not UTF-8 is
//! answered with an error line, and the connection goes on.
//!
//! The socket is served on a thread of its own ([`serve_on_thread`]):
//! accepting, reading and writing a connection never run on the thread
//! that owns the core and carries the packets; that thread only receives
//! the parsed command through a channel and sends back the answer.
//!
//! It knows the transport only: which lines are commands, and what they
//! answer, is each binary's (`answer` of [`serve`]).

use std::future::Future;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

/// The longest command line, in bytes, newline excluded.
pub const MAX_LINE: usize = 4096;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// The mode of the socket file: its owner only.
pub const SOCKET_MODE: u32 = 0o600;

/// A command for the task that owns the core, and where its reply text
/// goes.
#[derive(Debug)]
pub struct Request<C> {
    pub command: C,
    pub reply: oneshot::Sender<String>,
}

/// Binds the control socket at `path`, replacing a stale socket file (one
/// nobody listens on). A live socket or a non-socket file is an error.
/// The listener is non-blocking, for [`serve_on_thread`].
pub fn bind(path: &Path) -> anyhow::Result<StdUnixListener> {
    bind_replacing_stale(path)
        .with_context(|| format!("binding the control socket {}", path.display()))
}

/// Serves `listener` with `serve` (e.g. a binary's loop around [`serve`])
/// on a new thread named `control`, with a runtime of its own, for the rest
/// of the process's life. The thread that owns the core gets the commands
/// through the channel `serve` sends them on.
pub fn serve_on_thread<S, F>(listener: StdUnixListener, serve: S) -> anyhow::Result<()>
where
    S: FnOnce(UnixListener) -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control socket's runtime")?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            rt.block_on(async move {
                match UnixListener::from_std(listener) {
                    Ok(l) => serve(l).await,
                    Err(e) => warn!("control socket: {e}"),
                }
            })
        })
        .context("starting the control socket's thread")?;
    Ok(())
}

fn bind_replacing_stale(path: &Path) -> anyhow::Result<StdUnixListener> {
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
    // The file is created without group or other permissions (the
    // binaries bind it while they have one thread), then set to exactly
    // SOCKET_MODE whatever the umask was.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = StdUnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    listener
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .context("setting the socket's mode")?;
    Ok(listener)
}

/// Removes the socket file, if it is still there.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => warn!("removing {}: {e}", path.display()),
    }
}

/// Accepts connections until the runtime ends, each on a task of its own,
/// at most [`MAX_CONNECTIONS`] at once (one more is told so and closed).
/// Every line but blank ones is handed to `answer`; its reply is written
/// back, and `None` (the core's task is gone: shutting down) closes the
/// connection.
pub async fn serve<A, F>(listener: UnixListener, answer: A)
where
    A: Fn(String) -> F + Clone + Send + 'static,
    F: Future<Output = Option<String>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        connection(stream, answer).await;
                        drop(slot);
                    });
                }
                Err(_) => {
                    debug!("control socket: {MAX_CONNECTIONS} connections already: one refused");
                    let line = format!("error too many connections (at most {MAX_CONNECTIONS})\n");
                    // Never waits: the line fits the socket's empty buffer.
                    let _ = stream.try_write(line.as_bytes());
                }
            },
            Err(e) => {
                warn!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One line read from a connection.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(String),
    NotUtf8,
    /// Over [`MAX_LINE`] bytes without a newline.
    TooLong,
    Closed,
}

/// Reads one line of at most [`MAX_LINE`] bytes (newline excluded): never
/// buffers more than one byte past the bound.
async fn read_line<R>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Line>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    buf.clear();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(Line::Closed);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(match std::str::from_utf8(buf) {
        Ok(s) => Line::Text(s.to_string()),
        Err(_) => Line::NotUtf8,
    })
}

async fn connection<A, F>(stream: UnixStream, answer: A)
where
    A: Fn(String) -> F,
    F: Future<Output = Option<String>>,
{
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        let line = match read_line(&mut r, &mut buf).await {
            Ok(l) => l,
            Err(e) => {
                debug!("control connection: {e}");
                return;
            }
        };
        let (reply, close) = match line {
            Line::Closed => return,
            Line::TooLong => (
                Some(format!(
                    "error line longer than {MAX_LINE} bytes: connection closed\n"
                )),
                true,
            ),
            Line::NotUtf8 => (Some("error the line is not UTF-8\n".to_string()), false),
            Line::Text(t) if t.trim().is_empty() => continue,
            Line::Text(t) => (answer(t).await, false),
        };
        let Some(reply) = reply else {
            return;
        };
        if let Err(e) = w.write_all(reply.as_bytes()).await {
            debug!("control connection: {e}");
            return;
        }
        if close {
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8]) -> Vec<Line> {
        let mut r = BufReader::new(input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf).await.unwrap();
            assert!(buf.len() <= MAX_LINE + 1, "buffered {}", buf.len());
            let end = matches!(l, Line::Closed | Line::TooLong);
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_bounded_and_checked() {
        let t = |s: &str| Line::Text(s.to_string());
        assert_eq!(
            lines_of(b"counters\nflows").await,
            [t("counters"), t("flows"), Line::Closed]
        );
        assert_eq!(
            lines_of(b"a\xff\xfe\nflows\n").await,
            [Line::NotUtf8, t("flows"), Line::Closed]
        );
        // Exactly the bound is a line; one byte more is not.
        let mut max = vec![b'x'; MAX_LINE];
        max.push(b'\n');
        assert_eq!(lines_of(&max).await[0], t(&"x".repeat(MAX_LINE)));
        let long = vec![b'x'; 10 * MAX_LINE];
        assert_eq!(lines_of(&long).await, [Line::TooLong]);
    }
}
