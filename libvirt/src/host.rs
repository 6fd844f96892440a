//! A KVM host reached through libvirt (the `virt` crate): what the agent's libvirt hypervisor
//! does, run inside the driver process.
//!
//! Per domain it reads state, vCPUs and memory (`virDomainGetInfo`), guest memory use from the
//! balloon statistics (available - unused) or, without a balloon driver, the QEMU process's RSS,
//! and disk and interface byte counters for every `<disk>` and `<interface>` target in the domain
//! XML. CPU utilisation and I/O rates are differences between consecutive observations.
//!
//! It is also the migration executor's hands on a real host: [`LibvirtHost::migrate_out`]
//! pre-checks (the domain runs here, the destination's libvirt answers and is another host, the
//! destination's CPU can run the domain's CPU model), live-migrates with the configured flags
//! (peer-to-peer or direct, persistent on the destination, undefined on the source, bandwidth
//! limit, auto-converge), streams the job's progress, and post-checks (running there, not here).
//! An abort goes through `virDomainAbortJob`; the domain keeps running on the source.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use presage_protocol::pb::{DriverMigrate, HostCapacity, LibvirtMigrationSettings, MigrationProgress, VmPresence, VmSample, VmState};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState, MigrateParameters};
use virt::error::ErrorNumber;
use virt::sys;

/// What a libvirt call, or a migration, ran into.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("libvirt ({uri}): {detail}")]
    Libvirt { uri: String, detail: String },
    /// A migration failed or was aborted after it started, or cannot be completed or aborted.
    #[error("{0}")]
    Migration(String),
    /// A migration's pre-check failed: nothing was started, the VM is where it was.
    #[error("pre-check failed: {0}")]
    Precheck(String),
    /// The guest did not do what was asked of it (a balloon target it does not follow); what
    /// was changed has been set back. Retrying at once is unlikely to help.
    #[error("{0}")]
    Guest(String),
}

/// Receives progress reports while a migration runs (called from the migrating thread).
pub type ProgressSink<'a> = &'a (dyn Fn(MigrationProgress) + Sync);

/// The settings the agent's `[migration]` defaults to (peer-to-peer, persistent on the
/// destination, undefined on the source, auto-converge, CPU check, progress every second).
pub fn default_migration_settings() -> LibvirtMigrationSettings {
    LibvirtMigrationSettings {
        peer_to_peer: true,
        persistent: true,
        undefine_source: true,
        auto_converge: true,
        bandwidth_mib_s: 0,
        max_downtime_ms: None,
        progress_interval_ms: 1000,
        check_cpu: true,
    }
}

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
    /// Summed over vCPUs, nanoseconds (`vcpu.N.delay`); guest swap, kB (`balloon.swap_*`).
    vcpu_delay_ns: Option<f64>,
    swap_in_kb: Option<f64>,
    swap_out_kb: Option<f64>,
}

pub struct LibvirtHost {
    uri: String,
    conn: Connect,
    previous: Mutex<HashMap<String, Counters>>,
    migration: LibvirtMigrationSettings,
    /// Domains (UUIDs) this driver is migrating away now, and whether an abort was asked for.
    outgoing: Mutex<HashMap<String, bool>>,
}

/// Takes a domain off the outgoing set when its migration call returns, however it returns.
struct Outgoing<'a> {
    set: &'a Mutex<HashMap<String, bool>>,
    vm_id: String,
}

impl Drop for Outgoing<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.vm_id);
    }
}

impl LibvirtHost {
    /// Connects to `uri` (e.g. `qemu:///system`, or `test:///default` for libvirt's test driver)
    /// with the default `[migration]` settings.
    pub fn connect(uri: &str) -> Result<LibvirtHost, HostError> {
        Self::connect_with(uri, default_migration_settings())
    }

    /// Connects to `uri`; migrations follow `migration`.
    pub fn connect_with(uri: &str, migration: LibvirtMigrationSettings) -> Result<LibvirtHost, HostError> {
        let conn = Connect::open(Some(uri)).map_err(|e| HostError::Libvirt { uri: uri.into(), detail: e.to_string() })?;
        Ok(LibvirtHost { uri: uri.into(), conn, previous: Mutex::new(HashMap::new()), migration, outgoing: Mutex::default() })
    }

