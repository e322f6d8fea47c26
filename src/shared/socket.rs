//! Control sockets of the dataplane binaries: unix stream sockets bound at
//! a path, replacing only a stale socket file.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tracing::warn;

/// Binds the control socket at `path`, replacing a stale socket file (one
/// nobody listens on). A live socket or a non-socket file is an error.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
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
