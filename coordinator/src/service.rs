//! The coordinator's two gRPC services: [`AgentLinkService`] (one long-lived stream per agent)
//! and [`OperatorService`] (what `presagectl` calls). Both authorise on the peer identity the TLS
//! listener attached to the connection: agents may only speak for the host their certificate
//! names, and only operator certificates reach the operator API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use presage_protocol::pb::{
    self, AgentMessage, CommandStatus, CoordinatorMessage, HostInfo, ListHostsRequest, ListHostsResponse, ListVmsRequest, ListVmsResponse,
    PingHostRequest, PingHostResponse, StatusRequest, StatusResponse, VmInfo, Welcome, agent_link_server::AgentLink, agent_message,
    command, command_result, coordinator_message, operator_server::Operator,
};
use presage_protocol::tls::{Access, Role};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::advisor::{PlaceError, PlanSnapshot, ProposedMove, ScoreView};
use crate::rest_gateway::{invalid_field, not_found_field};
use crate::sessions::CommandError;
use crate::shared::{Shared, log_liveness};
use crate::sizing_ops::SizingOpError;
use crate::transport::PeerInfo;
use crate::validate;

fn sizing_status(e: SizingOpError) -> Status {
    match e {
        SizingOpError::Invalid { field, .. } => invalid_field(field, e.to_string()),
        SizingOpError::NotColocated { .. } => invalid_field("lender", e.to_string()),
        SizingOpError::UnknownVm(_) => not_found_field("vm_id", e.to_string()),
        SizingOpError::UnknownHost(_) => not_found_field("host_id", e.to_string()),
        SizingOpError::UnknownLease(_) => not_found_field("id", e.to_string()),
        SizingOpError::UnknownVersion(_) => not_found_field("version", e.to_string()),
        SizingOpError::Agent { .. } => Status::unavailable(e.to_string()),
        SizingOpError::Versions(_) => Status::internal(e.to_string()),
    }
}
use presage_decide::policy::presage::Rejection;

fn rollout_status(e: crate::rollouts::RolloutError) -> Status {
    use crate::rollouts::RolloutError as E;
    match e {
        E::Invalid { field, .. } => invalid_field(field, e.to_string()),
        E::Unknown(_) => not_found_field("id", e.to_string()),
        E::UnknownVm(_) | E::UnknownHost { .. } => not_found_field("changes", e.to_string()),
        E::Store(_) | E::Damaged { .. } => Status::internal(e.to_string()),
    }
}

/// Reports one session ingests before it lets other tasks run: under a flood of reports this
/// bounds how long a new handshake, a registration or a keep-alive answer waits (measured with
/// 1,000 flooding agents on 2 cores: 1 gives 17,000 reports/s and /metrics in 0.2-0.5 s, 128
/// (tokio's budget) 60,000 reports/s and /metrics in 10 s).
const REPORTS_PER_TURN: u32 = 8;

/// How long an agent has to send `Register` after opening the stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an operator may ask a ping to wait.
const MAX_PING_TIMEOUT_MS: u64 = 60_000;
/// Most migrations whose latest progress is kept.
const MAX_PROGRESS_ENTRIES: usize = 4096;

fn peer<T>(req: &Request<T>, role: Role) -> Result<PeerInfo, Status> {
    let info =
        req.extensions().get::<PeerInfo>().cloned().ok_or_else(|| Status::unauthenticated("no authenticated peer on this connection"))?;
    if info.identity.role != role {
        warn!(peer = %info.remote, identity = %info.identity, needed = %role, "refused call: wrong role");
        return Err(Status::permission_denied(format!("this call needs a {role} certificate; yours is for {}", info.identity)));
    }
    Ok(info)
}

/// The operator-API caller, if its role may make a call of `access` (viewers read, operators
/// act, admins manage).
fn person<T>(req: &Request<T>, access: Access) -> Result<PeerInfo, Status> {
    let info =
        req.extensions().get::<PeerInfo>().cloned().ok_or_else(|| Status::unauthenticated("no authenticated peer on this connection"))?;
    if !info.identity.role.may(access) {
        warn!(peer = %info.remote, identity = %info.identity, ?access, "refused call: role may not");
        return Err(Status::permission_denied(format!("{} may not make this call ({access:?})", info.identity)));
    }
    Ok(info)
}

pub struct AgentLinkService {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type SessionStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn session(&self, req: Request<Streaming<AgentMessage>>) -> Result<Response<Self::SessionStream>, Status> {
        let peer = peer(&req, Role::Agent)?;
        let span = info_span!("agent_session", host_id = %peer.identity.name, peer = %peer.remote);
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register message within 10s"))??;
        let register = match first.and_then(|m| m.body) {
            Some(agent_message::Body::Register(r)) => r,
            _ => return Err(Status::invalid_argument("the first message of a session must be Register")),
        };
        let _enter = span.enter();
        if !(presage_protocol::MIN_SUPPORTED_PROTOCOL_VERSION..=presage_protocol::PROTOCOL_VERSION).contains(&register.protocol_version) {
            warn!(agent_protocol = register.protocol_version, "refused agent: protocol version");
            return Err(Status::failed_precondition(format!(
                "agent speaks protocol version {}, this coordinator supports {} to {}",
                register.protocol_version,
                presage_protocol::MIN_SUPPORTED_PROTOCOL_VERSION,
                presage_protocol::PROTOCOL_VERSION
            )));
        }
        if register.host_id != peer.identity.name {
            warn!(claimed = %register.host_id, "refused agent: host id does not match its certificate");
            return Err(Status::permission_denied(format!(
                "certificate is for host {:?} but the agent registered as {:?}",
                peer.identity.name, register.host_id
            )));
        }
        validate::register(&register).map_err(|e| {
            warn!(error = %e, "refused agent: invalid registration");
            Status::invalid_argument(e.to_string())
        })?;

