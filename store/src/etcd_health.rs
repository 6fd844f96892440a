//! What an operator asks of the etcd cluster itself: each member's health as its own endpoint
//! answers (one connection per endpoint, so a member that is down or cut off shows as such
//! rather than being hidden by the client's fail-over), and the candidates of an election.

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, SortOrder, SortTarget};

use super::StoreError;
use super::etcd_backend::EtcdStore;

/// One member, from its own endpoint.
#[derive(Clone, Debug)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub answer: Result<EndpointStatus, String>,
    /// How long it took to answer (or to fail).
    pub took: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub member_id: u64,
    /// Whether this member is etcd's raft leader.
    pub is_leader: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub db_size_bytes: i64,
    pub version: String,
}

/// A candidate of an election (a coordinator, standing by or leading).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// What it campaigned with (its address).
    pub value: String,
    /// Its key's create revision (the leader's is its epoch).
    pub revision: i64,
    pub leads: bool,
}

impl EtcdStore {
    /// Every configured endpoint's own answer to a status request.
    pub async fn health(&self) -> Vec<EndpointHealth> {
        let (members, options, timeout) = self.members();
        let (members, options) = (members.to_vec(), options.clone());
        let answer = self
            .run(move |_| {
                Box::pin(async move {
                    let asks = members.into_iter().map(|endpoint| {
                        let options = options.clone();
                        async move {
                            let began = Instant::now();
                            let ask = async {
                                let mut c = Client::connect([endpoint.clone()], Some(options)).await?;
                                c.status().await
                            };
                            let answer = match tokio::time::timeout(timeout, ask).await {
                                Err(_) => Err(format!("no answer within {timeout:?}")),
                                Ok(Err(e)) => Err(e.to_string()),
                                Ok(Ok(s)) => {
                                    let member_id = s.header().map_or(0, |h| h.member_id());
                                    Ok(EndpointStatus {
                                        member_id,
                                        is_leader: member_id != 0 && s.leader() == member_id,
                                        raft_term: s.raft_term(),
                                        raft_index: s.raft_index(),
                                        db_size_bytes: s.db_size(),
                                        version: s.version().to_string(),
                                    })
                                }
                            };
                            EndpointHealth { endpoint, answer, took: began.elapsed() }
                        }
                    });
                    // Asked together (each bounded by the timeout), answers in the configured order.
                    let tasks: Vec<_> = asks.map(tokio::spawn).collect();
                    let mut out = Vec::with_capacity(tasks.len());
                    for t in tasks {
                        if let Ok(h) = t.await {
                            out.push(h);
                        }
                    }
                    out
                })
            })
            .await;
        answer.unwrap_or_default()
    }

    /// The candidates of `election`, oldest first (the first leads), and the store's revision
    /// as they were read. Blocks (retried within the request timeout while etcd elects a
    /// leader of its own): call off the runtime.
    pub fn candidates(&self, election: &str) -> Result<(Vec<Candidate>, i64), StoreError> {
        let mut name = self.election_name(election);
        name.push(b'/');
        let kvs = self.call("reading the candidates", move |mut c| {
            let name = name.clone();
            async move {
                let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
                let r = c.get(name, Some(options)).await?;
                let revision = r.header().map(|h| h.revision()).unwrap_or(0);
                Ok((
                    r.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.create_revision())).collect::<Vec<_>>(),
                    revision,
                ))
            }
        })?;
        let (kvs, revision) = kvs;
        Ok((kvs.into_iter().enumerate().map(|(i, (value, revision))| Candidate { value, revision, leads: i == 0 }).collect(), revision))
    }
}
