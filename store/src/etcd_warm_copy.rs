//! A standby's warm copy of the store: every key under the prefix, loaded at one revision and
//! then kept current by a watch from the next one, held in memory and read through the
//! [`KvStore`] trait (read-only: a write is refused with [`StoreError::ReadOnly`]).
//!
//! How current it is, is known rather than assumed: every [`PROGRESS_EVERY`] the copy asks etcd
//! for the watch's progress; etcd answers once every event up to its newest revision has been
//! delivered, so the copy then holds everything etcd held when the question was sent. That
//! moment is [`CopyProgress::confirmed`]; the copy's lag is the time since. A broken watch (a
//! member lost, the start revision compacted away) loads the whole prefix again.
//!
//! The election's keys and the standbys' own reports ([`STANDBYS_TREE`]) are left out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, SortOrder, SortTarget, WatchOptions};
use tokio::sync::{oneshot, watch};

use super::etcd_backend::{Clients, EtcdStore};
use super::{BatchOp, KeyValue, KvStore, KvTree, Order, StoreError};

/// The tree where each standby reports its copy's progress (under its address).
pub const STANDBYS_TREE: &str = "standbys";
/// Key prefixes (under the store's prefix) the copy leaves out.
const LEFT_OUT: [&[u8]; 2] = [b"election/", b"standbys/"];
/// How often the copy asks how current it is.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// The pause before a broken copy is loaded again.
const RELOAD_AFTER: Duration = Duration::from_secs(1);
/// Keys per page of a load.
const PAGE: i64 = 1000;

/// Where the copy stands.
#[derive(Clone, Debug, Default)]
pub struct CopyProgress {
    /// The store revision the copy holds every change up to.
    pub revision: i64,
    pub keys: usize,
    /// When the copy was last confirmed to hold everything etcd had (this process's monotonic
    /// clock), and the same moment in Unix milliseconds.
    pub confirmed: Option<Instant>,
    pub confirmed_unix_ms: u64,
    /// Whole loads (the first, and one after each broken watch) and changes applied since.
    pub loads: u64,
    pub changes: u64,
    /// Why the copy is not following etcd now, while it is not.
    pub broken: Option<String>,
}

impl CopyProgress {
    /// How stale the copy may be: the time since it was last confirmed current.
    pub fn lag(&self) -> Option<Duration> {
        self.confirmed.map(|c| c.elapsed())
    }
}

struct CopyState {
    /// Keys without the store's prefix (`tree/key`), and their values.
    data: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    progress: Mutex<CopyProgress>,
}

