//! The scheduling class a dataplane binary may ask for: with a real-time
//! priority (`--rt-priority N`, or the `HOPLAB_RT_PRIORITY` environment
//! variable, 1–99), the process's threads run under `SCHED_FIFO`, so a
//! thread woken by a packet runs at once instead of waiting for a CPU
//! that ordinary (`SCHED_OTHER`) processes hold, as the kernel's own
//! forwarding (in softirq context) does. The kernel keeps a share of each
//! CPU for ordinary processes (`sched_rt_runtime_us`), and the loops
//! block whenever they have nothing to read. Off by default.
//!
//! It does not know what the threads do; it only sets the class of the
//! calling thread, with `SCHED_RESET_ON_FORK`: threads and processes it
//! starts later (the gateway's firewall thread and its `nft` runs) are
//! ordinary; a reading thread calls [`apply`] itself.

use anyhow::Context;

/// The environment variable read when `--rt-priority` is not given.
pub const RT_PRIORITY_ENV: &str = "HOPLAB_RT_PRIORITY";

/// The real-time priority asked for: the flag if given, else
/// [`RT_PRIORITY_ENV`] (a number, or `off`), else none.
pub fn rt_priority_setting(flag: Option<u8>) -> anyhow::Result<Option<u8>> {
    if flag.is_some() {
        return Ok(flag.filter(|&p| p > 0));
    }
    match std::env::var(RT_PRIORITY_ENV) {
        Ok(v) if v == "off" || v.is_empty() => Ok(None),
        Ok(v) => parse_priority(&v)
            .map(|p| Some(p).filter(|&p| p > 0))
            .map_err(|e| anyhow::anyhow!("{RT_PRIORITY_ENV}: {e}")),
        Err(_) => Ok(None),
    }
}

/// A priority 0–99 (0: none), the `--rt-priority` flag's value.
pub fn parse_priority(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(p) if p <= 99 => Ok(p),
        _ => Err(format!("{s:?}: expected a priority from 0 (none) to 99")),
    }
}

/// Puts the calling thread under `SCHED_FIFO` at `priority` (what it
/// starts later is not); nothing for `None`.
pub fn apply(priority: Option<u8>) -> anyhow::Result<()> {
    let Some(p) = priority else {
        return Ok(());
    };
    let param = libc::sched_param {
        sched_priority: i32::from(p),
    };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives
    // the call; pid 0 is the calling thread.
    let r = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sched_setscheduler(SCHED_FIFO, {p}) (needs CAP_SYS_NICE)"));
    }
    tracing::info!(priority = p, "SCHED_FIFO");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse() {
        assert_eq!(parse_priority("10"), Ok(10));
        assert_eq!(parse_priority("0"), Ok(0));
        assert!(parse_priority("100").is_err());
        assert!(parse_priority("-1").is_err());
        assert!(parse_priority("x").is_err());
    }
}
