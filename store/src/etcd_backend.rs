//! A [`KvStore`] on an etcd cluster (v3 API, the `etcd-client` crate): the coordinator's
//! durable state where several coordinators share it (`[cluster] store = "etcd"`).
//!
//! - **Keys**: `PREFIX TREE '/' KEY`, bytes as given (a tree's name has no `/`); a tree is the
//!   key range under its prefix, a scan one range request sorted by key.
//! - **Writes** are acknowledged by etcd once a quorum has them in its log (fsynced), so
//!   [`KvStore::flush`] has nothing left to do. A batch is one transaction: all or nothing, at
//!   most [`MAX_TXN_OPS`] operations (etcd's default `--max-txn-ops`); a larger one is refused
//!   whole, naming its size, never split.
//! - **Fencing**: a store made with [`EtcdStore::fenced`] conditions every write on a key's
//!   create revision (the leader key its coordinator won an election with): once that key is
//!   gone or re-created by another, every write fails with [`StoreError::Fenced`] and changes
//!   nothing. Reads are not fenced.
//! - **Blocking**: the trait is synchronous; the etcd client is async. One owner thread runs a
//!   runtime of its own holding the client; each call sends it a request and waits for the
//!   answer (at most the request timeout and a second), so callers on any thread or runtime may
//!   call it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::{BatchOp, KeyValue, KvStore, KvTree, Order, StoreError};

/// etcd's default limit on the operations of one transaction (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// The pause before an attempt is repeated.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One attempt's limit: a third of the request's (at least half a second), so that a proposal
/// lost in an election is tried again within the request's time.
fn attempt_timeout(request: Duration) -> Duration {
    (request / 3).max(Duration::from_millis(500))
}

/// Whether an attempt may succeed if made again: no leader, no answer, no connection.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded)
                || s.message().contains("leader")
        }
        _ => false,
    }
}

/// What to connect to and how.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the members, e.g. `https://10.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every key this store writes starts with it (e.g. `presage/`): several clusters may share
    /// one etcd.
    pub prefix: String,
    /// Mutual TLS: the CA that signed the members' certificates, and this client's
    /// certificate and key (PEM). `None`: plain `http://` endpoints.
    pub tls: Option<EtcdTls>,
    /// The longest one request may take (connecting included).
    pub request_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The name the members' certificates carry (default: the endpoint's host).
    pub server_name: Option<String>,
}

/// The key and create revision every write is conditioned on.
#[derive(Clone, Debug)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
    /// When set, nothing is sent once it no longer holds (a leader frozen past its lease).
    pub mandate: Option<crate::etcd_election::Mandate>,
}

/// The owner thread's clients: one whose every request is bounded by the request timeout,
/// and one without a bound for what waits by design (a campaign, a lease kept alive).
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) short: Client,
    pub(crate) waiting: Client,
}

pub(crate) type Job = Box<dyn FnOnce(Clients) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Shared {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    prefix: Vec<u8>,
    endpoints: String,
    /// Each endpoint and how to reach it alone (for health: one member at a time).
    members: Vec<String>,
    member_options: ConnectOptions,
    timeout: Duration,
}

/// The store: cheap to clone (every clone talks through the same owner thread).
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
    fence: Option<Fence>,
}