    fn outgoing(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.outgoing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The libvirt flags of a migration under the configured settings.
    pub fn migration_flags(&self) -> u32 {
        let m = &self.migration;
        let mut flags = sys::VIR_MIGRATE_LIVE;
        if m.peer_to_peer {
            flags |= sys::VIR_MIGRATE_PEER2PEER;
        }
        if m.persistent {
            flags |= sys::VIR_MIGRATE_PERSIST_DEST;
        }
        if m.undefine_source {
            flags |= sys::VIR_MIGRATE_UNDEFINE_SOURCE;
        }
        if m.auto_converge {
            flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
        }
        flags
    }

    /// The destination's CPU can run the domain's CPU, as the destination's hypervisor says
    /// (`virConnectCompareHypervisorCPU`: what QEMU/KVM can provide there, not the bare host
    /// CPU). The domain's `<cpu>` is read with host-model expanded to the model and features it
    /// runs with. A host-passthrough domain needs the same CPU model and vendor on the
    /// destination. A domain without a `<cpu>` element runs the hypervisor's default model,
    /// which every KVM host provides.
    fn check_cpu(&self, dom: &Domain, dconn: &Connect) -> Result<(), String> {
        let xml =
            dom.xml_desc(sys::VIR_DOMAIN_XML_UPDATE_CPU).map_err(|e| format!("reading the domain's CPU definition: {}", e.message()))?;
        let Some(cpu) = xml_element(&xml, "cpu") else { return Ok(()) };
        if cpu.contains("host-passthrough") {
            let host_cpu = |c: &Connect| {
                c.capabilities().ok().and_then(|x| xml_element(&x, "host")).and_then(|h| xml_element(&h, "cpu")).map(|c| cpu_summary(&c))
            };
            let (here, there) = (host_cpu(&self.conn), host_cpu(dconn));
            return if here.is_some() && here == there {
                Ok(())
            } else {
                Err(format!(
                    "a host-passthrough VM needs the same CPU: this host has {}, the destination {}",
                    here.unwrap_or_else(|| "unknown".into()),
                    there.unwrap_or_else(|| "unknown".into())
                ))
            };
        }
        let virttype = attribute(&xml, "domain", "type").unwrap_or_else(|| "kvm".into());
        let arch = xml_element(&xml, "os").and_then(|os| attribute(&os, "type", "arch"));
        if hypervisor_provides_cpu(dconn, &cpu, arch.as_deref(), &virttype)? {
            Ok(())
        } else {
            Err(format!("the destination's hypervisor cannot provide this VM's CPU ({})", cpu_summary(&cpu)))
        }
    }

    /// Aborts `dom`'s job (`virDomainAbortJob`). A migration still in its pre-checks will not
    /// start its job. A migration job cannot be aborted in every phase (libvirt refuses while it
    /// is still preparing the destination), so the abort is repeated until this driver's
    /// migration call for it returns, or until `deadline`.
    fn abort_job(&self, vm_id: &str, dom: &Domain, deadline: Instant) {
        if let Some(aborting) = self.outgoing().get_mut(vm_id) {
            *aborting = true;
        }
        loop {
            // SAFETY: `dom` is a live domain handle for the duration of the call.
            let rc = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
            if rc < 0 {
                let e = virt::error::Error::last_error();
                tracing::debug!(vm = vm_id, error = %e, "abort refused (no job, or not abortable yet)");
            }
            if !self.outgoing().contains_key(vm_id) || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lookup(&self, vm_id: &str) -> Result<Option<Domain>, HostError> {
        match self.conn.lookup_domain_by_uuid_string(vm_id) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code() == virt::enumutil::Enum::Known(ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(self.err(&format!("looking up {vm_id}"), e)),
        }
    }

    /// The domain whose UUID is `vm_id`, if this host has it.
    pub(crate) fn domain(&self, vm_id: &str) -> Result<Option<Domain>, HostError> {
        self.lookup(vm_id)
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// The underlying libvirt connection.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    fn err(&self, what: &str, e: virt::error::Error) -> HostError {
        HostError::Libvirt { uri: self.uri.clone(), detail: format!("{what}: {e}") }
    }

    /// The libvirt library's version, e.g. `9.0.0`.
    pub fn library_version(&self) -> String {
        match self.conn.lib_version() {
            Ok(v) => format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000),
            Err(e) => format!("unknown ({e})"),
        }
    }

    fn sample_domain(
        &self,
        dom: &Domain,
        prev: &mut HashMap<String, Counters>,
        stats: &HashMap<String, crate::domain_stats::DomainStats>,
    ) -> Result<VmSample, HostError> {
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
        sample.guest_channel = guest_channel_path(&xml).unwrap_or_default();
        let (mut rd, mut wr, mut rx, mut tx) = (0u64, 0u64, 0u64, 0u64);
        sample.disk_devices = device_targets(&xml, "disk");
        sample.interface_devices = device_targets(&xml, "interface");
        for disk in &sample.disk_devices {
            if let Ok(s) = dom.block_stats(disk) {
                rd += s.rd_bytes.max(0) as u64;
                wr += s.wr_bytes.max(0) as u64;
            }
        }
        for nic in &sample.interface_devices {
            if let Ok(s) = dom.interface_stats(nic) {
                rx += s.rx_bytes.max(0) as u64;
                tx += s.tx_bytes.max(0) as u64;
            }
        }
        let st = stats.get(&uuid);
        let now = Counters {
            at: Instant::now(),
            cpu_time_ns: info.cpu_time,
            disk_rd: rd,
            disk_wr: wr,
            net_rx: rx,
            net_tx: tx,
            vcpu_delay_ns: st.and_then(|s| s.vcpu_sum("delay")),
            swap_in_kb: st.and_then(|s| s.get("balloon.swap_in")),
            swap_out_kb: st.and_then(|s| s.get("balloon.swap_out")),
        };
        let balloon_fraction = st
            .and_then(|s| Some((s.get("balloon.current")?, s.get("balloon.maximum")?)))
            .filter(|(_, max)| *max > 0.0)
            .map_or(0.0, |(cur, max)| (cur / max).clamp(0.0, 1.0));
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
                let delta = |a: Option<f64>, b: Option<f64>| Some((a? - b?).max(0.0) / dt);
                sample.contention = Some(presage_protocol::pb::VmContention {
                    vcpu_delay_ms_per_s: delta(now.vcpu_delay_ns, p.vcpu_delay_ns).map_or(0.0, |ns| ns / 1e6),
                    swap_in_bytes_per_s: delta(now.swap_in_kb, p.swap_in_kb).map_or(0.0, |kb| kb * 1024.0),
                    swap_out_bytes_per_s: delta(now.swap_out_kb, p.swap_out_kb).map_or(0.0, |kb| kb * 1024.0),
                    balloon_fraction,
                });
            }
        }
        prev.insert(uuid, now);
        Ok(sample)
    }
}

