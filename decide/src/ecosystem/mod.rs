//! The VM dependency ecosystem: what each VM is and needs of its neighbours ([`declaration`]),
//! where hosts are and how far apart VMs are ([`topology`]), the graph of who can serve whom
//! ([`graph`]), how well each VM is served where things are ([`score`]), and which sets of
//! declarations are admitted ([`registration`]); [`scorer`] is presage's ensemble member that
//! scores destinations by the dependency score they cause.

pub mod declaration;
pub mod feedback;
pub mod graph;
pub mod registration;
pub mod score;
pub mod scorer;
pub mod topology;

pub use declaration::{Declaration, DependencySpec, FieldError, Priority, Profile, Strength};
pub use graph::{EcosystemGraph, MatchOptions};
pub use score::{Placement, VmScore, vm_score};
pub use topology::{LatencyRequirement, LatencyTable, Level, Location};

#[cfg(test)]
mod recovery_tests;
