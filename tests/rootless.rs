//! Rootless runs: `hoplab run` started as an unprivileged user (nobody,
//! 65534) makes its own user namespace and gives the reviewed traces; where
//! it cannot (no `/dev/net/tun` for the user, user namespaces forbidden) it
//! says so in one line and makes nothing.
//!
//! The test process is root; each run drops to 65534 between fork and exec.
//! The binaries and scenario files are copied into a fresh 0755 directory
//! under /tmp, since the target directory may not be open to nobody.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const NOBODY: u32 = 65534;

/// A fresh 0755 directory under /tmp with copies of `hoplab`, `netmanager`
/// and `gateway` (in `bin/`, siblings as `hoplab` expects them); removed
/// with everything in it when dropped.
struct Tmp {
    dir: PathBuf,
}

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/hoplab-rootless-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let t = Tmp { dir };
        t.mkdir(&t.dir, 0o755);
        let bin = t.dir.join("bin");
        t.mkdir(&bin, 0o755);
        for exe in [
            env!("CARGO_BIN_EXE_hoplab"),
            env!("CARGO_BIN_EXE_netmanager"),
            env!("CARGO_BIN_EXE_gateway"),
        ] {
            let exe = Path::new(exe);
            let to = bin.join(exe.file_name().unwrap());
            fs::copy(exe, &to).unwrap();
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
        }
        t.mkdir(&t.dir.join("scenarios"), 0o755);
        t
    }

    fn mkdir(&self, d: &Path, mode: u32) {
        fs::create_dir(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A copy of a shipped scenario, readable by everyone.
    fn scenario(&self, name: &str) -> PathBuf {
        let to = self.dir.join("scenarios").join(format!("{name}.yaml"));
        fs::copy(scenario_path(name), &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
        to
    }

    /// A scenario file of the test's own, readable by everyone.
    fn write_scenario(&self, name: &str, text: &str) -> PathBuf {
        let to = self.dir.join("scenarios").join(format!("{name}.yaml"));
        fs::write(&to, text).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
        to
    }

    /// An empty output directory owned by nobody.
    fn out(&self, tag: &str) -> PathBuf {
        let d = self.dir.join(format!("out-{tag}"));
        self.mkdir(&d, 0o755);
        std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
        d
    }

    /// `hoplab --quiet run SCENARIO --out OUT` from the copied binary, as
    /// the test process is (root); callers drop privileges.
    fn command(&self, scenario: &Path, out: &Path) -> Command {
        let mut cmd = Command::new(self.dir.join("bin/hoplab"));
        cmd.args(["--quiet", "run"])
            .arg(scenario)
            .arg("--out")
            .arg(out)
            .current_dir(&self.dir)
            // The siblings of the copied binary, not a developer's.
            .env_remove("HOPLAB_NETMANAGER")
            .env_remove("HOPLAB_GATEWAY")
            .env_remove("HOPLAB_SANDBOX")
            .stdin(Stdio::null());
        cmd
    }

    /// The same, as nobody.
    fn nobody(&self, scenario: &Path, out: &Path) -> Command {
        let mut cmd = self.command(scenario, out);
        as_nobody(&mut cmd);
        cmd
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Run `cmd` as uid and gid 65534. `CommandExt::groups` is unstable; std
/// clears the supplementary groups itself when a root parent sets `uid`
/// without `groups` (setgroups(0) before setuid; checked in
/// `nobody_has_no_supplementary_groups`). A `pre_exec` setgroups would come
/// too late: pre_exec closures run after the uid is dropped.
fn as_nobody(cmd: &mut Command) {
    cmd.uid(NOBODY).gid(NOBODY);
}

/// Drop to uid and gid 65534 with no supplementary groups, for `pre_exec`
/// closures that need root first. Only async-signal-safe syscalls
/// (setgroups, setresgid, setresuid), no allocation: callable between fork
/// and exec.
fn become_nobody() -> std::io::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(NOBODY), Gid::from_raw(NOBODY));
    setgroups(&[])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)?;
    Ok(())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The reviewed trace of scenario `name`.
fn reviewed(name: &str) -> String {
    let text = fs::read_to_string(hoplab_sim::snapshot::path(root(), name)).unwrap();
    hoplab_sim::snapshot::read_body(&text).to_string()
}

/// Every file and directory below `dir` (and `dir`).
fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
    into.push(dir.to_path_buf());
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(&p, into);
        } else {
            into.push(p);
        }
    }
}

