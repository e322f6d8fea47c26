//! The Oakestra vocabulary of a scenario, and the one way from the file to
//! the lab: [`parse`] = the file as written ([`crate::scenario`]) →
//! [`expand`] (the file's own hosts, links and steps copied; clusters and
//! services by [`cluster`] (their underlay and sites by [`underlay`]),
//! gateway and externals by [`gateway`], each
//! validate → allocate addresses → emit) → [`crate::lab::check::check`],
//! every error of each reported; [`load`] adds what the lab asks of this
//! machine ([`crate::lab::check::system`]).
//! The service managers' [`Plan`] is an output of the expansion;
//! [`control_plane`] serves it during a run.
//!
//! Knows the file's Oakestra sections and the lab model; nothing here
//! builds or runs anything, and neither the file nor the lab imports this.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use crate::lab::{self, Lab};
use crate::scenario::{self, LoadError, Scenario, ScenarioErrors};
use crate::values::{bad, Gather, Invalid, Proto};

pub mod cluster;
pub mod control_plane;
pub mod gateway;
mod moves;
mod plain;
pub mod plan;
pub mod underlay;

pub use plan::{NodePlan, Plan};

/// A scenario expanded: the lab it runs in and what its service managers
/// serve. Reads as its lab (`x.hosts`, `&x` where a `&Lab` is wanted).
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub lab: Lab,
    pub plan: Plan,
}

