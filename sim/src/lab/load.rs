//! A load step's client: `load.flows` flows, at most `load.concurrency` at
//! once, flow `i` from source port `sport_base + i` with its own payload
//! (`crate::load::payload`; HTTP: its own `X-Request-Id`,
//! `hoplab-STEP-FLOW`), each checked when its answer comes back. Run in
//! the client's namespace (threads started by the calling thread share
//! it); every wait is sliced as a single step's are, so an interrupt ends
//! the step within [`SLICE`](super::traffic::SLICE).
//!
//! What it returns is what the clients saw, counted ([`LoadSummary`]:
//! flows ok and failed, bytes verified, HTTP statuses and `X-Served-By`,
//! failures by what was seen). It knows nothing of the capture: who
//! answered a TCP or UDP flow, drops and retransmissions are the trace's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::traffic::{classify, l7_step, tcp, udp, Observed, Wait};
use super::{Proto, Step};
use crate::expect::Expect;
use crate::l7::client::ClientCtx;
use crate::load::{payload, Load, LoadSummary};

/// One flow's outcome.
enum Flow {
    /// Its answer checked: these bytes verified; HTTP: status, served by.
    Ok(u64, Option<(u16, Option<String>)>),
    /// What it saw instead; HTTP: the status, if any came.
    Failed(String, Option<(u16, Option<String>)>),
}

/// Send step `index`'s flows (it has a `load`) from the calling thread's
/// namespace; what the clients saw, counted.
pub fn run_load(
    step: &Step,
    index: usize,
    ctx: &ClientCtx,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> LoadSummary {
    let load = step.load.as_ref().expect("a load step");
    // The sample flows first, one at a time: what they meet (a round
    // robin's next choice) does not depend on the others' timing.
    let mut first = LoadSummary::default();
    for i in 0..load.sample {
        if cancelled() {
            break;
        }
        count(&mut first, flow(step, index, load, i, ctx, cancelled));
    }
    let next = AtomicU32::new(load.sample);
    let total = Mutex::new(first);
    std::thread::scope(|s| {
        for _ in 0..load.concurrency.min(load.flows) {
            s.spawn(|| {
                let mut mine = LoadSummary::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= load.flows || cancelled() {
                        break;
                    }
                    count(&mut mine, flow(step, index, load, i, ctx, cancelled));
                }
                merge(&mut total.lock().expect("no panics holding it"), mine);
            });
        }
    });
    let mut sum = total.into_inner().expect("no panics holding it");
    sum.flows = u64::from(load.flows);
    sum
}

fn count(s: &mut LoadSummary, f: Flow) {
    let http = match f {
        Flow::Ok(bytes, http) => {
            s.ok += 1;
            s.bytes_verified += bytes;
            http
        }
        Flow::Failed(why, http) => {
            s.failed += 1;
            *s.failures.entry(why).or_default() += 1;
            http
        }
    };
    if let Some((status, by)) = http {
        *s.status.entry(status).or_default() += 1;
        if let Some(by) = by {
            *s.answered_by.entry(by).or_default() += 1;
        }
    }
}

fn merge(into: &mut LoadSummary, from: LoadSummary) {
    into.ok += from.ok;
    into.failed += from.failed;
    into.bytes_verified += from.bytes_verified;
    let add = |a: &mut BTreeMap<String, u64>, b: BTreeMap<String, u64>| {
        for (k, v) in b {
            *a.entry(k).or_default() += v;
        }
    };
    add(&mut into.answered_by, from.answered_by);
    add(&mut into.failures, from.failures);
    for (k, v) in from.status {
        *into.status.entry(k).or_default() += v;
    }
}

/// Flow `i` of step `index`: sent, its answer checked.
fn flow(
    step: &Step,
    index: usize,
    load: &Load,
    i: u32,
    ctx: &ClientCtx,
    cancelled: &dyn Fn() -> bool,
) -> Flow {
    let to = SocketAddr::new(step.target.addr, step.target.port);
    let sport = load.sport(i);
    let w = Wait {
        deadline: Instant::now() + Duration::from_millis(step.timeout_ms),
        cancelled,
    };
    if let Some(l7) = &step.l7 {
        let id = format!("hoplab-{index}-{}", i + 1);
        let want = match &step.expect {
            Expect::Load(e) => e.status.unwrap_or(200),
            _ => 200,
        };
        return match l7_step(to, sport, l7, &id, ctx, &w).unwrap_or_else(classify) {
            Observed::Http {
                status,
                headers,
                body,
            } => {
                let by = (headers.iter())
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-served-by"))
                    .map(|(_, v)| v.clone());
                if status == want {
                    Flow::Ok(body.len() as u64, Some((status, by)))
                } else {
                    Flow::Failed(format!("HTTP {status}"), Some((status, by)))
                }
            }
            seen => Flow::Failed(seen.describe(), None),
        };
    }
    let p = payload(i, step.payload_bytes);
    let seen = match step.proto {
        Proto::Udp => udp(to, sport, &p, &w),
        _ => tcp(to, sport, (&p, p.len()), &w),
    }
    .unwrap_or_else(classify);
    match seen {
        Observed::Reply(b) if b == p => Flow::Ok(b.len() as u64, None),
        Observed::Reply(b) if crate::load::verify(&b) => {
            Flow::Failed("reply of another flow".into(), None)
        }
        Observed::Reply(_) => Flow::Failed("reply not the payload".into(), None),
        seen => Flow::Failed(seen.describe(), None),
    }
}
