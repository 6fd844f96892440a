//! The migration executor's coordinator half: runs a journaled plan of moves through the agents.
//!
//! Per move: pre-check (the VM runs on its source, not already migrating) -> hard reservation on
//! the destination, checked in the destination's answer -> `MigrateOut` on the source within a
//! time budget (a libvirt source pre-checks again, migrates live and post-checks; a simulated one
//! copies and hands over) -> `Adopt` on the destination and `CompleteMigration` on the source
//! (simulated hand-over) -> post-check (`Inspect`: running on the destination, not on the
//! source) -> the reservation is released (it became the VM's allocation). Past its budget a
//! move is aborted and the VM stays on its source. Whenever a step fails, [`settle`] asks both
//! hosts where the VM is and finishes the move from there (complete, or abort and resume on the
//! source), so no VM is lost or left running twice.
//!
//! Every step is written to the [`PlanJournal`](crate::plan_journal::PlanJournal) before it is
//! taken; [`reconcile`] resolves the moves a restarted coordinator finds mid-step. Moves run
//! concurrently within the `[executor]` limits ([`MigrationQueue`]); with `on_failure =
//! "rollback"` a failed move stops the plan and its done moves are reversed, last first.
//! [`rollback`] does the same by hand (`presagectl rollback PLAN`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presage_protocol::pb::{self, CommandStatus, command, command_result};
use tracing::{Instrument, info, info_span, warn};

use crate::advisor::PlanSnapshot;
use crate::plan_journal::{MoveRecord, PlanRecord, Step};
use crate::shared::Shared;
use presage_decide::migration_queue::{MigrationLimits, MigrationQueue, OnFailure, QueuedMove};

/// How long a reservation, adoption, completion, inspection or release may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a destination holds a reservation for a move.
const RESERVATION_TTL_MS: u64 = 10 * 60 * 1000;
/// How long [`settle`] waits for a host that is not connected (an agent restarting).
const SETTLE_WAIT: Duration = Duration::from_secs(20);

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

/// The moves of a policy pass's plan (at most `limit`, bundles whole or not at all), with what
/// each destination reserves. A bundle with a member to skip (in flight) or without a
/// reservation figure is left out whole.
pub fn moves_of(plan: &PlanSnapshot, limit: usize, skip: &std::collections::HashSet<String>) -> Vec<MoveRecord> {
    let mut out: Vec<MoveRecord> = Vec::new();
    let mut taken: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for m in &plan.proposal.moves {
        if taken.contains(m.vm_id.as_str()) {
            continue;
        }
        // The move and its bundle's other moves (to the same host), in plan order.
        let members: Vec<&crate::advisor::ProposedMove> =
            plan.proposal.moves.iter().filter(|o| o.vm_id == m.vm_id || (o.to_host == m.to_host && m.with.contains(&o.vm_id))).collect();
        for o in &members {
            taken.insert(o.vm_id.as_str());
        }
        if members.len() < m.with.len() + 1 || members.iter().any(|o| skip.contains(&o.vm_id)) {
            continue;
        }
        if out.len() + members.len() > limit {
            break;
        }
        let records: Option<Vec<MoveRecord>> = members
            .iter()
            .map(|o| {
                let (cpu, mem) = plan.reservation_for(&o.vm_id)?;
                let mut r = MoveRecord::new(&o.vm_id, &o.from_host, &o.to_host, o.reason, cpu, mem);
                r.with = members.iter().filter(|x| x.vm_id != o.vm_id).map(|x| x.vm_id.clone()).collect();
                Some(r)
            })
            .collect();
        out.extend(records.into_iter().flatten());
    }
    out
}

