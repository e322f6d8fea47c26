//! hoplab's dataplane: what the net manager and the gateway do to packets.
//!
//! This crate is sans-IO: it never opens a socket, reads a clock or spawns
//! a thread. It does not know the harness nor the shells that run its
//! cores.
//!
//! Shared by both cores (and, for [`wire`], the trace):
//!
//! - [`packet`]: validated in-place views over IP packets whose setters
//!   keep every checksum right;
//! - [`checksum`]: RFC 1624 incremental and RFC 1071 full checksums;
//! - [`time`]: [`Millis`], the time the cores are handed;
//! - [`prefix`]: whether an address lies in a prefix;
//! - `slab`: the storage of both flow tables (values by `u32` slot);
//! - [`wire`]: the header summary the rest of hoplab reasons about (the
//!   trace describes every hop of a captured packet with it);
//! - [`fragments`]: reassembly of IP fragments into whole datagrams and
//!   cutting them again (both cores reassemble before translating);
//! - [`held`]: the drop of a packet a core held, named by its quote.
//!
//! The cores:
//!
//! - [`netmanager`]: the net manager's core (translation, tables, tunnel);
//! - [`gateway`]: the gateway's core (exposed ports, NAPT, flow table).

#![forbid(unsafe_code)]

pub mod checksum;
mod counters;
pub mod fragments;
pub mod gateway;
pub mod held;
pub mod netmanager;
pub mod packet;
pub mod prefix;
mod slab;
pub mod time;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use self::time::Millis;
