//! The agent's durable state: the shared [`presage_store`] engine (re-exported here) and the
//! agent's own per-VM sample history on top of it.

mod history;

pub use history::{HistoryError, SampleHistory};
pub(crate) use history::{describe as describe_key, split_vm_key, vm_key, vm_prefix};
pub use presage_store::*;