impl CopyState {
    fn progress(&self) -> std::sync::MutexGuard<'_, CopyProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn data(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The copy: cheap to clone; it stops following etcd when the last clone is dropped.
#[derive(Clone)]
pub struct WarmCopy {
    state: Arc<CopyState>,
    endpoints: String,
    _stop: Arc<watch::Sender<bool>>,
}

impl WarmCopy {
    pub fn progress(&self) -> CopyProgress {
        self.state.progress().clone()
    }
}

impl EtcdStore {
    /// Loads a copy of every key under the prefix and keeps it current; answers once the first
    /// load is in (or failed: the error names why).
    pub async fn warm_copy(&self) -> Result<WarmCopy, StoreError> {
        let state = Arc::new(CopyState { data: RwLock::default(), progress: Mutex::default() });
        let (stop, stopped) = watch::channel(false);
        let (loaded_tx, loaded) = oneshot::channel();
        let (prefix, follower) = (self.prefix().to_vec(), state.clone());
        self.send(Box::new(move |clients| Box::pin(keep_current(clients, prefix, follower, stopped, loaded_tx))))?;
        let endpoints = self.endpoints().to_string();
        let io = |detail: String| StoreError::Io(format!("etcd {endpoints} (loading the warm copy): {detail}"));
        loaded.await.map_err(|_| io("the store's thread has stopped".into()))?.map_err(io)?;
        Ok(WarmCopy { state, endpoints: self.endpoints().to_string(), _stop: Arc::new(stop) })
    }
}

/// Loads and follows until the copy is dropped; a broken watch loads again.
async fn keep_current(
    clients: Clients,
    prefix: Vec<u8>,
    state: Arc<CopyState>,
    mut stopped: watch::Receiver<bool>,
    loaded: oneshot::Sender<Result<(), String>>,
) {
    let mut loaded = Some(loaded);
    loop {
        let broke = tokio::select! {
            _ = stopped.changed() => return,
            e = follow(&clients, &prefix, &state, &mut loaded) => e,
        };
        if let Some(first) = loaded.take() {
            let _ = first.send(Err(broke));
            return;
        }
        state.progress().broken = Some(broke);
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(RELOAD_AFTER) => {}
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn left_out(key: &[u8]) -> bool {
    LEFT_OUT.iter().any(|p| key.starts_with(p))
}

/// One load and the watch after it; returns why it stopped.
async fn follow(clients: &Clients, prefix: &[u8], state: &CopyState, loaded: &mut Option<oneshot::Sender<Result<(), String>>>) -> String {
    let (asked, asked_unix) = (Instant::now(), unix_ms());
    let (revision, data) = match load(clients.short.clone(), prefix).await {
        Ok(l) => l,
        Err(e) => return e.to_string(),
    };
    {
        let keys = data.len();
        *state.data.write().unwrap_or_else(|p| p.into_inner()) = data;
        let mut p = state.progress();
        p.revision = revision;
        p.keys = keys;
        // The load read etcd's newest revision as it stood when it was sent.
        (p.confirmed, p.confirmed_unix_ms) = (Some(asked), asked_unix);
        p.loads += 1;
        p.broken = None;
    }
    if let Some(first) = loaded.take() {
        let _ = first.send(Ok(()));
    }
    let mut c = clients.waiting.clone();
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut stream = match c.watch(prefix.to_vec(), Some(options)).await {
        Ok(s) => s,
        Err(e) => return format!("starting the watch: {e}"),
    };
    // The oldest progress question not answered yet (when it was sent).
    let mut waiting: Option<(Instant, u64)> = None;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = stream.request_progress().await {
                    return format!("asking the watch's progress: {e}");
                }
                waiting.get_or_insert((Instant::now(), unix_ms()));
            }
            message = stream.message() => {
                let response = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => return "etcd ended the watch".into(),
                    Err(e) => return format!("the watch: {e}"),
                };
                if response.canceled() {
                    return format!("etcd cancelled the watch ({}; compacted up to revision {})", response.cancel_reason(), response.compact_revision());
                }
                if response.created() {
                    continue;
                }
                if response.events().is_empty() {
                    // Progress: every change up to the header's revision has been delivered.
                    let at = response.header().map(|h| h.revision()).unwrap_or(0);
                    let mut p = state.progress();
                    p.revision = p.revision.max(at);
                    if let Some((sent, sent_unix)) = waiting.take() {
                        (p.confirmed, p.confirmed_unix_ms) = (Some(sent), sent_unix);
                    }
                    continue;
                }
                let mut newest = 0;
                let mut data = state.data.write().unwrap_or_else(|p| p.into_inner());
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    newest = newest.max(kv.mod_revision());
                    let Some(key) = kv.key().strip_prefix(prefix) else { continue };
                    if left_out(key) {
                        continue;
                    }
                    match event.event_type() {
                        EventType::Put => data.insert(key.to_vec(), kv.value().to_vec()),
                        EventType::Delete => data.remove(key),
                    };
                }
                let keys = data.len();
                drop(data);
                let mut p = state.progress();
                p.revision = p.revision.max(newest);
                p.keys = keys;
                p.changes += response.events().len() as u64;
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Every key under `prefix` (less the left-out ones) at one revision, page by page.
async fn load(mut c: Client, prefix: &[u8]) -> Result<(i64, BTreeMap<Vec<u8>, Vec<u8>>), etcd_client::Error> {
    let end = prefix_end(prefix);
    let (mut from, mut revision, mut data) = (prefix.to_vec(), 0i64, BTreeMap::new());
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE).with_sort(SortTarget::Key, SortOrder::Ascend);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut r = c.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = r.header().map(|h| h.revision()).unwrap_or(0);
        }
        let more = r.more();
        let kvs = r.take_kvs();
        let Some(last) = kvs.last().map(|kv| kv.key().to_vec()) else { break };
        for kv in kvs {
            if let Some(key) = kv.key().strip_prefix(prefix)
                && !left_out(key)
            {
                data.insert(key.to_vec(), kv.value().to_vec());
            }
        }
        if !more {
            break;
        }
        from = last;
        from.push(0);
    }
    Ok((revision, data))
}

impl KvStore for WarmCopy {
    fn tree(&self, name: &str) -> Result<Arc<dyn KvTree>, StoreError> {
        if name.is_empty() || name.contains('/') {
            return Err(StoreError::Io(format!("tree name {name:?}: must be non-empty and without '/'")));
        }
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(b'/');
        Ok(Arc::new(CopyTree { copy: self.clone(), prefix }))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One tree of the copy.
struct CopyTree {
    copy: WarmCopy,
    prefix: Vec<u8>,
}

impl CopyTree {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(key);
        full
    }
    fn refuse(&self) -> StoreError {
        StoreError::ReadOnly(format!("a standby's copy of etcd {}: writes go to the leader", self.copy.endpoints))
    }
}

impl KvTree for CopyTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.copy.state.data().get(&self.key(key)).cloned())
    }
    fn insert(&self, _: &[u8], _: &[u8]) -> Result<(), StoreError> {
        Err(self.refuse())
    }
    fn remove(&self, _: &[u8]) -> Result<(), StoreError> {
        Err(self.refuse())
    }
    fn apply(&self, _: Vec<BatchOp>) -> Result<(), StoreError> {
        Err(self.refuse())
    }
    fn scan_prefix(&self, prefix: &[u8], order: Order, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        Ok(super::memory::scan_map(&self.copy.state.data(), &self.key(prefix), order, limit, self.prefix.len()))
    }
    fn count_prefix(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        let start = self.key(prefix);
        Ok(self.copy.state.data().range(start.clone()..).take_while(|(k, _)| k.starts_with(&start)).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_byte_that_can_grow() {
        assert_eq!(prefix_end(b"presage/"), b"presage0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