impl Deref for Expanded {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for Expanded {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

/// Read, check and expand a scenario file, and check what it asks of this
/// machine ([`lab::check::system`]: sysctls, programs, firewall scripts).
pub fn load(path: &Path) -> Result<Expanded, LoadError> {
    let (text, name) = scenario::read(path)?;
    let x = parse(path, &name, &text)?;
    scenario::check_all(path, &text, lab::check::system::check(&x.lab))?;
    Ok(x)
}

/// Parse, check and expand scenario text; `file` is only used in errors.
/// Pure: what the machine has is [`load`]'s to check.
/// Every error is reported: the file's own checks, the expansion's, the
/// lab's (the same problem found twice is reported once).
pub fn parse(file: &Path, name: &str, text: &str) -> Result<Expanded, ScenarioErrors> {
    let (sc, mut found) = scenario::parse_unchecked(file, name, text)?;
    let x = match expand(&sc) {
        Ok(x) => {
            found.extend(lab::check::check(&x.lab));
            Some(x)
        }
        Err(more) => {
            found.extend(more);
            None
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    found.retain(|e| seen.insert((e.field.clone(), e.message.clone())));
    scenario::check_all(file, text, found)?;
    Ok(x.expect("no error, so expanded"))
}

/// The lab `sc` (checked on its own) expands to, and its plan; errors are
/// the file's field paths. Clusters and the gateway stop at their first
/// error (what follows is allocated from them); the steps' control
/// actions are all checked.
pub fn expand(sc: &Scenario) -> Result<Expanded, Vec<Invalid>> {
    let mut lab = plain::copy(sc);
    let plan = cluster::expand(sc, &mut lab).map_err(|e| vec![e])?;
    gateway::expand(sc, &plan, &mut lab).map_err(|e| vec![e])?;
    let mut found = moves::expand(sc, &plan, &mut lab);
    tun_queues(sc, &mut lab, &mut found);
    impair_named_links(sc, &mut lab, &mut found);
    for (i, s) in sc.traffic.iter().enumerate() {
        found.gather(check_step(sc, i, s));
    }
    check_unexposes(sc, &mut found);
    if !found.is_empty() {
        return Err(found);
    }
    Ok(Expanded { lab, plan })
}

/// Each cluster's `frag_timeout_ms` checked; each node's `txqueuelen`,
/// checked, given to its TUNs.
fn tun_queues(sc: &Scenario, lab: &mut Lab, found: &mut Vec<Invalid>) {
    for (c, cl) in sc.clusters.iter().enumerate() {
        if cl
            .frag_timeout_ms
            .is_some_and(|t| !(1..=60_000).contains(&t))
        {
            found.gather(bad(
                format!("clusters[{c}].frag_timeout_ms"),
                "give a fragment timeout of 1 to 60000 ms",
            ));
        }
        for (n, node) in cl.nodes.iter().enumerate() {
            let Some(q) = node.txqueuelen else { continue };
            if !(1..=100_000).contains(&q) {
                found.gather(bad(
                    format!("clusters[{c}].nodes[{n}].txqueuelen"),
                    "give a transmit queue length of 1 to 100000",
                ));
                continue;
            }
            if let Some(h) = lab.hosts.get_mut(&node.name) {
                for t in h.tuns.values_mut() {
                    t.txqueuelen = Some(q);
                }
            }
        }
    }
}

/// The top-level `impair` section: each entry's impairments checked, and
/// given to the link (the file's or a generated one) that has its end.
fn impair_named_links(sc: &Scenario, lab: &mut Lab, found: &mut Vec<Invalid>) {
    for (i, li) in sc.impair.iter().enumerate() {
        let f = format!("impair[{i}]");
        let im = li.impair();
        let problems = im.problems();
        for (field, message) in &problems {
            let field = field
                .replacen("a_to_b", "out", 1)
                .replacen("b_to_a", "in", 1);
            let message = message.replace("give a_to_b or b_to_a", "give out or in");
            found.gather(bad(
                match field.as_str() {
                    "" => f.clone(),
                    _ => format!("{f}.{field}"),
                },
                message,
            ));
        }
        if problems.is_empty() {
            if let Err(message) = lab::impair::attach(lab, im) {
                found.gather(bad(format!("{f}.link"), message));
            }
        }
    }
}

/// A step removes only an exposure there is at that point: the gateway's
/// own, and the earlier steps' (a step unexposes before it exposes).
fn check_unexposes(sc: &Scenario, found: &mut Vec<Invalid>) {
    let Some(g) = &sc.gateway else { return };
    let mut exposed: std::collections::BTreeSet<(Proto, u16, bool)> = g
        .expose
        .iter()
        .map(|e| (e.proto, e.port, e.service.is_ipv6()))
        .collect();
    for (i, s) in sc.traffic.iter().enumerate() {
        for (j, u) in s.unexpose.iter().enumerate() {
            if !exposed.remove(&(u.proto, u.port, u.v6)) {
                let v = if u.v6 { " (IPv6)" } else { "" };
                found.gather(bad(
                    format!("traffic[{i}].unexpose[{j}]"),
                    format!(
                        "{} port {}{v} is not exposed at this step: the gateway and earlier steps do not expose it",
                        u.proto, u.port
                    ),
                ));
            }
        }
        for e in &s.expose {
            exposed.insert((e.proto, e.port, e.service.is_ipv6()));
        }
    }
}

/// A step's control actions name what the Oakestra sections define: a
/// service manager, service managers at all, a gateway.
fn check_step(sc: &Scenario, i: usize, s: &scenario::Step) -> Result<(), Invalid> {
    let f = format!("traffic[{i}]");
    if let Some((name, _)) = s.name_target() {
        if s.load.is_some() {
            return bad(
                format!("{f}.to"),
                format!("`{name}` is a name: a load step dials an address"),
            );
        }
        let resolver = sc.hosts.get(&s.from).and_then(|h| h.resolver);
        if resolver.is_none() {
            return bad(
                format!("{f}.to"),
                format!(
                    "`{name}` is a name: give host `{}` a `resolver` to ask for it",
                    s.from
                ),
            );
        }
    }
    for (field, m) in [
        ("fail_manager", &s.fail_manager),
        ("recover_manager", &s.recover_manager),
        ("stop_manager", &s.stop_manager),
    ] {
        if let Some(m) = m {
            if m != "root" && !sc.clusters.iter().any(|c| &c.name == m) {
                return bad(
                    format!("{f}.{field}"),
                    format!("no cluster `{m}` (name a cluster, or `root`)"),
                );
            }
        }
    }
    if !s.invalidate.is_empty() && sc.clusters.is_empty() {
        return bad(
            format!("{f}.invalidate"),
            "invalidation needs `clusters` (service managers)",
        );
    }
    let Some(g) = &sc.gateway else {
        let what = [
            ("expose", s.expose.is_empty()),
            ("unexpose", s.unexpose.is_empty()),
            ("expose_refused", s.expose_refused.is_empty()),
        ]
        .into_iter()
        .find(|(_, empty)| !empty);
        if let Some((what, _)) = what {
            return bad(format!("{f}.{what}"), "exposures need a `gateway`");
        }
        return Ok(());
    };
    for (j, e) in s.expose.iter().enumerate() {
        gateway::check_expose(&format!("{f}.expose[{j}]"), e, g)?;
    }
    for (j, e) in s.expose_refused.iter().enumerate() {
        if gateway::check_expose("", e, g).is_ok() {
            return bad(
                format!("{f}.expose_refused[{j}]"),
                format!(
                    "the gateway accepts {} {} -> {}: list it under `expose`",
                    e.proto, e.port, e.service
                ),
            );
        }
    }
    for (j, u) in s.unexpose.iter().enumerate() {
        if u.proto == Proto::Icmp && u.port != 0 {
            return bad(
                format!("{f}.unexpose[{j}].port"),
                "icmp has no ports: unexpose it as `{proto: icmp}`",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
