//! The agent's side of the long-lived gRPC stream to the coordinator: connect over mutual TLS,
//! register, send the latest report whenever the sampler produces one, answer commands, and on
//! any failure reconnect with exponential backoff and jitter. Sampling never waits for the link:
//! reports go through a `watch` channel, so while the coordinator is away only the newest report
//! is kept for sending and the history store keeps everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presage_decide::reservation::{Reservation, ReservationKind, Resources};

use presage_protocol::pb::{
    self, AgentMessage, CommandResult, CommandStatus, CoordinatorMessage, Register, Report, agent_link_client::AgentLinkClient,
    agent_message, command, command_result, coordinator_message,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::ReconnectConfig;
use crate::hypervisor::{Hypervisor, HypervisorError, MigrationProgress, MigrationTarget};
use crate::reservations::{ReservationDesk, ReservationError};
use crate::sizing::{ResizeAsk, SizingDesk, SizingError, VmView};
use presage_protocol::error_chain;

/// How long the coordinator has to answer the registration.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an abort waits for the migration it follows to be taken on by the hypervisor.
const ABORT_WAITS_FOR_START: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach the coordinator at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the coordinator refused the session: {0}")]
    Refused(String),
    #[error("the stream to the coordinator broke: {0}")]
    Stream(String),
    #[error("the coordinator did not welcome the agent within {0:?}")]
    NoWelcome(Duration),
}

/// Why a session ended without an error.
enum SessionEnd {
    Cancelled,
    ClosedByCoordinator,
}

pub struct CoordinatorLink {
    /// The coordinators to try, in turn (a leader and its standbys).
    pub urls: Vec<String>,
    /// The newest leader seen: an older one is refused.
    pub epochs: Arc<crate::coordinator_epoch::EpochGuard>,
    pub tls: ClientTlsConfig,
    pub register: Register,
    pub reconnect: ReconnectConfig,
    pub commands: CommandHandler,
}

/// Migrations this agent was asked for that its hypervisor has not yet taken on. Commands run as
/// tasks of their own, so an `AbortMigration` could reach the hypervisor before the `MigrateOut`
/// that preceded it on the stream, find nothing to stop, and let the migration run after the
/// coordinator was told it was aborted. Such an abort waits instead until the hypervisor has
/// taken the migration on (from then on an abort stops it) or the migration has ended.
#[derive(Default)]
pub struct MigrationStarts {
    /// Per VM: the command id of its migration and whether the hypervisor has taken it on.
    pending: Mutex<HashMap<String, (u64, watch::Receiver<bool>)>>,
}

/// How a command is ordered against the migrations before it (see [`MigrationStarts`]).
pub enum CommandOrder {
    /// Not a migration command, or an abort with no migration pending.
    Free,
    /// A migration: tells the abort commands after it when it has started.
    Migration(StartTicket),
    /// An abort that waits for the migration before it to start (or end).
    AbortAfter(watch::Receiver<bool>),
}

/// A migration's place in [`MigrationStarts`]; dropping it (the migration ended) releases the
/// aborts waiting on it.
pub struct StartTicket {
    starts: Arc<MigrationStarts>,
    vm_id: String,
    command: u64,
    started: watch::Sender<bool>,
}

impl StartTicket {
    /// The hypervisor has taken the migration on.
    pub fn started(&self) {
        let _ = self.started.send(true);
    }
}

impl Drop for StartTicket {
    fn drop(&mut self) {
        let mut pending = self.starts.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.get(&self.vm_id).is_some_and(|(command, _)| *command == self.command) {
            pending.remove(&self.vm_id);
        }
    }
}

