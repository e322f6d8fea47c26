//! Attaching to the node's existing TUN device, which the harness (or the
//! operator) created and addressed: the shell only reads and writes it.
//! The attach returns once the kernel carries packets to the device.
//!
//! It does not create, address or route the device, nor read from it.

use std::time::{Duration, Instant};

use anyhow::Context;
use nix::net::if_::InterfaceFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

/// Attaches to the persistent TUN device `name` of this network namespace,
/// nonblocking, registered with the runtime for readability.
///
/// tun-rs (without `address-management`) opens `/dev/net/tun` and issues
/// `TUNSETIFF` with `IFF_TUN | IFF_NO_PI` (no multi-queue), which attaches
/// to an existing device of that name. With `offload`, it adds
/// `IFF_VNET_HDR` (every read and write starts with a virtio-net header)
/// and sets the device's offload mask to checksum offload and TCP
/// segmentation for IPv4 and IPv6, plus UDP L4 segmentation where the
/// kernel has it (`TUNSETOFFLOAD`): the kernel then hands over, and takes,
/// super-packets of up to 64 KiB. Without, it clears the mask
/// (`TUNSETOFFLOAD 0`). With no address, no MTU and
/// `inherit_enable_state`, it changes nothing else on the link. Read and
/// write it through [`crate::shell::batch::TunBatch`], which speaks both
/// framings.
///
/// Returns once the kernel carries packets to the device (see
/// [`wait_running`]), so that a process that reports ready after this
/// loses none of the first packets routed to it.
pub fn attach(name: &str, offload: bool) -> anyhow::Result<AsyncFd<SyncDevice>> {
    let dev =
        attach_device(name, offload).with_context(|| format!("attaching to TUN device {name}"))?;
    wait_running(name).with_context(|| format!("waiting for TUN device {name} to run"))?;
    Ok(dev)
}

/// The offload setting of a binary: its `--offload` flag if given, else
/// the `HOPLAB_OFFLOAD` environment variable (`on` or `off`), else on.
pub fn offload_setting(flag: Option<bool>) -> anyhow::Result<bool> {
    if let Some(f) = flag {
        return Ok(f);
    }
    match std::env::var("HOPLAB_OFFLOAD") {
        Ok(v) => parse_on_off(&v).map_err(|e| anyhow::anyhow!("HOPLAB_OFFLOAD: {e}")),
        Err(_) => Ok(true),
    }
}

/// Whether the net manager reads the tunnel socket on a thread of its own
/// (a reader per direction): its `--reader-per-direction` flag if given,
/// else the `HOPLAB_READER_PER_DIRECTION` environment variable (`on` or
/// `off`), else off.
pub fn reader_per_direction_setting(flag: Option<bool>) -> anyhow::Result<bool> {
    if let Some(f) = flag {
        return Ok(f);
    }
    match std::env::var(READER_PER_DIRECTION_ENV) {
        Ok(v) => parse_on_off(&v).map_err(|e| anyhow::anyhow!("{READER_PER_DIRECTION_ENV}: {e}")),
        Err(_) => Ok(false),
    }
}

/// The environment variable of [`reader_per_direction_setting`].
pub const READER_PER_DIRECTION_ENV: &str = "HOPLAB_READER_PER_DIRECTION";

/// `on` or `off` (the `--offload` flag's values).
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// The longest wait for the kernel to act on the attach.
const RUNNING_WITHIN: Duration = Duration::from_secs(5);

/// Waits until the device, if it is up, is also running. Attaching turns
/// the device's carrier on, but the kernel acts on that only when its link
/// watch gets to it, asynchronously (on a busy machine, up to seconds
/// later): until then the device's transmit queue is inactive and every
/// packet routed to it is dropped (counted as a TX drop of the device).
/// The link watch marks the device running (operationally up) in the
/// same step as it activates the queue. A device that is down is left to
/// whoever brings it up.
fn wait_running(name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + RUNNING_WITHIN;
    loop {
        let flags = nix::ifaddrs::getifaddrs()
            .context("listing the network interfaces")?
            .find(|i| i.interface_name == name)
            .map(|i| i.flags)
            .with_context(|| format!("no network interface named {name:?} in this namespace"))?;
        if !flags.contains(InterfaceFlags::IFF_UP) || flags.contains(InterfaceFlags::IFF_RUNNING) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "up but not running after {} s",
            RUNNING_WITHIN.as_secs()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn attach_device(name: &str, offload: bool) -> anyhow::Result<AsyncFd<SyncDevice>> {
    // TUNSETIFF creates a new device when none has the name: refuse that.
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("no network interface named {name:?} in this namespace"))?;
    let dev = DeviceBuilder::new()
        .name(name)
        .inherit_enable_state()
        .offload(offload)
        .build_sync()
        .with_context(|| {
            let vnet = if offload { "|IFF_VNET_HDR" } else { "" };
            format!("TUNSETIFF (IFF_TUN|IFF_NO_PI{vnet}) and TUNSETOFFLOAD on /dev/net/tun")
        })?;
    dev.set_nonblocking(true)
        .context("making the TUN descriptor nonblocking")?;
    // SAFETY: `SyncDevice` owns its descriptor (closed only when the device
    // is dropped, which is when the `AsyncFd` is) and `as_raw_fd` always
    // returns that same descriptor.
    unsafe { AsyncFd::register_with_interest(dev, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering the TUN descriptor with the runtime")
}
