//! Attaching to the node's existing TUN device, which the harness (or the
//! operator) created and addressed: the shell only reads and writes it.
//!
//! It does not create, address or route the device, nor read from it.

use anyhow::Context;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

/// Attaches to the persistent TUN device `name` of this network namespace,
/// nonblocking, registered with the runtime for readability.
///
/// tun-rs (without `address-management`) opens `/dev/net/tun` and issues
/// `TUNSETIFF` with `IFF_TUN | IFF_NO_PI` (no multi-queue, no vnet header),
/// which attaches to an existing device of that name; it then clears the
/// device's offload mask (`TUNSETOFFLOAD 0`). With no address, no MTU and
/// `inherit_enable_state`, it changes nothing else on the link.
pub fn attach(name: &str) -> anyhow::Result<AsyncFd<SyncDevice>> {
    attach_device(name).with_context(|| format!("attaching to TUN device {name}"))
}

fn attach_device(name: &str) -> anyhow::Result<AsyncFd<SyncDevice>> {
    // TUNSETIFF creates a new device when none has the name: refuse that.
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("no network interface named {name:?} in this namespace"))?;
    let dev = DeviceBuilder::new()
        .name(name)
        .inherit_enable_state()
        .build_sync()
        .context("TUNSETIFF (IFF_TUN|IFF_NO_PI) on /dev/net/tun")?;
    dev.set_nonblocking(true)
        .context("making the TUN descriptor nonblocking")?;
    // SAFETY: `SyncDevice` owns its descriptor (closed only when the device
    // is dropped, which is when the `AsyncFd` is) and `as_raw_fd` always
    // returns that same descriptor.
    unsafe { AsyncFd::register_with_interest(dev, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the TUN descriptor with the runtime")
}
