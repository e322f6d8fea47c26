//! The lab a scenario runs in, and what builds and runs it: the sandbox,
//! host namespaces, topology, processes, built-in traffic clients and echo
//! server.

pub mod echo;
pub mod netns;
pub mod process;
pub mod sandbox;
pub mod topology;
pub mod traffic;
