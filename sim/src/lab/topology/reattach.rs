//! A moved instance's namespace re-attached to its new node
//! ([`super::super::Move`]): its interface to the old node's bridge loses
//! its addresses and goes down (its peer on the old node loses its
//! carrier; the routes through it go with it); its interface to the new
//! node's bridge, built with the lab, gets the new addresses and the
//! default routes via the new bridge, and is waited for until
//! operationally up.
//!
//! Knows the host's netlink handle, not why the instance moves nor the
//! service managers.

use futures::TryStreamExt;
use rtnetlink::LinkUnspec;

use super::{nl, Topology};
use crate::lab::Move;
use crate::Error;

impl Topology {
    /// Carries out `m` in its host's namespace.
    pub async fn reattach(&self, m: &Move) -> Result<(), Error> {
        let h = self
            .hosts
            .get(&m.host)
            .ok_or_else(|| Error::Failed(format!("no host {}", m.host)))?;
        let what = |s: &str| format!("move {}: {s}", m.host);
        let old = h.index_of(&m.old_if).await?;
        let mut addrs = h
            .handle
            .address()
            .get()
            .set_link_index_filter(old)
            .execute();
        let mut gone = Vec::new();
        while let Some(a) = addrs.try_next().await.map_err(nl(what("list addresses")))? {
            gone.push(a);
        }
        for a in gone {
            h.handle
                .address()
                .del(a)
                .execute()
                .await
                .map_err(nl(what(&format!("remove an address of {}", m.old_if))))?;
        }
        h.set(
            what(&format!("{} down", m.old_if)),
            LinkUnspec::new_with_index(old).down(),
        )
        .await?;
        let new = h.index_of(&m.new_if).await?;
        for a in &m.addr {
            h.handle
                .address()
                .add(new, a.addr, a.prefix)
                .execute()
                .await
                .map_err(nl(what(&format!("add address {a} to {}", m.new_if))))?;
        }
        h.set(
            what(&format!("{} up", m.new_if)),
            LinkUnspec::new_with_index(new).up(),
        )
        .await?;
        for (i, r) in m.routes.iter().enumerate() {
            super::add_route(h, &what(&format!("route {i}")), r).await?;
        }
        h.wait_oper_up(&[&m.new_if], std::time::Duration::from_secs(3))
            .await
    }
}