        if !self.shared.sessions.entitled() {
            warn!("refused agent: this coordinator can no longer be sure it leads");
            return Err(Status::unavailable("this coordinator no longer leads: try the others"));
        }
        let (tx, rx) = mpsc::channel(64);
        let shared = self.shared.clone();
        let host_id = register.host_id.clone();
        let session = shared.sessions.open(&host_id, tx.clone());
        let timeout = {
            let mut state = shared.state();
            if let Some(change) = state.register(&register, session, Instant::now()) {
                log_liveness(&change);
            }
            state.host_timeout()
        };
        info!(session, agent_version = %register.agent_version, hypervisor = %register.hypervisor_kind, "agent registered");
        let welcome = Welcome {
            protocol_version: presage_protocol::PROTOCOL_VERSION,
            coordinator_version: presage_protocol::PRESAGE_VERSION.into(),
            host_timeout_ms: timeout.as_millis() as u64,
            epoch: shared.sessions.epoch(),
        };
        // The channel is new and empty, so this cannot fail for lack of room.
        tx.try_send(Ok(CoordinatorMessage { body: Some(coordinator_message::Body::Welcome(welcome)) }))
            .map_err(|_| Status::unavailable("session closed during registration"))?;
        drop(_enter);

        tokio::spawn(
            async move {
                let cancel = shared.cancel.clone();
                let mut ingested_in_a_row = 0u32;
                let reason = loop {
                    let msg = tokio::select! {
                        _ = cancel.cancelled() => break "coordinator shutting down".to_string(),
                        m = inbound.message() => m,
                    };
                    match msg {
                        Ok(Some(AgentMessage { body: Some(agent_message::Body::Report(report)) })) => {
                            let seq = report.seq;
                            let began = Instant::now();
                            let result = shared.state().ingest(&host_id, session, report, began);
                            shared.metrics.report_ingest.observe(began.elapsed().as_secs_f64());
                            match result {
                                Ok(change) => {
                                    if let Some(c) = change {
                                        log_liveness(&c);
                                    }
                                    let ack =
                                        CoordinatorMessage { body: Some(coordinator_message::Body::ReportAck(pb::ReportAck { seq })) };
                                    // Acks are advisory; never block ingest on a slow reader.
                                    let _ = tx.try_send(Ok(ack));
                                }
                                Err(e) => warn!(seq, error = %e, "rejected report"),
                            }
                            // A session with reports queued would otherwise drain them all in one poll
                            // (h2's buffers do not count against tokio's budget) and hold back every
                            // other task: new handshakes, registrations, keep-alive answers.
                            ingested_in_a_row += 1;
                            if ingested_in_a_row.is_multiple_of(REPORTS_PER_TURN) {
                                tokio::task::yield_now().await;
                            }
                        }
                        Ok(Some(AgentMessage { body: Some(agent_message::Body::CommandResult(r)) })) => {
                            let id = r.id;
                            if !shared.sessions.complete(r) {
                                debug!(command = id, "result for a command nobody waits for (late answer)");
                            }
                        }
                        Ok(Some(AgentMessage { body: Some(agent_message::Body::MigrationProgress(p)) })) => {
                            if let Err(e) = validate::migration_progress(&p) {
                                warn!(error = %e, "rejected migration progress");
                                continue;
                            }
                            debug!(vm = %p.vm_id, processed = p.data_processed, remaining = p.data_remaining, "migration progress");
                            shared.progress_reports.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let mut progress = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
                            // Entries leave when their move ends; a bound keeps a misbehaving agent
                            // from growing the map.
                            if progress.len() < MAX_PROGRESS_ENTRIES || progress.contains_key(&p.vm_id) {
                                progress.insert(p.vm_id.clone(), p);
                            }
                        }
                        Ok(Some(AgentMessage { body: Some(agent_message::Body::Register(_)) })) => {
                            warn!("Register sent twice on one session; ignored");
                        }
                        Ok(Some(AgentMessage { body: None })) => debug!("message of a kind this coordinator does not know"),
                        Ok(None) => break "agent closed the stream".to_string(),
                        Err(s) => break format!("stream error: {}", s.message()),
                    }
                };
                shared.sessions.close(&host_id, session);
                shared.state().session_closed(&host_id, session);
                info!(session, %reason, "agent session ended");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub struct OperatorService {
    pub shared: Arc<Shared>,
}

fn host_info(h: &crate::state::HostRecord, now: Instant) -> HostInfo {
    HostInfo {
        host_id: h.host_id.clone(),
        reachable: h.reachable,
        connected: h.session.is_some(),
        last_seen_ago_ms: now.saturating_duration_since(h.last_seen).as_millis() as u64,
        capacity: Some(h.registration.capacity.clone()),
        usage: h.usage,
        vm_count: h.vms.len() as u32,
        hypervisor_kind: h.registration.hypervisor_kind.clone(),
        agent_version: h.registration.agent_version.clone(),
        reports: h.reports,
        trace: h.trace.clone(),
        agent: h.agent.clone(),
        vm_cpu_demand_mhz: h.vms.values().map(|v| h.vm_cpu_demand(v)).sum(),
        last_report_seq: h.last_seq,
    }
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn cluster_status(&self, req: Request<pb::ClusterStatusRequest>) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let span = info_span!("operator.cluster_status", operator = %p.identity.name);
        async move {
            let Some(view) = self.shared.store.get() else {
                return Ok(Response::new(pb::ClusterStatusResponse { store: "memory".into(), ..Default::default() }));
            };
            let mut out = pb::ClusterStatusResponse {
                store: view.kind.into(),
                elected: view.advertise.is_some(),
                this_coordinator: view.advertise.clone().unwrap_or_default(),
                epoch: self.shared.sessions.epoch(),
                ..Default::default()
            };
            let Some(etcd) = &view.etcd else { return Ok(Response::new(out)) };
            if let Some(me) = &view.advertise {
                let store = etcd.clone();
                let (candidates, revision, reports) = tokio::task::spawn_blocking(move || {
                    let (candidates, revision) = store.candidates(crate::server::ELECTION)?;
                    // Without the standbys' reports the rest still answers.
                    let reports = crate::standby::reports(&store).unwrap_or_else(|e| {
                        warn!(error = %e, "cannot read the standbys' copy reports");
                        Default::default()
                    });
                    Ok::<_, presage_store::StoreError>((candidates, revision, reports))
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
                out.store_revision = revision;
                out.role = if view.standby.is_some() { "standby" } else { "leader" }.into();
                let now = crate::shared::unix_ms();
                out.members = candidates
                    .iter()
                    .map(|c| {
                        let mut m = pb::ClusterMember {
                            address: c.value.clone(),
                            role: if c.leads { "leader" } else { "standby" }.into(),
                            candidate_revision: c.revision,
                            ..Default::default()
                        };
                        // A standby's copy: this one's own, fresh; the others' as they reported it.
                        let own = view.standby.as_ref().filter(|_| c.value == *me).map(|s| crate::standby::CopyReport::of(&s.copy));
                        if let Some(r) = own.or_else(|| reports.get(&c.value).cloned()).filter(|_| !c.leads) {
                            m.copy_reported = true;
                            m.copy_revision = r.revision;
                            m.copy_keys = r.keys as u64;
                            m.copy_lag_ms = r.lag_ms();
                            m.copy_report_age_ms = r.age_ms(now);
                            m.copy_broken = r.broken.unwrap_or_default();
                        }
                        m
                    })
                    .collect();
                if let Some(l) = candidates.first() {
                    out.leader = l.value.clone();
                    out.epoch = l.revision.max(0) as u64;
                }
            }
            out.etcd = etcd
                .health()
                .await
                .into_iter()
                .map(|h| {
                    let answered_ms = h.took.as_secs_f64() * 1e3;
                    match h.answer {
                        Ok(s) => pb::EtcdEndpoint {
                            endpoint: h.endpoint,
                            healthy: true,
                            member_id: s.member_id,
                            is_raft_leader: s.is_leader,
                            raft_term: s.raft_term,
                            raft_index: s.raft_index,
                            db_size_bytes: s.db_size_bytes,
                            version: s.version,
                            answered_ms,
                            ..Default::default()
                        },
                        Err(e) => pb::EtcdEndpoint { endpoint: h.endpoint, healthy: false, error: e, answered_ms, ..Default::default() },
                    }
                })
                .collect();
            Ok(Response::new(out))
        }
        .instrument(span)
        .await
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let _span = info_span!("operator.status", operator = %p.identity.name).entered();
        let (refused, last_refusal) = self.shared.refusals.snapshot();
        let (proposed_migrations, proposal_age_ms) = match &*self.shared.plan.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, p)) => (p.proposal.moves.len() as u32, at.elapsed().as_millis() as u64),
            None => (0, 0),
        };
        let state = self.shared.state();
        let s = state.summary();
        Ok(Response::new(StatusResponse {
            policy: self.shared.policy_name.clone(),
            policy_mode: self.shared.policy_mode.to_string(),
            proposed_migrations,
            proposal_age_ms,
            protocol_version: presage_protocol::PROTOCOL_VERSION,
            coordinator_version: presage_protocol::PRESAGE_VERSION.into(),
            uptime_ms: self.shared.started.elapsed().as_millis() as u64,
            hosts_total: s.hosts_total,
            hosts_reachable: s.hosts_reachable,
            hosts_connected: s.hosts_connected,
            vms_total: s.vms_total,
            reports_ingested: state.reports_ingested,
            reports_rejected: state.reports_rejected,
            tls_handshakes_refused: refused,
            last_refusal,
            cpu_capacity_mhz: s.cpu_capacity,
            cpu_used_mhz: s.cpu_used,
            memory_capacity_bytes: s.memory_capacity,
            memory_used_bytes: s.memory_used,
        }))
    }

    async fn list_hosts(&self, req: Request<ListHostsRequest>) -> Result<Response<ListHostsResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let _span = info_span!("operator.list_hosts", operator = %p.identity.name).entered();
        let now = Instant::now();
        let hosts = self.shared.state().hosts().map(|h| host_info(h, now)).collect();
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn list_vms(&self, req: Request<ListVmsRequest>) -> Result<Response<ListVmsResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let (filter, vm) = (r.host_id, r.vm_id);
        let _span = info_span!("operator.list_vms", operator = %p.identity.name, host = %filter, vm = %vm).entered();
        let state = self.shared.state();
        if !filter.is_empty() && state.host(&filter).is_none() {
            return Err(crate::rest_gateway::not_found_field("host_id", format!("no host {filter:?} has registered")));
        }
        let vms: Vec<VmInfo> = state
            .hosts()
            .filter(|h| filter.is_empty() || h.host_id == filter)
            .flat_map(|h| {
                let vm = vm.as_str();
                h.vms.values().filter(move |v| vm.is_empty() || v.vm_id == vm || v.name == vm).map(move |v| VmInfo {
                    host_id: h.host_id.clone(),
                    sample: Some(v.clone()),
                    sampled_at_ms: h.sampled_at_ms,
                    cpu_demand_mhz: h.vm_cpu_demand(v),
                    trace: h.trace.clone(),
                    usage_history: h.usage_history.get(&v.vm_id).map(|q| q.iter().cloned().collect()).unwrap_or_default(),
                })
            })
            .collect();
        if !vm.is_empty() && vms.is_empty() {
            return Err(crate::rest_gateway::not_found_field("vm_id", format!("no VM has the id or name {vm:?}")));
        }
        Ok(Response::new(ListVmsResponse { vms }))
    }

