//! Every VM's configuration as numbered versions: each resize an operator, the sizing pass, the
//! optimiser or a rollback asks for is a version (what it sets, what it replaced, who or what
//! proposed it, why, the gain predicted per goal, the rollout it belongs to), written and
//! flushed *before* the agent is asked and given its outcome after. `presagectl config history
//! VM` reads them, `config diff` compares two (in `presagectl`, from the history), `config rollback VM VERSION` asks for an old
//! version's configuration again (a new version that says so). Kept in the coordinator's store
//! (tree `config_versions`; keys `vm/<id>/<version, 20 digits>` sort by VM, then version).

use std::collections::BTreeMap;
use std::sync::Arc;

use presage_decide::sizing::IoLimits;
use presage_store::{KvStore, KvTree, Order, StoreError};
use serde::{Deserialize, Serialize};

const TREE: &str = "config_versions";
/// Versions older than the newest this many of a VM are forgotten as new ones are recorded.
pub const RETAINED_VERSIONS: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("configuration versions: {0}")]
    Store(#[from] StoreError),
    #[error("configuration version {key} is damaged ({detail}); it was left in place")]
    Damaged { key: String, detail: String },
    #[error("VM {vm} has no configuration version {version}")]
    NoSuchVersion { vm: String, version: u64 },
}

/// What a version sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub cpu_cores: f64,
    pub memory_mib: f64,
    /// I/O and network limits (unset: not set by this version, or not known).
    #[serde(default)]
    pub io: IoLimits,
}

impl VmConfig {
    /// CPU and memory, I/O and network limits left as they are.
    pub fn sized(cpu_cores: f64, memory_mib: f64) -> VmConfig {
        VmConfig { cpu_cores, memory_mib, io: IoLimits::default() }
    }

    pub fn to_wire(&self) -> presage_protocol::pb::VmConfigValues {
        presage_protocol::pb::VmConfigValues {
            cpu_cores: self.cpu_cores,
            memory_mib: self.memory_mib,
            disk_bytes_per_s: self.io.disk_bytes_per_s,
            net_bytes_per_s: self.io.net_bytes_per_s,
        }
    }

    /// "2.00 cores, 1024 MiB, disk 50 MiB/s, network unlimited" (limits it leaves unset, not
    /// named).
    pub fn describe(&self) -> String {
        let mut out = format!("{:.2} cores, {:.0} MiB", self.cpu_cores, self.memory_mib);
        for (name, limit) in [("disk", self.io.disk_bytes_per_s), ("network", self.io.net_bytes_per_s)] {
            match limit {
                Some(b) if b > 0.0 => out += &format!(", {name} {:.0} MiB/s", b / 1_048_576.0),
                Some(_) => out += &format!(", {name} unlimited"),
                None => {}
            }
        }
        out
    }