/// The state word of a domain state.
fn state_word(state: &virt::domain::DomainStateEnum) -> &'static str {
    match state {
        virt::enumutil::Enum::Known(DomainState::Running) => "running",
        virt::enumutil::Enum::Known(DomainState::Blocked) => "blocked",
        virt::enumutil::Enum::Known(DomainState::Paused) => "paused",
        virt::enumutil::Enum::Known(DomainState::Shutdown) => "shutting-down",
        virt::enumutil::Enum::Known(DomainState::Shutoff) => "shutoff",
        virt::enumutil::Enum::Known(DomainState::Crashed) => "crashed",
        virt::enumutil::Enum::Known(DomainState::PMSuspended) => "pmsuspended",
        _ => "other",
    }
}

/// The first `<name ...>...</name>` (or `<name .../>`) element of `xml`, as written.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = xml[from..].find(&format!("<{name}")) {
        let start = from + i;
        let after = xml[start + name.len() + 1..].chars().next()?;
        if !(after == '>' || after == ' ' || after == '/' || after == '\n' || after == '\t') {
            from = start + 1;
            continue;
        }
        let open_end = start + xml[start..].find('>')?;
        if xml[..open_end].ends_with('/') {
            return Some(xml[start..=open_end].to_string());
        }
        let close = format!("</{name}>");
        let end = open_end + xml[open_end..].find(&close)? + close.len();
        return Some(xml[start..end].to_string());
    }
    None
}

/// Whether the hypervisor behind `conn` can provide the CPU `cpu_xml` describes (a `<cpu>`
/// element) to a `virttype` (`kvm`, `qemu`) guest of `arch` (`virConnectCompareHypervisorCPU`:
/// what QEMU/KVM can give a guest there, not the bare host CPU).
pub fn hypervisor_provides_cpu(conn: &Connect, cpu_xml: &str, arch: Option<&str>, virttype: &str) -> Result<bool, String> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| "a NUL byte in the CPU definition".to_string());
    let (virttype_c, cpu_c) = (c(virttype)?, c(cpu_xml)?);
    let arch_c = arch.map(c).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string alive for the call, and
    // `conn` is an open connection.
    let r = unsafe {
        sys::virConnectCompareHypervisorCPU(
            conn.as_ptr(),
            std::ptr::null(),
            arch_c.as_ref().map_or(std::ptr::null(), |a| a.as_ptr()),
            std::ptr::null(),
            virttype_c.as_ptr(),
            cpu_c.as_ptr(),
            0,
        )
    };
    if r < 0 {
        return Err(format!("the destination could not compare CPUs: {}", virt::error::Error::last_error().message()));
    }
    Ok(r != sys::VIR_CPU_COMPARE_INCOMPATIBLE)
}

