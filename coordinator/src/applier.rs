//! Applies a plan in `automatic` mode, one move after another, through the agents: the
//! destination reserves the VM's p90 demand (its own admission may refuse), the source moves the
//! VM out, the destination adopts it (simulated hosts), and the reservation becomes an allocation.
//! A move that fails after the VM left its source is rolled back onto the source, so no VM is
//! lost or runs twice. Every outcome is kept for `presagectl plan`.
//!
//! Moves run concurrently within the `[executor]` limits ([`MigrationQueue`]). Simulated hosts carry
//! them out today; live migration through libvirt (progress, timeouts, persisted plan state) is
//! still to come.

use std::sync::Arc;
use std::time::Duration;

use presage_protocol::pb::{self, CommandStatus, command, command_result};
use serde::Serialize;
use tracing::{Instrument, info, info_span, warn};

use crate::advisor::{PlanSnapshot, ProposedMove};
use crate::migration_queue::{MigrationLimits, MigrationQueue, QueuedMove};
use crate::service::Shared;

/// How long a reservation, adoption, completion or release may take before it counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a destination holds a reservation for a move.
const RESERVATION_TTL_MS: u64 = 10 * 60 * 1000;

/// Records each host's expected growth as a soft reservation on it (`growth/HOST`, replaced
/// every pass, expiring after `ttl_ms`): it never blocks a hard reservation, but the host's book
/// shows the headroom its VMs' forecasts claim.
pub async fn record_growth(shared: &Arc<Shared>, plan: &PlanSnapshot, ttl_ms: u64) {
    for (host, mhz) in plan.expected_growth() {
        let reserve = pb::Reserve { id: format!("growth/{host}"), vm_id: "*".into(), hard: false, cpu_mhz: mhz, memory_mib: 0.0, ttl_ms };
        // A soft reservation replaces the last one: release, then reserve.
        release(shared, &host, &reserve.id).await;
        if let Err(e) = send(shared, &host, command::Body::Reserve(reserve)).await {
            warn!(host = %host, error = %e, "recording expected growth failed");
        }
    }
}

/// What became of one move.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MoveOutcome {
    pub vm_id: String,
    pub from_host: String,
    pub to_host: String,
    /// `done`, `refused` (the destination would not reserve), `failed` (the VM stayed on its
    /// source), `aborted` (over its time budget; it stayed) or `rolled_back` (the destination did
    /// not take it; it resumed on its source).
    pub outcome: &'static str,
    pub detail: String,
}

/// Abandons `m`'s migration on its source: the VM keeps (or resumes) running there.
async fn abort(shared: &Shared, m: &ProposedMove) -> Result<pb::CommandResult, String> {
    send(shared, &m.from_host, command::Body::AbortMigration(pb::AbortMigration { vm_id: m.vm_id.clone() })).await
}

/// Gives the destination's reservation up (the move failed, or the VM arrived).
async fn release(shared: &Shared, host: &str, id: &str) {
    if let Err(e) = send(shared, host, command::Body::Release(pb::Release { id: id.to_string() })).await {
        warn!(error = %e, "releasing the reservation failed; it expires by itself");
    }
}

async fn send(shared: &Shared, host: &str, body: command::Body) -> Result<pb::CommandResult, String> {
    send_within(shared, host, body, STEP_TIMEOUT).await.map_err(|e| e.to_string())
}

/// Why a step of a move did not succeed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Failed(String),
}

async fn send_within(shared: &Shared, host: &str, body: command::Body, timeout: Duration) -> Result<pb::CommandResult, StepError> {
    let r = shared.sessions.send(host, body, timeout).await.map_err(|e| match e {
        crate::sessions::CommandError::Timeout { .. } => StepError::TimedOut(e.to_string()),
        _ => StepError::Failed(e.to_string()),
    })?;
    if r.status == CommandStatus::Ok as i32 { Ok(r) } else { Err(StepError::Failed(format!("{host}: {}", r.message))) }
}

/// The time budget of one move: a floor plus the memory copied at the assumed bandwidth.
pub fn time_budget(memory_mib: f64, limits: &MigrationLimits) -> Duration {
    let copy_s = memory_mib * 1.048_576 / limits.assumed_mb_per_s.max(1) as f64;
    Duration::from_millis(limits.timeout_floor_ms) + Duration::from_secs_f64(copy_s.clamp(0.0, 86_400.0))
}