    async fn ping_host(&self, req: Request<PingHostRequest>) -> Result<Response<PingHostResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let span = info_span!("operator.ping_host", operator = %p.identity.name, host = %r.host_id);
        async move {
            self.known_host(&r.host_id)?;
            if r.timeout_ms > MAX_PING_TIMEOUT_MS || (1..100).contains(&r.timeout_ms) {
                return Err(invalid_field(
                    "timeout_ms",
                    format!("timeout_ms: {} is not 0 (the default, 10 s) or within 100..={MAX_PING_TIMEOUT_MS}", r.timeout_ms),
                ));
            }
            let timeout = if r.timeout_ms == 0 { DEFAULT_PING_TIMEOUT } else { Duration::from_millis(r.timeout_ms) };
            let nonce = format!("{:016x}", fastrand::u64(..));
            let sent = Instant::now();
            let result = self
                .shared
                .sessions
                .send(&r.host_id, command::Body::Ping(pb::Ping { nonce: nonce.clone() }), timeout)
                .await
                .map_err(command_status)?;
            let rtt = sent.elapsed();
            if result.status != CommandStatus::Ok as i32 {
                return Err(Status::internal(format!("agent answered {:?}: {}", CommandStatus::try_from(result.status), result.message)));
            }
            match result.detail {
                Some(command_result::Detail::Pong(p)) if p.nonce == nonce => {
                    info!(rtt_us = rtt.as_micros() as u64, "ping answered");
                    Ok(Response::new(PingHostResponse {
                        host_id: r.host_id,
                        round_trip_us: rtt.as_micros() as u64,
                        agent_uptime_ms: p.agent_uptime_ms,
                        command_id: result.id,
                    }))
                }
                other => Err(Status::internal(format!("agent answered the ping with {other:?}"))),
            }
        }
        .instrument(span)
        .await
    }

