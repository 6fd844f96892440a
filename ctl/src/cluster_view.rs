//! `presagectl cluster status`: the coordinators (each standby's warm copy and its lag) and the
//! store, as the answering coordinator sees them.

use presage_protocol::pb::ClusterStatusResponse;
use serde_json::{Value, json};

/// The JSON form (one object; the same fields as the REST answer of `GET /v1/cluster`).
pub fn cluster_json(s: &ClusterStatusResponse) -> Value {
    json!({
        "store": s.store,
        "elected": s.elected,
        "this_coordinator": s.this_coordinator,
        "leader": s.leader,
        "epoch": s.epoch,
        "role": s.role,
        "store_revision": s.store_revision,
        "members": s.members.iter().map(|m| {
            let mut v = json!({"address": m.address, "role": m.role, "candidate_revision": m.candidate_revision});
            if m.copy_reported {
                v["copy"] = json!({
                    "revision": m.copy_revision, "keys": m.copy_keys, "lag_ms": m.copy_lag_ms,
                    "report_age_ms": m.copy_report_age_ms, "broken": m.copy_broken,
                });
            }
            v
        }).collect::<Vec<_>>(),
        "etcd": s.etcd.iter().map(|e| json!({
            "endpoint": e.endpoint, "healthy": e.healthy, "error": e.error, "member_id": format!("{:x}", e.member_id),
            "is_raft_leader": e.is_raft_leader, "raft_term": e.raft_term, "raft_index": e.raft_index,
            "db_size_bytes": e.db_size_bytes, "version": e.version, "answered_ms": e.answered_ms,
        })).collect::<Vec<_>>(),
    })
}

/// The table form.
pub fn cluster_text(s: &ClusterStatusResponse) -> String {
    let mut out = String::new();
    match (s.store.as_str(), s.elected) {
        ("etcd", true) => {
            out.push_str(&format!("store etcd, coordinators elect a leader; leader {} at epoch {}\n", s.leader, s.epoch));
            out.push_str(&format!("answered by {} ({}), store at revision {}\n\n", s.this_coordinator, s.role, s.store_revision));
            out.push_str(&format!("{:<40} {:<8} {:>12}  {}\n", "COORDINATOR", "ROLE", "SINCE (REV)", "WARM COPY"));
            for m in &s.members {
                let copy = match (m.role.as_str(), m.copy_reported) {
                    ("leader", _) => "- (reads etcd)".to_string(),
                    (_, false) => "not reported".to_string(),
                    (_, true) if !m.copy_broken.is_empty() => format!("BROKEN: {} (last at revision {})", m.copy_broken, m.copy_revision),
                    (_, true) => format!(
                        "lag {:.1} s, revision {}, {} keys (reported {:.1} s ago)",
                        m.copy_lag_ms as f64 / 1e3,
                        m.copy_revision,
                        m.copy_keys,
                        m.copy_report_age_ms as f64 / 1e3
                    ),
                };
                out.push_str(&format!("{:<40} {:<8} {:>12}  {copy}\n", m.address, m.role, m.candidate_revision));
            }
            out.push('\n');
        }
        ("etcd", false) => out.push_str("store etcd, a single coordinator (no election)\n\n"),
        (kind, _) => {
            out.push_str(&format!("store {kind}, a single coordinator (no election, no standby)\n"));
            return out;
        }
    }
    out.push_str(&format!(
        "{:<28} {:<9} {:>16} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8}\n",
        "ETCD ENDPOINT", "HEALTH", "MEMBER", "RAFT", "TERM", "INDEX", "DB", "VERSION", "MS"
    ));
    for e in &s.etcd {
        if e.healthy {
            out.push_str(&format!(
                "{:<28} {:<9} {:>16x} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8.1}\n",
                e.endpoint,
                "healthy",
                e.member_id,
                if e.is_raft_leader { "leader" } else { "-" },
                e.raft_term,
                e.raft_index,
                format!("{:.1} MiB", e.db_size_bytes.max(0) as f64 / 1048576.0),
                e.version,
                e.answered_ms
            ));
        } else {
            out.push_str(&format!("{:<28} {:<9} {}\n", e.endpoint, "DOWN", e.error));
        }
    }
    let healthy = s.etcd.iter().filter(|e| e.healthy).count();
    let quorum = s.etcd.len() / 2 + 1;
    out.push_str(&format!(
        "{healthy} of {} endpoints answer{}\n",
        s.etcd.len(),
        if healthy >= quorum { "" } else { ": fewer than a quorum — writes stop" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use presage_protocol::pb::{ClusterMember, EtcdEndpoint};

    fn status(down: usize) -> ClusterStatusResponse {
        ClusterStatusResponse {
            store: "etcd".into(),
            elected: true,
            this_coordinator: "https://a:7400".into(),
            leader: "https://a:7400".into(),
            epoch: 41,
            members: vec![
                ClusterMember { address: "https://a:7400".into(), role: "leader".into(), candidate_revision: 41, ..Default::default() },
                ClusterMember {
                    address: "https://b:7400".into(),
                    role: "standby".into(),
                    candidate_revision: 57,
                    copy_reported: true,
                    copy_revision: 880,
                    copy_keys: 12,
                    copy_lag_ms: 420,
                    ..Default::default()
                },
                ClusterMember { address: "https://c:7400".into(), role: "standby".into(), candidate_revision: 60, ..Default::default() },
            ],
            role: "leader".into(),
            store_revision: 881,
            etcd: (0..3)
                .map(|i| {
                    if i < down {
                        EtcdEndpoint { endpoint: format!("https://e{i}:2379"), error: "no answer within 5s".into(), ..Default::default() }
                    } else {
                        EtcdEndpoint {
                            endpoint: format!("https://e{i}:2379"),
                            healthy: true,
                            member_id: 0xabc + i as u64,
                            is_raft_leader: i == 2,
                            version: "3.4.23".into(),
                            ..Default::default()
                        }
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn the_table_names_the_leader_the_standbys_and_each_member_down_and_says_when_quorum_is_lost() {
        let one_down = cluster_text(&status(1));
        assert!(one_down.contains("leader https://a:7400 at epoch 41"), "{one_down}");
        assert!(
            one_down.lines().any(|l| l.starts_with("https://b:7400") && l.contains("standby") && l.contains("lag 0.4 s, revision 880")),
            "{one_down}"
        );
        assert!(one_down.lines().any(|l| l.starts_with("https://c:7400") && l.contains("not reported")), "{one_down}");
        assert!(one_down.lines().any(|l| l.starts_with("https://e0:2379") && l.contains("DOWN") && l.contains("no answer")), "{one_down}");
        assert!(one_down.contains("2 of 3 endpoints answer\n"), "{one_down}");
        let two_down = cluster_text(&status(2));
        assert!(two_down.contains("1 of 3 endpoints answer: fewer than a quorum"), "{two_down}");
        let json = cluster_json(&status(1));
        assert_eq!(json["members"][1]["role"], "standby");
        assert_eq!(json["members"][1]["copy"]["lag_ms"], 420);
        assert!(json["members"][0].get("copy").is_none() && json["members"][2].get("copy").is_none());
        assert_eq!(json["etcd"][1]["member_id"], "abd");
        let single = ClusterStatusResponse { store: "sled".into(), ..Default::default() };
        assert!(cluster_text(&single).contains("store sled, a single coordinator"));
    }
}
