//! The steps' `move`: an instance rescheduled to another worker node of
//! its cluster. Validate (the instance and the node exist, the node is in
//! the service's cluster and is not where the instance is at that step,
//! an instance moves once) → allocate (the new namespace addresses: the
//! next free slot of the new node's subnet, after every instance placed
//! there and every move there before) → emit (a link from the instance's
//! `eth1` to a port named after it on the new node's bridge, in the lab
//! from the start, without addresses; the step's [`lab::Move`], which the
//! run carries out and hands to the service managers).
//!
//! Knows the address plan and the lab model; neither runs anything nor
//! changes the plan the managers start with (the run replaces it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::cluster::OVERLAY_MTU;
use super::plan::{add4, add6, cidr, Plan};
use crate::lab::{self, End, Lab, Link, Route, RouteDst};
use crate::scenario::Scenario;
use crate::values::{bad, Gather, Invalid};

/// The interface of a moved instance to its new node.
pub const MOVED_IF: &str = "eth1";

/// Most instances a node's /26 holds.
const SLOTS: u32 = 60;

/// Checks every step's `move`, and adds the links and [`lab::Move`]s of
/// the valid ones to `lab`. Returns the errors, by field.
pub fn expand(sc: &Scenario, plan: &Plan, lab: &mut Lab) -> Vec<Invalid> {
    let mut found = Vec::new();
    // Where each instance host is, and how many slots each node has used.
    let mut at: BTreeMap<String, (String, String, u32)> = BTreeMap::new();
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    for s in &sc.services {
        for (ii, inst) in s.instances.iter().enumerate() {
            let host = format!("{}-{ii}", s.name);
            at.insert(host, (inst.node.clone(), s.name.clone(), ii as u32));
            *used.entry(inst.node.clone()).or_default() += 1;
        }
    }
    let mut moved = BTreeSet::new();
    for (i, step) in sc.traffic.iter().enumerate() {
        for (j, m) in step.moves.iter().enumerate() {
            let f = format!("traffic[{i}].move[{j}]");
            let r = one(plan, (&mut at, &mut used, &mut moved), &f, m);
            match r {
                Ok((link, mv)) => {
                    lab.links.push(link);
                    lab.traffic[i].moves.push(mv);
                }
                Err(e) => found.gather(Err(e)),
            }
        }
    }
    found
}

type State<'a> = (
    &'a mut BTreeMap<String, (String, String, u32)>,
    &'a mut BTreeMap<String, u32>,
    &'a mut BTreeSet<String>,
);

