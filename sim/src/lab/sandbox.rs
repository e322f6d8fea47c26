//! The run's own namespaces. `hoplab run` re-executes itself as the first
//! process of a new pid namespace, in a new network and mount namespace:
//!
//! * nothing a scenario builds is ever in, or linked to, the host's network
//!   namespace, so no scenario packet can leave the machine;
//! * the child is pid 1 of its namespace: when it exits, or is killed, the
//!   kernel kills every process of the run; it also dies with its parent
//!   (`PR_SET_PDEATHSIG`, and it does not start if the parent died before
//!   it asked for that), so killing `hoplab` kills the whole run;
//! * SIGINT, SIGTERM and SIGHUP are never lost, however early they come:
//!   blocked from before the child is made until its handlers are in place
//!   (see [`reexec`]), they end the run in order;
//! * host namespaces are held by descriptors of that process only, so they
//!   go away with it: no named namespace, link, mount or process survives.
//!
//! Without root, `hoplab` first enters an unprivileged user namespace of
//! its own (the caller's uid and gid mapped to 0, like `unshare -r`); the
//! pid, network and mount namespaces made after that belong to it, and so
//! do the links, nftables tables, sysctls and packet sockets a run makes in
//! them. It goes away with the last process of the run. What the caller's
//! uid cannot open outside (`/dev/net/tun`) stays closed inside: [`check`]
//! says so before anything is made.
//!
//! Knows namespaces, signals and the TUN device's rights; not what a lab
//! holds beyond whether it makes TUNs.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{access, getegid, geteuid, getuid, AccessFlags, Pid};

use super::Lab;
use crate::Error;

/// Set in the environment of the sandboxed child.
pub const ENV: &str = "HOPLAB_SANDBOX";

/// The device TUN interfaces are made and attached through.
const TUN_DEVICE: &str = "/dev/net/tun";

/// The signals that end a run in order: forwarded by the outer process,
/// noted by the sandbox's pid 1.
const ENDING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

static CHILD: AtomicI32 = AtomicI32::new(0);
/// The first ending signal the sandboxed run received, 0 before any.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // kill(2) is async-signal-safe; the handler is installed for
        // SIGINT, SIGTERM and SIGHUP only, which all convert.
        if let Ok(sig) = Signal::try_from(sig) {
            let _ = signal::kill(Pid::from_raw(pid), sig);
        }
    }
}

extern "C" fn note(sig: libc::c_int) {
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::Relaxed, Ordering::Relaxed);
}

/// The ending signals as a set, for blocking and unblocking them.
fn ending() -> SigSet {
    let mut set = SigSet::empty();
    for sig in ENDING {
        set.add(sig);
    }
    set
}

/// True inside the sandboxed child.
pub fn inside() -> bool {
    std::env::var_os(ENV).is_some()
}

/// Whether SIGINT, SIGTERM or SIGHUP reached the sandboxed run.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::Relaxed) != 0
}

/// The first signal that interrupted the sandboxed run, if one did.
pub fn signal() -> Option<Signal> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The exit status of a run ended by `sig`: 128 + its number, as a shell
/// reports a process the signal killed.
pub fn exit_status(sig: Signal) -> u8 {
    128 + sig as u8
}

/// Whether this run will be rootless: outside the sandbox, not root.
fn rootless() -> bool {
    !inside() && !geteuid().is_root()
}

/// Whether `sc` makes TUN devices: its hosts' `tuns` (the expansion of
/// clusters and the gateway adds the ones net managers and gateways attach
/// to).
fn needs_tun(sc: &Lab) -> bool {
    sc.hosts.values().any(|h| !h.tuns.is_empty())
}

/// Before [`reexec`], outside the sandbox: what a rootless run of `sc`
/// cannot do on this machine, as one line with the fix. Nothing is made.
/// Root runs, and the sandboxed child, pass.
///
/// A rootless run opens `/dev/net/tun` as root of its user namespace, which
/// has no rights over files of unmapped owners: the caller's own access is
/// what counts, checked here with access(2).
pub fn check(sc: &Lab) -> Result<(), Error> {
    if !rootless() || !needs_tun(sc) {
        return Ok(());
    }
    let uid = getuid();
    match access(TUN_DEVICE, AccessFlags::R_OK | AccessFlags::W_OK) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT) => Err(Error::Failed(format!(
            "scenario {} makes TUN devices but {TUN_DEVICE} does not exist: load the tun module \
             (modprobe tun) or create it (mknod -m 0666 {TUN_DEVICE} c 10 200), or run as root",
            sc.name
        ))),
        Err(e) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(TUN_DEVICE)
                .map(|m| format!("mode {:04o}", m.permissions().mode() & 0o7777))
                .unwrap_or_else(|_| e.desc().to_string());
            Err(Error::Failed(format!(
                "scenario {} makes TUN devices but {TUN_DEVICE} is not open to uid {uid} ({mode}): \
                 chmod 0666 {TUN_DEVICE} (the usual default), or run as root",
                sc.name
            )))
        }
    }
}

