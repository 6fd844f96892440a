//! The agent's durable state: the shared [`presage_store`] engine (re-exported here) and the
//! agent's own per-VM sample history on top of it.

mod history;

pub use history::{HistoryError, SampleHistory};
pub use presage_store::*;