/// The value of `attr` on the first `<element ...>` tag of `xml`.
fn attribute(xml: &str, element: &str, attr: &str) -> Option<String> {
    let start = xml.find(&format!("<{element} ")).or_else(|| xml.find(&format!("<{element}>")))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    for quote in ['\'', '"'] {
        let pat = format!(" {attr}={quote}");
        if let Some(i) = tag.find(&pat) {
            let v = &tag[i + pat.len()..];
            return v.find(quote).map(|q| v[..q].to_string());
        }
    }
    None
}

/// The model and vendor of a `<cpu>` element, for messages and comparisons.
fn cpu_summary(cpu: &str) -> String {
    let model = xml_element(cpu, "model")
        .and_then(|m| m.split('>').nth(1).map(|v| v.split('<').next().unwrap_or("").to_string()))
        .unwrap_or_default();
    let vendor = xml_element(cpu, "vendor").and_then(|m| m.split('>').nth(1).map(|v| v.split('<').next().unwrap_or("").to_string()));
    let features = cpu.matches("<feature ").count();
    format!(
        "model {}{}, {features} features",
        if model.is_empty() { "unnamed" } else { &model },
        vendor.map(|v| format!(" ({v})")).unwrap_or_default()
    )
}

/// The `dev` attribute of each `<target>` inside `<disk>` or `<interface>` elements.
/// The value of attribute `name` in the tag `tag` (`<source mode='bind' path='...'/>`), with
/// XML's predefined entities undone.
fn tag_attribute(tag: &str, name: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        let pat = format!(" {name}={quote}");
        if let Some(i) = tag.find(&pat) {
            let v = &tag[i + pat.len()..];
            let v = &v[..v.find(quote)?];
            return Some(v.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&"));
        }
    }
    None
}

/// The host side of the domain's presage-guest port: the Unix socket path of its
/// `<channel type='unix'>` whose virtio target is named `org.presage.guest.0` (libvirt picks
/// the path when the domain's XML leaves it out: the live XML has it).
pub fn guest_channel_path(xml: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(start) = rest.find("<channel ") {
        let body = &rest[start..];
        let end = body.find("</channel>").map(|e| e + "</channel>".len()).unwrap_or(body.len());
        let block = &body[..end];
        let tag =
            |element: &str| block.find(&format!("<{element} ")).map(|i| &block[i..i + block[i..].find('>').unwrap_or(block.len() - i)]);
        let is_unix = tag("channel").and_then(|t| tag_attribute(t, "type")).as_deref() == Some("unix");
        let target = tag("target");
        let ours = target.and_then(|t| tag_attribute(t, "name")).as_deref() == Some(presage_protocol::guest::PORT_NAME)
            && target.and_then(|t| tag_attribute(t, "type")).as_deref() == Some("virtio");
        if is_unix
            && ours
            && let Some(path) = tag("source").and_then(|t| tag_attribute(t, "path"))
        {
            return Some(path);
        }
        rest = &body[end..];
    }
    None
}