impl EtcdStore {
    /// Connects (checking that a member answers) and starts the owner thread.
    pub fn connect(cfg: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let endpoints = cfg.endpoints.join(",");
        let open = |detail: String| StoreError::Open { path: format!("etcd {endpoints}").into(), detail };
        if cfg.endpoints.is_empty() {
            return Err(open("no endpoints given".into()));
        }
        if cfg.prefix.is_empty() {
            return Err(open("the key prefix is empty (presage's keys would mix with everything else in etcd)".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.request_timeout)
            .with_keep_alive(Duration::from_secs(2), cfg.request_timeout)
            .with_require_leader(true);
        if let Some(t) = &cfg.tls {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&t.ca_pem))
                .identity(etcd_client::Identity::from_pem(&t.cert_pem, &t.key_pem));
            if let Some(name) = &t.server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        let waiting_options = options.clone();
        let member_options = options.clone().with_require_leader(false).with_timeout(attempt_timeout(cfg.request_timeout));
        let options = options.with_timeout(attempt_timeout(cfg.request_timeout));
        // Connected on the owner thread (its own runtime: the caller may be on a runtime of
        // its own, where another cannot be entered); the caller waits for the outcome.
        let urls = cfg.endpoints.clone();
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready, connected) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name("etcd-store".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => return drop(ready.send(Err(e.to_string()))),
                };
                runtime.block_on(async move {
                    let clients = async {
                        let mut short = Client::connect(urls.clone(), Some(options)).await?;
                        // A member that answers: connecting alone proves nothing.
                        short.status().await?;
                        let waiting = Client::connect(urls, Some(waiting_options)).await?;
                        Ok::<Clients, etcd_client::Error>(Clients { short, waiting })
                    };
                    let clients = match clients.await {
                        Ok(c) => c,
                        Err(e) => return drop(ready.send(Err(e.to_string()))),
                    };
                    let _ = ready.send(Ok(()));
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job(clients.clone()));
                    }
                })
            })
            .map_err(|e| open(format!("starting its thread: {e}")))?;
        match connected.recv_timeout(cfg.request_timeout * 2 + Duration::from_secs(1)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(open(e)),
            Err(_) => return Err(open(format!("no member answered within {:?}", cfg.request_timeout * 2))),
        }
        Ok(EtcdStore {
            shared: Arc::new(Shared {
                jobs,
                prefix: cfg.prefix.clone().into_bytes(),
                endpoints,
                members: cfg.endpoints.clone(),
                member_options,
                timeout: cfg.request_timeout,
            }),
            fence: None,
        })
    }

    /// Sends `job` to the owner thread.
    pub(crate) fn send(&self, job: Job) -> Result<(), StoreError> {
        self.shared.jobs.send(job).map_err(|_| StoreError::Io(format!("etcd {}: the store's thread has stopped", self.shared.endpoints)))
    }

    /// The key prefix (every key this store writes starts with it).
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.shared.prefix
    }

    pub(crate) fn endpoints(&self) -> &str {
        &self.shared.endpoints
    }

    pub(crate) fn members(&self) -> (&[String], &ConnectOptions, Duration) {
        (&self.shared.members, &self.shared.member_options, self.shared.timeout)
    }

    /// The same store with every write conditioned on `fence`.
    pub fn fenced(&self, fence: Fence) -> EtcdStore {
        EtcdStore { shared: self.shared.clone(), fence: Some(fence) }
    }

    /// The create revision of `key` (a whole etcd key, not under a tree): what a fence on it
    /// compares; `None` while there is no such key.
    pub fn create_revision(&self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        let k = key.to_vec();
        self.call("create revision", move |mut c| {
            let k = k.clone();
            async move {
                let mut r = c.get(k, None).await?;
                Ok(r.take_kvs().into_iter().next().map(|kv| kv.create_revision()))
            }
        })
    }

    /// Runs `f` on the owner thread and waits for its answer. An attempt that meets etcd
    /// without a leader (a member lost, an election under way) or without an answer is tried
    /// again until the request timeout: every request this store makes may be repeated (puts
    /// and deletes of given keys, and a fenced transaction compares again).
    pub(crate) fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        let job: Job = Box::new(move |clients| {
            Box::pin(async move {
                let answer = loop {
                    match f(clients.short.clone()).await {
                        Err(e) if transient(&e) && tokio::time::Instant::now() + RETRY_PAUSE < deadline => {
                            tokio::time::sleep(RETRY_PAUSE).await
                        }
                        other => break other,
                    }
                };
                let _ = tx.send(answer);
            })
        });
        let io = |detail: String| StoreError::Io(format!("etcd {} ({what}): {detail}", self.shared.endpoints));
        self.shared.jobs.send(job).map_err(|_| io("the store's thread has stopped".into()))?;
        match rx.recv_timeout(self.shared.timeout + Duration::from_secs(1)) {
            Ok(answer) => answer.map_err(|e| io(e.to_string())),
            Err(_) => Err(io(format!("no answer within {:?}", self.shared.timeout))),
        }
    }

    /// A transaction of `ops`, under the fence if there is one; whether it was applied.
    fn write(&self, what: &str, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let fence = self.fence.clone();
        if let Some(f) = &fence
            && f.mandate.as_ref().is_some_and(|m| !m.holds())
        {
            return Err(StoreError::Fenced(format!(
                "{what}: this coordinator can no longer be sure it leads (its lease was not renewed in time); nothing was written"
            )));
        }
        let mut txn = Txn::new();
        if let Some(f) = &fence {
            txn = txn.when([Compare::create_revision(f.key.clone(), CompareOp::Equal, f.create_revision)]);
        }
        let txn = txn.and_then(ops);
        let applied = self.call(what, move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await.map(|r| r.succeeded()) }
        })?;
        match (applied, fence) {
            (true, _) => Ok(()),
            (false, Some(f)) => Err(StoreError::Fenced(format!(
                "{what}: the fence key {} is no longer at create revision {} (another coordinator leads); nothing was written",
                String::from_utf8_lossy(&f.key),
                f.create_revision
            ))),
            (false, None) => Err(StoreError::Io(format!("{what}: etcd did not apply an unconditional transaction"))),
        }
    }
}