    /// Whether a VM that has `now` has what this sets (limits it leaves unset match any).
    pub fn met_by(&self, now: &VmConfig) -> bool {
        let limit = |want: Option<f64>, have: Option<f64>| want.is_none_or(|w| have.is_some_and(|h| (w - h).abs() < 0.5));
        (now.cpu_cores - self.cpu_cores).abs() < 1e-9
            && (now.memory_mib - self.memory_mib).abs() < 0.5
            && limit(self.io.disk_bytes_per_s, now.io.disk_bytes_per_s)
            && limit(self.io.net_bytes_per_s, now.io.net_bytes_per_s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigVersion {
    pub vm: String,
    pub version: u64,
    pub at_ms: u64,
    pub config: VmConfig,
    /// What the VM had when this version was asked for (as its agent last reported).
    pub previous: Option<VmConfig>,
    /// "operator alice", "sizing pass", "optimiser run 3", ...
    pub proposed_by: String,
    pub reason: String,
    /// The gain predicted per goal (e.g. "active_hosts": 1, "sla_risk": -0.02).
    #[serde(default)]
    pub predicted_gain: BTreeMap<String, f64>,
    /// The rollout it belongs to, if any.
    #[serde(default)]
    pub rollout: Option<u64>,
    /// "asked" (the agent not answered yet, or the coordinator stopped before it did),
    /// "applied", "refused: ...", "failed: ...".
    pub outcome: String,
}

pub struct ConfigVersions {
    store: Arc<dyn KvStore>,
    tree: Arc<dyn KvTree>,
    /// Serialises numbering (read the newest, write the next).
    numbering: std::sync::Mutex<()>,
}

fn prefix(vm: &str) -> Vec<u8> {
    format!("vm/{vm}/").into_bytes()
}

fn key(vm: &str, version: u64) -> Vec<u8> {
    crate::journal_keys::numbered_key(&prefix(vm), version)
}

fn decode(k: &[u8], v: &[u8]) -> Result<ConfigVersion, VersionError> {
    crate::journal_keys::decode(k, v).map_err(|d| VersionError::Damaged { key: d.key, detail: d.detail })
}

impl ConfigVersions {
    pub fn open(store: Arc<dyn KvStore>) -> Result<ConfigVersions, VersionError> {
        let tree = store.tree(TREE)?;
        Ok(ConfigVersions { store, tree, numbering: std::sync::Mutex::new(()) })
    }

    /// Records a new version of `v.vm` (its number is the next after the VM's newest; the
    /// given one is ignored), flushed before it returns; returns it.
    pub fn record(&self, mut v: ConfigVersion) -> Result<ConfigVersion, VersionError> {
        let _one = self.numbering.lock().unwrap_or_else(|p| p.into_inner());
        let newest = self.tree.scan_prefix(&prefix(&v.vm), Order::Descending, 1)?;
        v.version = match newest.first() {
            Some((k, _)) => {
                let text = String::from_utf8_lossy(&k[prefix(&v.vm).len()..]).into_owned();
                text.parse::<u64>().map_err(|e| VersionError::Damaged { key: String::from_utf8_lossy(k).into(), detail: e.to_string() })?
                    + 1
            }
            None => 1,
        };
        self.save(&v)?;
        if let Some(old) = v.version.checked_sub(RETAINED_VERSIONS) {
            self.tree.remove(&key(&v.vm, old))?;
        }
        Ok(v)
    }

    /// Rewrites a version (its outcome), flushed before it returns.
    pub fn save(&self, v: &ConfigVersion) -> Result<(), VersionError> {
        let value = serde_json::to_vec(v).map_err(|e| VersionError::Store(StoreError::Io(e.to_string())))?;
        self.tree.insert(&key(&v.vm, v.version), &value)?;
        self.store.flush()?;
        Ok(())
    }

    pub fn get(&self, vm: &str, version: u64) -> Result<ConfigVersion, VersionError> {
        match self.tree.get(&key(vm, version))? {
            Some(v) => decode(&key(vm, version), &v),
            None => Err(VersionError::NoSuchVersion { vm: vm.into(), version }),
        }
    }

    /// The VM's `limit` newest versions, newest first (damaged entries skipped with a warning).
    pub fn history(&self, vm: &str, limit: usize) -> Result<Vec<ConfigVersion>, VersionError> {
        let mut out = Vec::new();
        for (k, v) in self.tree.scan_prefix(&prefix(vm), Order::Descending, limit)? {
            match decode(&k, &v) {
                // (A VM id with a '/' could share another's prefix: only its own versions.)
                Ok(c) if c.vm == vm => out.push(c),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping a damaged configuration version"),
            }
        }
        Ok(out)
    }
}

impl ConfigVersion {
    pub fn to_wire(&self) -> presage_protocol::pb::ConfigVersion {
        presage_protocol::pb::ConfigVersion {
            vm_id: self.vm.clone(),
            version: self.version,
            at_ms: self.at_ms,
            config: Some(self.config.to_wire()),
            previous: self.previous.as_ref().map(VmConfig::to_wire),
            proposed_by: self.proposed_by.clone(),
            reason: self.reason.clone(),
            predicted_gain: self.predicted_gain.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            rollout_id: self.rollout.unwrap_or(0),
            outcome: self.outcome.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(vm: &str, cores: f64) -> ConfigVersion {
        ConfigVersion {
            vm: vm.into(),
            version: 0,
            at_ms: 1,
            config: VmConfig::sized(cores, 1024.0),
            previous: Some(VmConfig::sized(1.0, 1024.0)),
            proposed_by: "operator test".into(),
            reason: "test".into(),
            predicted_gain: BTreeMap::new(),
            rollout: None,
            outcome: "asked".into(),
        }
    }

    #[test]
    fn versions_number_per_vm_survive_a_reopen_and_newest_come_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store: Arc<dyn KvStore> = Arc::new(presage_store::SledStore::open(&dir.path().join("s")).unwrap());
            let cv = ConfigVersions::open(store).unwrap();
            assert_eq!(cv.record(version("a", 2.0)).unwrap().version, 1);
            assert_eq!(cv.record(version("b", 2.0)).unwrap().version, 1);
            let mut v = cv.record(version("a", 3.0)).unwrap();
            assert_eq!(v.version, 2);
            v.outcome = "applied".into();
            cv.save(&v).unwrap();
        }
        let store: Arc<dyn KvStore> = Arc::new(presage_store::SledStore::open(&dir.path().join("s")).unwrap());
        let cv = ConfigVersions::open(store).unwrap();
        let h = cv.history("a", 10).unwrap();
        assert_eq!(
            h.iter().map(|v| (v.version, v.config.cpu_cores, v.outcome.as_str())).collect::<Vec<_>>(),
            [(2, 3.0, "applied"), (1, 2.0, "asked")]
        );
        // "a" and "ab" are different VMs: a prefix is not a match.
        cv.record(version("ab", 9.0)).unwrap();
        assert_eq!(cv.history("a", 10).unwrap().len(), 2);
        assert_eq!(cv.record(version("a", 4.0)).unwrap().version, 3);
        assert!(matches!(cv.get("a", 9), Err(VersionError::NoSuchVersion { version: 9, .. })));
    }
}
