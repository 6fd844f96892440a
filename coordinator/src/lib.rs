//! presage-coordinator: aggregates the state of every host from the agents' streams and serves
//! operators; also home of `presagectl`, the operator CLI ([`ctl`]).
//!
//! Modules: [`config`] (TOML), [`transport`] (mutual-TLS listener), [`service`] (the gRPC
//! services), [`sessions`] (agent streams and commands in flight), [`state`] (the pure cluster
//! state), [`validate`] (checks on agent messages), [`server`] (wiring and shutdown order),
//! [`policy`] (the pure placement and consolidation policies), [`advisor`] (runs the policy on
//! the live state), [`applier`] (applies plans in automatic mode) and [`simulator`] (trace replay
//! that drives those same policies).

pub mod advisor;
pub mod applier;
pub mod config;
pub mod ctl;
pub mod migration_queue;
pub mod plan_journal;
pub mod policy;
pub mod server;
pub mod service;
pub mod sessions;
pub mod simulator;
pub mod state;
pub mod transport;
pub mod validate;
