//! The library of the `hoplab` package: what the two dataplane binaries
//! (`netmanager`, `gateway`) share around their sans-IO cores.
//!
//! The `hoplab` CLI (`src/main.rs`) uses only its netlink set change
//! (`shell::nfnetlink`, the exposure bench's control), and it does not use
//! the harness (`hoplab-sim`): the binaries link nothing of the harness.

pub mod shell;
