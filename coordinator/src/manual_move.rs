//! A move an operator asks for (`presagectl move`, `POST /migrate`): checked against the
//! observed state and the dependency rules, journaled as a plan of its own, then handed to the
//! executor, whose pre-checks (the destination's reservation) run as for every plan.

use std::sync::Arc;

use tracing::{Instrument, info};

use crate::plan_journal::{MoveRecord, PlanRecord};
use crate::shared::Shared;

/// Why an operator's move was not planned.
#[derive(Debug, thiserror::Error)]
pub enum MoveRefusal {
    #[error("no host {0:?} has registered")]
    UnknownHost(String),
    #[error("no host reports a VM {0:?}")]
    UnknownVm(String),
    #[error("{vm} already runs on {host}")]
    AlreadyThere { vm: String, host: String },
    #[error("{0} is in a move that has not finished")]
    InFlight(String),
    #[error("the move would break required dependencies ({}); ask again with force to move it anyway", .0.join(", "))]
    BreaksRequired(Vec<String>),
    #[error("the plan journal failed: {0}")]
    Journal(String),
}

/// Plans the move of `vm` to `to` for `operator` and starts executing it; `force` lets it
/// break required dependencies (each is logged).
pub fn plan_and_start(shared: &Arc<Shared>, vm: &str, to: &str, operator: &str, force: bool) -> Result<PlanRecord, MoveRefusal> {
    let m = {
        let state = shared.state();
        if state.host(to).is_none() {
            return Err(MoveRefusal::UnknownHost(to.into()));
        }
        let Some((host, sample)) = state.hosts().find_map(|h| h.vms.get(vm).map(|v| (h, v))) else {
            return Err(MoveRefusal::UnknownVm(vm.into()));
        };
        if host.host_id == to {
            return Err(MoveRefusal::AlreadyThere { vm: vm.into(), host: to.into() });
        }
        let breaks = shared.ecosystem.move_breaks(&state, vm, to);
        if !breaks.is_empty() {
            if !force {
                return Err(MoveRefusal::BreaksRequired(breaks));
            }
            tracing::warn!(operator, vm, to, broken = ?breaks, "operator move breaks required dependencies (forced)");
        }
        let demand = host.vm_cpu_demand(sample);
        MoveRecord::new(vm, &host.host_id, to, "operator", demand, sample.memory_bytes as f64 / 1048576.0)
    };
    if crate::applier::vms_in_flight(shared).contains(vm) {
        return Err(MoveRefusal::InFlight(vm.into()));
    }
    let plan = crate::applier::record_plan(shared, "operator", vec![m], None).map_err(|e| MoveRefusal::Journal(e.to_string()))?;
    info!(plan = plan.id, operator, vm, to, "operator move planned");
    let (shared, limits, started) = (shared.clone(), shared.limits, plan.clone());
    tokio::spawn(async move { crate::applier::execute(&shared, started, limits).await }.in_current_span());
    Ok(plan)
}
