//! presage-coordinator: aggregates the state of every host from the agents' streams and serves
//! operators; also home of `presagectl`, the operator CLI ([`ctl`]).
//!
//! Modules: [`config`] (TOML), [`transport`] (mutual-TLS listener), [`service`] (the gRPC
//! services), [`sessions`] (agent streams and commands in flight), [`state`] (the pure cluster
//! state), [`validate`] (checks on agent messages), [`server`] (wiring and shutdown order).

pub mod config;
pub mod ctl;
pub mod server;
pub mod service;
pub mod sessions;
pub mod state;
pub mod transport;
pub mod validate;
