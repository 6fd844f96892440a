//! The real hypervisor: a KVM host reached through libvirt (the `virt` crate).
//!
//! Per domain it reads state, vCPUs and memory (`virDomainGetInfo`), guest memory use from the
//! balloon statistics (available - unused) or, without a balloon driver, the QEMU process's RSS,
//! and disk and interface byte counters for every `<disk>` and `<interface>` target in the domain
//! XML. CPU utilisation and I/O rates are differences between consecutive observations.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use presage_protocol::pb::{HostCapacity, SimulatedVm, VmSample, VmState};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};

use super::{Hypervisor, HypervisorError, Observation};

// virDomainMemoryStatTags
const MEM_STAT_UNUSED: u32 = 4;
const MEM_STAT_AVAILABLE: u32 = 5;
const MEM_STAT_RSS: u32 = 7;

struct Counters {
    at: Instant,
    cpu_time_ns: u64,
    disk_rd: u64,
    disk_wr: u64,
    net_rx: u64,
    net_tx: u64,
}

pub struct LibvirtHypervisor {
    uri: String,
    conn: Connect,
    previous: Mutex<HashMap<String, Counters>>,
}

impl LibvirtHypervisor {
    /// Connects to `uri` (e.g. `qemu:///system`, or `test:///default` for libvirt's test driver).
    pub fn connect(uri: &str) -> Result<LibvirtHypervisor, HypervisorError> {
        let conn = Connect::open(Some(uri)).map_err(|e| HypervisorError::Libvirt { uri: uri.into(), detail: e.to_string() })?;
        Ok(LibvirtHypervisor { uri: uri.into(), conn, previous: Mutex::new(HashMap::new()) })
    }

    /// The underlying libvirt connection.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    fn err(&self, what: &str, e: virt::error::Error) -> HypervisorError {
        HypervisorError::Libvirt { uri: self.uri.clone(), detail: format!("{what}: {e}") }
    }

    fn sample_domain(&self, dom: &Domain, prev: &mut HashMap<String, Counters>) -> Result<VmSample, HypervisorError> {
        let uuid = dom.uuid_string().map_err(|e| self.err("domain uuid", e))?;
        let name = dom.name().map_err(|e| self.err("domain name", e))?;
        let info = dom.info().map_err(|e| self.err(&format!("info of {name}"), e))?;
        let state = match info.state {
            virt::enumutil::Enum::Known(DomainState::Running | DomainState::Blocked) => VmState::Running,
            virt::enumutil::Enum::Known(DomainState::Paused | DomainState::PMSuspended) => VmState::Paused,
            virt::enumutil::Enum::Known(DomainState::Shutoff | DomainState::Shutdown) => VmState::Shutoff,
            virt::enumutil::Enum::Known(DomainState::Crashed) => VmState::Crashed,
            _ => VmState::Other,
        };
        let mut sample = VmSample {
            vm_id: uuid.clone(),
            name: name.clone(),
            state: state as i32,
            vcpus: info.nr_virt_cpu,
            memory_bytes: info.max_mem * 1024,
            ..Default::default()
        };
        if state != VmState::Running {
            prev.remove(&uuid);
            return Ok(sample);
        }
        sample.memory_used_bytes = info.memory * 1024;
        if let Ok(stats) = dom.memory_stats(0) {
            let get = |tag| stats.iter().find(|s| s.tag == tag).map(|s| s.val);
            if let (Some(avail), Some(unused)) = (get(MEM_STAT_AVAILABLE), get(MEM_STAT_UNUSED)) {
                sample.memory_used_bytes = avail.saturating_sub(unused) * 1024;
            } else if let Some(rss) = get(MEM_STAT_RSS) {
                sample.memory_used_bytes = rss * 1024;
            }
        }
        let xml = dom.xml_desc(0).map_err(|e| self.err(&format!("XML of {name}"), e))?;
        let (mut rd, mut wr, mut rx, mut tx) = (0u64, 0u64, 0u64, 0u64);
        for disk in device_targets(&xml, "disk") {
            if let Ok(s) = dom.block_stats(&disk) {
                rd += s.rd_bytes.max(0) as u64;
                wr += s.wr_bytes.max(0) as u64;
            }
        }
        for nic in device_targets(&xml, "interface") {
            if let Ok(s) = dom.interface_stats(&nic) {
                rx += s.rx_bytes.max(0) as u64;
                tx += s.tx_bytes.max(0) as u64;
            }
        }
        let now = Counters { at: Instant::now(), cpu_time_ns: info.cpu_time, disk_rd: rd, disk_wr: wr, net_rx: rx, net_tx: tx };
        if let Some(p) = prev.get(&uuid) {
            let dt = now.at.duration_since(p.at).as_secs_f64();
            if dt > 0.0 {
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                let vcpus = info.nr_virt_cpu.max(1) as f64;
                sample.cpu_utilisation = (rate(now.cpu_time_ns, p.cpu_time_ns) / 1e9 / vcpus).clamp(0.0, 1.0);
                sample.disk_read_bytes_per_s = rate(now.disk_rd, p.disk_rd);
                sample.disk_write_bytes_per_s = rate(now.disk_wr, p.disk_wr);
                sample.net_rx_bytes_per_s = rate(now.net_rx, p.net_rx);
                sample.net_tx_bytes_per_s = rate(now.net_tx, p.net_tx);
            }
        }
        prev.insert(uuid, now);
        Ok(sample)
    }
}