impl KvStore for EtcdStore {
    fn tree(&self, name: &str) -> Result<Arc<dyn KvTree>, StoreError> {
        if name.is_empty() || name.contains('/') {
            return Err(StoreError::Io(format!("tree name {name:?}: must be non-empty and without '/'")));
        }
        let mut prefix = self.shared.prefix.clone();
        prefix.extend_from_slice(name.as_bytes());
        prefix.push(b'/');
        Ok(Arc::new(EtcdTree { store: self.clone(), prefix, name: name.to_string() }))
    }

    /// Nothing to do: etcd acknowledges a write once a quorum has it on disk.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct EtcdTree {
    store: EtcdStore,
    prefix: Vec<u8>,
    name: String,
}

impl EtcdTree {
    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut full = self.prefix.clone();
        full.extend_from_slice(k);
        full
    }

    fn what(&self, op: &str) -> String {
        format!("{op} in tree {}", self.name)
    }
}

/// Shared by every call's result check: the tree's keys without its prefix.
fn strip(prefix: &[u8], kvs: Vec<etcd_client::KeyValue>) -> Vec<KeyValue> {
    kvs.into_iter().map(|kv| (kv.key()[prefix.len()..].to_vec(), kv.value().to_vec())).collect()
}

impl KvTree for EtcdTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.key(key);
        self.store.call(&self.what("get"), move |mut c| {
            let k = k.clone();
            async move {
                let mut r = c.get(k, None).await?;
                Ok(r.take_kvs().into_iter().next().map(|kv| kv.value().to_vec()))
            }
        })
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.store.write(&self.what("insert"), vec![TxnOp::put(self.key(key), value.to_vec(), None)])
    }

    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.store.write(&self.what("remove"), vec![TxnOp::delete(self.key(key), None::<DeleteOptions>)])
    }

    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StoreError> {
        if ops.len() > MAX_TXN_OPS {
            return Err(StoreError::Io(format!(
                "{}: a batch of {} operations is more than etcd's {MAX_TXN_OPS} per transaction; nothing was written",
                self.what("batch"),
                ops.len()
            )));
        }
        if ops.is_empty() {
            return Ok(());
        }
        let ops = ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Insert(k, v) => TxnOp::put(self.key(&k), v, None),
                BatchOp::Remove(k) => TxnOp::delete(self.key(&k), None::<DeleteOptions>),
            })
            .collect();
        self.store.write(&self.what("batch"), ops)
    }

    fn scan_prefix(&self, prefix: &[u8], order: Order, limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (start, tree_prefix) = (self.key(prefix), self.prefix.clone());
        let sort = if order == Order::Ascending { SortOrder::Ascend } else { SortOrder::Descend };
        let mut options = GetOptions::new().with_prefix().with_sort(SortTarget::Key, sort);
        if let Ok(l) = i64::try_from(limit) {
            options = options.with_limit(l);
        }
        self.store.call(&self.what("scan"), move |mut c| {
            let (start, options, tree_prefix) = (start.clone(), options.clone(), tree_prefix.clone());
            async move {
                let mut r = c.get(start, Some(options)).await?;
                Ok(strip(&tree_prefix, r.take_kvs()))
            }
        })
    }

    fn count_prefix(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        let start = self.key(prefix);
        self.store.call(&self.what("count"), move |mut c| {
            let start = start.clone();
            async move {
                let r = c.get(start, Some(GetOptions::new().with_prefix().with_count_only())).await?;
                Ok(r.count().max(0) as usize)
            }
        })
    }
}