impl MigrationStarts {
    /// Places `cmd` among the migrations before it; called in the order commands arrive.
    pub fn order(self: &Arc<Self>, cmd: &pb::Command) -> CommandOrder {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match &cmd.body {
            Some(command::Body::MigrateOut(m)) => {
                let (started, waits) = watch::channel(false);
                pending.insert(m.vm_id.clone(), (cmd.id, waits));
                CommandOrder::Migration(StartTicket { starts: Arc::clone(self), vm_id: m.vm_id.clone(), command: cmd.id, started })
            }
            Some(command::Body::AbortMigration(a)) => match pending.get(&a.vm_id) {
                Some((_, waits)) => CommandOrder::AbortAfter(waits.clone()),
                None => CommandOrder::Free,
            },
            _ => CommandOrder::Free,
        }
    }
}

/// Carries out the coordinator's commands. Each command runs as a task of its own, so a long
/// one (a migration) never holds back the others (an abort of that migration, a ping).
#[derive(Clone)]
pub struct CommandHandler {
    pub started: Instant,
    /// The host's reservations; reserve and release commands go through its admission.
    pub reservations: Arc<Mutex<ReservationDesk>>,
    /// The host's leases and resizes; resize and lease commands go through its admission.
    pub sizing: Arc<Mutex<SizingDesk>>,
    /// The hypervisor, for migration commands.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Holds aborts until the migration they follow has started.
    pub migrations: Arc<MigrationStarts>,
    /// The steps run for the coordinator, so that none runs twice.
    pub steps: Arc<crate::step_ledger::StepLedger>,
}

impl CoordinatorLink {
    /// Runs until `cancel` fires, reconnecting as needed.
    pub async fn run(self, mut reports: watch::Receiver<Option<Report>>, cancel: CancellationToken) {
        let mut backoff = self.reconnect.initial_backoff;
        let mut attempt: u64 = 0;
        let mut which = 0usize;
        loop {
            attempt += 1;
            let url = self.urls[which % self.urls.len().max(1)].clone();
            let span = info_span!("coordinator_session", coordinator = %url, attempt);
            let began = Instant::now();
            let result = self.session(&url, &mut reports, &cancel).instrument(span).await;
            match result {
                Ok(SessionEnd::Cancelled) => return,
                Ok(SessionEnd::ClosedByCoordinator) => warn!(coordinator = %url, "coordinator closed the session"),
                Err(e) => warn!(coordinator = %url, error = %e, retry_in = ?backoff, "coordinator session failed; still sampling"),
            }
            // The next address: a standby that has become the leader, or the leader again.
            which += 1;
            if !which.is_multiple_of(self.urls.len().max(1)) && began.elapsed() < self.reconnect.max_backoff {
                // Through the list without waiting: only a full round backs off.
                continue;
            }
            if began.elapsed() > self.reconnect.max_backoff {
                // The session was healthy for a while: start over from the short backoff.
                backoff = self.reconnect.initial_backoff;
            }
            let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(self.reconnect.max_backoff);
        }
    }