/// The `dev` attribute of each `<target>` inside `<disk>` or `<interface>` elements.
fn device_targets(xml: &str, element: &str) -> Vec<String> {
    let open = format!("<{element} ");
    let close = format!("</{element}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start..];
        let end = body.find(&close).map(|e| e + close.len()).unwrap_or(body.len());
        let block = &body[..end];
        if let Some(t) = block.find("<target ") {
            let tag = &block[t..];
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            for quote in ['\'', '"'] {
                let pat = format!("dev={quote}");
                if let Some(d) = tag.find(&pat) {
                    let v = &tag[d + pat.len()..];
                    if let Some(q) = v.find(quote) {
                        out.push(v[..q].to_string());
                    }
                    break;
                }
            }
        }
        rest = &body[end..];
    }
    out
}

impl Hypervisor for LibvirtHypervisor {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn capacity(&self) -> Result<HostCapacity, HypervisorError> {
        let n = self.conn.node_info().map_err(|e| self.err("node info", e))?;
        Ok(HostCapacity {
            cpu_cores: n.cpus,
            cpu_mhz_per_core: n.mhz as f64,
            memory_bytes: n.memory * 1024,
            nics: Vec::new(),
            cpu_model: n.model,
        })
    }

    fn observe(&self) -> Result<Observation, HypervisorError> {
        let domains = self.conn.list_all_domains(0).map_err(|e| self.err("list domains", e))?;
        let mut prev = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let mut vms = Vec::with_capacity(domains.len());
        for dom in &domains {
            match self.sample_domain(dom, &mut prev) {
                Ok(s) => vms.push(s),
                // A domain that vanished between listing and sampling is not an error.
                Err(e) => tracing::debug!(error = %e, "skipping domain"),
            }
        }
        let live: std::collections::HashSet<&str> = vms.iter().map(|v| v.vm_id.as_str()).collect();
        prev.retain(|k, _| live.contains(k.as_str()));
        vms.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
        Ok(Observation { vms, host_usage: None, trace: None })
    }

    fn migrate_out(&self, vm_id: &str, destination_host: &str) -> Result<Option<SimulatedVm>, HypervisorError> {
        Err(HypervisorError::Migration(format!(
            "live migration of {vm_id} to {destination_host} through libvirt is not implemented yet (the migration executor's work)"
        )))
    }

