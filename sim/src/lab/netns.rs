//! Network namespaces made by the run, held by file descriptor.
//!
//! A host is an anonymous network namespace: a thread unshares, opens
//! `/proc/thread-self/ns/net` and exits. The descriptor keeps the namespace
//! alive; when the run's process ends, every host namespace goes with it.
//! Nothing is bind-mounted and nothing has a name outside this process.
//!
//! `setns` moves only the calling thread, so work inside a host runs on a
//! short-lived thread of its own ([`NetNs::run`]): sockets, TUN devices and
//! netlink connections created there stay bound to the host after the thread
//! ends, and the caller's thread never changes namespace.
//!
//! Knows namespaces and threads, not hosts' contents.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug)]
pub struct NetNs {
    name: String,
    fd: OwnedFd,
}

impl NetNs {
    /// Create a fresh network namespace for host `name`.
    pub fn create(name: &str) -> io::Result<NetNs> {
        let fd = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<OwnedFd> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                Ok(File::open("/proc/thread-self/ns/net")?.into())
            })
            .join()
            .expect("netns thread panicked")
        })?;
        Ok(NetNs {
            name: name.to_string(),
            fd,
        })
    }

    /// The namespace of the calling thread (the sandbox's own).
    pub fn current(name: &str) -> io::Result<NetNs> {
        Ok(NetNs {
            name: name.to_string(),
            fd: File::open("/proc/thread-self/ns/net")?.into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Run `f` on a thread inside this namespace and return its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<T> {
                setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })
            .join()
            .expect("thread inside netns panicked")
        })
    }

    /// Write a `net.*` sysctl of this namespace (`net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
    }

    /// A command that runs inside this namespace (it enters before exec).
    /// Its pre-exec hook owns a duplicate of the namespace's descriptor, so
    /// the command may outlive `self`; if the duplicate cannot be made,
    /// spawning the command fails with that error.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd: Result<OwnedFd, i32> = self
            .fd
            .try_clone()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EBADF));
        let enter = move || match &fd {
            Ok(fd) => setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from),
            Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
        };
        // SAFETY: between fork and exec the hook only calls setns(2), which
        // is async-signal-safe, or builds an error without allocating; the
        // descriptor it uses is its own (close-on-exec), as long-lived as
        // the command.
        unsafe { cmd.pre_exec(enter) };
        cmd
    }
}
