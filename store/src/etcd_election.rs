//! Leader election on etcd (its election API, on a lease): one candidate leads at a time; the
//! leader's key has a create revision that only grows from one leader to the next, which is
//! the leader's **epoch** and what its store's writes are fenced on ([`Leadership::fence`]).
//!
//! - [`EtcdStore::campaign`] grants a lease of `ttl`, then waits until this candidate leads.
//! - The lease is renewed every `renew_every` from the start (a standby's candidacy lives on
//!   it too: were it to run out, the standby's key would go and its campaign mean nothing). A leader that has not renewed for
//!   `ttl - renew_every` since the last renewal it sent that etcd confirmed takes itself as
//!   deposed ([`Leadership::lost`]) — before the lease can have run out on etcd's side, whose
//!   clock starts no earlier than the renewal was sent.
//! - [`Leadership::resign`] (or dropping it) gives leadership up at once: the key deleted and
//!   the lease revoked, so a standby need not wait for the lease to run out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::StoreError;
use super::etcd_backend::{Clients, EtcdStore, Fence, Job};

/// How long a lease lives and how often it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// Why these cannot work: etcd's leases are whole seconds, at least 2 (3.4's minimum here);
    /// renewals must come well within one lease.
    pub fn check(&self) -> Result<(), String> {
        if self.ttl < Duration::from_secs(2) || self.ttl.subsec_nanos() != 0 {
            return Err(format!("lease ttl {:?} must be whole seconds, at least 2", self.ttl));
        }
        if self.renew_every.is_zero() || self.renew_every * 2 > self.ttl {
            return Err(format!("renewals every {:?} must be positive and at most half the lease ({:?})", self.renew_every, self.ttl));
        }
        Ok(())
    }
}

/// Who leads an election now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// What the leader campaigned with (e.g. its address).
    pub value: String,
    pub epoch: i64,
}

/// How long a leadership is sure to last by this process's own monotonic clock: until the last
/// renewal etcd confirmed, plus `ttl - renew_every`. Checked before acting rather than waited
/// on: a process frozen (SIGSTOP, a stalled VM) past it and resumed finds it run out at the
/// first check, before any background task of its own has noticed.
#[derive(Clone, Debug)]
pub struct Mandate {
    base: std::time::Instant,
    /// Nanoseconds after `base`; 0 once given up.
    until: Arc<AtomicU64>,
}

impl Mandate {
    /// A mandate that holds for `d` from now, until extended or ended (the election's renewals
    /// extend theirs; this is for code that checks one, in tests).
    pub fn lasting(d: Duration) -> Mandate {
        Mandate::new(Instant::now() + d)
    }

    fn new(until: Instant) -> Mandate {
        let base = std::time::Instant::now();
        let m = Mandate { base, until: Arc::new(AtomicU64::new(0)) };
        m.extend(until);
        m
    }

    fn extend(&self, until: Instant) {
        let nanos = until.into_std().saturating_duration_since(self.base).as_nanos().min(u128::from(u64::MAX)) as u64;
        self.until.fetch_max(nanos, Ordering::AcqRel);
    }

    fn end(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Whether this process can still be sure it leads.
    pub fn holds(&self) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until > 0 && self.base.elapsed() < Duration::from_nanos(until)
    }
}