    fn adopt(&self, vm: &SimulatedVm) -> Result<(), HypervisorError> {
        Err(HypervisorError::Migration(format!("{}: a libvirt host does not adopt simulated VMs", vm.vm_id)))
    }

    fn complete_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
        Err(HypervisorError::Migration(format!("{vm_id}: live migration through libvirt is not implemented yet")))
    }

    fn abort_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
        Err(HypervisorError::Migration(format!("{vm_id}: live migration through libvirt is not implemented yet")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libvirt's built-in test driver: a real libvirt connection with in-memory domains.
    const TEST_URI: &str = "test:///default";

    fn domain_xml(name: &str) -> String {
        format!(
            "<domain type='test'><name>{name}</name><memory unit='MiB'>512</memory><currentMemory unit='MiB'>384</currentMemory>\
             <vcpu>3</vcpu><os><type>hvm</type></os><devices>\
             <disk type='file' device='disk'><source file='/var/lib/x.img'/><target dev='vda' bus='virtio'/></disk>\
             </devices></domain>"
        )
    }

    #[test]
    fn lists_test_driver_domains_with_state_memory_and_vcpus() {
        let hv = LibvirtHypervisor::connect(TEST_URI).expect("libvirt's test driver is available (libvirt0 installed)");
        let dom = hv.connection().create_domain_xml(&domain_xml("presage-probe"), 0).unwrap();
        let obs = hv.observe().unwrap();
        assert!(obs.host_usage.is_none() && obs.trace.is_none(), "host usage comes from the real machine");
        let ours = obs.vms.iter().find(|v| v.name == "presage-probe").expect("the defined domain is listed");
        assert_eq!(ours.vm_id, dom.uuid_string().unwrap());
        assert_eq!(ours.state, VmState::Running as i32);
        assert_eq!(ours.vcpus, 3);
        assert_eq!(ours.memory_bytes, 512 << 20);
        assert!(ours.memory_used_bytes > 0 && ours.memory_used_bytes <= 512 << 20, "{}", ours.memory_used_bytes);
        assert_eq!(ours.cpu_utilisation, 0.0, "no rate before a second observation");
        // The driver's own default domain is there too.
        assert!(obs.vms.iter().any(|v| v.name == "test"));

        let again = hv.observe().unwrap();
        let ours = again.vms.iter().find(|v| v.name == "presage-probe").unwrap();
        assert!((0.0..=1.0).contains(&ours.cpu_utilisation));

        dom.suspend().unwrap();
        let paused = hv.observe().unwrap();
        assert_eq!(paused.vms.iter().find(|v| v.name == "presage-probe").unwrap().state, VmState::Paused as i32);
        dom.destroy().unwrap();
        let after = hv.observe().unwrap();
        assert!(after.vms.iter().all(|v| v.name != "presage-probe"), "a destroyed transient domain is gone");

        let cap = hv.capacity().unwrap();
        let node = hv.connection().node_info().unwrap();
        assert_eq!((cap.cpu_cores, cap.memory_bytes), (node.cpus, node.memory * 1024));
    }

    #[test]
    fn an_unreachable_uri_is_a_clear_error() {
        let err = LibvirtHypervisor::connect("test:///no/such/config.xml").err().expect("must fail").to_string();
        assert!(err.contains("test:///no/such/config.xml"), "{err}");
    }

    #[test]
    fn finds_disk_and_interface_targets() {
        let xml = r#"<domain><devices>
            <disk type='file' device='disk'><source file='/x.img'/><target dev='vda' bus='virtio'/></disk>
            <disk type="file" device="cdrom"><target dev="sdb" bus="sata"/></disk>
            <interface type='network'><mac address='aa'/><target dev='vnet3'/></interface>
            <interface type='user'></interface>
        </devices></domain>"#;
        assert_eq!(device_targets(xml, "disk"), vec!["vda", "sdb"]);
        assert_eq!(device_targets(xml, "interface"), vec!["vnet3"]);
    }
}
