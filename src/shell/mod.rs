//! The I/O shell pieces both dataplane binaries are made of: the clock and
//! the expiry timer that hand a core its time ([`clock`]), the control
//! socket ([`control`]), logging ([`log`]) and the TUN attach ([`tun`]).
//!
//! It knows neither core's packets nor commands: each binary's own loop
//! owns its core and decides what a packet or a command does. Everything
//! here runs on a current-thread tokio runtime.

pub mod clock;
