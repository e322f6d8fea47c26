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
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.raw_fd();
        // SAFETY: between fork and exec the child only calls setns(2), which
        // is async-signal-safe; `fd` is owned by `self`, open for as long as
        // the caller can spawn the command.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}
