//! CPU time, for CPU seconds per Gbit: this process's (`getrusage`
//! `RUSAGE_SELF`: the benchmark's client and server threads, with the
//! kernel work done on their behalf — on a veth, the receive side's
//! softirq mostly runs in the sender's system call) and that of the
//! dataplane processes this process started (the net managers and the
//! gateway: `utime + stime` of `/proc/PID/stat`, the numbers `getrusage`
//! gives a process about itself; `RUSAGE_CHILDREN` counts only children
//! already waited for).
//!
//! It knows the dataplane binaries only by their command names.

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;

/// The command names (`/proc/PID/comm`) of the dataplane processes.
const DATAPLANE: [&str; 2] = ["netmanager", "gateway"];

/// CPU seconds (user + system) used so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuTimes {
    /// This process.
    pub own: f64,
    /// The dataplane processes this process started, together.
    pub dataplane: f64,
}

impl CpuTimes {
    pub(super) fn now() -> CpuTimes {
        let own = getrusage(UsageWho::RUSAGE_SELF)
            .map(|u| {
                (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6
            })
            .unwrap_or(0.0);
        CpuTimes {
            own,
            dataplane: dataplane_children(),
        }
    }

    /// What was used since `earlier`.
    pub(super) fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            own: (self.own - earlier.own).max(0.0),
            dataplane: (self.dataplane - earlier.dataplane).max(0.0),
        }
    }
}

/// `utime + stime` in seconds of this process's children that are
/// dataplane binaries.
fn dataplane_children() -> f64 {
    let me = std::process::id();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| parse_stat(&stat))
        .filter(|s| s.ppid == me && DATAPLANE.contains(&s.comm.as_str()))
        .map(|s| (s.utime + s.stime) as f64 / tick)
        .sum()
}

#[derive(Debug, PartialEq)]
struct Stat {
    comm: String,
    ppid: u32,
    utime: u64,
    stime: u64,
}

/// The fields of `/proc/PID/stat` used here: the command name (field 2,
/// in parentheses, may itself hold spaces and parentheses), ppid (4),
/// utime (14) and stime (15), in clock ticks.
fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    // Fields from 3 on.
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stat_fields_even_with_odd_command_names() {
        let s = "4242 (a) b) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 100 1000 10";
        assert_eq!(
            parse_stat(s),
            Some(Stat {
                comm: "a) b".into(),
                ppid: 17,
                utime: 250,
                stime: 31
            })
        );
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn this_process_uses_cpu() {
        let t0 = CpuTimes::now();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let d = CpuTimes::now().since(t0);
        assert!(d.own > 0.0, "{d:?}");
        assert_eq!(d.dataplane, 0.0);
    }
}