/// What a rootless trace says beside the reviewed one: its user namespace
/// may not load BPF, so the kernel's drops are not recorded.
const NO_KERNEL_VERDICTS: &str =
    "kernel: its drops are not recorded: BPF is not permitted in a rootless run's user namespace";

/// The rootless `trace` without its line saying that the kernel's drops
/// are not recorded, which it must have.
fn without_kernel_verdicts(name: &str, trace: &str) -> String {
    let mut t = hoplab_sim::trace::Trace::from_yaml(trace).unwrap();
    let before = t.verdicts_unavailable.len();
    t.verdicts_unavailable.retain(|l| l != NO_KERNEL_VERDICTS);
    assert_eq!(
        before,
        t.verdicts_unavailable.len() + 1,
        "{name}: the rootless trace does not say `{NO_KERNEL_VERDICTS}`:\n{trace}"
    );
    t.to_yaml()
}

/// The rootless run `o` succeeded and its trace in `out` is the reviewed
/// one of `name` (without the kernel's drop verdicts, which a rootless run
/// cannot record).
fn assert_rootless_trace_reviewed(name: &str, o: &Output, out: &Path) {
    assert!(
        o.status.success(),
        "{name}: rootless run failed ({}):\n{}",
        o.status,
        stderr(o)
    );
    let trace = fs::read_to_string(out.join("trace.yaml")).expect("trace.yaml written");
    let trace = without_kernel_verdicts(name, &trace);
    let want = reviewed(name);
    assert!(
        trace.trim_end() == want.trim_end(),
        "{name}: the rootless trace differs from the reviewed one:\n{}",
        hoplab_sim::trace::diff(&want, &trace).join("\n")
    );
}

/// Run shipped scenario `name` as nobody; it must pass with the reviewed
/// trace (and say that the kernel's drops are not recorded) and leave only
/// files owned by nobody.
fn rootless_run_matches_snapshot(name: &str) {
    let tmp = Tmp::new(name);
    let sc = tmp.scenario(name);
    let out = tmp.out(name);
    let o = tmp.nobody(&sc, &out).output().unwrap();
    assert_rootless_trace_reviewed(name, &o, &out);
    let mut files = Vec::new();
    walk(&out, &mut files);
    for f in ["trace.yaml", "capture.pcapng", "report.md", "logs"] {
        assert!(files.contains(&out.join(f)), "{name}: no {f} in {files:?}");
    }
    for f in &files {
        let m = fs::symlink_metadata(f).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (NOBODY, NOBODY),
            "{name}: {} is not owned by nobody",
            f.display()
        );
    }
}

#[test]
fn nobody_has_no_supplementary_groups() {
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/self/status");
    as_nobody(&mut cmd);
    let o = cmd.output().unwrap();
    let status = String::from_utf8_lossy(&o.stdout);
    let line = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("Uid:"), ["65534"; 4], "{status}");
    assert_eq!(line("Gid:"), ["65534"; 4], "{status}");
    assert!(line("Groups:").is_empty(), "{status}");
}

#[test]
fn routed_pair_runs_rootless_with_the_reviewed_trace() {
    rootless_run_matches_snapshot("routed-pair");
}

#[test]
fn kube_proxy_dnat_runs_rootless_with_the_reviewed_trace() {
    rootless_run_matches_snapshot("kube-proxy-dnat");
}

/// Whether nobody may open /dev/net/tun for reading and writing.
fn tun_open_to_nobody() -> bool {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "test -r /dev/net/tun && test -w /dev/net/tun"]);
    as_nobody(&mut cmd);
    cmd.status().unwrap().success()
}

/// A scenario with a gateway and net managers needs TUN devices: it runs
/// rootless where nobody may open /dev/net/tun, and otherwise fails before
/// anything is made, naming the device and the fix.
#[test]
fn a_tun_scenario_runs_rootless_or_says_what_is_missing() {
    let name = "ext-to-svc-gateway-cluster";
    if tun_open_to_nobody() {
        rootless_run_matches_snapshot(name);
        return;
    }
    let before = host_state();
    let tmp = Tmp::new("tun");
    let sc = tmp.scenario(name);
    let out = tmp.out("tun");
    let o = tmp.nobody(&sc, &out).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    for want in [
        "/dev/net/tun is not open to uid 65534 (mode ",
        "chmod 0666 /dev/net/tun",
        "or run as root",
    ] {
        assert!(err.contains(want), "no `{want}` in: {err}");
    }
    assert!(
        pids_with(&out.display().to_string()).is_empty(),
        "a process of the refused run is left"
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "the refused run wrote output"
    );
    assert_eq!(before, host_state());
}

