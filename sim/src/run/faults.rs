//! A step's fault actions, before its client runs: interfaces set down
//! and up (`link: {down, up}`, waited for until operationally up), processes killed
//! (`kill`: SIGKILL, `terminate`: SIGTERM, each waited for) and started
//! again (`restart`: stopped first when running, then started as at the
//! start of the run and waited for until ready). What each did goes into
//! the trace's `processes`, in words that do not depend on timing, with
//! what a restart loses (a net manager's conversion table and resolution
//! cache; a gateway's flows and the exposures added at run time).
//!
//! Then the step's control-plane actions ([`control_plane`]): a service
//! manager back (after a stop, once its net managers have synced), down,
//! failing; invalidations, each waited for until every net manager told
//! has acknowledged it.
//!
//! Knows the run's processes, not why the scenario kills them, nor the
//! traffic: what the kill did to the flows is the capture's to show.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::Started;
use crate::lab::{dataplane, process, Process, Step};
use crate::oakestra::Expanded;
use crate::Error;

/// How long a signalled process has to end before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How long the lab is left to settle before a step's faults: the last
/// packets of the steps before (a closing ACK on its way through a net
/// manager) reach their end first, so what a fault cuts is the step's
/// own traffic, the same in every run.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Step `i`'s links down, links up, kills, terminations, then restarts.
pub(super) fn before_step(
    (sc, rt): (&Expanded, &tokio::runtime::Runtime),
    started: &mut Started,
    out: &Path,
    i: usize,
    step: &Step,
) -> Result<(), Error> {
    let at = format!("traffic[{i}] {}", step.name);
    let lists = [
        &step.link_down,
        &step.link_up,
        &step.kill,
        &step.terminate,
        &step.restart,
    ];
    if lists.iter().all(|l| l.is_empty()) && step.moves.is_empty() {
        return Ok(());
    }
    crate::lab::traffic::sleep(SETTLE, &crate::lab::sandbox::interrupted);
    for (list, up) in [(&step.link_down, false), (&step.link_up, true)] {
        for x in list {
            let (h, ifname) = x.split_once('/').expect("checked: HOST/IFNAME");
            let oper = rt.block_on(started.topo.set_link(h, ifname, up))?;
            if !up {
                // The peer loses its carrier only when the kernel's link
                // watch gets to it (up to a second later); until then what
                // the peer's host sends is handed to the veth and lost
                // silently, after it the peer refuses it (ENOBUFS). Wait,
                // so the step's outcome does not depend on when.
                if let Some((ph, pif)) = veth_peer(sc, h, ifname) {
                    rt.block_on(started.topo.wait_oper_down(ph, pif))?;
                }
            }
            started.events.push(match (up, oper) {
                (false, _) => format!("{at}: link down {x}"),
                (true, true) => format!("{at}: link up {x}: operationally up"),
                (true, false) => format!(
                    "{at}: link up {x}: not operationally up within 3 s (a veth end whose peer is down)"
                ),
            });
        }
    }
    for id in &step.kill {
        stop(started, &at, "kill", id, Signal::SIGKILL);
        tun_down(sc, rt, started, &at, id)?;
    }
    for id in &step.terminate {
        stop(started, &at, "terminate", id, Signal::SIGTERM);
        tun_down(sc, rt, started, &at, id)?;
    }
    for id in &step.restart {
        restart(sc, started, out, &at, id)?;
    }
    for m in &step.moves {
        move_instance(rt, started, &at, m)?;
        tell_net_managers(sc, started, out, &at, m)?;
    }
    Ok(())
}

