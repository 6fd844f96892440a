//! The presage wire protocol and the conventions every presage process shares at its edges.
//!
//! - [`pb`]: the protobuf/gRPC types generated from `proto/presage/v1/presage.proto` (agents, the
//!   coordinator and `presagectl`) and `libvirt_driver.proto` (an agent and its libvirt driver
//!   process). They are the only definition of what crosses those wires.
//! - [`tls`]: the mutual-TLS identity scheme: how a certificate says "agent for host X",
//!   "operator Y" or "the coordinator", and the rustls configurations that enforce it.
//! - [`pki`]: issuing the cluster CA and the certificates that scheme expects (`presagectl certs`).
//! - [`lifecycle`]: logging, panic and signal conventions shared by the daemons.
//! - [`frames`]: length-delimited protobuf frames on a pipe (the agent and its libvirt driver).
//! - [`config_file`]: reading TOML configuration files with errors that name file, line and key.
//! - [`guest`] and [`guest_pb`]: the guest wire (presage-guest inside a VM and the host's agent,
//!   over a virtio-serial port): bounded, authenticated, rate-limited frames.
//!
//! Everything but the guest wire, `frames` and `config_file` is behind the `cluster` feature (on
//! by default), so presage-guest builds without gRPC, TLS or tokio.

pub mod config_file;
pub mod frames;
pub mod guest;
#[cfg(feature = "cluster")]
pub mod json_schema;
#[cfg(feature = "cluster")]
pub mod lifecycle;
#[cfg(feature = "cluster")]
pub mod metrics_endpoint;
#[cfg(feature = "cluster")]
pub mod pki;
#[cfg(feature = "cluster")]
pub mod rest_client;
#[cfg(feature = "cluster")]
pub mod sizing_wire;
#[cfg(feature = "cluster")]
pub mod tls;

/// Generated protobuf and tonic types for `presage.v1`.
#[cfg(feature = "cluster")]
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("presage.v1");
    include!(concat!(env!("OUT_DIR"), "/presage.v1.serde.rs"));
}

/// The protobuf descriptors of `presage.v1` and `presage.guest.v1` (a `FileDescriptorSet`):
/// the REST API's OpenAPI schemas are generated from them.
#[cfg(feature = "cluster")]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/presage_descriptors.bin"));

/// The guest wire's messages (`proto/presage/v1/guest.proto`).
#[allow(clippy::all, missing_docs)]
pub mod guest_pb {
    include!(concat!(env!("OUT_DIR"), "/presage.guest.v1.rs"));
    #[cfg(feature = "cluster")]
    include!(concat!(env!("OUT_DIR"), "/presage.guest.v1.serde.rs"));
}

#[cfg(feature = "cluster")]
impl pb::driver_request::Call {
    /// The call's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        use pb::driver_request::Call;
        match self {
            Call::Open(_) => "open",
            Call::Capacity(_) => "capacity",
            Call::Observe(_) => "observe",
            Call::MigrateOut(_) => "migrate_out",
            Call::Inspect(_) => "inspect",
            Call::CompleteMigration(_) => "complete_migration",
            Call::AbortMigration(_) => "abort_migration",
            Call::Shutdown(_) => "shutdown",
            Call::Resize(_) => "resize",
            Call::ReadSize(_) => "read_size",
        }
    }
}

/// `cpu_shares` are kept within this range (cgroup v2's weight range, which libvirt maps them
/// to; on cgroup v1 the same values mean the same).
pub const CPU_SHARES_RANGE: (u64, u64) = (2, 10_000);