    async fn resize_vm(&self, req: Request<pb::ResizeVmRequest>) -> Result<Response<pb::SizingResponse>, Status> {
        let p = person(&req, Access::Act)?;
        crate::sizing_ops::resize(&self.shared, req.into_inner(), &p.identity.name).await.map(Response::new).map_err(sizing_status)
    }

    async fn config_history(&self, req: Request<pb::ConfigHistoryRequest>) -> Result<Response<pb::ConfigHistoryResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let _span = info_span!("operator.config_history", operator = %p.identity.name, vm = %r.vm_id).entered();
        if r.vm_id.is_empty() {
            return Err(Status::invalid_argument("vm_id: must not be empty"));
        }
        let limit = if r.limit == 0 { 100 } else { (r.limit as usize).min(1000) };
        let versions = self.shared.versions.history(&r.vm_id, limit).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ConfigHistoryResponse { versions: versions.iter().map(|v| v.to_wire()).collect() }))
    }

    async fn config_rollback(&self, req: Request<pb::ConfigRollbackRequest>) -> Result<Response<pb::ConfigRollbackResponse>, Status> {
        let p = person(&req, Access::Act)?;
        let r = req.into_inner();
        let (sizing, version) = crate::sizing_ops::rollback_config(&self.shared, &r.vm_id, r.version, r.dry_run, &p.identity.name)
            .await
            .map_err(sizing_status)?;
        Ok(Response::new(pb::ConfigRollbackResponse { sizing: Some(sizing), version: version.map(|v| v.to_wire()) }))
    }

    async fn start_rollout(&self, req: Request<pb::StartRolloutRequest>) -> Result<Response<pb::RolloutView>, Status> {
        let p = person(&req, Access::Act)?;
        let _span = info_span!("operator.start_rollout", operator = %p.identity.name).entered();
        crate::rollouts::start(&self.shared, req.into_inner(), &format!("operator {}", p.identity.name))
            .map(|r| Response::new(r.to_wire()))
            .map_err(rollout_status)
    }

    async fn list_rollouts(&self, req: Request<pb::ListRolloutsRequest>) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let _span = info_span!("operator.list_rollouts", operator = %p.identity.name).entered();
        let limit = match req.into_inner().limit {
            0 => 20,
            n => (n as usize).min(1000),
        };
        let rollouts = self.shared.rollouts.recent(limit).map_err(rollout_status)?;
        Ok(Response::new(pb::ListRolloutsResponse { rollouts: rollouts.iter().map(|r| r.to_wire()).collect() }))
    }

    async fn abort_rollout(&self, req: Request<pb::AbortRolloutRequest>) -> Result<Response<pb::RolloutView>, Status> {
        let p = person(&req, Access::Act)?;
        let id = req.into_inner().id;
        let _span = info_span!("operator.abort_rollout", operator = %p.identity.name, rollout = id).entered();
        crate::rollouts::abort(&self.shared, id, &format!("operator {}", p.identity.name))
            .map(|r| Response::new(r.to_wire()))
            .map_err(rollout_status)
    }

    async fn optimise_cluster(&self, req: Request<pb::OptimiseClusterRequest>) -> Result<Response<pb::OptimiseClusterResponse>, Status> {
        let r = *req.get_ref();
        let p = person(&req, if r.apply { Access::Act } else { Access::Read })?;
        let span = info_span!("operator.optimise_cluster", operator = %p.identity.name, apply = r.apply);
        async move {
            if r.last_pass {
                let last = self.shared.optimiser_pass.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return last.map(Response::new).ok_or_else(|| {
                    Status::not_found(
                        "no background optimiser pass has run ([optimiser] mode is off, or its first interval has not passed)",
                    )
                });
            }
            if r.time_limit_s > 600 {
                return Err(invalid_field("time_limit_s", format!("time_limit_s: {} is above 600", r.time_limit_s)));
            }
            if !(r.canary_fraction >= 0.0 && r.canary_fraction <= 1.0) {
                return Err(invalid_field("canary_fraction", format!("canary_fraction: {} is not a share in [0, 1]", r.canary_fraction)));
            }
            let asked = Duration::from_secs(if r.time_limit_s == 0 { 10 } else { r.time_limit_s as u64 });
            let limit = asked.min(self.shared.optimiser_request_limit);
            let plan = crate::optimiser_pass::plan_now(&self.shared, limit, 0, r.seed).await.map_err(|e| match e {
                // What the cluster is now, not a fault of the coordinator's.
                crate::optimiser_pass::PassError::NothingToPlan | crate::optimiser_pass::PassError::Model(_) => {
                    Status::failed_precondition(e.to_string())
                }
                e => Status::internal(e.to_string()),
            })?;
            info!(
                resizes = plan.resizes.len(),
                moves = plan.moves.len(),
                hosts_before = plan.before.active_hosts,
                hosts_after = plan.after.active_hosts,
                "cluster optimised"
            );
            let rollout = if r.apply {
                let watch_ms = if r.watch_s == 0 { 600_000 } else { r.watch_s.saturating_mul(1000) };
                let canary = if r.canary_fraction == 0.0 { 0.1 } else { r.canary_fraction };
                crate::optimiser_pass::roll_out(
                    &self.shared,
                    &plan,
                    &format!("optimiser (operator {})", p.identity.name),
                    canary,
                    watch_ms,
                    r.seed,
                )
                .map_err(rollout_status)?
                .map(|record| record.to_wire())
            } else {
                None
            };
            Ok(Response::new(plan.to_wire(rollout)))
        }
        .instrument(span)
        .await
    }

    async fn list_leases(&self, req: Request<pb::ListLeasesRequest>) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let host = req.into_inner().host_id;
        let _span = info_span!("operator.list_leases", operator = %p.identity.name, host = %host).entered();
        crate::sizing_ops::leases(&self.shared, &host).map(Response::new).map_err(sizing_status)
    }

    async fn grant_lease(&self, req: Request<pb::GrantLeaseRequest>) -> Result<Response<pb::SizingResponse>, Status> {
        let p = person(&req, Access::Act)?;
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        crate::sizing_ops::grant(&self.shared, req.into_inner(), &p.identity.name, now_ms).await.map(Response::new).map_err(sizing_status)
    }

    async fn revoke_lease(&self, req: Request<pb::RevokeLeaseRequest>) -> Result<Response<pb::SizingResponse>, Status> {
        let p = person(&req, Access::Act)?;
        crate::sizing_ops::revoke(&self.shared, &req.into_inner().id, &p.identity.name).await.map(Response::new).map_err(sizing_status)
    }

    async fn inspect_vm(&self, req: Request<pb::InspectVmRequest>) -> Result<Response<pb::InspectVmResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let span = info_span!("operator.inspect_vm", operator = %p.identity.name, host = %r.host_id, vm = %r.vm_id);
        async move {
            if r.vm_id.is_empty() {
                return Err(invalid_field("vm_id", "vm_id is empty"));
            }
            self.known_host(&r.host_id)?;
            let inspect = command::Body::Inspect(pb::Inspect { vm_id: r.vm_id.clone() });
            let result = self.shared.sessions.send(&r.host_id, inspect, DEFAULT_PING_TIMEOUT).await.map_err(command_status)?;
            if result.status != CommandStatus::Ok as i32 {
                return Err(Status::internal(format!(
                    "{} answered {:?}: {}",
                    r.host_id,
                    CommandStatus::try_from(result.status),
                    result.message
                )));
            }
            match result.detail {
                Some(command_result::Detail::Presence(presence)) => {
                    Ok(Response::new(pb::InspectVmResponse { host_id: r.host_id, presence: Some(presence) }))
                }
                other => Err(Status::internal(format!("{} answered Inspect with {other:?}", r.host_id))),
            }
        }
        .instrument(span)
        .await
    }

    async fn get_plan(&self, req: Request<pb::GetPlanRequest>) -> Result<Response<pb::GetPlanResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let _span = info_span!("operator.plan", operator = %p.identity.name).entered();
        let applied = recent_outcomes(&self.shared.journal, APPLIED_SHOWN);
        let Some((age_ms, plan)) = self.plan() else {
            return Ok(Response::new(pb::GetPlanResponse { policy: self.shared.policy_name.clone(), applied, ..Default::default() }));
        };
        let pr = &plan.proposal;
        Ok(Response::new(pb::GetPlanResponse {
            applied,
            policy: pr.policy.clone(),
            available: true,
            age_ms,
            hosts_considered: pr.hosts_considered as u32,
            vms_considered: pr.vms_considered as u32,
            moves: pr.moves.iter().map(planned_move).collect(),
        }))
    }

    async fn explain(&self, req: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let _span = info_span!("operator.explain", operator = %p.identity.name, vm = %r.vm_id).entered();
        if r.vm_id.is_empty() {
            return Err(Status::invalid_argument("vm_id: must not be empty"));
        }
        let Some((age_ms, plan)) = self.plan() else {
            return Err(Status::unavailable("no advisory pass has run yet; the first runs one [policy] interval after start"));
        };
        let Some(e) = plan.explain(&r.vm_id, top(r.top)) else {
            return Err(Status::not_found(format!("vm {:?} was not in the last advisory pass", r.vm_id)));
        };
        Ok(Response::new(pb::ExplainResponse {
            vm_id: e.vm_id,
            host_id: e.host_id,
            demand_source: format!("{:?}", e.demand_source).to_lowercase(),
            demand_mean_mhz: e.demand_mean,
            demand_p90_mhz: e.demand_p90,
            demand_spread_mhz: e.demand_spread,
            demand_peak_mhz: e.demand_peak,
            planned: e.planned.is_some(),
            planned_move: e.planned.as_ref().map(planned_move),
            ranking: e.ranking.iter().map(host_score).collect(),
            feasible_hosts: e.feasible_hosts as u32,
            rejected: rejections(&e.rejected),
            plan_age_ms: age_ms,
            anomalies: self.shared.state().anomalies(Some(&r.vm_id), 10),
            application: e.application.map(app_health),
        }))
    }

    async fn list_anomalies(&self, req: Request<pb::ListAnomaliesRequest>) -> Result<Response<pb::ListAnomaliesResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let _span = info_span!("operator.list_anomalies", operator = %p.identity.name, vm = %r.vm_id).entered();
        let limit = if r.limit == 0 { 100 } else { r.limit.min(crate::state::MAX_ANOMALIES as u32) as usize };
        let vm = (!r.vm_id.is_empty()).then_some(r.vm_id.as_str());
        Ok(Response::new(pb::ListAnomaliesResponse { anomalies: self.shared.state().anomalies(vm, limit) }))
    }

    async fn place(&self, req: Request<pb::PlaceRequest>) -> Result<Response<pb::PlaceResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let _span = info_span!("operator.place", operator = %p.identity.name, vcpus = r.vcpus, memory_mib = r.memory_mib).entered();
        let Some((age_ms, plan)) = self.plan() else {
            return Err(Status::unavailable("no advisory pass has run yet; the first runs one [policy] interval after start"));
        };
        let mhz = (r.cpu_mhz_per_vcpu != 0.0).then_some(r.cpu_mhz_per_vcpu);
        let o = plan.place(r.vcpus, mhz, r.memory_mib, top(r.top)).map_err(|e| match e {
            PlaceError::Invalid { field, .. } => invalid_field(field, e.to_string()),
            PlaceError::NoHosts => Status::failed_precondition(e.to_string()),
        })?;
        Ok(Response::new(pb::PlaceResponse {
            ranking: o.ranking.iter().map(host_score).collect(),
            feasible_hosts: o.feasible_hosts as u32,
            rejected: rejections(&o.rejected),
            plan_age_ms: age_ms,
        }))
    }
    async fn reserve_on_host(&self, req: Request<pb::ReserveOnHostRequest>) -> Result<Response<pb::ReserveOnHostResponse>, Status> {
        let p = person(&req, Access::Act)?;
        let r = req.into_inner();
        let span = info_span!("operator.reserve", operator = %p.identity.name, host = %r.host_id);
        async move {
            self.known_host(&r.host_id)?;
            let body = match (r.reserve, r.release) {
                (Some(res), None) => {
                    validate::reservation(&res).map_err(|e| invalid_field(&e.field.clone(), e.to_string()))?;
                    command::Body::Reserve(res)
                }
                (None, Some(rel)) if !rel.id.is_empty() => command::Body::Release(rel),
                (None, Some(_)) => return Err(invalid_field("release.id", "release.id: must not be empty")),
                _ => return Err(Status::invalid_argument("exactly one of reserve and release")),
            };
            let result = self.shared.sessions.send(&r.host_id, body, DEFAULT_PING_TIMEOUT).await.map_err(command_status)?;
            let state = match result.detail {
                Some(command_result::Detail::Reservations(s)) => Some(s),
                _ => None,
            };
            match CommandStatus::try_from(result.status) {
                Ok(CommandStatus::Ok) => Ok(Response::new(pb::ReserveOnHostResponse { accepted: true, refusal: String::new(), state })),
                Ok(CommandStatus::Failed) => {
                    Ok(Response::new(pb::ReserveOnHostResponse { accepted: false, refusal: result.message, state }))
                }
                Ok(CommandStatus::Unsupported) => Err(Status::failed_precondition(format!("{}: {}", r.host_id, result.message))),
                _ => Err(Status::internal(format!("agent answered status {}: {}", result.status, result.message))),
            }
        }
        .instrument(span)
        .await
    }

    async fn set_drain(&self, req: Request<pb::SetDrainRequest>) -> Result<Response<pb::SetDrainResponse>, Status> {
        let p = person(&req, Access::Act)?;
        let r = req.into_inner();
        let _span = info_span!("operator.drain", operator = %p.identity.name, host = %r.host_id, drain = r.drain).entered();
        if self.shared.state().host(&r.host_id).is_none() {
            return Err(Status::not_found(format!("no host {:?} has registered", r.host_id)));
        }
        self.shared
            .journal
            .set_drained(&r.host_id, r.drain)
            .map_err(|e| Status::internal(format!("recording the drain mark failed: {e}")))?;
        let mut d = self.shared.draining.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if r.drain { d.insert(r.host_id.clone()) } else { d.remove(&r.host_id) };
        info!(host = %r.host_id, drain = r.drain, changed, "drain mark set");
        let mut draining: Vec<String> = d.iter().cloned().collect();
        draining.sort();
        drop(d);
        // Draining moves every VM off the host in one plan, at once, in either policy mode.
        let mut requests = self.shared.drain_requests.lock().unwrap_or_else(|p| p.into_inner());
        if r.drain {
            requests.insert(r.host_id.clone());
        } else {
            requests.remove(&r.host_id);
        }
        drop(requests);
        if r.drain {
            self.shared.wake_policy.notify_one();
        }
        Ok(Response::new(pb::SetDrainResponse { changed, draining }))
    }

    async fn list_plans(&self, req: Request<pb::ListPlansRequest>) -> Result<Response<pb::ListPlansResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let r = req.into_inner();
        let _span = info_span!("operator.plans", operator = %p.identity.name, plan = r.plan_id).entered();
        let internal = |e: crate::plan_journal::JournalError| Status::internal(e.to_string());
        let plans = if r.plan_id > 0 {
            vec![
                self.shared
                    .journal
                    .get(r.plan_id)
                    .map_err(internal)?
                    .ok_or_else(|| Status::not_found(format!("there is no plan {}", r.plan_id)))?,
            ]
        } else {
            self.shared.journal.recent(if r.limit == 0 { 20 } else { r.limit as usize }).map_err(internal)?
        };
        let progress = self.shared.progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Response::new(pb::ListPlansResponse { plans: plans.iter().map(|p| plan_info(p, &progress)).collect() }))
    }

    async fn rollback_plan(&self, req: Request<pb::RollbackPlanRequest>) -> Result<Response<pb::RollbackPlanResponse>, Status> {
        let p = person(&req, Access::Act)?;
        let r = req.into_inner();
        let _span = info_span!("operator.rollback", operator = %p.identity.name, plan = r.plan_id).entered();
        let back = crate::applier::start_rollback(&self.shared, r.plan_id).map_err(Status::failed_precondition)?;
        info!(plan = r.plan_id, rollback = back.id, moves = back.moves.len(), "rolling a plan back by hand");
        let info = plan_info(&back, &Default::default());
        let (shared, limits) = (self.shared.clone(), self.shared.limits);
        tokio::spawn(async move { crate::applier::execute(&shared, back, limits).await }.in_current_span());
        Ok(Response::new(pb::RollbackPlanResponse { rollback: Some(info) }))
    }

    async fn set_dependencies(&self, req: Request<pb::SetDependenciesRequest>) -> Result<Response<pb::SetDependenciesResponse>, Status> {
        let p = person(&req, Access::Manage)?;
        let _span = info_span!("operator.set_dependencies", operator = %p.identity.name).entered();
        let declarations = crate::ecosystem::parse_declarations(req.get_ref().declarations_json.as_bytes())
            .map_err(|(field, reason)| Status::invalid_argument(format!("declarations_json {field}: {reason}")))?;
        let registered: Vec<String> = declarations.iter().map(|d| d.vm_name.clone()).collect();
        let total = {
            let state = self.shared.state();
            self.shared.ecosystem.register(declarations, &state)
        }
        .map_err(|e| match e {
            crate::ecosystem::RegisterError::Refused(_) => Status::invalid_argument(e.to_string()),
            crate::ecosystem::RegisterError::Store(_) => Status::internal(e.to_string()),
        })?;
        info!(declarations = registered.len(), total, "dependencies registered");
        Ok(Response::new(pb::SetDependenciesResponse { registered, total: total as u32 }))
    }

    async fn get_ecosystem(&self, req: Request<pb::GetEcosystemRequest>) -> Result<Response<pb::GetEcosystemResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let span = info_span!("operator.get_ecosystem", operator = %p.identity.name);
        let r = req.into_inner();
        let filter = crate::ecosystem::ViewFilter {
            vm: (!r.vm.is_empty()).then_some(r.vm),
            application: (!r.application.is_empty()).then_some(r.application),
        };
        let v = crate::rest::view(&self.shared, filter).instrument(span).await;
        Ok(Response::new(pb::GetEcosystemResponse {
            nodes: v.nodes.iter().map(node_pb).collect(),
            edges: v.edges().map(|e| edge_pb(&e)).collect(),
        }))
    }

    async fn get_vm_dependencies(
        &self,
        req: Request<pb::GetVmDependenciesRequest>,
    ) -> Result<Response<pb::GetVmDependenciesResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let vm = req.into_inner().vm;
        let span = info_span!("operator.get_vm_dependencies", operator = %p.identity.name, vm = %vm);
        let Some(declaration) = self.shared.ecosystem.declaration(&vm) else {
            return Err(Status::not_found(format!("no declaration names a VM {vm:?}")));
        };
        let v = crate::rest::view(&self.shared, crate::ecosystem::ViewFilter { vm: Some(vm), application: None }).instrument(span).await;
        Ok(Response::new(pb::GetVmDependenciesResponse {
            declaration_json: serde_json::to_string_pretty(&declaration).expect("a declaration serialises"),
            node: v.nodes.first().map(node_pb),
            edges: v.edges().map(|e| edge_pb(&e)).collect(),
        }))
    }

    async fn get_dependency_learning(
        &self,
        req: Request<pb::GetDependencyLearningRequest>,
    ) -> Result<Response<pb::GetDependencyLearningResponse>, Status> {
        let p = person(&req, Access::Read)?;
        let _span = info_span!("operator.get_dependency_learning", operator = %p.identity.name).entered();
        let (learned, config) = self.shared.ecosystem.learned();
        Ok(Response::new(pb::GetDependencyLearningResponse {
            types: learned
                .types
                .iter()
                .map(|(kind, t)| pb::DependencyTypeLearning {
                    r#type: kind.clone(),
                    weight: t.weight,
                    observations: t.observations,
                    better: t.better,
                    worse: t.worse,
                    within_noise: t.within_noise,
                    latency_change_pct_mean: t.latency_change_pct_mean,
                })
                .collect(),
            recent: learned
                .recent
                .iter()
                .map(|o| pb::RepairObservation {
                    vm: o.vm.clone(),
                    at_s: o.at_s,
                    types: o.types.clone(),
                    latency_before_ms: o.before.latency_ms,
                    latency_after_ms: o.after.latency_ms,
                    throughput_before_per_s: o.before.throughput_per_s,
                    throughput_after_per_s: o.after.throughput_per_s,
                    verdict: serde_json::to_value(o.verdict).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                })
                .collect(),
            unattributed: learned.unattributed,
            latency_noise_floor_pct: 100.0 * config.noise_floor.latency,
            throughput_noise_floor_pct: 100.0 * config.noise_floor.throughput,
        }))
    }

    async fn move_vm(&self, req: Request<pb::MoveVmRequest>) -> Result<Response<pb::MoveVmResponse>, Status> {
        let p = person(&req, Access::Act)?;
        let r = req.into_inner();
        let _span = info_span!("operator.move", operator = %p.identity.name, vm = %r.vm_id, to = %r.to_host).entered();
        use crate::manual_move::MoveRefusal;
        let plan = crate::manual_move::plan_and_start(&self.shared, &r.vm_id, &r.to_host, &p.identity.name, false).map_err(|e| {
            let message = e.to_string();
            match e {
                MoveRefusal::UnknownHost(_) | MoveRefusal::UnknownVm(_) => Status::not_found(message),
                MoveRefusal::AlreadyThere { .. } | MoveRefusal::InFlight(_) | MoveRefusal::BreaksRequired(_) => {
                    Status::failed_precondition(message)
                }
                MoveRefusal::Journal(_) => Status::internal(message),
            }
        })?;
        let info = plan_info(&plan, &Default::default());
        Ok(Response::new(pb::MoveVmResponse { plan: Some(info) }))
    }
}

