//! Open agent sessions and the commands in flight on them. The agent service registers each
//! session's outbound channel here; anything that wants an agent to act (today `PingHost`, later
//! migrations and resizes) sends a command through [`Sessions::send`] and awaits the agent's
//! `CommandResult`, matched by command id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use presage_protocol::pb::{Command, CommandResult, CoordinatorMessage, command, coordinator_message};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

pub type Outbound = mpsc::Sender<Result<CoordinatorMessage, Status>>;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("host {0:?} has no open session")]
    NotConnected(String),
    #[error("host {host:?} did not answer command {id} within {timeout:?}")]
    Timeout { host: String, id: u64, timeout: Duration },
    #[error("the session of host {0:?} closed before it answered")]
    SessionClosed(String),
    #[error("not sent to host {0:?}: this coordinator can no longer be sure it leads (its lease was not renewed in time)")]
    NoMandate(String),
}

/// A command waiting for its result: the (host, session) it went over, and where the result goes.
type Waiter = ((String, u64), oneshot::Sender<CommandResult>);

#[derive(Default)]
pub struct Sessions {
    next_session: AtomicU64,
    next_command: AtomicU64,
    open: Mutex<HashMap<String, (u64, Outbound)>>,
    /// Commands waiting for their result, by command id.
    pending: Mutex<HashMap<u64, Waiter>>,
    /// Each command's round trip, by kind and outcome (for `/metrics`).
    pub command_seconds: crate::metrics::CommandLatency,
    /// This coordinator's leadership epoch (0: not elected), on every welcome and command.
    epoch: AtomicU64,
    /// An elected coordinator's mandate, checked before every command and welcome (none: a
    /// single coordinator, always entitled).
    mandate: std::sync::OnceLock<presage_store::Mandate>,
}

/// A command's kind, as a metric label.
fn kind(body: &command::Body) -> &'static str {
    match body {
        command::Body::Ping(_) => "ping",
        command::Body::Reserve(_) => "reserve",
        command::Body::Release(_) => "release",
        command::Body::MigrateOut(_) => "migrate_out",
        command::Body::Adopt(_) => "adopt",
        command::Body::CompleteMigration(_) => "complete_migration",
        command::Body::AbortMigration(_) => "abort_migration",
        command::Body::Inspect(_) => "inspect",
        command::Body::Resize(_) => "resize",
        command::Body::GrantLease(_) => "grant_lease",
        command::Body::RevokeLease(_) => "revoke_lease",
    }
}

impl Sessions {
    /// Registers a new session for `host`, replacing an older one; returns the session id.
    pub fn open(&self, host: &str, out: Outbound) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), (id, out));
        id
    }

    /// Forgets `host`'s session if it is still `session`; dropping its sender ends the stream.
    pub fn close(&self, host: &str, session: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(host).is_some_and(|(id, _)| *id == session) {
            open.remove(host);
        }
        drop(open);
        // Commands sent over it will never be answered: their waiters see the session closed.
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, ((h, s), _)| !(h == host && *s == session));
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The epoch every command and welcome carries, and the mandate that must still hold for
    /// either to be sent.
    pub fn set_leadership(&self, epoch: u64, mandate: presage_store::Mandate) {
        self.epoch.store(epoch, Ordering::Relaxed);
        // Set once, when this coordinator starts serving as the elected leader.
        let _ = self.mandate.set(mandate);
    }

    /// Whether this coordinator may still command agents (always, unless elected and its
    /// mandate has run out).
    pub fn entitled(&self) -> bool {
        self.mandate.get().is_none_or(|m| m.holds())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Sends a command to `host` and waits for its result.
    pub async fn send(&self, host: &str, body: command::Body, timeout: Duration) -> Result<CommandResult, CommandError> {
        self.send_step(host, body, timeout, "").await
    }

    /// [`send`](Self::send) naming the step: the agent runs it at most once (asked again, it
    /// answers with the result it kept).
    pub async fn send_step(
        &self,
        host: &str,
        body: command::Body,
        timeout: Duration,
        step_id: &str,
    ) -> Result<CommandResult, CommandError> {
        if !self.entitled() {
            self.command_seconds.observe(kind(&body), "no_mandate", Duration::ZERO);
            return Err(CommandError::NoMandate(host.into()));
        }
        let out = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .map(|(session, o)| (*session, o.clone()))
            .ok_or_else(|| CommandError::NotConnected(host.into()))?;
        let (session, out) = out;
        let (began, kind) = (std::time::Instant::now(), kind(&body));
        let id = self.next_command.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, ((host.to_string(), session), tx));
        let epoch = self.epoch.load(Ordering::Relaxed);
        let command = Command { id, body: Some(body), epoch, step_id: step_id.to_string() };
        let msg = CoordinatorMessage { body: Some(coordinator_message::Body::Command(command)) };
        let result = async {
            out.send(Ok(msg)).await.map_err(|_| CommandError::SessionClosed(host.into()))?;
            match tokio::time::timeout(timeout, rx).await {
                Err(_) => Err(CommandError::Timeout { host: host.into(), id, timeout }),
                Ok(Err(_)) => Err(CommandError::SessionClosed(host.into())),
                Ok(Ok(r)) => Ok(r),
            }
        }
        .await;
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let outcome = match &result {
            Ok(_) => "answered",
            Err(CommandError::Timeout { .. }) => "timeout",
            Err(_) => "session_closed",
        };
        self.command_seconds.observe(kind, outcome, began.elapsed());
        result
    }

    /// Delivers an agent's result to the waiting sender. Returns false for an unknown id (a late
    /// answer after a timeout).
    pub fn complete(&self, result: CommandResult) -> bool {
        match self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&result.id) {
            Some((_, tx)) => tx.send(result).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presage_protocol::pb::Ping;

    #[tokio::test]
    async fn nothing_is_sent_once_the_leaders_mandate_has_run_out() {
        let sessions = Sessions::default();
        let (tx, mut rx) = mpsc::channel(4);
        sessions.open("hv-a", tx);
        sessions.set_leadership(7, presage_store::Mandate::lasting(Duration::from_millis(50)));
        // While it holds, the command goes out with the leader's epoch (nobody answers it here).
        let asked = sessions.send("hv-a", command::Body::Ping(Ping::default()), Duration::from_millis(10)).await;
        assert!(matches!(asked, Err(CommandError::Timeout { .. })), "{asked:?}");
        let out = rx.try_recv().expect("a command went out while the mandate held");
        match out.unwrap().body {
            Some(coordinator_message::Body::Command(c)) => assert_eq!(c.epoch, 7),
            other => panic!("expected a command, got {other:?}"),
        }
        assert!(sessions.entitled());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!sessions.entitled());
        let refused = sessions.send("hv-a", command::Body::Ping(Ping::default()), Duration::from_secs(1)).await;
        assert!(matches!(refused, Err(CommandError::NoMandate(ref h)) if h == "hv-a"), "{refused:?}");
        assert!(rx.try_recv().is_err(), "nothing went out after the mandate ran out");
    }

    #[tokio::test]
    async fn a_single_coordinator_needs_no_mandate() {
        let sessions = Sessions::default();
        assert!(sessions.entitled());
    }
}
