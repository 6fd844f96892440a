//! The agent's side of the long-lived gRPC stream to the coordinator: connect over mutual TLS,
//! register, send the latest report whenever the sampler produces one, answer commands, and on
//! any failure reconnect with exponential backoff and jitter. Sampling never waits for the link:
//! reports go through a `watch` channel, so while the coordinator is away only the newest report
//! is kept for sending and the history store keeps everything.

use std::time::{Duration, Instant};

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
use presage_protocol::error_chain;

/// How long the coordinator has to answer the registration.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub url: String,
    pub tls: ClientTlsConfig,
    pub register: Register,
    pub reconnect: ReconnectConfig,
    pub started: Instant,
}

impl CoordinatorLink {
    /// Runs until `cancel` fires, reconnecting as needed.
    pub async fn run(self, mut reports: watch::Receiver<Option<Report>>, cancel: CancellationToken) {
        let mut backoff = self.reconnect.initial_backoff;
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            let span = info_span!("coordinator_session", coordinator = %self.url, attempt);
            let began = Instant::now();
            let result = self.session(&mut reports, &cancel).instrument(span).await;
            match result {
                Ok(SessionEnd::Cancelled) => return,
                Ok(SessionEnd::ClosedByCoordinator) => warn!(coordinator = %self.url, "coordinator closed the session"),
                Err(e) => warn!(coordinator = %self.url, error = %e, retry_in = ?backoff, "coordinator session failed; still sampling"),
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

    async fn session(&self, reports: &mut watch::Receiver<Option<Report>>, cancel: &CancellationToken) -> Result<SessionEnd, LinkError> {
        let connect_err = |e: &(dyn std::error::Error + 'static)| LinkError::Connect { url: self.url.clone(), detail: error_chain(e) };
        let endpoint = Endpoint::from_shared(self.url.clone())
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
            Some(coordinator_message::Body::Welcome(w)) => info!(
                host_id = %self.register.host_id,
                coordinator_version = %w.coordinator_version,
                protocol_version = w.protocol_version,
                host_timeout_ms = w.host_timeout_ms,
                "registered with the coordinator"
            ),
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
                        let result = self.execute(cmd);
                        tx.send(msg(agent_message::Body::CommandResult(result))).await.map_err(|_| LinkError::Stream("outbound closed".into()))?;
                    }
                    Ok(Some(other)) => debug!(?other, "ignoring unexpected coordinator message"),
                    Ok(None) => return Ok(SessionEnd::ClosedByCoordinator),
                    Err(s) => return Err(LinkError::Stream(format!("{}: {}", s.code(), s.message()))),
                },
            }
        }
    }

    /// Carries out one command from the coordinator.
    fn execute(&self, cmd: pb::Command) -> CommandResult {
        let _span = info_span!("command", id = cmd.id).entered();
        match cmd.body {
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
}