#[cfg(feature = "cluster")]
impl pb::VmSize {
    /// Checks a requested size against a domain with `max_vcpus` and `max_memory_mib` before
    /// anything is changed; the error names the knob and the allowed range.
    pub fn check(&self, max_vcpus: u32, max_memory_mib: u64) -> Result<(), String> {
        if let Some(n) = self.vcpus
            && (n == 0 || n > max_vcpus)
        {
            return Err(format!("vcpus {n} is outside 1..={max_vcpus} (the domain's maximum)"));
        }
        if let Some(m) = self.memory_mib
            && (m < 64 || m > max_memory_mib)
        {
            return Err(format!("memory {m} MiB is outside 64..={max_memory_mib} MiB (the domain's maximum)"));
        }
        if let Some(s) = self.cpu_shares
            && !(CPU_SHARES_RANGE.0..=CPU_SHARES_RANGE.1).contains(&s)
        {
            return Err(format!("cpu_shares {s} is outside {}..={}", CPU_SHARES_RANGE.0, CPU_SHARES_RANGE.1));
        }
        if let Some(c) = self.cpu_quota_cores {
            let vcpus = self.vcpus.unwrap_or(max_vcpus);
            if !c.is_finite() || c < 0.0 || (c > 0.0 && c < 0.01) || c > vcpus as f64 {
                return Err(format!("cpu quota {c} cores is outside 0.01..={vcpus} (0: no quota)"));
            }
        }
        if self.disks.iter().any(|d| d.device.is_empty()) {
            return Err("a disk limit names no device".into());
        }
        if let Some(i) =
            self.interfaces.iter().find(|i| i.device.is_empty() || i.inbound_kib_s > u32::MAX as u64 || i.outbound_kib_s > u32::MAX as u64)
        {
            return Err(format!("interface limit {:?}: needs a device and rates below 2^32 KiB/s", i.device));
        }
        Ok(())
    }
}

#[cfg(feature = "cluster")]
impl pb::VmForecast {
    /// The CPU quantiles (fractions of the VM's vCPUs) as the decision core reads them, when the
    /// agent published every horizon.
    pub fn cpu_quantiles(&self) -> Option<presage_decide::demand::Forecast> {
        let mut f = quantiles(&self.cpu_p10, &self.cpu_p50, &self.cpu_p90)?;
        f.peak = self.cpu_peak;
        Some(f.tidy())
    }

    /// The memory quantiles (fractions of the VM's memory), when published for every horizon.
    pub fn memory_quantiles(&self) -> Option<presage_decide::demand::Forecast> {
        self.memory.as_ref().and_then(|m| quantiles(&m.p10, &m.p50, &m.p90))
    }
}

#[cfg(feature = "cluster")]
fn quantiles(p10: &[f32], p50: &[f32], p90: &[f32]) -> Option<presage_decide::demand::Forecast> {
    use presage_decide::demand::{Forecast, MAX_HORIZON};
    if p10.len() < MAX_HORIZON || p50.len() < MAX_HORIZON || p90.len() < MAX_HORIZON {
        return None;
    }
    let mut out = Forecast::flat([0.0; 3]);
    for h in 0..MAX_HORIZON {
        out.q[h] = [p10[h], p50[h], p90[h]];
    }
    Some(out.tidy())
}

#[cfg(feature = "cluster")]
impl pb::VmSample {
    /// Memory in use as a fraction of the memory allocated, when the hypervisor reports both.
    pub fn memory_fraction(&self) -> Option<f64> {
        (self.memory_bytes > 0 && self.memory_used_bytes > 0).then(|| (self.memory_used_bytes as f64 / self.memory_bytes as f64).min(1.0))
    }
}

/// The protocol version this build speaks. Bump it when a change cannot be ignored by an older
/// peer (see the compatibility rules at the top of the .proto file).
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest agent protocol version this build's coordinator accepts.
pub const MIN_SUPPORTED_PROTOCOL_VERSION: u32 = 1;

/// The version of the presage release this crate belongs to.
pub const PRESAGE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default TCP port of the coordinator (agents and operators).
pub const DEFAULT_COORDINATOR_PORT: u16 = 7400;

/// The name the coordinator's certificate always carries and agents verify by default.
pub const COORDINATOR_TLS_NAME: &str = "presage-coordinator";

/// An error and all its sources, joined with ": ", so a TLS or DNS cause is not hidden behind a
/// generic "transport error".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