/// Instance `m.host` to its new node: its namespace re-attached, then the
/// service managers' plan replaced (every service IP whose answer changed
/// invalidated, each acknowledged by the net managers that held it).
fn move_instance(
    rt: &tokio::runtime::Runtime,
    started: &mut Started,
    at: &str,
    m: &crate::lab::Move,
) -> Result<(), Error> {
    rt.block_on(started.topo.reattach(m))?;
    let list = |a: &[crate::values::Cidr]| {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut line = format!(
        "{at}: move {} from {} to {}: {}/{} down (was {}), {}/{} up on {}'s bridge with {}",
        m.host,
        m.from_node,
        m.to_node,
        m.host,
        m.old_if,
        list(&m.old_addr),
        m.host,
        m.new_if,
        m.to_node,
        list(&m.addr)
    );
    if let Some(c) = started.control.as_ref() {
        let mut plan = c.plan();
        if let Some(inst) = plan
            .services
            .get_mut(&m.service)
            .and_then(|(_, is)| is.iter_mut().find(|i| i.instance_number == m.instance))
        {
            for a in &m.addr {
                match a.addr {
                    IpAddr::V4(v4) => inst.ns_ip = v4,
                    IpAddr::V6(v6) => inst.ns_ip6 = Some(v6),
                }
            }
            inst.node = m.node_addr;
            inst.coords = m.coords;
        }
        let (changed, acked) = c.replace_plan(plan, &crate::lab::sandbox::interrupted)?;
        let ips: Vec<String> = changed.iter().map(ToString::to_string).collect();
        line.push_str(&format!(
            "; the service managers' plan updated, {} invalidated: {acked} net manager{} acknowledged",
            ips.join(", "),
            if acked == 1 { "" } else { "s" }
        ));
    }
    started.events.push(line);
    Ok(())
}

/// The net managers of a move's two nodes told, over their control
/// sockets, that the instance left one and runs on the other, so its own
/// new flows leave the new node with its instance IP as before the move.
/// A net manager that is not running (killed, or none on the node) is
/// said in the trace's processes; one that refuses is an error.
fn tell_net_managers(
    sc: &Expanded,
    started: &mut Started,
    out: &Path,
    at: &str,
    m: &crate::lab::Move,
) -> Result<(), Error> {
    let ctl = out.join("ctl");
    let lines = [
        (&m.from_node, format!("instance remove {}", m.old_ns)),
        (&m.to_node, format!("instance add {}", m.local)),
    ];
    for (node, line) in lines {
        let Some((name, nm)) = sc.hosts.get(node.as_str()).and_then(|h| {
            h.processes
                .iter()
                .find_map(|p| p.netmanager.as_ref().map(|nm| (&p.name, nm)))
        }) else {
            continue;
        };
        let id = format!("{node}/{name}");
        if let Some(how) = started.ended(&id) {
            started.events.push(format!(
                "{at}: {id} not told `{line}`: process ended ({how})"
            ));
            continue;
        }
        match crate::lab::gateway_ctl::answer(&nm.control(&ctl), &line) {
            Ok(a) if a.trim() == "ok" => started.events.push(format!("{at}: {id} told `{line}`")),
            Ok(a) => {
                return Err(Error::Failed(format!(
                    "{at}: {id} refused `{line}`: {}",
                    a.trim()
                )))
            }
            Err(source) => {
                return Err(Error::Io {
                    what: format!("{at}: telling {id} `{line}`"),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// Step `i`'s service-manager actions, in order: `recover_manager` (after
/// a `stop_manager`, waited for until its net managers have reconnected
/// and synced), `stop_manager`, `fail_manager`, then `invalidate` (each
/// waited for until acknowledged). What a stop, a recovery after it, and
/// an invalidation no net manager held did goes into the trace's
/// `processes`. A recovery or an acknowledgement that does not come in
/// time is an error: the step fails.
pub(super) fn control_plane(started: &mut Started, i: usize, step: &Step) -> Result<(), Error> {
    let Some(c) = started.control.as_ref() else {
        return Ok(());
    };
    let at = format!("traffic[{i}] {}", step.name);
    let cancelled = &crate::lab::sandbox::interrupted;
    let mut lines = Vec::new();
    if let Some(m) = &step.recover_manager {
        lines.extend(
            c.recover(m, cancelled)?
                .into_iter()
                .map(|l| format!("{at}: {l}")),
        );
    }
    if let Some(m) = &step.stop_manager {
        lines.push(format!("{at}: {}", c.stop(m)));
    }
    if let Some(m) = &step.fail_manager {
        c.fail(m);
    }
    for ip in &step.invalidate {
        if c.invalidate(*ip, cancelled)? == 0 {
            lines.push(format!(
                "{at}: invalidate {ip}: no connected net manager holds it; \
                 one that reconnects learns it when it syncs"
            ));
        }
    }
    started.events.extend(lines);
    Ok(())
}

/// The TUN of a net manager or gateway `id` that ended, once the kernel
/// has taken its carrier away: from then on what is routed to it is
/// dropped before any capture sees it, in every run alike.
fn tun_down(
    sc: &Expanded,
    rt: &tokio::runtime::Runtime,
    started: &mut Started,
    at: &str,
    id: &str,
) -> Result<(), Error> {
    let (host, spec) = sc.process(id).expect("checked: a process of the lab");
    let tun = match (&spec.netmanager, &spec.gateway) {
        (Some(_), _) => dataplane::TUN_NAME,
        (None, Some(_)) => dataplane::GW_TUN,
        (None, None) => return Ok(()),
    };
    if !rt.block_on(started.topo.wait_oper_down(host, tun))? {
        started
            .events
            .push(format!("{at}: {host}/{tun} still up 3 s after {id} ended"));
    }
    Ok(())
}

/// Signal process `id` and wait for it to end.
fn stop(started: &mut Started, at: &str, verb: &str, id: &str, sig: Signal) {
    let line = match started.procs.iter_mut().find(|p| p.id() == id) {
        None => format!("{at}: {verb} {id}: not running"),
        Some(p) => match p.ended() {
            Some(e) => format!("{at}: {verb} {id}: had already ended: {e}"),
            None => format!("{at}: {verb} {id}: {}", p.signal(sig, GRACE)),
        },
    };
    started.told.insert(id.to_string());
    started.events.push(line);
}

/// Start process `id` again (stopped first when it runs), ready as at the
/// start of the run.
fn restart(
    sc: &Expanded,
    started: &mut Started,
    out: &Path,
    at: &str,
    id: &str,
) -> Result<(), Error> {
    let (host, spec) = sc.process(id).expect("checked: a process of the lab");
    let pos = started.procs.iter().position(|p| p.id() == id);
    let before = match pos {
        None => "it was not running".to_string(),
        Some(i) => {
            let p = &mut started.procs[i];
            match p.ended() {
                Some(e) => format!("it had ended: {e}"),
                None => format!("stopped first: {}", p.signal(Signal::SIGTERM, GRACE)),
            }
        }
    };
    let t = std::time::Instant::now();
    let r = process::restart(&started.topo.hosts[host].ns, spec, out)?;
    // Times go to the log only: the trace says what happened, not how fast.
    tracing::info!(
        "{at}: restart {id}: ready after {} ms",
        t.elapsed().as_millis()
    );
    started.told.remove(id);
    match pos {
        Some(i) => started.procs[i] = r,
        None => started.procs.push(r),
    }
    started.events.push(format!(
        "{at}: restart {id} ({before}): ready again{}",
        lost(spec)
    ));
    Ok(())
}

/// What a restarted process starts without, as real restarts do.
fn lost(p: &Process) -> String {
    if p.netmanager.is_some() {
        format!(
            "; attached to TUN {} again, with an empty conversion table and resolution cache: \
             the flows it had are unknown to it",
            dataplane::TUN_NAME
        )
    } else if p.gateway.is_some() {
        format!(
            "; attached to TUN {} again, its nftables table loaded again, with no flows: \
             the flows it had are unknown to it, exposures added at run time are gone",
            dataplane::GW_TUN
        )
    } else {
        String::new()
    }
}

/// The other end of the plain veth pair `host/ifname` (none for a bridge,
/// a TUN, or an impaired link, whose ends meet an element's namespace).
fn veth_peer<'a>(sc: &'a Expanded, host: &str, ifname: &str) -> Option<(&'a str, &'a str)> {
    sc.lab
        .links
        .iter()
        .filter(|l| l.impair.is_none())
        .find_map(|l| {
            let is = |e: &crate::lab::End| e.host == host && e.ifname == ifname;
            if is(&l.a) {
                Some((l.b.host.as_str(), l.b.ifname.as_str()))
            } else if is(&l.b) {
                Some((l.a.host.as_str(), l.a.ifname.as_str()))
            } else {
                None
            }
        })
}