/// The contents of `path` (a sysctl, a /proc file), trimmed, if readable.
fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Why the system refused an unprivileged user namespace (`errno` from
/// `what`), and how to allow it, as one line.
fn userns_refused(what: &str, errno: Errno) -> Error {
    let max = read_sysctl("/proc/sys/user/max_user_namespaces");
    let debian = read_sysctl("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(false);
    let why = if max.as_deref() == Some("0") {
        "user namespaces are disabled (user.max_user_namespaces = 0); enable them with \
         sysctl -w user.max_user_namespaces=10000"
            .to_string()
    } else if matches!(errno, Errno::ENOSPC | Errno::EUSERS) {
        format!(
            "the limit on user namespaces is reached (user.max_user_namespaces = {}, here or in \
             an enclosing user namespace; nesting stops at 32); raise it with \
             sysctl -w user.max_user_namespaces=<more>",
            max.as_deref().unwrap_or("?")
        )
    } else if debian.as_deref() == Some("0") {
        "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); \
         enable them with sysctl -w kernel.unprivileged_userns_clone=1"
            .to_string()
    } else if apparmor.as_deref() == Some("1") {
        "AppArmor restricts unprivileged user namespaces \
         (kernel.apparmor_restrict_unprivileged_userns = 1); allow them with \
         sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for \
         hoplab with `userns,`)"
            .to_string()
    } else if seccomp {
        "a seccomp filter on this process forbids it (as container runtimes install); allow \
         unshare(CLONE_NEWUSER) in it (e.g. docker run --security-opt seccomp=unconfined)"
            .to_string()
    } else {
        "unprivileged user namespaces are forbidden here (a security module, a container or \
         a chroot); allow them"
            .to_string()
    };
    Error::Failed(format!(
        "cannot make an unprivileged user namespace ({errno:?} from {what}): {why}, or run as root"
    ))
}

/// Enter a new user namespace in which the caller's uid and gid are 0
/// (`unshare -r`): `deny` to setgroups, then one-line uid and gid maps.
/// The caller must be single-threaded.
fn enter_user_namespace() -> Result<(), Error> {
    let (uid, gid) = (geteuid(), getegid());
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| match e {
        Errno::EINVAL => Error::Io {
            what: "unshare(CLONE_NEWUSER) (hoplab has threads already)".into(),
            source: e.into(),
        },
        e => userns_refused("unshare(CLONE_NEWUSER)", e),
    })?;
    for (path, text) in [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {uid} 1\n")),
        ("/proc/self/gid_map", format!("0 {gid} 1\n")),
    ] {
        match std::fs::write(path, text) {
            Ok(()) => {}
            // Kernels before 3.19 have no setgroups file and need none.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.ends_with("setgroups") => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                return Err(userns_refused(
                    &format!("writing {path}"),
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EPERM)),
                ));
            }
            Err(source) => {
                return Err(Error::Io {
                    what: format!("write {path}"),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Run this same program with the same arguments inside fresh namespaces and
/// return its exit code. Call before any thread is started. Without root,
/// first enter a user namespace of its own (see the module doc).
///
/// No ending signal is lost, however early it comes: they are blocked from
/// here on, so one that arrives before the child exists stays pending and
/// is forwarded once its pid is known; the child starts with them blocked
/// (the mask survives exec), so they stay pending in it too until [`init`]
/// has its handlers (pid 1 of a pid namespace drops signals it has no
/// handler for).
pub fn reexec() -> Result<i32, Error> {
    let blocked = ending();
    let mut before = SigSet::empty();
    signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut before))
        .map_err(io("block signals"))?;
    for sig in ENDING {
        // SAFETY: the handler only calls kill(2) on a pid read atomically.
        unsafe { signal::signal(sig, SigHandler::Handler(forward)) }
            .map_err(io("install signal handler"))?;
    }
    let child = spawn(&blocked)?;
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    // Whatever came since the block is delivered now, and forwarded.
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&before), None)
        .map_err(io("unblock signals"))?;
    wait(child)
}