/// Applies up to `limit` moves of `plan` concurrently within `limits`: moves start in plan order
/// as soon as their hosts have a free slot (no batches), and each outcome is returned as it ends.
pub async fn apply(
    shared: &Arc<Shared>,
    plan: &Arc<PlanSnapshot>,
    plan_seq: u64,
    limit: usize,
    limits: MigrationLimits,
) -> Vec<MoveOutcome> {
    let moves: Vec<ProposedMove> = plan.proposal.moves.iter().take(limit).cloned().collect();
    let mut queue = MigrationQueue::new(limits);
    for (i, m) in moves.iter().enumerate() {
        queue.push(QueuedMove { id: i as u64, from: m.from_host.clone(), to: m.to_host.clone() });
    }
    let mut running = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    loop {
        for q in queue.start_ready() {
            let m = moves[q.id as usize].clone();
            let (shared, plan) = (shared.clone(), plan.clone());
            let span = info_span!("apply_move", vm = %m.vm_id, from = %m.from_host, to = %m.to_host, reason = m.reason);
            running.spawn(async move { (q.id, apply_one(&shared, &plan, plan_seq, &m, &limits).await) }.instrument(span));
        }
        match running.join_next().await {
            Some(Ok((id, o))) => {
                queue.finish(id);
                info!(vm = %o.vm_id, from = %o.from_host, to = %o.to_host, outcome = o.outcome, detail = %o.detail, "move applied");
                out.push(o);
            }
            Some(Err(e)) => {
                // A panicked move task: its slots cannot be told apart, so stop starting more.
                warn!(error = %e, "a move task failed; the rest of this plan waits for the next pass");
                break;
            }
            None => break,
        }
    }
    out
}

async fn apply_one(shared: &Shared, plan: &PlanSnapshot, plan_seq: u64, m: &ProposedMove, limits: &MigrationLimits) -> MoveOutcome {
    let outcome = |outcome, detail: String| MoveOutcome {
        vm_id: m.vm_id.clone(),
        from_host: m.from_host.clone(),
        to_host: m.to_host.clone(),
        outcome,
        detail,
    };
    let Some((cpu_mhz, memory_mib)) = plan.reservation_for(&m.vm_id) else {
        return outcome("failed", "the VM is not in the plan's snapshot".into());
    };
    let id = format!("plan-{plan_seq}/{}", m.vm_id);
    let reserve = pb::Reserve { id: id.clone(), vm_id: m.vm_id.clone(), hard: true, cpu_mhz, memory_mib, ttl_ms: RESERVATION_TTL_MS };
    if let Err(e) = send(shared, &m.to_host, command::Body::Reserve(reserve)).await {
        return outcome("refused", e);
    }
    let budget = time_budget(memory_mib, limits);
    let move_out = command::Body::MigrateOut(pb::MigrateOut { vm_id: m.vm_id.clone(), destination_host: m.to_host.clone() });
    let handoff = match send_within(shared, &m.from_host, move_out, budget).await {
        Ok(r) => match r.detail {
            Some(command_result::Detail::Handoff(h)) => Some(h),
            _ => None,
        },
        Err(StepError::TimedOut(e)) => {
            // Over its time budget: abort it; the VM keeps running on the source.
            let aborted = abort(shared, m).await;
            release(shared, &m.to_host, &id).await;
            return match aborted {
                Ok(_) => outcome("aborted", format!("over its {} s budget: {e}", budget.as_secs())),
                Err(a) => outcome("failed", format!("over its {} s budget ({e}) and the abort failed: {a}", budget.as_secs())),
            };
        }
        Err(StepError::Failed(e)) => {
            release(shared, &m.to_host, &id).await;
            return outcome("failed", e);
        }
    };
    if let Some(vm) = handoff {
        if let Err(e) = send(shared, &m.to_host, command::Body::Adopt(pb::Adopt { vm: Some(vm) })).await {
            // The destination did not take it: the copy is abandoned and the VM resumes on its
            // source, where it never stopped existing.
            let back = abort(shared, m).await;
            release(shared, &m.to_host, &id).await;
            return match back {
                Ok(_) => outcome("rolled_back", e),
                Err(b) => outcome("failed", format!("{e}; and resuming it on the source failed: {b}")),
            };
        }
        // The destination runs it: the source lets go.
        let complete = command::Body::CompleteMigration(pb::CompleteMigration { vm_id: m.vm_id.clone() });
        if let Err(e) = send(shared, &m.from_host, complete).await {
            warn!(error = %e, "the source did not confirm letting go; it keeps the VM paused");
            release(shared, &m.to_host, &id).await;
            return outcome("done", format!("the source did not confirm: {e}"));
        }
    }
    // It arrived: what it held is now its allocation.
    release(shared, &m.to_host, &id).await;
    outcome("done", String::new())
}
