//! hoplab's dataplane: what the net manager and the gateway do to packets.
//!
//! This crate is sans-IO: it never opens a socket, reads a clock or spawns
//! a thread. [`wire`] reads the headers the rest of hoplab reasons about;
//! the trace uses it to describe every hop of a captured packet.
//! [`netmanager`] is the net manager's sans-IO core (translation, tables, tunnel).
//! [`gateway`] is the gateway's sans-IO core (exposed ports, NAPT, flow table).

mod counters;
pub mod gateway;
pub mod netmanager;
pub mod wire;