/// `e` as the error of doing `what`.
fn io(what: &str) -> impl FnOnce(Errno) -> Error {
    let what = what.to_string();
    move |e| Error::Io {
        what,
        source: e.into(),
    }
}

/// The sandboxed child: this program again, pid 1 of a new pid namespace,
/// in new network and mount namespaces, with `blocked` blocked.
fn spawn(blocked: &SigSet) -> Result<std::process::Child, Error> {
    let rootless = rootless();
    if rootless {
        enter_user_namespace()?;
    }
    // A namespace refused with EPERM even in our own user namespace: a
    // security module allows the user namespace but not what it is for.
    let refused = |what: &str, e: Errno| {
        if rootless && e == Errno::EPERM {
            userns_refused(what, e)
        } else {
            io(what)(e)
        }
    };
    // The next child becomes pid 1 of a new pid namespace.
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| refused("unshare(CLONE_NEWPID)", e))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(ENV, "1");
    let blocked = *blocked;
    // This process holds the write end until the child has exec'd (the
    // command, which owns both ends, is dropped after spawn returns): the
    // child sees it closed only if this process died.
    let (alive, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io("make a pipe"))?;
    let enter = move || -> std::io::Result<()> {
        // SAFETY: close(2) of the child's copy of a descriptor the closure
        // owns; nothing in the child uses it again before exec.
        unsafe { libc::close(alive_w.as_raw_fd()) };
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)?;
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        // A parent killed before the line above sends no death signal:
        // the write end is closed then (POLLHUP), and the run must not
        // start without it.
        let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::ZERO)? > 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Inherited from this process already; blocked again in case the
        // mask was reset on the way to exec.
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None)?;
        Ok(())
    };
    // SAFETY: only async-signal-safe syscalls (close, unshare, prctl, poll,
    // sigprocmask) run between fork and exec, and the errors they return
    // need no allocation.
    unsafe { cmd.pre_exec(enter) };
    cmd.spawn().map_err(|source| match source.raw_os_error() {
        Some(libc::EPERM) if rootless => userns_refused(
            "unshare(CLONE_NEWNET | CLONE_NEWNS) in the run's process",
            Errno::EPERM,
        ),
        _ => Error::Io {
            what: "start the sandboxed run".into(),
            source,
        },
    })
}

/// Wait for the sandboxed child; its exit code, or 128 + the signal that
/// killed it.
fn wait(mut child: std::process::Child) -> Result<i32, Error> {
    let status = child.wait().map_err(|source| Error::Io {
        what: "wait for the sandboxed run".into(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(9)))
}

/// Whether this process is in a user namespace other than the machine's
/// (whose uid map is the identity over every uid).
fn in_user_namespace() -> bool {
    read_sysctl("/proc/self/uid_map")
        .is_some_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// First thing the sandboxed child does: private mounts, its own /proc, and
/// handlers so that SIGINT/SIGTERM end the run in order (pid 1 ignores
/// signals it has no handler for).
///
/// In a user namespace the kernel refuses a new /proc (EPERM) where the
/// inherited one is partly hidden (containers mask `/proc/kcore` and
/// others). The run then goes on with the inherited /proc: it only uses
/// `/proc/self` and `/proc/thread-self` (its own executable, namespace
/// files, socket tables), which show the calling process and its network
/// namespace whichever pid namespace the mount belongs to, and
/// `/proc/sys/net`, which is per network namespace of the writer; only
/// the pid numbers listed under /proc are the outer namespace's.
pub fn init() -> Result<(), Error> {
    if std::process::id() != 1 {
        return Err(Error::Failed(format!(
            "{ENV} is set but this is not a sandbox (unset it)"
        )));
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io("make mounts private"))?;
    match mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) => {}
        Err(Errno::EPERM) if in_user_namespace() => {
            tracing::warn!(
                "cannot mount /proc in the user namespace (EPERM: the inherited /proc is partly \
                 hidden); going on with it"
            );
        }
        Err(e) => return Err(io("mount /proc")(e)),
    }
    for sig in ENDING {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal::signal(sig, SigHandler::Handler(note)) }
            .map_err(io("install signal handler"))?;
    }
    // Blocked since before this process existed (see [`reexec`]): what
    // came meanwhile is noted now. Threads started later inherit the mask.
    signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&ending()), None)
        .map_err(io("unblock signals"))?;
    Ok(())
}