/// Where nobody may open /dev/net/tun, a scenario with a gateway and net
/// managers runs rootless with the reviewed trace. The machine's device
/// stays as it is: the child gets a mount namespace of its own in which a
/// 0666 node of the same device (10, 200), made on a tmpfs, is bind-mounted
/// over /dev/net/tun, and then becomes nobody.
#[test]
fn a_tun_scenario_runs_rootless_where_the_device_is_open() {
    let name = "ext-to-svc-gateway-cluster";
    let tmp = Tmp::new("tun-open");
    let sc = tmp.scenario(name);
    let out = tmp.out("tun-open");
    let dev = tmp.dir.join("dev");
    tmp.mkdir(&dev, 0o755);
    let cstr = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (dev_c, node_c) = (cstr(&dev), cstr(&dev.join("tun")));
    let mut cmd = tmp.command(&sc, &out);
    let hook = move || -> std::io::Result<()> {
        use nix::mount::{mount, MsFlags};
        use nix::sys::stat::{fchmodat, makedev, mknod, FchmodatFlags, Mode, SFlag};
        let none: Option<&std::ffi::CStr> = None;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
        mount(
            none,
            c"/",
            none,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            none,
        )?;
        mount(
            Some(c"tmpfs"),
            dev_c.as_c_str(),
            Some(c"tmpfs"),
            MsFlags::empty(),
            Some(c"mode=0755"),
        )?;
        let rw = Mode::from_bits_truncate(0o666);
        mknod(node_c.as_c_str(), SFlag::S_IFCHR, rw, makedev(10, 200))?;
        fchmodat(
            nix::fcntl::AT_FDCWD,
            node_c.as_c_str(),
            rw,
            FchmodatFlags::FollowSymlink,
        )?;
        mount(
            Some(node_c.as_c_str()),
            c"/dev/net/tun",
            none,
            MsFlags::MS_BIND,
            none,
        )?;
        become_nobody()
    };
    // SAFETY: between fork and exec the child only makes async-signal-safe
    // syscalls (unshare, mount, mknod, fchmodat, then those of
    // `become_nobody`) with C strings made before the fork and owned by the
    // closure (nix passes a `CStr` on without copying). The mounts are in
    // the child's own mount namespace, private from the start, and go away
    // with it.
    unsafe { cmd.pre_exec(hook) };
    let o = cmd.output().unwrap();
    assert_rootless_trace_reviewed(name, &o, &out);
    // Each wrote its counters and, beside them, its drop log.
    let files: Vec<std::path::PathBuf> = (fs::read_dir(out.join("counters")).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    let with = |ext: &str| {
        files
            .iter()
            .filter(|p| p.extension().unwrap() == ext)
            .count()
    };
    assert_eq!(with("txt"), 3, "the gateway and both net managers ran");
    assert_eq!(with("drops"), 3, "{files:?}");
    assert_eq!(files.len(), 6, "{files:?}");
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// A seccomp filter that fails unshare(2) with CLONE_NEWUSER with EPERM and
/// allows everything else: what container runtimes do.
fn no_userns_filter(arch: u32) -> [libc::sock_filter; 8] {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W};
    [
        // 0: seccomp_data.arch
        stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 4), // other arch: allow
        // 2: seccomp_data.nr
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_unshare as u32, 0, 2),
        // 4: the low 32 bits of args[0] (the flags), little endian
        stmt(BPF_LD | BPF_W | BPF_ABS, 16),
        jump(BPF_JMP | BPF_JSET | BPF_K, libc::CLONE_NEWUSER as u32, 1, 0),
        // 6
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
        // 7
        stmt(
            BPF_RET | BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
    ]
}