/// How many moves `GetPlan.applied` lists.
const APPLIED_SHOWN: usize = 200;

/// The outcomes of the last `limit` moves of finished plans, oldest first, from the journal.
fn recent_outcomes(journal: &crate::plan_journal::PlanJournal, limit: usize) -> Vec<pb::AppliedMove> {
    let now_ms = crate::shared::unix_ms();
    let plans = journal.recent(limit).unwrap_or_else(|e| {
        warn!(error = %e, "reading the plan journal failed");
        Vec::new()
    });
    // Newest plan first, its moves last first; reversed at the end.
    let mut out = Vec::new();
    for p in plans.iter().filter(|p| p.status() != "running") {
        out.extend(p.moves.iter().rev().map(|m| pb::AppliedMove {
            vm_id: m.vm_id.clone(),
            from_host: m.from_host.clone(),
            to_host: m.to_host.clone(),
            outcome: m.step.name().into(),
            detail: m.detail.clone(),
            ago_ms: now_ms.saturating_sub(p.created_ms + m.duration_ms.unwrap_or(0)),
            plan_id: p.id,
        }));
        if out.len() >= limit {
            break;
        }
    }
    out.truncate(limit);
    out.reverse();
    out
}

/// A journaled plan as the operator API shows it.
fn plan_info(p: &crate::plan_journal::PlanRecord, progress: &std::collections::HashMap<String, pb::MigrationProgress>) -> pb::PlanInfo {
    pb::PlanInfo {
        id: p.id,
        origin: p.origin.clone(),
        status: p.status().into(),
        created_unix_ms: p.created_ms,
        rollback_of: p.rollback_of.unwrap_or(0),
        rolled_back_by: p.rolled_back_by.unwrap_or(0),
        moves: p
            .moves
            .iter()
            .map(|m| pb::PlanMove {
                vm_id: m.vm_id.clone(),
                from_host: m.from_host.clone(),
                to_host: m.to_host.clone(),
                reason: m.reason.clone(),
                step: m.step.name().into(),
                detail: m.detail.clone(),
                duration_ms: m.duration_ms.unwrap_or(0),
                progress: if m.step == crate::plan_journal::Step::Migrating { progress.get(&m.vm_id).cloned() } else { None },
            })
            .collect(),
    }
}

