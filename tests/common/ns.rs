//! A fresh anonymous network namespace with a thread that lives in it and
//! runs jobs there, for tests that drive a binary in namespaces of their
//! own (needs root). Nothing is ever done in the test process's own
//! network namespace: every link, address, route and sysctl is set from the
//! namespace's thread, and commands spawned by a job start in it.

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::sched::{unshare, CloneFlags};

type Job = Box<dyn FnOnce() + Send>;

pub struct Ns {
    jobs: Option<mpsc::Sender<Job>>,
    /// `/proc/PID/task/TID/ns/net` of the thread, for `ip link set netns`.
    pub path: String,
    thread: Option<JoinHandle<()>>,
}

fn netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("/proc/thread-self/ns/net")
        .ino()
}

impl Ns {
    pub fn new() -> Ns {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (path_tx, path_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let before = netns_inode();
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) (the test needs root)");
            assert_ne!(before, netns_inode(), "still in the original namespace");
            let path = format!(
                "/proc/{}/task/{}/ns/net",
                std::process::id(),
                nix::unistd::gettid()
            );
            path_tx.send(path).unwrap();
            for job in rx {
                job();
            }
        });
        let path = path_rx.recv().expect("the namespace thread died");
        Ns {
            jobs: Some(jobs),
            path,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the namespace's thread.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .expect("the namespace thread is alive");
        rx.recv().expect("the job panicked (see above)")
    }

    /// Runs a command in the namespace; returns (success, stdout + stderr).
    pub fn cmd(&self, argv: &[&str]) -> (bool, String) {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.run(move || {
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    }

    /// Runs each `ip` command line in the namespace; each must succeed.
    pub fn ip(&self, cmds: &[&str]) {
        for c in cmds {
            let mut argv = vec!["ip"];
            argv.extend(c.split_whitespace());
            let (ok, out) = self.cmd(&argv);
            assert!(ok, "ip {c}: {out}");
        }
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        // /proc/sys/net is the namespace of the opening thread.
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}")))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