    async fn session(
        &self,
        url: &str,
        reports: &mut watch::Receiver<Option<Report>>,
        cancel: &CancellationToken,
    ) -> Result<SessionEnd, LinkError> {
        let connect_err = |e: &(dyn std::error::Error + 'static)| LinkError::Connect { url: url.to_string(), detail: error_chain(e) };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| connect_err(&e))?
            .tls_config(self.tls.clone())
            .map_err(|e| connect_err(&e))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = tokio::select! {
            _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
            c = endpoint.connect() => c.map_err(|e| connect_err(&e))?,
        };
        let mut client = AgentLinkClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(16);
        let msg = |body| AgentMessage { body: Some(body) };
        tx.send(msg(agent_message::Body::Register(self.register.clone())))
            .await
            .map_err(|_| LinkError::Stream("outbound closed".into()))?;
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|s| LinkError::Refused(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
            .await
            .map_err(|_| LinkError::NoWelcome(WELCOME_TIMEOUT))?
            .map_err(|s| LinkError::Refused(format!("{}: {}", s.code(), s.message())))?;
        match welcome.and_then(|m| m.body) {
            Some(coordinator_message::Body::Welcome(w)) => {
                // A deposed leader (cut off, frozen, resumed) is not taken: its epoch is older.
                self.epochs.admit(w.epoch).map_err(|e| LinkError::Refused(e.to_string()))?;
                info!(
                    host_id = %self.register.host_id,
                    coordinator_version = %w.coordinator_version,
                    protocol_version = w.protocol_version,
                    host_timeout_ms = w.host_timeout_ms,
                    epoch = w.epoch,
                    "registered with the coordinator"
                )
            }
            other => return Err(LinkError::Refused(format!("expected Welcome, got {other:?}"))),
        }
        // Send the newest report at once, even if it was produced while disconnected.
        reports.mark_changed();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
                changed = reports.changed() => {
                    if changed.is_err() {
                        return Ok(SessionEnd::Cancelled);
                    }
                    let report = reports.borrow_and_update().clone();
                    if let Some(r) = report {
                        tx.send(msg(agent_message::Body::Report(r))).await.map_err(|_| LinkError::Stream("outbound closed".into()))?;
                    }
                }
                incoming = inbound.message() => match incoming {
                    Ok(Some(CoordinatorMessage { body: Some(coordinator_message::Body::ReportAck(ack)) })) => {
                        debug!(seq = ack.seq, "report acknowledged");
                    }
                    Ok(Some(CoordinatorMessage { body: Some(coordinator_message::Body::Command(cmd)) })) => {
                        if let Err(e) = self.epochs.allows(cmd.epoch) {
                            // A newer leader has taken this agent since: nothing of the old one runs.
                            warn!(id = cmd.id, epoch = cmd.epoch, error = %e, "command refused");
                            let refused = CommandResult { id: cmd.id, status: CommandStatus::Failed as i32, message: e.to_string(), detail: None };
                            tx.send(msg(agent_message::Body::CommandResult(refused))).await.map_err(|_| LinkError::Stream("outbound closed".into()))?;
                            return Err(LinkError::Refused(e.to_string()));
                        }
                        let latest = reports.borrow().clone();
                        let (handler, tx) = (self.commands.clone(), tx.clone());
                        // Taken here, in the order the coordinator sent the commands.
                        let order = handler.migrations.order(&cmd);
                        tokio::spawn(async move {
                            let result = handler.execute_once(cmd, order, latest.as_ref(), &tx).await;
                            // A closed stream drops the result; the coordinator times the command out.
                            let _ = tx.send(msg(agent_message::Body::CommandResult(result))).await;
                        }.in_current_span());
                    }
                    Ok(Some(other)) => debug!(?other, "ignoring unexpected coordinator message"),
                    Ok(None) => return Ok(SessionEnd::ClosedByCoordinator),
                    Err(s) => return Err(LinkError::Stream(format!("{}: {}", s.code(), s.message()))),
                },
            }
        }
    }
}