/// This candidate's leadership: held until lost, resigned or dropped.
pub struct Leadership {
    pub epoch: i64,
    /// The fence every write of the leader's store is conditioned on (with the mandate: a
    /// leader whose mandate has run out writes nothing, even before etcd would refuse it).
    pub fence: Fence,
    /// Checked before every command to an agent.
    pub mandate: Mandate,
    lost: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Leadership {
    /// Waits until leadership is lost (renewals failed for too long, or the key was deleted).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Gives leadership up now (a standby can lead at once) and waits until etcd has it.
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl EtcdStore {
    pub(crate) fn election_name(&self, election: &str) -> Vec<u8> {
        let mut name = self.prefix().to_vec();
        name.extend_from_slice(b"election/");
        name.extend_from_slice(election.as_bytes());
        name
    }

    /// Runs `f` on the owner thread; its answer awaited (no timeout: `f` bounds itself).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Clients) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |clients| {
            let fut = f(clients);
            Box::pin(async move {
                let _ = tx.send(fut.await);
            })
        });
        self.send(job)?;
        rx.await.map_err(|_| StoreError::Io(format!("etcd {}: the store's thread has stopped", self.endpoints())))
    }

    /// Waits until this candidate leads `election`, campaigning with `value` on a lease of
    /// `timing`. Dropping the future before it answers withdraws the candidacy (a leadership
    /// won meanwhile is given up).
    pub async fn campaign(&self, election: &str, value: &str, timing: LeaseTiming) -> Result<Leadership, StoreError> {
        timing.check().map_err(StoreError::Io)?;
        let name = self.election_name(election);
        let value = value.to_string();
        let endpoints = self.endpoints().to_string();
        let (lost_tx, lost_rx) = watch::channel(false);
        let lost_rx_job = lost_rx.clone();
        let mandate = Mandate::new(Instant::now() + timing.ttl - timing.renew_every);
        let mandate_job = mandate.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (won_tx, won_rx) = oneshot::channel::<Result<LeaderKey, String>>();
        let job: Job = Box::new(move |clients| {
            Box::pin(async move {
                let mut c = clients.waiting.clone();
                let lease = match c.lease_grant(timing.ttl.as_secs() as i64, None).await {
                    Ok(l) => l.id(),
                    Err(e) => return drop(won_tx.send(Err(e.to_string()))),
                };
                // The lease is kept alive from now: a candidate waits with it as long as it takes.
                let (keeper_stop, keeper_stopped) = oneshot::channel::<()>();
                let keeper = tokio::spawn(keep(c.clone(), lease, timing, lost_tx, mandate_job.clone(), keeper_stopped));
                let mut lost = lost_rx_job;
                let won = tokio::select! {
                    r = c.campaign(name.clone(), value.clone(), lease) => {
                        r.map_err(|e| e.to_string()).and_then(|mut a| a.take_leader().ok_or_else(|| "a campaign won without a leader key".to_string()))
                    }
                    _ = lost.wait_for(|l| *l) => Err(format!("the lease could not be renewed for {:?} while campaigning", timing.ttl - timing.renew_every)),
                };
                let key = match won {
                    Ok(k) => k,
                    Err(e) => {
                        let _ = keeper_stop.send(());
                        let _ = keeper.await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), c.lease_revoke(lease)).await;
                        return drop(won_tx.send(Err(e)));
                    }
                };
                if won_tx.send(Ok(key.clone())).is_ok() {
                    // Leading until told to stop (resigned, dropped) or the lease is lost.
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = lost.wait_for(|l| *l) => {}
                    }
                }
                mandate_job.end();
                let _ = keeper_stop.send(());
                let _ = keeper.await;
                give_up(&mut c, key).await;
                let _ = done_tx.send(());
            })
        });
        self.send(job)?;
        let key = won_rx
            .await
            .map_err(|_| StoreError::Io(format!("etcd {endpoints}: the store's thread has stopped")))?
            .map_err(|e| StoreError::Io(format!("etcd {endpoints}: campaigning: {e}")))?;
        Ok(Leadership {
            epoch: key.rev(),
            fence: Fence { key: key.key().to_vec(), create_revision: key.rev(), mandate: Some(mandate.clone()) },
            mandate,
            lost: lost_rx,
            stop: Some(stop_tx),
            done: Some(done_rx),
        })
    }

    /// Who leads `election` now (`None`: nobody).
    pub async fn leader(&self, election: &str) -> Result<Option<LeaderInfo>, StoreError> {
        let name = self.election_name(election);
        let endpoints = self.endpoints().to_string();
        let answer = self
            .run(move |clients| {
                Box::pin(async move {
                    let mut c = clients.short.clone();
                    match c.leader(name).await {
                        Ok(mut r) => Ok(r
                            .take_kv()
                            .map(|kv| LeaderInfo { value: String::from_utf8_lossy(kv.value()).into_owned(), epoch: kv.create_revision() })),
                        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .await?;
        answer.map_err(|e| StoreError::Io(format!("etcd {endpoints}: reading the leader: {e}")))
    }
}

/// Renews `lease` until told to stop, or until renewals have failed for too long (then says
/// the lease, and any leadership on it, is lost).
async fn keep(
    mut c: Client,
    lease: i64,
    timing: LeaseTiming,
    lost: watch::Sender<bool>,
    mandate: Mandate,
    mut stop: oneshot::Receiver<()>,
) {
    let give_up_after = timing.ttl - timing.renew_every;
    let mut confirmed = Instant::now();
    let mut next = confirmed + timing.renew_every;
    let mut stream = None;
    loop {
        // Nothing waits past the moment the lease is no longer sure.
        let deadline = confirmed + give_up_after;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(next.min(deadline)) => {}
        }
        if Instant::now() >= deadline {
            mandate.end();
            let _ = lost.send(true);
            return;
        }
        let sent = Instant::now();
        next = sent + timing.renew_every;
        let attempt = async {
            if stream.is_none() {
                stream = Some(c.lease_keep_alive(lease).await?);
            }
            let (keeper, answers) = stream.as_mut().expect("just set");
            keeper.keep_alive().await?;
            answers.message().await
        };
        match tokio::time::timeout_at(next.min(deadline), attempt).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                confirmed = sent;
                mandate.extend(sent + give_up_after);
            }
            // The lease is gone on etcd's side: leadership with it.
            Ok(Ok(Some(_))) => {
                mandate.end();
                let _ = lost.send(true);
                return;
            }
            _ => stream = None,
        }
    }
}

async fn give_up(c: &mut Client, key: LeaderKey) {
    let lease = key.lease();
    let _ = tokio::time::timeout(Duration::from_secs(2), c.resign(Some(ResignOptions::new().with_leader(key)))).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), c.lease_revoke(lease)).await;
}