/// One move at field `f`: its link and its [`lab::Move`].
fn one(
    plan: &Plan,
    (at, used, moved): State<'_>,
    f: &str,
    m: &crate::scenario::schema::Move,
) -> Result<(Link, lab::Move), Invalid> {
    let Some((from, service, number)) = at.get(&m.instance).cloned() else {
        return bad(
            format!("{f}.instance"),
            format!(
                "no instance `{}` (instances are named SERVICE-N, N their place in the service's `instances`)",
                m.instance
            ),
        );
    };
    let Some(to) = plan.nodes.get(&m.to) else {
        return bad(
            format!("{f}.to"),
            format!("undefined worker node `{}`", m.to),
        );
    };
    let (cluster, instances) = &plan.services[&service];
    if &to.cluster != cluster {
        return bad(
            format!("{f}.to"),
            format!(
                "node `{}` is in cluster `{}`, service `{service}` in `{cluster}`: an instance moves within its cluster",
                m.to, to.cluster
            ),
        );
    }
    if from == m.to {
        return bad(
            format!("{f}.to"),
            format!("`{}` is on `{}` already", m.instance, m.to),
        );
    }
    if !moved.insert(m.instance.clone()) {
        return bad(
            format!("{f}.instance"),
            format!(
                "`{}` moved before: an instance moves once in a scenario",
                m.instance
            ),
        );
    }
    let slot = used.entry(m.to.clone()).or_default();
    *slot += 1;
    if *slot > SLOTS {
        return bad(
            format!("{f}.to"),
            format!(
                "node `{}` has no free namespace address (at most {SLOTS} instances)",
                m.to
            ),
        );
    }
    let inst = instances
        .iter()
        .find(|x| x.instance_number == number)
        .expect("placed by the cluster expansion");
    let old = &plan.nodes[&from];
    let old_addr: Vec<_> = std::iter::once(cidr(inst.ns_ip, 26))
        .chain(inst.ns_ip6.map(|a| cidr(a, 64)))
        .collect();
    let mut addr = vec![cidr(add4(to.subnet, *slot), 26)];
    let mut routes = vec![Route::via(RouteDst::Default, to.bridge_ip())];
    if inst.ns_ip6.is_some() {
        addr.push(cidr(add6(to.subnet6, u128::from(*slot)), 64));
        routes.push(Route::via(RouteDst::Default, to.bridge_ip6()));
    }
    debug_assert_eq!(old.underlay, inst.node);
    let mut a = End::new(&m.instance, MOVED_IF, vec![]);
    let mut b = End::new(&m.to, &m.instance, vec![]);
    b.bridge = Some("br0".into());
    (a.mtu, b.mtu) = (Some(OVERLAY_MTU), Some(OVERLAY_MTU));
    at.insert(m.instance.clone(), (m.to.clone(), service.clone(), number));
    let mut local = lab::dataplane::local_instance(inst);
    for a in &addr {
        match a.addr {
            IpAddr::V4(v4) => local.ns_ip = v4,
            IpAddr::V6(v6) => local.ns_ip6 = Some(v6),
        }
    }
    let mv = lab::Move {
        host: m.instance.clone(),
        service,
        instance: number,
        from_node: from,
        to_node: m.to.clone(),
        old_if: "eth0".into(),
        old_addr,
        new_if: MOVED_IF.into(),
        addr,
        routes,
        node_addr: to.underlay,
        coords: to.coords,
        local,
        old_ns: inst.ns_ip,
    };
    Ok((Link { a, b, impair: None }, mv))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::oakestra::parse;

    const SC: &str = "version: 1\nclusters:\n  - name: c1\n    nodes:\n      - {name: n1, coords: [0, 0]}\n      - {name: n2, coords: [3, 4]}\n  - name: c2\n    nodes:\n      - {name: n3}\nservices:\n  - name: api\n    round_robin: 10.30.1.1\n    echo: {tcp: [80]}\n    instances:\n      - {node: n1}\n  - name: web\n    instances:\n      - {node: n2}\ntraffic:\n  - {name: call, from: web-0, proto: tcp, to: \"10.30.1.1:80\", STEP}\n  - {name: again, from: web-0, proto: tcp, to: \"10.30.1.1:80\", NEXT}\n";

    fn with(step: &str, next: &str) -> String {
        SC.replace("STEP", step).replace("NEXT", next)
    }

    #[test]
    fn a_move_gets_the_next_free_address_of_its_new_node_and_a_link() {
        let text = with("move: [{instance: api-0, to: n2}]", "payload: x");
        let sc = parse(Path::new("s.yaml"), "s", &text).unwrap();
        let m = &sc.traffic[0].moves[0];
        assert_eq!((m.from_node.as_str(), m.to_node.as_str()), ("n1", "n2"));
        // web-0 holds n2's first slot.
        assert_eq!(m.addr[0].to_string(), "10.18.0.66/26");
        assert_eq!(m.old_addr[0].to_string(), "10.18.0.1/26");
        let l = sc.links.last().unwrap();
        assert_eq!((l.a.host.as_str(), l.a.ifname.as_str()), ("api-0", "eth1"));
        assert_eq!((l.b.host.as_str(), l.b.ifname.as_str()), ("n2", "api-0"));
        assert_eq!(l.b.bridge.as_deref(), Some("br0"));
    }

    #[test]
    fn a_bad_move_names_file_line_and_field() {
        let cases = [
            (
                "move: [{instance: api-7, to: n2}]",
                "traffic[0].move[0].instance",
                "no instance `api-7`",
            ),
            (
                "move: [{instance: api-0, to: n9}]",
                "traffic[0].move[0].to",
                "undefined worker node `n9`",
            ),
            (
                "move: [{instance: api-0, to: n3}]",
                "traffic[0].move[0].to",
                "moves within its cluster",
            ),
            (
                "move: [{instance: api-0, to: n1}]",
                "traffic[0].move[0].to",
                "on `n1` already",
            ),
            (
                "move: [{instance: api-0, node: n2}]",
                "traffic[0].move[0]",
                "unknown field `node`",
            ),
        ];
        for (step, field, words) in cases {
            let e = parse(Path::new("s.yaml"), "s", &with(step, "payload: x")).unwrap_err();
            let first = &e.errors()[0];
            assert_eq!((first.field.as_str(), first.line), (field, 20), "{e}");
            assert!(first.message.contains(words), "{e}");
            assert!(e.to_string().starts_with("s.yaml:20:"), "{e}");
        }
        let twice = with(
            "move: [{instance: api-0, to: n2}]",
            "move: [{instance: api-0, to: n1}]",
        );
        let e = parse(Path::new("s.yaml"), "s", &twice).unwrap_err();
        assert_eq!(e.errors()[0].field, "traffic[1].move[0].instance", "{e}");
        assert_eq!(e.errors()[0].line, 21, "{e}");
    }
}