impl CommandHandler {
    /// [`execute`](Self::execute), at most once per step id (commands without one run each time).
    async fn execute_once(
        &self,
        cmd: pb::Command,
        order: CommandOrder,
        latest: Option<&Report>,
        out: &mpsc::Sender<AgentMessage>,
    ) -> CommandResult {
        use crate::step_ledger::Admission;
        use crate::unix_ms;
        if cmd.step_id.is_empty() {
            return self.execute(cmd, order, latest, out).await;
        }
        let (id, step) = (cmd.id, cmd.step_id.clone());
        let failed = |message: String| CommandResult { id, status: CommandStatus::Failed as i32, message, detail: None };
        let ledger = self.steps.clone();
        let asked = step.clone();
        let admission = tokio::task::spawn_blocking(move || ledger.begin(&asked, unix_ms())).await;
        match admission {
            Ok(Ok(Admission::Run)) => {
                let result = self.execute(cmd, order, latest, out).await;
                let (ledger, kept) = (self.steps.clone(), result.clone());
                let finish = step.clone();
                match tokio::task::spawn_blocking(move || ledger.finish(&finish, &kept, unix_ms())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(step, error = %e, "recording the step as done failed; asked again, it is refused as unfinished"),
                    Err(e) => warn!(step, error = %e, "recording the step as done failed"),
                }
                result
            }
            Ok(Ok(Admission::Done(mut kept))) => {
                info!(step, "this step was done before: its result sent again, not run again");
                kept.id = id;
                kept
            }
            Ok(Ok(Admission::StartedBefore { at_ms })) => {
                warn!(step, at_ms, "this step was started before and never finished here: not run again");
                failed(format!(
                    "step {step} was started at {at_ms} (Unix ms) and not finished here (the agent stopped in it): not run again; find the VM where it runs"
                ))
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(e) => failed(format!("step {step}: {e}")),
        }
    }

    /// Carries out one command from the coordinator; `latest` is the newest report (what the
    /// host's VMs use now, for reservation admission).
    #[tracing::instrument(name = "command", skip_all, fields(id = cmd.id))]
    async fn execute(
        &self,
        cmd: pb::Command,
        order: CommandOrder,
        latest: Option<&Report>,
        outbound: &mpsc::Sender<AgentMessage>,
    ) -> CommandResult {
        let id = cmd.id;
        let failed = |message: String| CommandResult { id, status: CommandStatus::Failed as i32, message, detail: None };
        match cmd.body {
            Some(command::Body::MigrateOut(m)) => {
                info!(vm = %m.vm_id, to = %m.destination_host, uri = %m.destination_uri, "migrating out");
                let hv = self.hypervisor.clone();
                let outbound = outbound.clone();
                let target = MigrationTarget { host: m.destination_host.clone(), uri: m.destination_uri, data_uri: m.destination_data_uri };
                let (vm_id, destination_host) = (m.vm_id.clone(), m.destination_host.clone());
                let ticket = match order {
                    CommandOrder::Migration(t) => Some(t),
                    _ => None,
                };
                let migrated = tokio::task::spawn_blocking(move || {
                    // Progress goes out on the session as it comes; one dropped when the stream is
                    // full is replaced by the next.
                    let sink = |p: MigrationProgress| {
                        let _ = outbound.try_send(AgentMessage {
                            body: Some(agent_message::Body::MigrationProgress(pb::MigrationProgress {
                                vm_id: vm_id.clone(),
                                destination_host: destination_host.clone(),
                                elapsed_ms: p.elapsed_ms,
                                data_total: p.data_total,
                                data_processed: p.data_processed,
                                data_remaining: p.data_remaining,
                                bytes_per_s: p.bytes_per_s,
                            })),
                        });
                    };
                    let started = || {
                        if let Some(t) = &ticket {
                            t.started();
                        }
                    };
                    hv.migrate_out(&m.vm_id, &target, &started, &sink)
                })
                .await;
                match migrated {
                    Ok(Ok(handoff)) => CommandResult {
                        id,
                        status: CommandStatus::Ok as i32,
                        message: String::new(),
                        detail: handoff.map(command_result::Detail::Handoff),
                    },
                    Ok(Err(e @ HypervisorError::Precheck(_))) => {
                        info!(error = %e, "migration pre-check failed; nothing started");
                        CommandResult { id, status: CommandStatus::PrecheckFailed as i32, message: e.to_string(), detail: None }
                    }
                    Ok(Err(e)) => failed(e.to_string()),
                    Err(e) => failed(format!("migration task failed: {e}")),
                }
            }
            Some(command::Body::Inspect(i)) => {
                let hv = self.hypervisor.clone();
                match tokio::task::spawn_blocking(move || hv.inspect(&i.vm_id)).await {
                    Ok(Ok(p)) => CommandResult {
                        id,
                        status: CommandStatus::Ok as i32,
                        message: String::new(),
                        detail: Some(command_result::Detail::Presence(p)),
                    },
                    Ok(Err(e)) => failed(e.to_string()),
                    Err(e) => failed(format!("inspect task failed: {e}")),
                }
            }
            Some(command::Body::CompleteMigration(c)) => {
                self.on_hypervisor(id, "complete", move |hv| hv.complete_migration(&c.vm_id)).await
            }
            Some(command::Body::AbortMigration(a)) => {
                if let CommandOrder::AbortAfter(mut start) = order {
                    info!(vm = %a.vm_id, "abort waits for the migration it follows to start");
                    let waited = tokio::time::timeout(ABORT_WAITS_FOR_START, start.wait_for(|started| *started)).await;
                    if waited.is_err() {
                        warn!(vm = %a.vm_id, "the migration this abort follows has not started within {} s; aborting anyway", ABORT_WAITS_FOR_START.as_secs());
                    }
                }
                info!(vm = %a.vm_id, "aborting migration");
                self.on_hypervisor(id, "abort", move |hv| hv.abort_migration(&a.vm_id)).await
            }
            Some(command::Body::Adopt(a)) => {
                let Some(vm) = a.vm else { return failed("adopt: vm missing".into()) };
                info!(vm = %vm.vm_id, "adopting");
                self.on_hypervisor(id, "adopt", move |hv| hv.adopt(&vm)).await
            }
            Some(command::Body::Reserve(r)) => self.reservation_command(cmd.id, latest, |desk, now, committed| {
                let kind = if r.hard { ReservationKind::Hard } else { ReservationKind::Soft };
                let res = Reservation {
                    id: r.id.clone(),
                    vm_id: r.vm_id.clone(),
                    kind,
                    cpu_mhz: r.cpu_mhz,
                    memory_mib: r.memory_mib,
                    expires_at_ms: now.saturating_add(r.ttl_ms),
                };
                desk.reserve(res, now, committed)
            }),
            Some(command::Body::Release(r)) => self.reservation_command(cmd.id, latest, |desk, _, _| desk.release(&r.id).map(|_| ())),
            Some(command::Body::Resize(r)) => {
                let ask = ResizeAsk {
                    vm: r.vm_id.clone(),
                    desired: presage_decide::sizing::Allocation::new(r.cpu_cores, r.memory_mib),
                    io: presage_decide::sizing::IoLimits { disk_bytes_per_s: r.disk_bytes_per_s, net_bytes_per_s: r.net_bytes_per_s },
                    reason: r.reason.clone(),
                    dry_run: r.dry_run,
                };
                self.sizing_command(cmd.id, latest, move |desk, views, now, hv| desk.resize(&ask, views, now, hv).map(|_| ())).await
            }
            Some(command::Body::GrantLease(g)) => {
                let lease = match g.lease.as_ref().map(presage_decide::sizing::lease::Lease::try_from) {
                    Some(Ok(l)) => l,
                    Some(Err(why)) => return failed(format!("grant_lease: {why}")),
                    None => return failed("grant_lease: lease missing".into()),
                };
                let max_borrow = presage_decide::sizing::Allocation::new(g.max_borrow_cpu_cores, g.max_borrow_memory_mib);
                self.sizing_command(cmd.id, latest, move |desk, views, now, hv| desk.grant(lease, views, max_borrow, now, hv)).await
            }
            Some(command::Body::RevokeLease(r)) => {
                let by = if r.by.is_empty() { "coordinator".to_string() } else { r.by.clone() };
                self.sizing_command(cmd.id, latest, move |desk, views, now, hv| desk.revoke(&r.id, &by, views, now, hv).map(|_| ())).await
            }
            Some(command::Body::Ping(p)) => {
                debug!(nonce = %p.nonce, "ping");
                CommandResult {
                    id: cmd.id,
                    status: CommandStatus::Ok as i32,
                    message: String::new(),
                    detail: Some(command_result::Detail::Pong(pb::Pong {
                        nonce: p.nonce,
                        agent_uptime_ms: self.started.elapsed().as_millis() as u64,
                    })),
                }
            }
            None => {
                warn!("command of a kind this agent does not know; answering UNSUPPORTED");
                CommandResult {
                    id: cmd.id,
                    status: CommandStatus::Unsupported as i32,
                    message: format!("presage-agent {} does not support this command", presage_protocol::PRESAGE_VERSION),
                    detail: None,
                }
            }
        }
    }

    /// Runs a hypervisor call that answers nothing but success on a blocking thread (libvirt and
    /// simulated copies block) and turns it into the command's result.
    async fn on_hypervisor(
        &self,
        id: u64,
        what: &str,
        call: impl FnOnce(&dyn Hypervisor) -> Result<(), crate::hypervisor::HypervisorError> + Send + 'static,
    ) -> CommandResult {
        let hv = self.hypervisor.clone();
        let (status, message) = match tokio::task::spawn_blocking(move || call(&*hv)).await {
            Ok(Ok(())) => (CommandStatus::Ok, String::new()),
            Ok(Err(e)) => (CommandStatus::Failed, e.to_string()),
            Err(e) => (CommandStatus::Failed, format!("{what} task failed: {e}")),
        };
        CommandResult { id, status: status as i32, message, detail: None }
    }

    /// Runs `op` on the sizing desk on a blocking thread (it calls the hypervisor) against the
    /// VMs of the latest report, and answers with the desk's state; a refusal or failure is
    /// FAILED with the reason.
    async fn sizing_command(
        &self,
        id: u64,
        latest: Option<&Report>,
        op: impl FnOnce(&mut SizingDesk, &[VmView], u64, &dyn Hypervisor) -> Result<(), SizingError> + Send + 'static,
    ) -> CommandResult {
        let views = latest.map(crate::sizing::views).unwrap_or_default();
        let (desk, hv) = (self.sizing.clone(), self.hypervisor.clone());
        let run = move || {
            let now = crate::unix_ms();
            let mut desk = desk.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = op(&mut desk, &views, now, &*hv);
            (outcome, desk.state())
        };
        let (status, message, state) = match tokio::task::spawn_blocking(run).await {
            Ok((Ok(()), state)) => (CommandStatus::Ok, String::new(), Some(state)),
            Ok((Err(e), state)) => {
                info!(error = %e, "sizing command refused");
                (CommandStatus::Failed, e.to_string(), Some(state))
            }
            Err(e) => (CommandStatus::Failed, format!("sizing task failed: {e}"), None),
        };
        CommandResult { id, status: status as i32, message, detail: state.map(command_result::Detail::Sizing) }
    }

    /// Runs `op` on the reservation desk and answers with the desk's state; a refusal or a store
    /// failure is FAILED with the reason.
    fn reservation_command(
        &self,
        id: u64,
        latest: Option<&Report>,
        op: impl FnOnce(&mut ReservationDesk, u64, Resources) -> Result<(), ReservationError>,
    ) -> CommandResult {
        let now = crate::unix_ms();
        let committed = committed_use(latest);
        let mut desk = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = desk.purge_expired(now).and_then(|_| op(&mut desk, now, committed));
        let (status, message) = match &outcome {
            Ok(()) => (CommandStatus::Ok, String::new()),
            Err(e) => {
                info!(error = %e, "reservation refused");
                (CommandStatus::Failed, e.to_string())
            }
        };
        let capacity = desk.capacity();
        let state = pb::ReservationState {
            held: desk
                .book()
                .entries()
                .iter()
                .map(|r| pb::ReservationEntry {
                    id: r.id.clone(),
                    vm_id: r.vm_id.clone(),
                    hard: r.kind == ReservationKind::Hard,
                    cpu_mhz: r.cpu_mhz,
                    memory_mib: r.memory_mib,
                    expires_at_ms: r.expires_at_ms,
                })
                .collect(),
            committed_cpu_mhz: committed.cpu_mhz,
            committed_memory_mib: committed.memory_mib,
            capacity_cpu_mhz: capacity.cpu_mhz,
            capacity_memory_mib: capacity.memory_mib,
        };
        CommandResult { id, status: status as i32, message, detail: Some(command_result::Detail::Reservations(state)) }
    }
}

/// What the host's VMs use, from the newest report: CPU demand (utilisation × vCPUs × speed) and
/// the memory they were given.
pub fn committed_use(latest: Option<&Report>) -> Resources {
    let Some(r) = latest else { return Resources::default() };
    r.vms.iter().fold(Resources::default(), |a, v| Resources {
        cpu_mhz: a.cpu_mhz + v.cpu_utilisation * v.vcpus.max(1) as f64 * v.vcpu_mhz,
        memory_mib: a.memory_mib + v.memory_bytes as f64 / 1048576.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimulatedConfig;
    use crate::hypervisor::simulated::SimulatedHypervisor;
    use crate::hypervisor::{Observation, ProgressSink, StartedSink};
    use crate::store::MemoryStore;
    use presage_protocol::pb::{HostCapacity, SimulatedVm, VmPresence};

    /// A simulated hypervisor whose migrations take a while to be taken on, as a libvirt
    /// driver's do while the request crosses its pipe: the window an abort could slip through.
    struct SlowToStart {
        inner: SimulatedHypervisor,
        delay: Duration,
    }

    impl Hypervisor for SlowToStart {
        fn kind(&self) -> &'static str {
            "simulated"
        }
        fn capacity(&self) -> Result<HostCapacity, HypervisorError> {
            self.inner.capacity()
        }
        fn observe(&self) -> Result<Observation, HypervisorError> {
            self.inner.observe()
        }
        fn migrate_out(
            &self,
            vm_id: &str,
            target: &MigrationTarget,
            started: StartedSink<'_>,
            progress: ProgressSink<'_>,
        ) -> Result<Option<SimulatedVm>, HypervisorError> {
            std::thread::sleep(self.delay);
            self.inner.migrate_out(vm_id, target, started, progress)
        }
        fn inspect(&self, vm_id: &str) -> Result<VmPresence, HypervisorError> {
            self.inner.inspect(vm_id)
        }
        fn adopt(&self, vm: &SimulatedVm) -> Result<(), HypervisorError> {
            self.inner.adopt(vm)
        }
        fn complete_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
            self.inner.complete_migration(vm_id)
        }
        fn abort_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
            self.inner.abort_migration(vm_id)
        }
        fn resize(&self, vm_id: &str, size: &pb::VmSize) -> Result<pb::VmSizeReadback, HypervisorError> {
            self.inner.resize(vm_id, size)
        }
        fn read_size(&self, vm_id: &str) -> Result<pb::VmSizeReadback, HypervisorError> {
            self.inner.read_size(vm_id)
        }
    }