/// The operator-facing status for a command that could not be delivered or answered.
fn command_status(e: CommandError) -> Status {
    match e {
        CommandError::NotConnected(_) | CommandError::NoMandate(_) => Status::unavailable(e.to_string()),
        CommandError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        CommandError::SessionClosed(_) => Status::aborted(e.to_string()),
    }
}

impl OperatorService {
    /// NOT_FOUND (naming `host_id`) unless the host has registered: a host the coordinator has
    /// never heard of is not a host whose agent is away.
    fn known_host(&self, host: &str) -> Result<(), Status> {
        match self.shared.state().host(host) {
            Some(_) => Ok(()),
            None => Err(not_found_field("host_id", format!("no host {host:?} has registered"))),
        }
    }

    fn plan(&self) -> Option<(u64, Arc<PlanSnapshot>)> {
        self.shared.plan.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(at, p)| (at.elapsed().as_millis() as u64, p.clone()))
    }
}

/// How many hosts a ranking shows: 5 unless asked, at most 100.
fn top(asked: u32) -> usize {
    if asked == 0 { 5 } else { (asked as usize).min(100) }
}

fn host_score(s: &ScoreView) -> pb::HostScore {
    pb::HostScore {
        host_id: s.host_id.clone(),
        score: s.score,
        risk_after: s.risk_after,
        utilisation_after: s.utilisation_after,
        terms: s
            .terms
            .iter()
            .map(|t| pb::ScoreTerm { scorer: t.scorer.to_string(), value: t.value, weight: t.weight, contribution: t.contribution })
            .collect(),
    }
}

