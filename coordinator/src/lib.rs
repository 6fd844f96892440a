//! presage-coordinator: the cluster coordinator daemon. It aggregates the state of every host
//! from the agents' streams, runs the policy pass over it, executes plans through the agents and
//! serves operators.
//!
//! Modules: [`config`] (TOML), [`transport`] (mutual-TLS listener), [`shared`] (the state the
//! services and background tasks share), [`service`] (the gRPC services), [`sessions`] (agent
//! streams and commands in flight), [`state`] (the pure cluster state), [`validate`] (checks on
//! agent messages), [`advisor`] (runs the decision core's policy on the live state),
//! [`plan_journal`] and [`applier`] (the migration executor), [`server`] (wiring and shutdown
//! order), [`sizing_ops`] (operators' resizes and leases, carried out by the agents). The
//! decisions themselves come from `presage-decide`.

pub mod advisor;
pub mod api_error;
pub mod applier;
pub mod config;
pub mod config_versions;
pub mod ecosystem;
pub mod journal_keys;
pub mod manual_move;
pub mod metrics;
pub mod optimiser_pass;
pub mod plan_journal;
pub mod rest;
pub mod rest_gateway;
pub mod rollouts;
pub mod server;
pub mod service;
pub mod sessions;
pub mod shared;
pub mod sizing_ops;
pub mod sizing_pass;
pub mod standby;
pub mod state;
pub mod transport;
pub mod validate;
pub mod web;