/// Where a seccomp filter forbids user namespaces (as in containers), the
/// run fails in one line that names the cause and the fix.
#[test]
fn forbidden_user_namespaces_are_named_in_one_line() {
    let Some(arch) = AUDIT_ARCH else {
        eprintln!("skipped: no seccomp audit arch for this target");
        return;
    };
    let tmp = Tmp::new("seccomp");
    let sc = tmp.scenario("routed-pair");
    let out = tmp.out("seccomp");
    let mut cmd = tmp.nobody(&sc, &out);
    let filter = no_userns_filter(arch);
    let hook = move || -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        // Required to install a filter without CAP_SYS_ADMIN (the uid is
        // already dropped here).
        nix::sys::prctl::set_no_new_privs()?;
        // SAFETY: prctl(2) is async-signal-safe; `prog` points into
        // `filter`, owned by the closure (copied into the child) and alive
        // for the call. The filter applies to this child and what it starts
        // only.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe syscalls (prctl) on
    // memory the closure owns, so it may run between fork and exec.
    unsafe { cmd.pre_exec(hook) };
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    for want in [
        "cannot make an unprivileged user namespace (EPERM",
        "a seccomp filter on this process forbids it",
        "or run as root",
    ] {
        assert!(err.contains(want), "no `{want}` in: {err}");
    }
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}

/// Where `user.max_user_namespaces` is 0, the run says so and how to raise
/// it. The limit is set in a user namespace made for the test's child only
/// (sysctls under /proc/sys/user belong to the user namespace reading
/// them), never on the machine.
#[test]
fn a_zero_user_namespace_limit_is_named_in_one_line() {
    let tmp = Tmp::new("maxuserns");
    let sc = tmp.scenario("routed-pair");
    let out = tmp.out("maxuserns");
    // The child unshares a user namespace and sends its pid; the test maps
    // root and nobody in it (only a parent with CAP_SETUID can map two
    // ids) and answers; the child sets the limit, becomes nobody and runs
    // hoplab.
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (ready_r_fd, go_w_fd) = (ready_r.as_raw_fd(), go_w.as_raw_fd());
    let mapper = std::thread::spawn(move || -> std::io::Result<()> {
        let mut pid = [0u8; 4];
        fs::File::from(ready_r).read_exact(&mut pid)?;
        let pid = i32::from_ne_bytes(pid);
        let map = format!("0 0 1\n{NOBODY} {NOBODY} 1\n");
        fs::write(format!("/proc/{pid}/uid_map"), &map)?;
        fs::write(format!("/proc/{pid}/gid_map"), &map)?;
        fs::File::from(go_w).write_all(b"g")
    });
    let mut cmd = tmp.command(&sc, &out);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let zero = c"/proc/sys/user/max_user_namespaces";
    let hook = move || -> std::io::Result<()> {
        use nix::fcntl::OFlag;
        // The child's copies of the test's ends: a test that gives up must
        // not leave the child waiting.
        nix::unistd::close(ready_r_fd)?;
        nix::unistd::close(go_w_fd)?;
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)?;
        let pid = nix::unistd::getpid().as_raw().to_ne_bytes();
        if nix::unistd::write(&ready_w, &pid)? != 4 {
            return Err(std::io::Error::other("pid not sent"));
        }
        let mut go = [0u8; 1];
        if nix::unistd::read(&go_r, &mut go)? != 1 {
            return Err(std::io::Error::other("not mapped"));
        }
        let limit = nix::fcntl::open(
            zero,
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        if nix::unistd::write(&limit, b"0\n")? != 2 {
            return Err(std::io::Error::other("limit not written"));
        }
        drop(limit);
        become_nobody()
    };
    // SAFETY: between fork and exec the hook only makes async-signal-safe
    // syscalls (close, unshare, getpid, read, write, open, setgroups,
    // setresgid, setresuid) on descriptors it owns (the pipes' ends it was
    // given, its copies of the others) and on buffers local to it. What it
    // changes (its user namespace, that namespace's limit, its ids) is its
    // own.
    unsafe { cmd.pre_exec(hook) };
    let child = cmd.spawn();
    // The test's copies of the child's ends, held by the hook: closed here
    // so that a child that dies early gives the mapper end-of-file.
    drop(cmd);
    let o = child.unwrap().wait_with_output().unwrap();
    mapper.join().unwrap().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    for want in [
        "cannot make an unprivileged user namespace (ENOSPC",
        "user.max_user_namespaces = 0",
        "sysctl -w user.max_user_namespaces=",
        "or run as root",
    ] {
        assert!(err.contains(want), "no `{want}` in: {err}");
    }
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
}