pub(crate) fn device_targets(xml: &str, element: &str) -> Vec<String> {
    let open = format!("<{element} ");
    let close = format!("</{element}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start..];
        let end = body.find(&close).map(|e| e + close.len()).unwrap_or(body.len());
        let block = &body[..end];
        let opening = &block[..block.find('>').unwrap_or(block.len())];
        // A CD-ROM or floppy carries no I/O worth a limit (and an empty one takes none).
        let removable =
            ["cdrom", "floppy"].iter().any(|d| opening.contains(&format!("device='{d}'")) || opening.contains(&format!("device=\"{d}\"")));
        if removable {
            rest = &body[end..];
            continue;
        }
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

impl LibvirtHost {
    /// The host's capacity as libvirt sees it (NICs are left to the agent's host sampler).
    pub fn capacity(&self) -> Result<HostCapacity, HostError> {
        let n = self.conn.node_info().map_err(|e| self.err("node info", e))?;
        Ok(HostCapacity {
            cpu_cores: n.cpus,
            cpu_mhz_per_core: n.mhz as f64,
            memory_bytes: n.memory * 1024,
            nics: Vec::new(),
            cpu_model: n.model,
            disk_bytes_per_s: 0.0,
        })
    }

    /// Samples every domain. Rates come from the difference to the previous call.
    pub fn observe(&self) -> Result<Vec<VmSample>, HostError> {
        let domains = self.conn.list_all_domains(0).map_err(|e| self.err("list domains", e))?;
        let mut prev = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let mut vms = Vec::with_capacity(domains.len());
        // One bulk call for every domain's vCPU and balloon statistics; without them (a driver
        // that keeps none) the contention signals are left out, nothing else.
        let stats: HashMap<String, crate::domain_stats::DomainStats> = match crate::domain_stats::vcpu_and_balloon(&self.conn) {
            Ok(all) => all.into_iter().map(|s| (s.uuid.clone(), s)).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no domain statistics");
                HashMap::new()
            }
        };
        for dom in &domains {
            match self.sample_domain(dom, &mut prev, &stats) {
                Ok(s) => vms.push(s),
                // A domain that vanished between listing and sampling is not an error.
                Err(e) => tracing::debug!(error = %e, "skipping domain"),
            }
        }
        let live: std::collections::HashSet<&str> = vms.iter().map(|v| v.vm_id.as_str()).collect();
        prev.retain(|k, _| live.contains(k.as_str()));
        vms.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
        Ok(vms)
    }

    /// Pre-checks, live-migrates `vm_id` to `target` reporting progress, and post-checks; `Ok`
    /// once it runs there and not here. A failed pre-check is [`HostError::Precheck`]. `started`
    /// is called once the migration is registered here: an abort from then on stops it, during
    /// the pre-checks too.
    pub fn migrate_out(&self, m: &DriverMigrate, started: &(dyn Fn() + Sync), progress: ProgressSink<'_>) -> Result<(), HostError> {
        // The destination host's id, its libvirt URI and its migration data channel.
        let (vm_id, target) = (m.vm_id.as_str(), m);
        let pre = |why: String| HostError::Precheck(format!("moving {vm_id} to {}: {why}", target.host));
        // Pre-checks: nothing is started unless all pass.
        let dom = self.lookup(vm_id)?.ok_or_else(|| pre("it is not on this host".into()))?;
        let (state, _) = dom.state().map_err(|e| self.err(&format!("state of {vm_id}"), e))?;
        if !matches!(state, virt::enumutil::Enum::Known(DomainState::Running | DomainState::Blocked)) {
            return Err(pre(format!("it is {} here, not running", state_word(&state))));
        }
        if target.uri.is_empty() {
            return Err(pre("the destination advertises no migration URI (`[migration] uri` in its agent.toml)".into()));
        }
        {
            let mut outgoing = self.outgoing();
            if outgoing.contains_key(vm_id) {
                return Err(pre("a migration of it is already in progress".into()));
            }
            outgoing.insert(vm_id.to_string(), false);
        }
        let _outgoing = Outgoing { set: &self.outgoing, vm_id: vm_id.to_string() };
        started();
        let dconn = Connect::open(Some(&target.uri))
            .map_err(|e| pre(format!("the destination's libvirt at {} does not answer: {}", target.uri, e.message())))?;
        let host_uuid = |c: &Connect| c.capabilities().ok().and_then(|x| xml_element(&x, "host")).and_then(|h| xml_element(&h, "uuid"));
        if let (Some(a), Some(b)) = (host_uuid(&self.conn), host_uuid(&dconn))
            && a == b
        {
            return Err(pre(format!("{} is this host (the same host UUID)", target.uri)));
        }
        if self.migration.check_cpu {
            self.check_cpu(&dom, &dconn).map_err(pre)?;
        }
        if let Some(ms) = self.migration.max_downtime_ms
            && let Err(e) = dom.migrate_set_max_downtime(ms, 0)
        {
            tracing::warn!(vm = vm_id, error = %e, "setting the migration's maximum downtime failed; libvirt's default applies");
        }
        let params = MigrateParameters {
            uri: (!target.data_uri.is_empty()).then(|| target.data_uri.clone()),
            bandwidth: (self.migration.bandwidth_mib_s > 0).then_some(self.migration.bandwidth_mib_s),
            ..Default::default()
        };
        let flags = self.migration_flags();
        if self.outgoing().get(vm_id).copied().unwrap_or(false) {
            return Err(HostError::Migration(format!(
                "live migration of {vm_id} to {} aborted before its copy started; it keeps running here",
                target.host
            )));
        }
        tracing::info!(vm = vm_id, to = %target.host, uri = %target.uri, data_uri = %target.data_uri, flags, "live migration starting");
        let started = Instant::now();
        let finished = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            // The job's progress, read while the migration call blocks this thread.
            scope.spawn(|| {
                let mut next = Instant::now();
                while !finished.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    if Instant::now() < next {
                        continue;
                    }
                    next = Instant::now() + Duration::from_millis(self.migration.progress_interval_ms.max(50));
                    if let Ok(j) = dom.job_info()
                        && j.r#type != sys::VIR_DOMAIN_JOB_NONE as i32
                    {
                        let elapsed_ms = j.time_elapsed.unwrap_or(0);
                        let processed = j.data_processed.unwrap_or(0);
                        progress(MigrationProgress {
                            vm_id: vm_id.to_string(),
                            destination_host: target.host.clone(),
                            elapsed_ms,
                            data_total: j.data_total.unwrap_or(0),
                            data_processed: processed,
                            data_remaining: j.data_remaining.unwrap_or(0),
                            bytes_per_s: (processed * 1000).checked_div(elapsed_ms).unwrap_or(0),
                        });
                    }
                }
            });
            let r = if self.migration.peer_to_peer {
                dom.migrate_to_uri3(Some(&target.uri), params, flags)
            } else {
                dom.migrate3(&dconn, params, flags).map(|_| ())
            };
            finished.store(true, Ordering::Relaxed);
            r
        });
        if let Err(e) = result {
            let here = self.inspect(vm_id).map(|p| p.running).unwrap_or(false);
            let why = if e.code() == virt::enumutil::Enum::Known(ErrorNumber::OperationAborted) { "aborted" } else { "failed" };
            return Err(HostError::Migration(format!(
                "live migration of {vm_id} to {} {why} after {:.1} s: {}; {}",
                target.host,
                started.elapsed().as_secs_f64(),
                e.message(),
                if here { "it keeps running here" } else { "it no longer runs here" }
            )));
        }
        // Post-checks: it runs on the destination and no longer here.
        let there = match dconn.lookup_domain_by_uuid_string(vm_id) {
            Ok(d) => d.is_active().unwrap_or(false),
            Err(_) => false,
        };
        let here = self.inspect(vm_id)?;
        if !there || here.running {
            return Err(HostError::Migration(format!(
                "post-check of {vm_id}: libvirt reported success but it {} on {} and {} here",
                if there { "runs" } else { "does not run" },
                target.host,
                if here.running { "still runs" } else { "does not run" }
            )));
        }
        tracing::info!(vm = vm_id, to = %target.host, seconds = started.elapsed().as_secs_f64(), "live migration done");
        Ok(())
    }

    /// Whether `vm_id` is here, runs here, is migrating away, or is an incoming migration's
    /// instance.
    pub fn inspect(&self, vm_id: &str) -> Result<VmPresence, HostError> {
        let migrating = self.outgoing().contains_key(vm_id);
        let Some(dom) = self.lookup(vm_id)? else {
            return Ok(VmPresence {
                vm_id: vm_id.into(),
                present: false,
                running: false,
                migrating,
                state: "absent".into(),
                incoming: false,
            });
        };
        let (state, _) = dom.state().map_err(|e| self.err(&format!("state of {vm_id}"), e))?;
        let running = matches!(state, virt::enumutil::Enum::Known(DomainState::Running | DomainState::Blocked));
        // A job this agent did not start (one left running by a previous run of the agent: a
        // peer-to-peer migration goes on in libvirtd) counts as migrating too.
        let job = running && dom.job_info().is_ok_and(|j| j.r#type != sys::VIR_DOMAIN_JOB_NONE as i32);
        // Active, not running and not leaving: the domain an incoming migration created here
        // (libvirt starts it paused and destroys it some time after the source aborts).
        let incoming = !running && !migrating && dom.is_active().map_err(|e| self.err(&format!("whether {vm_id} is active"), e))?;
        Ok(VmPresence {
            vm_id: vm_id.into(),
            present: true,
            running,
            migrating: migrating || job,
            state: state_word(&state).into(),
            incoming,
        })
    }

    /// libvirt finishes a live migration by itself: nothing is left to let go of once the VM
    /// no longer runs here.
    pub fn complete_migration(&self, vm_id: &str) -> Result<(), HostError> {
        if self.inspect(vm_id)?.running {
            return Err(HostError::Migration(format!("completing {vm_id}: it still runs here")));
        }
        Ok(())
    }

    /// The agent is stopping: migrations it started are aborted (their VMs keep running here),
    /// as with simulated copies, rather than left to finish unobserved in libvirtd.
    pub fn shutdown(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let outgoing: Vec<String> = self.outgoing().keys().cloned().collect();
        for vm_id in &outgoing {
            if let Ok(Some(dom)) = self.lookup(vm_id) {
                tracing::info!(vm = %vm_id, "agent stopping: aborting its live migration");
                self.abort_job(vm_id, &dom, deadline);
            }
        }
        let left: Vec<String> = self.outgoing().keys().cloned().collect();
        if !left.is_empty() {
            tracing::warn!(vms = ?left, "live migrations still running at shutdown; libvirtd carries on with them");
        }
    }

    /// Aborts the domain's migration job (`virDomainAbortJob`); the domain keeps running here.
    /// With no job in progress there is nothing to abort: it answers whether the VM runs here.
    pub fn abort_migration(&self, vm_id: &str) -> Result<(), HostError> {
        let Some(dom) = self.lookup(vm_id)? else {
            return Err(HostError::Migration(format!("aborting {vm_id}: it is no longer on this host (the migration finished)")));
        };
        self.abort_job(vm_id, &dom, Instant::now() + Duration::from_secs(30));
        let p = self.inspect(vm_id)?;
        if p.running { Ok(()) } else { Err(HostError::Migration(format!("aborting {vm_id}: it is {} here", p.state))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_port_is_found_in_the_live_xml() {
        let xml = r#"<domain type='qemu'><devices>
          <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-1-g/org.qemu.guest_agent.0'/>
            <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>
          <channel type="unix">
            <source mode="bind" path="/run/a&amp;b/org.presage.guest.0"/>
            <target type="virtio" name="org.presage.guest.0"/>
            <address type='virtio-serial' controller='0' bus='0' port='2'/>
          </channel></devices></domain>"#;
        assert_eq!(guest_channel_path(xml).as_deref(), Some("/run/a&b/org.presage.guest.0"));
        assert_eq!(guest_channel_path("<domain><devices/></domain>"), None);
        // A pty channel of that name has no socket to read.
        assert_eq!(guest_channel_path("<channel type='pty'><target type='virtio' name='org.presage.guest.0'/></channel>"), None);
    }

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
        let hv = LibvirtHost::connect(TEST_URI).expect("libvirt's test driver is available (libvirt0 installed)");
        let dom = hv.connection().create_domain_xml(&domain_xml("presage-probe"), 0).unwrap();
        let vms = hv.observe().unwrap();
        let ours = vms.iter().find(|v| v.name == "presage-probe").expect("the defined domain is listed");
        assert_eq!(ours.vm_id, dom.uuid_string().unwrap());
        assert_eq!(ours.state, VmState::Running as i32);
        assert_eq!(ours.vcpus, 3);
        assert_eq!(ours.memory_bytes, 512 << 20);
        assert!(ours.memory_used_bytes > 0 && ours.memory_used_bytes <= 512 << 20, "{}", ours.memory_used_bytes);
        assert_eq!(ours.cpu_utilisation, 0.0, "no rate before a second observation");
        // The driver's own default domain is there too.
        assert!(vms.iter().any(|v| v.name == "test"));

        let again = hv.observe().unwrap();
        let ours = again.iter().find(|v| v.name == "presage-probe").unwrap();
        assert!((0.0..=1.0).contains(&ours.cpu_utilisation));

        dom.suspend().unwrap();
        let paused = hv.observe().unwrap();
        assert_eq!(paused.iter().find(|v| v.name == "presage-probe").unwrap().state, VmState::Paused as i32);
        dom.destroy().unwrap();
        let after = hv.observe().unwrap();
        assert!(after.iter().all(|v| v.name != "presage-probe"), "a destroyed transient domain is gone");

        let cap = hv.capacity().unwrap();
        let node = hv.connection().node_info().unwrap();
        assert_eq!((cap.cpu_cores, cap.memory_bytes), (node.cpus, node.memory * 1024));
    }

    fn migrate(vm_id: &str, uri: &str) -> DriverMigrate {
        DriverMigrate { vm_id: vm_id.into(), host: "hv-b".into(), uri: uri.into(), data_uri: String::new() }
    }

    /// Every pre-check that fails leaves the domain running here, untouched, and nothing in
    /// flight; the error says which check failed.
    #[test]
    fn failed_migration_prechecks_start_nothing_and_say_why() {
        let hv = LibvirtHost::connect(TEST_URI).unwrap();
        let dom = hv.connection().create_domain_xml(&domain_xml("presage-precheck"), 0).unwrap();
        let uuid = dom.uuid_string().unwrap();
        let cases: Vec<(DriverMigrate, &str)> = vec![
            (migrate("00000000-0000-4000-8000-000000000000", "qemu:///system"), "not on this host"),
            (migrate(&uuid, ""), "advertises no migration URI"),
            (migrate(&uuid, "test:///no/such/host.xml"), "does not answer"),
            // The test driver reports no host UUID, so the same-host check cannot tell; it cannot
            // expand a domain's CPU either, so the CPU check refuses (the real-KVM test covers
            // a compatible and an incompatible CPU).
            (migrate(&uuid, TEST_URI), "reading the domain's CPU definition"),
        ];
        for (m, why) in cases {
            let progress = std::sync::Mutex::new(0);
            let e = hv.migrate_out(&m, &|| {}, &|_| *progress.lock().unwrap() += 1).unwrap_err();
            assert!(matches!(e, HostError::Precheck(_)), "{e}");
            assert!(e.to_string().contains(why), "expected {why:?} in {e}");
            assert_eq!(*progress.lock().unwrap(), 0, "no migration job ran");
            let here = hv.inspect(&uuid).unwrap();
            assert!(here.running && !here.migrating && here.state == "running", "{here:?}");
        }
        // A paused domain is not migrated either.
        dom.suspend().unwrap();
        let e = hv.migrate_out(&migrate(&uuid, "qemu:///system"), &|| {}, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("pre-check failed") && e.contains("paused here, not running"), "{e}");
        dom.destroy().unwrap();
    }

    #[test]
    fn abort_without_a_migration_keeps_the_vm_and_inspect_tells_where_it_is() {
        let hv = LibvirtHost::connect(TEST_URI).unwrap();
        let dom = hv.connection().create_domain_xml(&domain_xml("presage-abort"), 0).unwrap();
        let uuid = dom.uuid_string().unwrap();
        hv.abort_migration(&uuid).expect("nothing to abort: the VM runs here, which is what an abort promises");
        assert!(hv.inspect(&uuid).unwrap().running);
        let e = hv.complete_migration(&uuid).unwrap_err().to_string();
        assert!(e.contains("still runs here"), "completing must not let go of a running VM: {e}");
        dom.destroy().unwrap();
        let gone = hv.inspect(&uuid).unwrap();
        assert!(!gone.present && !gone.running && gone.state == "absent", "{gone:?}");
        let e = hv.abort_migration(&uuid).unwrap_err().to_string();
        assert!(e.contains("no longer on this host"), "{e}");
        hv.complete_migration(&uuid).expect("completing a VM that left is a no-op");
    }

    #[test]
    fn migration_flags_follow_the_configuration() {
        let flags = |m: LibvirtMigrationSettings| LibvirtHost::connect_with(TEST_URI, m).unwrap().migration_flags();
        assert_eq!(
            flags(default_migration_settings()),
            sys::VIR_MIGRATE_LIVE
                | sys::VIR_MIGRATE_PEER2PEER
                | sys::VIR_MIGRATE_PERSIST_DEST
                | sys::VIR_MIGRATE_UNDEFINE_SOURCE
                | sys::VIR_MIGRATE_AUTO_CONVERGE
        );
        let direct = LibvirtMigrationSettings {
            peer_to_peer: false,
            persistent: false,
            undefine_source: false,
            auto_converge: false,
            ..default_migration_settings()
        };
        assert_eq!(flags(direct), sys::VIR_MIGRATE_LIVE);
    }

    #[test]
    fn reads_cpu_elements_and_attributes() {
        let xml = "<domain type='kvm'><os><type arch='x86_64' machine='pc'>hvm</type></os>\
                   <cpu mode='custom' match='exact'><model fallback='forbid'>Icelake-Server</model><vendor>Intel</vendor>\
                   <feature policy='require' name='avx512f'/><feature policy='disable' name='pconfig'/></cpu><cputune/></domain>";
        let cpu = xml_element(xml, "cpu").unwrap();
        assert!(cpu.starts_with("<cpu mode='custom'") && cpu.ends_with("</cpu>"), "{cpu}");
        assert_eq!(cpu_summary(&cpu), "model Icelake-Server (Intel), 2 features");
        assert_eq!(attribute(xml, "domain", "type").as_deref(), Some("kvm"));
        assert_eq!(attribute(&xml_element(xml, "os").unwrap(), "type", "arch").as_deref(), Some("x86_64"));
        assert_eq!(
            xml_element("<domain><cpu mode='host-passthrough'/></domain>", "cpu").as_deref(),
            Some("<cpu mode='host-passthrough'/>")
        );
        assert_eq!(xml_element("<domain><cputune/></domain>", "cpu"), None, "<cputune> is not <cpu>");
    }

    #[test]
    fn an_unreachable_uri_is_a_clear_error() {
        let err = LibvirtHost::connect("test:///no/such/config.xml").err().expect("must fail").to_string();
        assert!(err.contains("test:///no/such/config.xml"), "{err}");
    }

    #[test]
    fn finds_disk_and_interface_targets() {
        let xml = r#"<domain><devices>
            <disk type='file' device='disk'><source file='/x.img'/><target dev='vda' bus='virtio'/></disk>
            <disk type="file" device="cdrom"><target dev="sdb" bus="sata"/></disk>
            <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdb' bus='virtio'/></disk>
            <interface type='network'><mac address='aa'/><target dev='vnet3'/></interface>
            <interface type='user'></interface>
        </devices></domain>"#;
        // The CD-ROM is left out: it takes no I/O limit.
        assert_eq!(device_targets(xml, "disk"), vec!["vda", "vdb"]);
        assert_eq!(device_targets(xml, "interface"), vec!["vnet3"]);
    }
}
