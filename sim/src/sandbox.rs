//! The run's own namespaces. `hoplab run` re-executes itself as the first
//! process of a new pid namespace, in a new network and mount namespace:
//!
//! * nothing a scenario builds is ever in, or linked to, the host's network
//!   namespace, so no scenario packet can leave the machine;
//! * the child is pid 1 of its namespace: when it exits, or is killed, the
//!   kernel kills every process of the run; it also dies with its parent
//!   (`PR_SET_PDEATHSIG`), so killing `hoplab` kills the whole run;
//! * host namespaces are held by descriptors of that process only, so they
//!   go away with it: no named namespace, link, mount or process survives.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{self, SigHandler, Signal};

use crate::Error;

/// Set in the environment of the sandboxed child.
pub const ENV: &str = "HOPLAB_SANDBOX";

static CHILD: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

extern "C" fn note(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// True inside the sandboxed child.
pub fn inside() -> bool {
    std::env::var_os(ENV).is_some()
}

/// Whether SIGINT or SIGTERM reached the sandboxed run.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Run this same program with the same arguments inside fresh namespaces and
/// return its exit code. Call before any thread is started.
pub fn reexec() -> Result<i32, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Failed(
            "hoplab run needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to make its namespaces: run it as root".into(),
        ));
    }
    // The next child becomes pid 1 of a new pid namespace.
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| Error::Io {
        what: "unshare(CLONE_NEWPID)".into(),
        source: e.into(),
    })?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(ENV, "1");
    // SAFETY: only async-signal-safe syscalls (unshare, prctl) run between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        what: "start the sandboxed run".into(),
        source,
    })?;
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only calls kill(2) on a pid read atomically.
        unsafe { signal::signal(sig, SigHandler::Handler(forward)) }.map_err(|e| Error::Io {
            what: "install signal handler".into(),
            source: e.into(),
        })?;
    }
    let status = child.wait().map_err(|source| Error::Io {
        what: "wait for the sandboxed run".into(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(9)))
}

/// First thing the sandboxed child does: private mounts, its own /proc, and
/// handlers so that SIGINT/SIGTERM end the run in order (pid 1 ignores
/// signals it has no handler for).
pub fn init() -> Result<(), Error> {
    if std::process::id() != 1 {
        return Err(Error::Failed(format!(
            "{ENV} is set but this is not a sandbox (unset it)"
        )));
    }
    let io = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| Error::Io {
            what,
            source: e.into(),
        }
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io("make mounts private"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(io("mount /proc"))?;
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal::signal(sig, SigHandler::Handler(note)) }
            .map_err(io("install signal handler"))?;
    }
    Ok(())
}