/// Wait until the run's `sleep MARKER` runs, as nobody.
fn wait_sleeper(marker: &str) {
    let sleeper = format!("sleep {marker}");
    let t = Instant::now();
    while pids_with(&sleeper).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the rootless run never started its process"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in pids_with(&sleeper) {
        let uid = fs::metadata(format!("/proc/{pid}")).unwrap().uid();
        assert_eq!(uid, NOBODY, "the run's process is not nobody's");
    }
}

/// Within 2 s, no process has `marker` or `out` on its command line.
fn assert_all_gone(marker: &str, out: &Path, what: &str) {
    let t = Instant::now();
    while !pids_with(marker).is_empty() || !pids_with(&out.display().to_string()).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a process survived the {what} rootless run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A rootless run that fails halfway (a process exits at once, after the
/// topology and host a's process are up) leaves nothing behind.
#[test]
fn a_rootless_run_that_fails_halfway_leaves_nothing() {
    let marker = "4242.201";
    let tmp = Tmp::new("halfway");
    let sc = tmp.write_scenario(
        "rootless-halfway",
        &sleeper_scenario(
            marker,
            100,
            "  c:\n    processes:\n      - {name: broken, cmd: [\"false\"], ready: {tcp_listen: 80}}",
        ),
    );
    let out = tmp.out("halfway");
    let before = host_state();
    let o = tmp.nobody(&sc, &out).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("hosts.c.processes broken: exited"), "{err}");
    assert_all_gone(marker, &out, "failed");
    assert_eq!(before, host_state());
}

/// SIGINT stops a rootless run in order (the signal is forwarded to its
/// pid 1 inside the user namespace): what was captured is kept and
/// nothing is left.
#[test]
fn an_interrupted_rootless_run_stops_and_leaves_nothing() {
    let marker = "4242.202";
    let tmp = Tmp::new("sigint");
    let sc = tmp.write_scenario("rootless-sigint", &sleeper_scenario(marker, 30_000, ""));
    let out = tmp.out("sigint");
    let before = host_state();
    let child = tmp
        .nobody(&sc, &out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_sleeper(marker);
    // Into the 30 s traffic step, with something captured to keep.
    assert!(
        sleeper_step_sent(marker, Duration::from_secs(10)),
        "the rootless run's step never sent its datagram"
    );
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the rootless run did not stop on SIGINT"
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("interrupted by signal"),
        "{}",
        stderr(&o)
    );
    assert_all_gone(marker, &out, "interrupted");
    let trace = fs::read_to_string(out.join("trace.yaml")).expect("trace of the interrupted run");
    assert!(trace.contains("a/eth0 out"), "{trace}");
    assert_eq!(before, host_state());
}

/// A SIGTERM in a rootless run's first milliseconds (while it enters its
/// user namespace and starts its sandbox) ends it as for root: promptly,
/// with the status of a run ended by SIGTERM, nothing left behind.
#[test]
fn a_signal_in_the_first_milliseconds_ends_a_rootless_run() {
    let marker = "4242.204";
    let tmp = Tmp::new("early");
    let sc = tmp.write_scenario("rootless-early", &sleeper_scenario(marker, 10_000, ""));
    let before = host_state();
    for after_child in [false, true] {
        for delay_ms in [0, 2, 5, 10, 20] {
            let out = tmp.out(&format!("early-{after_child}-{delay_ms}"));
            let what = sigterm_early(tmp.nobody(&sc, &out), &out, after_child, delay_ms);
            assert_all_gone(marker, &out, &what);
        }
    }
    assert_eq!(before, host_state());
}

/// Killing a rootless `hoplab` (SIGKILL: no handler runs) takes every
/// process of the run with it, as for root.
#[test]
fn a_killed_rootless_run_takes_every_process_with_it() {
    let marker = "4242.203";
    let tmp = Tmp::new("kill");
    let sc = tmp.write_scenario("rootless-kill", &sleeper_scenario(marker, 30_000, ""));
    let out = tmp.out("kill");
    let before = host_state();
    let mut child = tmp.nobody(&sc, &out).spawn().unwrap();
    wait_sleeper(marker);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_all_gone(marker, &out, "killed");
    assert_eq!(before, host_state());
}
