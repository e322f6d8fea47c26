//! The Oakestra vocabulary of a scenario: clusters of worker nodes,
//! services, the gateway and the externals behind the internet router, and
//! the simulated service managers.

pub mod cluster;
pub mod control_plane;
pub mod gateway;
