//! The Oakestra vocabulary of a scenario, and the one way from the file to
//! the lab: [`parse`] = the file as written ([`crate::scenario`]) →
//! [`expand`] (the file's own hosts, links and steps copied; clusters and
//! services by [`cluster`], gateway and externals by [`gateway`], each
//! validate → allocate addresses → emit) → [`crate::lab::check::check`].
//! The service managers' [`Plan`] is an output of the expansion;
//! [`control_plane`] serves it during a run.
//!
//! Knows the file's Oakestra sections and the lab model; nothing here
//! builds or runs anything, and neither the file nor the lab imports this.

use std::ops::{Deref, DerefMut};
use std::path::Path;

use crate::lab::{self, Lab};
use crate::scenario::{self, LoadError, Scenario, ScenarioError};
use crate::values::{bad, Invalid};

pub mod cluster;
pub mod control_plane;
pub mod gateway;
mod plain;
pub mod plan;

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

/// Read, check and expand a scenario file.
pub fn load(path: &Path) -> Result<Expanded, LoadError> {
    let (text, name) = scenario::read(path)?;
    Ok(parse(path, &name, &text)?)
}

/// Parse, check and expand scenario text; `file` is only used in errors.
pub fn parse(file: &Path, name: &str, text: &str) -> Result<Expanded, ScenarioError> {
    let sc = scenario::parse(file, name, text)?;
    let located = |e| scenario::located(file, text, e);
    let x = expand(&sc).map_err(located)?;
    lab::check::check(&x.lab).map_err(located)?;
    Ok(x)
}

/// The lab `sc` (checked on its own) expands to, and its plan; errors are
/// the file's field paths.
pub fn expand(sc: &Scenario) -> Result<Expanded, Invalid> {
    let mut lab = plain::copy(sc);
    let plan = cluster::expand(sc, &mut lab)?;
    gateway::expand(sc, &plan, &mut lab)?;
    check_steps(sc)?;
    Ok(Expanded { lab, plan })
}

/// A step's control actions name what the Oakestra sections define: a
/// service manager, service managers at all, a gateway.
fn check_steps(sc: &Scenario) -> Result<(), Invalid> {
    for (i, s) in sc.traffic.iter().enumerate() {
        let f = format!("traffic[{i}]");
        if let Some(m) = &s.fail_manager {
            if m != "root" && !sc.clusters.iter().any(|c| &c.name == m) {
                return bad(
                    format!("{f}.fail_manager"),
                    format!("no cluster `{m}` (name a cluster, or `root`)"),
                );
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
            continue;
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
            if u.proto == crate::values::Proto::Icmp {
                return bad(
                    format!("{f}.unexpose[{j}].proto"),
                    "exposures are tcp or udp",
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