    fn command(id: u64, body: command::Body) -> pb::Command {
        pb::Command { id, body: Some(body), epoch: 0, step_id: String::new() }
    }

    /// The coordinator sends MigrateOut, then AbortMigration; the abort's task runs first. The
    /// migration must still be stopped, and the VM keep running here.
    /// A command handler on `hv` with empty desks and step ledger in memory.
    fn handler_on(hv: impl Hypervisor + 'static) -> CommandHandler {
        let desk = ReservationDesk::open(Arc::new(MemoryStore::default()), Resources { cpu_mhz: 1e4, memory_mib: 1e4 }, 1.0).unwrap();
        CommandHandler {
            started: Instant::now(),
            reservations: Arc::new(Mutex::new(desk)),
            sizing: Arc::new(Mutex::new(
                SizingDesk::open(Arc::new(MemoryStore::default()), presage_decide::sizing::Allocation::new(4.0, 1e4), 0.0).unwrap(),
            )),
            hypervisor: Arc::new(hv),
            migrations: Default::default(),
            steps: Arc::new(crate::step_ledger::StepLedger::open(Arc::new(MemoryStore::default()), 0).unwrap()),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abort_that_overtakes_its_migration_still_stops_it() {
        let traces = tempfile::tempdir().unwrap();
        std::fs::write(traces.path().join("vm-a"), "10\n20\n30\n40\n").unwrap();
        // A copy of several seconds, so only an abort can end it early.
        let simulated = SimulatedConfig { migration_mb_per_s: Some(0.5), ..SimulatedConfig::replaying(traces.path()) };
        let hv = SlowToStart { inner: SimulatedHypervisor::load(&simulated).unwrap(), delay: Duration::from_millis(300) };
        let handler = handler_on(hv);
        let migrate = command(
            1,
            command::Body::MigrateOut(pb::MigrateOut { vm_id: "vm-a".into(), destination_host: "dst".into(), ..Default::default() }),
        );
        let abort = command(2, command::Body::AbortMigration(pb::AbortMigration { vm_id: "vm-a".into() }));
        let (migrate_order, abort_order) = (handler.migrations.order(&migrate), handler.migrations.order(&abort));
        let (tx, _rx) = mpsc::channel(64);
        let (h1, h2, tx1, tx2) = (handler.clone(), handler.clone(), tx.clone(), tx);
        let aborted = tokio::spawn(async move { h2.execute(abort, abort_order, None, &tx2).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let migrated = tokio::spawn(async move { h1.execute(migrate, migrate_order, None, &tx1).await });
        let (aborted, migrated) = (aborted.await.unwrap(), migrated.await.unwrap());
        assert_eq!(aborted.status, CommandStatus::Ok as i32, "{aborted:?}");
        assert_eq!(migrated.status, CommandStatus::Failed as i32, "the migration was stopped: {migrated:?}");
        assert!(migrated.message.contains("aborted"), "{}", migrated.message);
        let here = handler.hypervisor.inspect("vm-a").unwrap();
        assert!(here.running && !here.migrating, "{here:?}");
        assert!(handler.migrations.pending.lock().unwrap().is_empty(), "nothing is left waiting");
    }

    #[tokio::test]
    async fn a_step_asked_twice_runs_once_and_its_result_is_sent_again() {
        let traces = tempfile::tempdir().unwrap();
        std::fs::write(traces.path().join("vm-a"), "10\n20\n30\n40\n").unwrap();
        let hv = SimulatedHypervisor::load(&SimulatedConfig::replaying(traces.path())).unwrap();
        let handler = handler_on(hv);
        let migrate = |id: u64, step: &str| pb::Command {
            step_id: step.into(),
            ..command(
                id,
                command::Body::MigrateOut(pb::MigrateOut { vm_id: "vm-a".into(), destination_host: "dst".into(), ..Default::default() }),
            )
        };
        let (tx, _rx) = mpsc::channel(64);
        let run = |cmd: pb::Command| {
            let (h, tx) = (handler.clone(), tx.clone());
            async move {
                let order = h.migrations.order(&cmd);
                h.execute_once(cmd, order, None, &tx).await
            }
        };
        let first = run(migrate(1, "plan-1/move-0/migrate_out")).await;
        assert_eq!(first.status, CommandStatus::Ok as i32, "{first:?}");
        assert!(matches!(first.detail, Some(command_result::Detail::Handoff(_))), "{first:?}");
        // Asked again (a new leader settling the move): the kept result, under the new id; the
        // VM is not migrated a second time (it has left: running it again would fail).
        let again = run(migrate(2, "plan-1/move-0/migrate_out")).await;
        assert_eq!((again.id, again.status, &again.detail), (2, first.status, &first.detail), "{again:?}");
        let without_step = run(migrate(3, "")).await;
        // Without a step id it is run again, and the hypervisor refuses it (the copy is under way).
        assert_ne!(without_step.status, CommandStatus::Ok as i32, "{without_step:?}");
        assert!(without_step.message.contains("already in progress"), "{without_step:?}");
    }
}