async fn release(shared: &Shared, host: &str, id: &str) {
    if let Err(e) = send(shared, host, command::Body::Release(pb::Release { id: id.to_string() })).await {
        warn!(host, error = %e, "releasing the reservation failed; it expires by itself");
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
    Precheck(String),
    /// The host has no session: the command was never sent.
    #[error("{0}")]
    NotDelivered(String),
    #[error("{0}")]
    Failed(String),
}

async fn send_within(shared: &Shared, host: &str, body: command::Body, timeout: Duration) -> Result<pb::CommandResult, StepError> {
    send_step(shared, host, body, timeout, "").await
}

/// The id of a move's step that must not run twice (the agent keeps what it ran by this id).
fn step_id(plan_id: u64, idx: usize, step: &str) -> String {
    format!("plan-{plan_id}/move-{idx}/{step}")
}

async fn send_step(
    shared: &Shared,
    host: &str,
    body: command::Body,
    timeout: Duration,
    step: &str,
) -> Result<pb::CommandResult, StepError> {
    let r = shared.sessions.send_step(host, body, timeout, step).await.map_err(|e| match e {
        crate::sessions::CommandError::Timeout { .. } => StepError::TimedOut(e.to_string()),
        crate::sessions::CommandError::NotConnected(_) | crate::sessions::CommandError::NoMandate(_) => {
            StepError::NotDelivered(e.to_string())
        }
        _ => StepError::Failed(e.to_string()),
    })?;
    match CommandStatus::try_from(r.status) {
        Ok(CommandStatus::Ok) => Ok(r),
        Ok(CommandStatus::PrecheckFailed) => Err(StepError::Precheck(format!("{host}: {}", r.message))),
        _ => Err(StepError::Failed(format!("{host}: {}", r.message))),
    }
}

/// Where `host` says `vm_id` is.
async fn inspect(shared: &Shared, host: &str, vm_id: &str) -> Result<pb::VmPresence, String> {
    let r = send(shared, host, command::Body::Inspect(pb::Inspect { vm_id: vm_id.into() })).await?;
    match r.detail {
        Some(command_result::Detail::Presence(p)) => Ok(p),
        other => Err(format!("{host} answered Inspect with {other:?}")),
    }
}

/// [`inspect`], waiting up to `wait` for a host whose agent is not connected (restarting).
async fn inspect_waiting(shared: &Shared, host: &str, vm_id: &str, wait: Duration) -> Result<pb::VmPresence, String> {
    let deadline = Instant::now() + wait;
    loop {
        match inspect(shared, host, vm_id).await {
            Ok(p) => return Ok(p),
            Err(e) if Instant::now() >= deadline || shared.cancel.is_cancelled() => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The time budget of one move: a floor plus the memory copied at the assumed bandwidth.
pub fn time_budget(memory_mib: f64, limits: &MigrationLimits) -> Duration {
    let copy_s = memory_mib * 1.048_576 / limits.assumed_mb_per_s.max(1) as f64;
    Duration::from_millis(limits.timeout_floor_ms) + Duration::from_secs_f64(copy_s.clamp(0.0, 86_400.0))
}

/// Settles a move whose step failed or was interrupted: asks the hosts where the VM is and
/// finishes the move from there. `reached` is how far the move got: before `HandingOver` a
/// simulated destination never received the VM (an `Adopt`), and a libvirt source that runs the
/// VM, not migrating, still has it (libvirt pauses the source before switching over).
///
/// - First, unless the VM was handed over, the source is told to abort: the `MigrateOut` may not
///   have reached its hypervisor yet, and must not start after the move ended.
/// - Runs on the destination (and not on the source as well): the source lets go of any paused
///   copy; done.
/// - Runs on the source, or the source still has it and the destination does not run it: the
///   migration is aborted on the source (a paused VM resumes); it stayed.
///
/// A move ends `stayed` (aborted, failed, rolled back) only once both hosts confirm it runs on
/// the source alone and the destination holds no incoming instance of it (a libvirt
/// destination tears its paused incoming domain down some time after the abort): until then,
/// or while a host that may hold it cannot be asked, this answers `None` and the move stays
/// open for [`reconcile`].
async fn settle(
    shared: &Shared,
    plan_id: u64,
    m: &MoveRecord,
    reached: Step,
    why: &str,
    stayed: Step,
    wait: Duration,
) -> Option<(Step, String)> {
    let rid = m.reservation_id(plan_id);
    let handed_over = matches!(reached, Step::HandingOver | Step::Completing);
    // A simulated destination receives the VM only through `Adopt`; a libvirt one holds an
    // incoming domain from the moment the source starts migrating.
    let simulated_destination = shared.state().host(&m.to_host).is_some_and(|h| h.registration.hypervisor_kind == "simulated");
    let destination_may_hold = handed_over || !simulated_destination;
    let mut src = inspect_waiting(shared, &m.from_host, &m.vm_id, wait).await;
    if !handed_over && matches!(&src, Ok(s) if s.present) {
        // The MigrateOut's outcome is unknown (it timed out, failed, or a restart interrupted
        // it) and it may not have reached the hypervisor yet: an agent runs commands as tasks
        // of their own, so a source that answers "running, not migrating" now may start the
        // copy a moment later. An abort, which the agent orders after that MigrateOut, stops it
        // whenever it starts; with nothing to stop it only says the VM runs there.
        let abort = command::Body::AbortMigration(pb::AbortMigration { vm_id: m.vm_id.clone() });
        if let Err(e) = send(shared, &m.from_host, abort).await {
            info!(vm = %m.vm_id, source = %m.from_host, error = %e, "the abort before settling was not carried out; settling from what the hosts say");
        }
        src = inspect_waiting(shared, &m.from_host, &m.vm_id, wait).await;
    }
    // A destination that cannot hold the VM is asked once (it matters only if the VM runs there),
    // not waited for.
    let dst_wait = if destination_may_hold { wait } else { Duration::ZERO };
    let dst = inspect_waiting(shared, &m.to_host, &m.vm_id, dst_wait).await;
    let on_source = matches!(&src, Ok(s) if s.running && !s.migrating) && !handed_over;
    if let Ok(d) = &dst
        && d.running
    {
        if on_source {
            warn!(vm = %m.vm_id, source = %m.from_host, destination = %m.to_host, "the VM runs on both hosts; the move stays open");
            return None;
        }
        match &src {
            Ok(s) if s.present => {
                let complete = command::Body::CompleteMigration(pb::CompleteMigration { vm_id: m.vm_id.clone() });
                if let Err(e) = send(shared, &m.from_host, complete).await {
                    warn!(vm = %m.vm_id, error = %e, "the source did not let go of a VM that runs on its destination");
                    return None;
                }
            }
            Ok(_) => {}
            Err(_) => return None,
        }
        release(shared, &m.to_host, &rid).await;
        return Some((Step::Done, format!("{why}; it runs on {}", m.to_host)));
    }
    if !on_source {
        // The destination cannot be running it if it answered that it does not, or if it never
        // received a hand-over (a libvirt source switches over only as its job ends).
        let destination_cannot_run_it = dst.is_ok() || !handed_over;
        match (&src, destination_cannot_run_it) {
            (Ok(s), true) if s.present => {
                let abort = command::Body::AbortMigration(pb::AbortMigration { vm_id: m.vm_id.clone() });
                if let Err(e) = send(shared, &m.from_host, abort).await {
                    warn!(vm = %m.vm_id, error = %e, "aborting on the source failed");
                    return None;
                }
            }
            (Ok(_), _) if dst.is_ok() => {
                release(shared, &m.to_host, &rid).await;
                return Some((Step::Failed, format!("{why}; the VM is on neither {} nor {} now", m.from_host, m.to_host)));
            }
            _ => return None,
        }
    }
    let mut after = String::new();
    if destination_may_hold && let Err(held) = destination_lets_go(shared, m, dst, wait).await {
        let limit = Duration::from_millis(shared.limits.silent_destination_ms);
        match silent_for(shared, &m.to_host) {
            Some(silent) if silent >= limit => {
                warn!(vm = %m.vm_id, destination = %m.to_host, ?silent, "the destination stays silent; the move ends without its word");
                after = format!("; {} has been silent for {} s and cannot finish the copy without its source", m.to_host, silent.as_secs());
            }
            _ => {
                warn!(vm = %m.vm_id, destination = %m.to_host, %held, "the move stays open until the destination lets go");
                return None;
            }
        }
    }
    release(shared, &m.to_host, &rid).await;
    Some((stayed, format!("{why}; it stayed on {}{after}", m.from_host)))
}

/// How long `host`'s agent has been away: `None` while it is connected; since it was last heard
/// from, or, for a host not seen since this coordinator started, since the start.
fn silent_for(shared: &Shared, host: &str) -> Option<Duration> {
    let state = shared.state();
    match state.host(host) {
        Some(h) if h.session.is_some() => None,
        Some(h) => Some(h.last_seen.elapsed()),
        None => Some(shared.started.elapsed()),
    }
}

/// Waits up to `wait` for the destination of `m` to hold no instance of its VM (neither running
/// nor incoming), starting from `first`, its last answer. The error says what it still holds.
async fn destination_lets_go(shared: &Shared, m: &MoveRecord, first: Result<pb::VmPresence, String>, wait: Duration) -> Result<(), String> {
    let asked = Instant::now();
    let deadline = asked + wait;
    let mut answer = first;
    loop {
        let held = match &answer {
            Ok(d) if !d.running && !d.incoming => {
                if asked.elapsed() >= Duration::from_millis(250) {
                    info!(vm = %m.vm_id, destination = %m.to_host, waited_ms = asked.elapsed().as_millis() as u64, "the destination let go of its incoming instance");
                }
                return Ok(());
            }
            Ok(d) => format!("{} holds it ({})", m.to_host, d.state),
            Err(e) => format!("{} cannot say whether it holds it: {e}", m.to_host),
        };
        if Instant::now() >= deadline || shared.cancel.is_cancelled() {
            return Err(held);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        answer = inspect(shared, &m.to_host, &m.vm_id).await;
    }
}

/// The live state of an executing plan, shared by its move tasks.
struct Running {
    plan: Mutex<PlanRecord>,
    /// Moves whose destination already holds their reservation (their bundle's, taken together).
    reserved: std::collections::HashSet<usize>,
}

impl Running {
    /// Moves move `idx` to `step` and writes the plan to the journal before returning. A step
    /// that cannot be journaled is not taken.
    fn set(&self, shared: &Shared, idx: usize, step: Step, detail: &str, started: Instant) -> Result<(), String> {
        let mut p = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        let m = &mut p.moves[idx];
        m.step = step;
        m.detail = detail.to_string();
        if step.is_final() {
            m.duration_ms = Some(started.elapsed().as_millis() as u64);
        }
        shared.journal.save(&p).map_err(|e| e.to_string())
    }

    fn snapshot(&self) -> PlanRecord {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs `plan` (already in the journal) to the end: moves start in plan order as soon as their
/// hosts have a free slot within `limits` (no batches). Returns the plan as it ended, and, when
/// a move failed under `on_failure = "rollback"`, the plan that reversed it.
pub async fn execute(shared: &Arc<Shared>, plan: PlanRecord, limits: MigrationLimits) -> PlanRecord {
    let id = plan.id;
    // A rollback reverses moves in reverse order: one at a time, and it never rolls back itself.
    let limits = if plan.rollback_of.is_some() {
        MigrationLimits { per_host_out: 1, per_host_in: 1, cluster: 1, on_failure: OnFailure::Continue, ..limits }
    } else {
        limits
    };
    shared.executing.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
    let span = info_span!("plan", id, origin = %plan.origin, moves = plan.moves.len());
    let snapshot = plan.clone();
    // At shutdown the plan stops where it is, as in a crash: the journal holds each move's
    // step, and the next coordinator's reconciler settles them.
    let ended = tokio::select! {
        ended = execute_moves(shared, plan, limits).instrument(span) => ended,
        _ = shared.cancel.cancelled() => {
            shared.executing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return shared.journal.get(id).ok().flatten().unwrap_or(snapshot);
        }
    };
    shared.executing.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    let failed = ended.moves.iter().any(|m| m.step.is_failure());
    if failed && limits.on_failure == OnFailure::Rollback && ended.rollback_of.is_none() && ended.moves.iter().any(|m| m.step == Step::Done)
    {
        info!(plan = id, "a move failed: rolling the plan back");
        match Box::pin(rollback(shared, id, limits)).await {
            Ok(r) => info!(plan = id, rollback = r.id, status = r.status(), "plan rolled back"),
            Err(e) => warn!(plan = id, error = %e, "rolling the plan back failed"),
        }
        return shared.journal.get(id).ok().flatten().unwrap_or(ended);
    }
    ended
}

/// The pending moves of `plan` grouped into bundles (moves to one host whose `with` name each
/// other), each of at least two moves.
fn bundles(plan: &PlanRecord) -> Vec<Vec<usize>> {
    let mut seen = vec![false; plan.moves.len()];
    let mut out = Vec::new();
    for (i, m) in plan.moves.iter().enumerate() {
        if seen[i] || m.with.is_empty() || m.step != Step::Pending {
            continue;
        }
        let group: Vec<usize> = (0..plan.moves.len())
            .filter(|&j| {
                let o = &plan.moves[j];
                o.step == Step::Pending && o.to_host == m.to_host && (j == i || m.with.contains(&o.vm_id))
            })
            .collect();
        for &j in &group {
            seen[j] = true;
        }
        if group.len() > 1 {
            out.push(group);
        }
    }
    out
}

/// Asks move `m`'s destination to hold its hard reservation; the reservation's id once the
/// destination's answer shows it held. One the answer does not show is released.
async fn hold_reservation(shared: &Shared, plan_id: u64, m: &MoveRecord) -> Result<String, String> {
    let rid = m.reservation_id(plan_id);
    let reserve = pb::Reserve {
        id: rid.clone(),
        vm_id: m.vm_id.clone(),
        hard: true,
        cpu_mhz: m.cpu_mhz,
        memory_mib: m.memory_mib,
        ttl_ms: RESERVATION_TTL_MS,
    };
    let r = send(shared, &m.to_host, command::Body::Reserve(reserve)).await?;
    let held = matches!(&r.detail, Some(command_result::Detail::Reservations(s)) if s.held.iter().any(|h| h.id == rid && h.hard));
    if !held {
        release(shared, &m.to_host, &rid).await;
        return Err(format!("pre-check: {} does not show the hard reservation {rid}", m.to_host));
    }
    Ok(rid)
}

/// Reserves every move of `bundle` on its destination before any of them starts. If the
/// destination refuses one, the ones it granted are released and every move of the bundle is
/// refused, so a bundle never ends up split by a destination short of room. Returns whether
/// the bundle holds its reservations.
async fn reserve_bundle(shared: &Shared, running: &Running, bundle: &[usize]) -> bool {
    let plan = running.snapshot();
    let started = Instant::now();
    let names: Vec<&str> = bundle.iter().map(|&i| plan.moves[i].vm_id.as_str()).collect();
    let to = plan.moves[bundle[0]].to_host.clone();
    let mut held: Vec<String> = Vec::new();
    let mut refusal: Option<String> = None;
    for &i in bundle {
        let m = &plan.moves[i];
        if let Err(e) = running.set(shared, i, Step::Reserving, "reserving with its bundle", started) {
            refusal = Some(format!("journal: {e}"));
            break;
        }
        match hold_reservation(shared, plan.id, m).await {
            Ok(rid) => held.push(rid),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let Some(why) = refusal else { return true };
    for rid in &held {
        release(shared, &to, rid).await;
    }
    let detail = format!("pre-check: {to} cannot hold the whole bundle ({}): {why}", names.join(", "));
    warn!(to = %to, bundle = ?names, reason = %why, "a bundle's destination refused it; none of it moves");
    for &i in bundle {
        if let Err(e) = running.set(shared, i, Step::Refused, &detail, started) {
            warn!(error = %e, "journaling a bundle's refusal failed");
        }
    }
    false
}

async fn execute_moves(shared: &Arc<Shared>, plan: PlanRecord, limits: MigrationLimits) -> PlanRecord {
    let groups = bundles(&plan);
    let mut running = Running { plan: Mutex::new(plan), reserved: Default::default() };
    for bundle in &groups {
        if reserve_bundle(shared, &running, bundle).await {
            running.reserved.extend(bundle.iter().copied());
        }
    }
    let mut queue = MigrationQueue::new(limits);
    let plan = running.snapshot();
    for (i, m) in plan.moves.iter().enumerate() {
        if m.step == Step::Pending || (m.step == Step::Reserving && running.reserved.contains(&i)) {
            queue.push(QueuedMove { id: i as u64, from: m.from_host.clone(), to: m.to_host.clone() });
        }
    }
    let running = Arc::new(running);
    let mut tasks = tokio::task::JoinSet::new();
    let mut stopping = false;
    loop {
        if !stopping {
            for q in queue.start_ready() {
                let (shared, running) = (shared.clone(), running.clone());
                let m = running.snapshot().moves[q.id as usize].clone();
                let span = info_span!("move", vm = %m.vm_id, from = %m.from_host, to = %m.to_host, reason = %m.reason);
                tasks.spawn(
                    async move {
                        let began = std::time::Instant::now();
                        let step = run_judged_move(&shared, &running, q.id as usize).await;
                        shared.metrics.migration_duration.observe(began.elapsed().as_secs_f64());
                        (q.id, step)
                    }
                    .instrument(span),
                );
            }
        }
        match tasks.join_next().await {
            Some(Ok((id, step))) => {
                queue.finish(id);
                let m = running.snapshot().moves[id as usize].clone();
                info!(vm = %m.vm_id, from = %m.from_host, to = %m.to_host, outcome = step.name(), detail = %m.detail, "move ended");
                shared.metrics.migrations.get_or_create(&[("outcome", step.name())]).inc();
                if step.is_failure() && limits.on_failure == OnFailure::Rollback {
                    stopping = true;
                }
            }
            Some(Err(e)) => {
                // A panicked move task: its slots cannot be told apart, so stop starting more;
                // the reconciler settles what it left.
                warn!(error = %e, "a move task failed; the rest of this plan is cancelled");
                stopping = true;
            }
            None => break,
        }
        if shared.cancel.is_cancelled() {
            stopping = true;
        }
    }
    // Moves never started: cancelled (a shutdown leaves them for no one; they did nothing).
    let now = Instant::now();
    let pending: Vec<usize> =
        running.snapshot().moves.iter().enumerate().filter(|(_, m)| m.step == Step::Pending).map(|(i, _)| i).collect();
    for i in pending {
        let _ = running.set(shared, i, Step::Cancelled, "not started: the plan stopped", now);
    }
    running.snapshot()
}

/// Runs move `idx` of `running`; a repair move is judged before and after by the dependency
/// feedback loop, which learns from it.
async fn run_judged_move(shared: &Shared, running: &Running, idx: usize) -> Step {
    let (plan_id, m) = {
        let plan = running.snapshot();
        (plan.id, plan.moves[idx].clone())
    };
    if m.reason != "repair" {
        return run_move(shared, running, idx).await;
    }
    let key = format!("{plan_id}/{}", m.vm_id);
    shared.ecosystem.repair_started(&shared.state(), &key, &m.vm_id);
    let step = run_move(shared, running, idx).await;
    if step != Step::Done {
        shared.ecosystem.repair_abandoned(&key);
        return step;
    }
    let at_s = crate::shared::unix_ms() as f64 / 1000.0;
    match shared.ecosystem.repair_finished(&shared.state(), &key, &m.vm_id, &m.to_host, at_s) {
        Ok(Some(o)) => info!(
            vm = %m.vm_id,
            types = ?o.types,
            latency_change_pct = ?o.latency_change_pct,
            verdict = ?o.verdict,
            "repair move judged by the dependency feedback loop"
        ),
        Ok(None) => {}
        Err(e) => warn!(error = %e, "storing what the dependency feedback loop learned failed"),
    }
    step
}

/// Runs move `idx` of `running` to a final step (or leaves it mid-step for the reconciler when
/// neither host can say where the VM is).
async fn run_move(shared: &Shared, running: &Running, idx: usize) -> Step {
    let started = Instant::now();
    let plan = running.snapshot();
    let (plan_id, m) = (plan.id, plan.moves[idx].clone());
    let limits = shared.limits;
    let end = |step: Step, detail: String| {
        if let Err(e) = running.set(shared, idx, step, &detail, started) {
            warn!(error = %e, "journaling a move's outcome failed");
        }
        step
    };
    let step_to = |step: Step| running.set(shared, idx, step, "", started);
    let rid = m.reservation_id(plan_id);
    // A move of a bundle holds its reservation already (`reserve_bundle`); if it does not
    // start, the reservation goes.
    let pre_reserved = running.reserved.contains(&idx);
    let skip = async |why: String| {
        if pre_reserved {
            release(shared, &m.to_host, &rid).await;
        }
        end(Step::Skipped, why)
    };
    // Pre-check: the VM runs on its source and is not migrating already.
    match inspect(shared, &m.from_host, &m.vm_id).await {
        Ok(p) if p.running && !p.migrating => {}
        Ok(p) => return skip(format!("pre-check: {} is {} on {}", m.vm_id, p.state, m.from_host)).await,
        Err(e) => return skip(format!("pre-check: {e}")).await,
    }
    let registered =
        shared.state().host(&m.to_host).map(|h| (h.registration.migration_uri.clone(), h.registration.migration_data_uri.clone()));
    let Some((dest_uri, dest_data_uri)) = registered else {
        return skip(format!("pre-check: {} has never registered", m.to_host)).await;
    };
    if !pre_reserved {
        if let Err(e) = step_to(Step::Reserving) {
            return end(Step::Skipped, format!("journal: {e}"));
        }
        if let Err(e) = hold_reservation(shared, plan_id, &m).await {
            return end(Step::Refused, e);
        }
    }
    if let Err(e) = step_to(Step::Migrating) {
        release(shared, &m.to_host, &rid).await;
        return end(Step::Skipped, format!("journal: {e}"));
    }
    let budget = time_budget(m.memory_mib, &limits);
    let move_out = command::Body::MigrateOut(pb::MigrateOut {
        vm_id: m.vm_id.clone(),
        destination_host: m.to_host.clone(),
        destination_uri: dest_uri,
        destination_data_uri: dest_data_uri,
    });
    let migrated = send_step(shared, &m.from_host, move_out, budget, &step_id(plan_id, idx, "migrate_out")).await;
    shared.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.vm_id);
    // Settles the move from where its VM is found, or leaves it open with `why` journaled.
    let settled = async |reached: Step, why: &str, stayed: Step| match settle(shared, plan_id, &m, reached, why, stayed, SETTLE_WAIT).await
    {
        Some((step, detail)) => end(step, detail),
        None => {
            // Left open mid-step: the journal keeps why, for the reconciler and the operator
            // (unless the coordinator is stopping: a restart interrupted it, as the reconciler says).
            let step = running.snapshot().moves[idx].step;
            if !shared.cancel.is_cancelled()
                && let Err(e) = running.set(shared, idx, step, why, started)
            {
                warn!(error = %e, "journaling why a move is left open failed");
            }
            warn!(vm = %m.vm_id, "the move cannot end yet; the reconciler settles it later");
            step
        }
    };
    let handoff = match migrated {
        Ok(r) => match r.detail {
            Some(command_result::Detail::Handoff(h)) => Some(h),
            _ => None,
        },
        Err(StepError::Precheck(e)) => {
            release(shared, &m.to_host, &rid).await;
            return end(Step::Skipped, e);
        }
        Err(StepError::TimedOut(e)) => {
            let why = format!("over its {} s budget ({e})", budget.as_secs());
            return settled(Step::Migrating, &why, Step::Aborted).await;
        }
        Err(StepError::Failed(e) | StepError::NotDelivered(e)) => {
            return settled(Step::Migrating, &e, Step::Failed).await;
        }
    };
    let handed_over = handoff.is_some();
    if let Some(vm) = handoff {
        if let Err(e) = step_to(Step::HandingOver) {
            let why = format!("journal: {e}");
            return settled(Step::Migrating, &why, Step::Failed).await;
        }
        let adopt = command::Body::Adopt(pb::Adopt { vm: Some(vm) });
        if let Err(e) = send_step(shared, &m.to_host, adopt, STEP_TIMEOUT, &step_id(plan_id, idx, "adopt")).await {
            // The destination did not take it: abandon the copy; the VM resumes on its source.
            // An Adopt that never reached the destination (it is gone) cannot have been carried out.
            let reached = if matches!(e, StepError::NotDelivered(_)) { Step::Migrating } else { Step::HandingOver };
            let why = format!("the destination did not take it: {e}");
            return settled(reached, &why, Step::RolledBack).await;
        }
        if let Err(e) = step_to(Step::Completing) {
            warn!(error = %e, "journaling the hand-over failed; completing anyway");
        }
        let complete = command::Body::CompleteMigration(pb::CompleteMigration { vm_id: m.vm_id.clone() });
        let completed = send_step(shared, &m.from_host, complete, STEP_TIMEOUT, &step_id(plan_id, idx, "complete")).await;
        if let Err(e) = completed.map_err(|e| e.to_string()) {
            let why = format!("the source did not confirm letting go: {e}");
            return settled(Step::Completing, &why, Step::Failed).await;
        }
    }
    // Post-check: it runs on the destination and not on the source.
    let (dst, src) = (inspect(shared, &m.to_host, &m.vm_id).await, inspect(shared, &m.from_host, &m.vm_id).await);
    match (&dst, &src) {
        (Ok(d), Ok(s)) if d.running && !s.running => {
            release(shared, &m.to_host, &rid).await;
            end(Step::Done, String::new())
        }
        _ => {
            let why = format!(
                "post-check: on {} {}, on {} {}",
                m.to_host,
                dst.as_ref().map(|p| p.state.clone()).unwrap_or_else(|e| e.clone()),
                m.from_host,
                src.as_ref().map(|p| p.state.clone()).unwrap_or_else(|e| e.clone())
            );
            let reached = if handed_over { Step::Completing } else { Step::Migrating };
            settled(reached, &why, Step::Failed).await
        }
    }
}

/// Reverses plan `plan_id`'s done moves, last first, one at a time, as a new plan
/// (`rollback_of` = `plan_id`). Refused while the plan runs, when it was rolled back already,
/// and when it has no done move.
pub async fn rollback(shared: &Arc<Shared>, plan_id: u64, limits: MigrationLimits) -> Result<PlanRecord, String> {
    let back = start_rollback(shared, plan_id)?;
    Ok(execute(shared, back, limits).await)
}

/// Records the rollback plan of `plan_id` (and marks `plan_id` as rolled back by it) without
/// running it.
pub fn start_rollback(shared: &Shared, plan_id: u64) -> Result<PlanRecord, String> {
    let _guard = shared.rollbacks.lock().unwrap_or_else(|p| p.into_inner());
    let mut plan = shared.journal.get(plan_id).map_err(|e| e.to_string())?.ok_or_else(|| format!("there is no plan {plan_id}"))?;
    // The journal decides: a plan whose moves all ended may be reversed even while its
    // executor task is still winding down (recording outcomes).
    if plan.status() == "running" {
        return Err(format!("plan {plan_id} is still running"));
    }
    if let Some(by) = plan.rolled_back_by {
        return Err(format!("plan {plan_id} was rolled back already, by plan {by}"));
    }
    let moves = plan.reversed();
    if moves.is_empty() {
        return Err(format!("plan {plan_id} moved no VM; there is nothing to roll back"));
    }
    let back = record_plan(shared, "rollback", moves, Some(plan_id)).map_err(|e| e.to_string())?;
    plan.rolled_back_by = Some(back.id);
    shared.journal.save(&plan).map_err(|e| e.to_string())?;
    Ok(back)
}

/// Settles the moves of journaled plans that no executor is running (a coordinator restarted
/// mid-plan, or a move whose hosts could not be asked): each one ends where its VM is found.
/// Returns how many moves it settled.
pub async fn reconcile(shared: &Arc<Shared>, wait: Duration) -> usize {
    let plans = match shared.journal.unfinished() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "reading unfinished plans failed");
            return 0;
        }
    };
    let mut settled = 0;
    for mut plan in plans {
        if shared.executing.lock().unwrap_or_else(|p| p.into_inner()).contains(&plan.id) {
            continue;
        }
        let span = info_span!("reconcile_plan", plan = plan.id);
        for i in 0..plan.moves.len() {
            let m = plan.moves[i].clone();
            if m.step.is_final() {
                continue;
            }
            let outcome = if m.step == Step::Pending {
                Some((Step::Cancelled, "not started before the coordinator restarted".to_string()))
            } else {
                // The executor's reason when it left the move open; otherwise a restart interrupted it.
                let why = if m.detail.is_empty() { format!("interrupted while {}", m.step.name()) } else { m.detail.clone() };
                settle(shared, plan.id, &m, m.step, &why, Step::Aborted, wait).instrument(span.clone()).await
            };
            if let Some((step, detail)) = outcome {
                info!(parent: &span, vm = %m.vm_id, step = step.name(), %detail, "settled an interrupted move");
                plan.moves[i].step = step;
                plan.moves[i].detail = detail;
                settled += 1;
                if let Err(e) = shared.journal.save(&plan) {
                    warn!(error = %e, "journaling a settled move failed");
                }
            }
        }
    }
    settled
}

/// VMs in moves that are not finished (kept out of new plans until settled).
pub fn vms_in_flight(shared: &Shared) -> std::collections::HashSet<String> {
    shared
        .journal
        .unfinished()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|p| p.moves.into_iter().filter(|m| !m.step.is_final()).map(|m| m.vm_id))
        .collect()
}

/// Records a new plan in the journal, already counted as executing, so the reconciler never
/// takes its pending moves for ones a restart interrupted. The caller runs it with [`execute`].
pub fn record_plan(
    shared: &Shared,
    origin: &str,
    moves: Vec<MoveRecord>,
    rollback_of: Option<u64>,
) -> Result<PlanRecord, crate::plan_journal::JournalError> {
    let mut executing = shared.executing.lock().unwrap_or_else(|p| p.into_inner());
    let plan = shared.journal.create(origin, moves, crate::shared::unix_ms(), rollback_of)?;
    executing.insert(plan.id);
    shared.metrics.plans.get_or_create(&[("origin", plan_origin_label(origin))]).inc();
    Ok(plan)
}

/// A plan's origin as a label value of a few kinds ("operator ..." and the like are folded).
fn plan_origin_label(origin: &str) -> &'static str {
    ["policy", "drain", "rollback", "rollout", "operator"].into_iter().find(|k| origin.starts_with(k)).unwrap_or("other")
}