fn planned_move(m: &ProposedMove) -> pb::PlannedMove {
    let mut out = pb::PlannedMove {
        vm_id: m.vm_id.clone(),
        from_host: m.from_host.clone(),
        to_host: m.to_host.clone(),
        reason: m.reason.to_string(),
        ..Default::default()
    };
    if let Some(w) = &m.why {
        out.explained = true;
        out.benefit_j = w.benefit_j;
        out.cost_j = w.cost_j;
        out.source_risk_before = w.source_risk_before;
        out.source_risk_after = w.source_risk_after;
        out.chosen = Some(host_score(&w.chosen));
        out.runner_up = w.runner_up.as_ref().map(host_score);
        out.application = w.application.map(app_health);
        let c = &w.confidence;
        out.confidence = Some(pb::Confidence {
            value: c.value,
            certainty: c.certainty,
            has_forecast: c.forecast_spread.is_some(),
            forecast_spread: c.forecast_spread.unwrap_or(0.0),
            agreement: c.agreement,
            has_runner_up: c.margin.is_some(),
            margin: c.margin.unwrap_or(0.0),
        });
    }
    out
}

fn app_health(a: presage_decide::policy::application::AppHealthFigures) -> pb::AppHealth {
    pb::AppHealth {
        latency_over_slo: a.latency_over_slo,
        host_contention: a.host_contention,
        verdict: a.verdict.as_str().to_string(),
        tolerance: a.tolerance.unwrap_or(0.0),
    }
}

fn rejections(r: &[(Rejection, usize)]) -> Vec<pb::RejectionCount> {
    r.iter()
        .map(|(reason, n)| pb::RejectionCount {
            reason: serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            hosts: *n as u32,
        })
        .collect()
}

fn node_pb(n: &crate::ecosystem::NodeView) -> pb::EcosystemNode {
    pb::EcosystemNode {
        vm: n.vm.clone(),
        application: n.application.clone().unwrap_or_default(),
        r#type: n.kind.clone(),
        host: n.host.clone().unwrap_or_default(),
        score: n.score,
        status: format!("{:?}", n.status),
        reason: n.reason.clone().unwrap_or_default(),
        blockers: n.blockers.clone(),
    }
}

fn edge_pb(e: &crate::ecosystem::EdgeView<'_>) -> pb::EcosystemEdge {
    pb::EcosystemEdge {
        from: e.from.to_string(),
        to: e.to.to_string(),
        dependency: e.dependency.to_string(),
        strength: e.strength.to_string(),
        weight: e.weight,
        quality: e.quality,
        satisfaction: e.satisfaction,
    }
}
