//! presage's decision core, shared by the coordinator (over the live cluster), the agent (its
//! reservation book) and the simulator (over real traces), so what is measured is what ships.
//!
//! - [`demand`]: a VM's demand forecast as a policy reads it (quantiles per 5-minute step).
//! - [`policy`]: the fleet as a policy sees it ([`policy::FleetView`]), the
//!   [`policy::ConsolidationPolicy`] interface, CloudSim's classic policies, presage's policy with
//!   its explained ensemble of scorers, power models and statistics.
//! - [`ecosystem`]: VM dependency declarations, the topology, the graph of who can serve whom,
//!   and each VM's dependency satisfaction score.
//! - [`migration_queue`]: the admission rule for concurrent live migrations.
//! - [`reservation`]: the admission rule for hard and soft reservations on a host.
//! - [`sizing`]: proactive resizing, borrowing leases and their admission rule, the broker.
//! - [`optimise`]: the genetic optimiser over placement and sizing, and the problems it solves.
//! - [`rollout`]: staged rollouts of a plan: the canary draw, its judgement, the stages.
//!
//! Pure: nothing here does I/O, spawns a task, reads a clock or draws a random number. The
//! caller passes the time and the state; the code returns decisions. The crate's dependencies
//! enforce it (`tests/purity.rs`).

pub mod demand;
pub mod ecosystem;
pub mod migration_queue;
pub mod optimise;
pub mod policy;
pub mod reservation;
pub mod rollout;
pub mod sizing;
