//! The resize executor's hands on a real host: every knob of a running domain's size, applied
//! live, read back, and reverted on failure.
//!
//! - vCPUs online: `virDomainSetVcpusFlags` (up to the domain's maximum).
//! - Memory: the balloon target, `virDomainSetMemoryFlags` (never `virDomainSetMemory`, whose
//!   errors virt 0.5 drops); the balloon's `actual` size is read back so a target the guest does
//!   not reach is reported, not assumed.
//! - CPU weight and quota: `virDomainSetSchedulerParametersFlags` (`cpu_shares`, kept within
//!   2..10000 so the value means the same on cgroup v1 and v2; `vcpu_quota`/`vcpu_period`: the
//!   VM's quota in cores spread over its online vCPUs).
//! - Disk and interface limits: `virDomainSetBlockIoTune` and
//!   `virDomainSetInterfaceParameters`, which the safe wrapper lacks ([`typed`]).
//!
//! A request's changes run decreases first. Each change is skipped when the domain already has
//! the value (idempotent); after each, the knob is read back and must equal what was asked. On
//! any failure every knob changed so far is set back to its old value, last first, and the error
//! names the knob and the value.

use std::time::{Duration, Instant};

use presage_protocol::pb::{DiskLimit, InterfaceLimit, VmSize, VmSizeReadback};
use virt::domain::{Domain, SchedBandwidth, SchedulerInfo};
use virt::sys;

use crate::host::{HostError, LibvirtHost};

/// The CFS period the quota is expressed in, microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// How long a balloon may make no progress toward its target before the guest counts as not
/// following it.
pub const BALLOON_STALL: Duration = Duration::from_secs(3);
/// The longest a balloon is waited for, moving or not.
pub const BALLOON_LIMIT: Duration = Duration::from_secs(60);
/// How close a balloon must come to its target (a guest's driver works in pages and may stop a
/// few short).
pub const BALLOON_SLACK_MIB: u64 = 2;

/// One knob and its value (`None`: no limit).
#[derive(Clone, Debug, PartialEq)]
enum Knob {
    Vcpus(u32),
    MemoryMib(u64),
    CpuShares(u64),
    /// Cores; 0: no quota.
    CpuQuota(f64),
    Disk(DiskLimit),
    Interface(InterfaceLimit),
}

impl Knob {
    fn describe(&self) -> String {
        match self {
            Knob::Vcpus(n) => format!("vcpus {n}"),
            Knob::MemoryMib(m) => format!("memory {m} MiB"),
            Knob::CpuShares(s) => format!("cpu_shares {s}"),
            Knob::CpuQuota(c) => format!("cpu quota {c:.2} cores"),
            Knob::Disk(d) => format!("disk {} limits ({} iops/s, {} B/s)", d.device, d.total_iops_sec, d.total_bytes_sec),
            Knob::Interface(i) => {
                format!("interface {} bandwidth (in {} KiB/s, out {} KiB/s)", i.device, i.inbound_kib_s, i.outbound_kib_s)
            }
        }
    }
}

/// Whether going from `old` to `new` gives the VM less (a limit of 0 is none: the most).
fn decreases(old: &Knob, new: &Knob) -> bool {
    let lim = |v: u64| if v == 0 { u64::MAX } else { v };
    match (old, new) {
        (Knob::Vcpus(a), Knob::Vcpus(b)) => b < a,
        (Knob::MemoryMib(a), Knob::MemoryMib(b)) => b < a,
        (Knob::CpuShares(a), Knob::CpuShares(b)) => b < a,
        (Knob::CpuQuota(a), Knob::CpuQuota(b)) => {
            let q = |v: f64| if v <= 0.0 { f64::INFINITY } else { v };
            q(*b) < q(*a)
        }
        (Knob::Disk(a), Knob::Disk(b)) => lim(b.total_iops_sec) < lim(a.total_iops_sec) || lim(b.total_bytes_sec) < lim(a.total_bytes_sec),
        (Knob::Interface(a), Knob::Interface(b)) => {
            lim(b.inbound_kib_s) < lim(a.inbound_kib_s) || lim(b.outbound_kib_s) < lim(a.outbound_kib_s)
        }
        _ => false,
    }
}

impl LibvirtHost {
    fn running_domain(&self, vm_id: &str) -> Result<Domain, HostError> {
        let dom =
            self.domain(vm_id)?.ok_or_else(|| HostError::Libvirt { uri: self.uri().into(), detail: format!("no domain {vm_id} here") })?;
        if !dom.is_active().unwrap_or(false) {
            return Err(HostError::Libvirt {
                uri: self.uri().into(),
                detail: format!("domain {vm_id} is not running: a live resize needs it running"),
            });
        }
        Ok(dom)
    }

    /// What the running domain `vm_id` has now, every disk and interface of its live XML included.
    pub fn read_size_all(&self, vm_id: &str) -> Result<VmSizeReadback, HostError> {
        let dom = self.running_domain(vm_id)?;
        let xml =
            dom.xml_desc(0).map_err(|e| HostError::Libvirt { uri: self.uri().into(), detail: format!("{vm_id}: reading its XML: {e}") })?;
        let (disks, interfaces) = (crate::host::device_targets(&xml, "disk"), crate::host::device_targets(&xml, "interface"));
        self.read_domain_size(vm_id, &dom, &disks, &interfaces)
    }

    /// What the running domain `vm_id` has now; `disks` and `interfaces` name the devices to read.
    pub fn read_size(&self, vm_id: &str, disks: &[String], interfaces: &[String]) -> Result<VmSizeReadback, HostError> {
        let dom = self.running_domain(vm_id)?;
        self.read_domain_size(vm_id, &dom, disks, interfaces)
    }

    fn read_domain_size(&self, vm_id: &str, dom: &Domain, disks: &[String], interfaces: &[String]) -> Result<VmSizeReadback, HostError> {
        let e = |what: &str, err: virt::error::Error| HostError::Libvirt {
            uri: self.uri().into(),
            detail: format!("{vm_id}: reading {what}: {err}"),
        };
        let info = dom.info().map_err(|x| e("its info", x))?;
        let vcpus = dom.vcpus_flags(sys::VIR_DOMAIN_AFFECT_LIVE).map_err(|x| e("vcpus", x))?;
        let max_vcpus =
            dom.vcpus_flags(sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_VCPU_MAXIMUM).map_err(|x| e("the vcpu maximum", x))?;
        let sched = dom.scheduler_parameters_flags(sys::VIR_DOMAIN_AFFECT_LIVE).ok();
        let balloon_actual_mib = dom.memory_stats(0).ok().and_then(|stats| stats.iter().find(|s| s.tag == 6).map(|s| s.val / 1024));
        let mut size = VmSize {
            vcpus: Some(vcpus),
            memory_mib: Some(info.memory / 1024),
            cpu_shares: sched.as_ref().and_then(|s| s.cpu_shares),
            cpu_quota_cores: sched.as_ref().and_then(|s| quota_cores(&s.vcpu_bw, vcpus)),
            disks: Vec::new(),
            interfaces: Vec::new(),
        };
        for d in disks {
            size.disks.push(typed::block_io_tune(dom, d).map_err(|x| e(&format!("disk {d}'s limits"), x))?);
        }
        for i in interfaces {
            size.interfaces.push(typed::interface_bandwidth(dom, i).map_err(|x| e(&format!("interface {i}'s bandwidth"), x))?);
        }
        Ok(VmSizeReadback { vm_id: vm_id.into(), size: Some(size), max_vcpus, max_memory_mib: info.max_mem / 1024, balloon_actual_mib })
    }

    /// Applies `size` to the running domain `vm_id` (decreases first), verifies every knob by
    /// reading it back, and on any failure sets back every knob it changed. Returns what the
    /// domain has afterwards.
    pub fn resize(&self, vm_id: &str, size: &VmSize) -> Result<VmSizeReadback, HostError> {
        let dom = self.running_domain(vm_id)?;
        let disks: Vec<String> = size.disks.iter().map(|d| d.device.clone()).collect();
        let ifaces: Vec<String> = size.interfaces.iter().map(|i| i.device.clone()).collect();
        let before = self.read_domain_size(vm_id, &dom, &disks, &ifaces)?;
        size.check(before.max_vcpus, before.max_memory_mib)
            .map_err(|why| HostError::Libvirt { uri: self.uri().into(), detail: format!("{vm_id}: {why}; nothing was changed") })?;
        let old = before.size.clone().unwrap_or_default();
        let vcpus_after = size.vcpus.unwrap_or(old.vcpus.unwrap_or(before.max_vcpus));
        // (old, new) per knob asked for and different from what the domain has.
        let mut changes: Vec<(Knob, Knob)> = Vec::new();
        let push = |changes: &mut Vec<(Knob, Knob)>, old: Option<Knob>, new: Knob| {
            if old.as_ref() != Some(&new) {
                changes.push((old.unwrap_or_else(|| new.clone()), new));
            }
        };
        if let Some(n) = size.vcpus {
            push(&mut changes, old.vcpus.map(Knob::Vcpus), Knob::Vcpus(n));
        }
        if let Some(m) = size.memory_mib {
            push(&mut changes, old.memory_mib.map(Knob::MemoryMib), Knob::MemoryMib(m));
        }
        if let Some(s) = size.cpu_shares {
            push(&mut changes, old.cpu_shares.map(Knob::CpuShares), Knob::CpuShares(s));
        }
        // The quota is per vCPU: a change of vCPUs changes what the same cores mean.
        let quota_now = old.cpu_quota_cores;
        if let Some(c) = size.cpu_quota_cores.or(quota_now.filter(|_| size.vcpus.is_some_and(|n| Some(n) != old.vcpus)))
            && (quota_now.is_none_or(|q| (q - c).abs() > 0.005) || size.vcpus.is_some_and(|n| Some(n) != old.vcpus))
        {
            changes.push((Knob::CpuQuota(quota_now.unwrap_or(0.0)), Knob::CpuQuota(c)));
        }
        for d in &size.disks {
            push(&mut changes, old.disks.iter().find(|o| o.device == d.device).cloned().map(Knob::Disk), Knob::Disk(d.clone()));
        }
        for i in &size.interfaces {
            push(
                &mut changes,
                old.interfaces.iter().find(|o| o.device == i.device).cloned().map(Knob::Interface),
                Knob::Interface(i.clone()),
            );
        }
        changes.sort_by_key(|(o, n)| !decreases(o, n));
        let mut done: Vec<&(Knob, Knob)> = Vec::new();
        for change in &changes {
            let (_, new) = change;
            let vcpus_now = if done.iter().any(|(_, n)| matches!(n, Knob::Vcpus(_))) || matches!(new, Knob::Vcpus(_)) {
                vcpus_after
            } else {
                old.vcpus.unwrap_or(vcpus_after)
            };
            let result = self.set_knob(&dom, new, vcpus_now).and_then(|()| {
                if let Knob::MemoryMib(m) = new {
                    self.await_balloon(&dom, *m)?;
                }
                let now = self.read_domain_size(vm_id, &dom, &disks, &ifaces)?;
                match knob_matches(now.size.as_ref(), new) {
                    true => Ok(()),
                    false => Err(HostError::Libvirt {
                        uri: self.uri().into(),
                        detail: format!("libvirt accepted {} but reads back {:?}", new.describe(), now.size),
                    }),
                }
            });
            if let Err(e) = result {
                // Set back what was changed, last first; the knob that failed too, in case it
                // took effect in part.
                let mut reverted = Vec::new();
                for (old, _) in std::iter::once(change).chain(done.iter().rev().copied()) {
                    match self.set_knob(&dom, old, before.size.as_ref().and_then(|s| s.vcpus).unwrap_or(vcpus_after)) {
                        Ok(()) => reverted.push(old.describe()),
                        Err(re) => tracing::error!(vm = vm_id, knob = %old.describe(), error = %re, "reverting a resize failed"),
                    }
                }
                let set_back = if reverted.is_empty() { "nothing".into() } else { reverted.join(", ") };
                return Err(match e {
                    HostError::Guest(why) => HostError::Guest(format!("{vm_id}: {why}; set back: {set_back}")),
                    e => HostError::Libvirt {
                        uri: self.uri().into(),
                        detail: format!("{vm_id}: setting {} failed: {e}; set back: {set_back}", new.describe()),
                    },
                });
            }
            done.push(change);
        }
        self.read_domain_size(vm_id, &dom, &disks, &ifaces)
    }

    /// Waits for the guest to bring its balloon within [`BALLOON_SLACK_MIB`] of `target_mib`:
    /// an error of its own ([`HostError::Guest`]) when it makes no progress for
    /// [`BALLOON_STALL`] (a guest without the driver, or one that cannot give the memory up), or
    /// has not arrived within [`BALLOON_LIMIT`].
    fn await_balloon(&self, dom: &Domain, target_mib: u64) -> Result<(), HostError> {
        let target_kib = target_mib * 1024;
        let current = || {
            dom.info()
                .map(|i| i.memory)
                .map_err(|e| HostError::Libvirt { uri: self.uri().into(), detail: format!("reading the balloon: {e}") })
        };
        let started = Instant::now();
        let first = current()?;
        let (mut best, mut progressed) = (first.abs_diff(target_kib), Instant::now());
        loop {
            let now = current()?;
            let distance = now.abs_diff(target_kib);
            if distance <= BALLOON_SLACK_MIB * 1024 {
                return Ok(());
            }
            if distance + 1024 <= best {
                (best, progressed) = (distance, Instant::now());
            }
            if progressed.elapsed() >= BALLOON_STALL || started.elapsed() >= BALLOON_LIMIT {
                let how = if progressed.elapsed() >= BALLOON_STALL {
                    format!("made no progress for {} s", BALLOON_STALL.as_secs())
                } else {
                    format!("had not arrived after {} s", BALLOON_LIMIT.as_secs())
                };
                return Err(HostError::Guest(format!(
                    "the guest holds {} MiB, not the balloon target {target_mib} MiB (it held {} MiB when asked; its balloon {how})",
                    now / 1024,
                    first / 1024
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn set_knob(&self, dom: &Domain, knob: &Knob, vcpus: u32) -> Result<(), HostError> {
        let e =
            |err: virt::error::Error| HostError::Libvirt { uri: self.uri().into(), detail: format!("setting {}: {err}", knob.describe()) };
        let live = sys::VIR_DOMAIN_AFFECT_LIVE;
        match knob {
            Knob::Vcpus(n) => dom.set_vcpus_flags(*n, live).map_err(e),
            Knob::MemoryMib(m) => dom.set_memory_flags(m * 1024, live).map(|_| ()).map_err(e),
            Knob::CpuShares(s) => {
                let info = SchedulerInfo { cpu_shares: Some(*s), ..SchedulerInfo::default() };
                dom.set_scheduler_parameters_flags(&info, live).map_err(e)
            }
            Knob::CpuQuota(c) => {
                // libvirt: a negative vcpu_quota is no limit.
                let quota = if *c <= 0.0 { -1 } else { ((c / vcpus.max(1) as f64) * CPU_PERIOD_US as f64).round().max(1000.0) as i64 };
                let info = SchedulerInfo {
                    vcpu_bw: SchedBandwidth { period: Some(CPU_PERIOD_US), quota: Some(quota) },
                    ..SchedulerInfo::default()
                };
                dom.set_scheduler_parameters_flags(&info, live).map_err(e)
            }
            Knob::Disk(d) => typed::set_block_io_tune(dom, d).map_err(e),
            Knob::Interface(i) => typed::set_interface_bandwidth(dom, i).map_err(e),
        }
    }
}

/// A domain's quota in cores from its per-vCPU bandwidth (`None`: no quota, or not reported).
fn quota_cores(bw: &SchedBandwidth, vcpus: u32) -> Option<f64> {
    match (bw.period, bw.quota) {
        (Some(p), Some(q)) if p > 0 && q > 0 => Some(q as f64 / p as f64 * vcpus as f64),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    }
}

fn knob_matches(size: Option<&VmSize>, knob: &Knob) -> bool {
    let Some(s) = size else { return false };
    match knob {
        Knob::Vcpus(n) => s.vcpus == Some(*n),
        Knob::MemoryMib(m) => s.memory_mib.is_some_and(|x| x.abs_diff(*m) <= BALLOON_SLACK_MIB),
        Knob::CpuShares(v) => s.cpu_shares == Some(*v),
        Knob::CpuQuota(c) => s.cpu_quota_cores.is_some_and(|q| (q - c).abs() < 0.02 || (*c <= 0.0 && q <= 0.0)),
        Knob::Disk(d) => s.disks.iter().any(|x| x == d),
        Knob::Interface(i) => s.interfaces.iter().any(|x| x == i),
    }
}

/// `virDomain{Get,Set}BlockIoTune` and `virDomain{Get,Set}InterfaceParameters` over `virt::sys`
/// with typed parameters (the safe wrapper has neither).
mod typed {
    use std::ffi::{CStr, CString};
    use std::os::raw::c_int;

    use presage_protocol::pb::{DiskLimit, InterfaceLimit};
    use virt::domain::Domain;
    use virt::error::Error;
    use virt::sys;

    fn param_ullong(name: &str, v: u64) -> sys::virTypedParameter {
        let mut p: sys::virTypedParameter = unsafe { std::mem::zeroed() };
        for (dst, src) in p.field.iter_mut().zip(name.bytes().take(79)) {
            *dst = src as std::os::raw::c_char;
        }
        p.type_ = sys::VIR_TYPED_PARAM_ULLONG as c_int;
        p.value.ul = v;
        p
    }

    fn param_uint(name: &str, v: u32) -> sys::virTypedParameter {
        let mut p = param_ullong(name, 0);
        p.type_ = sys::VIR_TYPED_PARAM_UINT as c_int;
        p.value.ui = v;
        p
    }

    /// Reads the typed parameters of `call(params, &mut n)`: first the count, then the values.
    fn read(mut call: impl FnMut(*mut sys::virTypedParameter, *mut c_int) -> c_int) -> Result<Vec<(String, u64)>, Error> {
        let mut n: c_int = 0;
        if call(std::ptr::null_mut(), &mut n) < 0 {
            return Err(Error::last_error());
        }
        let mut params: Vec<sys::virTypedParameter> = vec![unsafe { std::mem::zeroed() }; n.max(0) as usize];
        if call(params.as_mut_ptr(), &mut n) < 0 {
            return Err(Error::last_error());
        }
        let out = params
            .iter()
            .take(n.max(0) as usize)
            .map(|p| {
                let name = unsafe { CStr::from_ptr(p.field.as_ptr()) }.to_string_lossy().into_owned();
                let v = match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_ULLONG => unsafe { p.value.ul },
                    sys::VIR_TYPED_PARAM_UINT => unsafe { p.value.ui as u64 },
                    sys::VIR_TYPED_PARAM_LLONG => unsafe { p.value.l.max(0) as u64 },
                    sys::VIR_TYPED_PARAM_INT => unsafe { p.value.i.max(0) as u64 },
                    _ => 0,
                };
                (name, v)
            })
            .collect();
        unsafe { sys::virTypedParamsClear(params.as_mut_ptr(), n) };
        Ok(out)
    }

    fn get(values: &[(String, u64)], name: &str) -> u64 {
        values.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    fn device(name: &str) -> Result<CString, Error> {
        CString::new(name).map_err(|_| Error::last_error())
    }

    pub fn block_io_tune(dom: &Domain, disk: &str) -> Result<DiskLimit, Error> {
        let d = device(disk)?;
        let values = read(|p, n| unsafe { sys::virDomainGetBlockIoTune(dom.as_ptr(), d.as_ptr(), p, n, sys::VIR_DOMAIN_AFFECT_LIVE) })?;
        Ok(DiskLimit {
            device: disk.into(),
            total_iops_sec: get(&values, "total_iops_sec"),
            total_bytes_sec: get(&values, "total_bytes_sec"),
        })
    }

    pub fn set_block_io_tune(dom: &Domain, l: &DiskLimit) -> Result<(), Error> {
        let d = device(&l.device)?;
        // A burst maximum below the average is refused: the maxima go with it (no burst above
        // the limit; 0 with 0: no limit).
        let mut params = vec![
            param_ullong("total_iops_sec", l.total_iops_sec),
            param_ullong("total_bytes_sec", l.total_bytes_sec),
            param_ullong("total_iops_sec_max", l.total_iops_sec),
            param_ullong("total_bytes_sec_max", l.total_bytes_sec),
        ];
        let rc = unsafe {
            sys::virDomainSetBlockIoTune(dom.as_ptr(), d.as_ptr(), params.as_mut_ptr(), params.len() as c_int, sys::VIR_DOMAIN_AFFECT_LIVE)
        };
        if rc < 0 { Err(Error::last_error()) } else { Ok(()) }
    }

    pub fn interface_bandwidth(dom: &Domain, iface: &str) -> Result<InterfaceLimit, Error> {
        let d = device(iface)?;
        let values =
            read(|p, n| unsafe { sys::virDomainGetInterfaceParameters(dom.as_ptr(), d.as_ptr(), p, n, sys::VIR_DOMAIN_AFFECT_LIVE) })?;
        Ok(InterfaceLimit {
            device: iface.into(),
            inbound_kib_s: get(&values, "inbound.average"),
            outbound_kib_s: get(&values, "outbound.average"),
        })
    }

    pub fn set_interface_bandwidth(dom: &Domain, l: &InterfaceLimit) -> Result<(), Error> {
        let d = device(&l.device)?;
        let mut params =
            vec![param_uint("inbound.average", l.inbound_kib_s as u32), param_uint("outbound.average", l.outbound_kib_s as u32)];
        let rc = unsafe {
            sys::virDomainSetInterfaceParameters(
                dom.as_ptr(),
                d.as_ptr(),
                params.as_mut_ptr(),
                params.len() as c_int,
                sys::VIR_DOMAIN_AFFECT_LIVE,
            )
        };
        if rc < 0 { Err(Error::last_error()) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running domain on libvirt's test driver: 4 vCPUs (2 online), 2 GiB (1 GiB ballooned), a
    /// disk and an interface.
    fn start(host: &LibvirtHost, name: &str) -> (Domain, String) {
        let xml = format!(
            "<domain type='test'><name>{name}</name><memory unit='MiB'>2048</memory><currentMemory unit='MiB'>1024</currentMemory>\
             <vcpu current='2'>4</vcpu><os><type>hvm</type></os><devices>\
             <disk type='file' device='disk'><source file='/var/lib/{name}.img'/><target dev='vda' bus='virtio'/></disk>\
             <interface type='network'><source network='default'/><target dev='{name}-if'/></interface>\
             </devices></domain>"
        );
        let dom = host.connection().create_domain_xml(&xml, 0).unwrap();
        let id = dom.uuid_string().unwrap();
        (dom, id)
    }

    fn host() -> LibvirtHost {
        virt::error::clear_error_callback();
        LibvirtHost::connect("test:///default").expect("libvirt's test driver is available (libvirt0 installed)")
    }

    #[test]
    fn vcpus_memory_disk_and_interface_are_set_and_read_back() {
        let h = host();
        let (dom, id) = start(&h, "presage-resize-ok");
        let iface = "presage-resize-ok-if".to_string();
        let size = VmSize {
            vcpus: Some(4),
            memory_mib: Some(768),
            disks: vec![DiskLimit { device: "vda".into(), total_iops_sec: 500, total_bytes_sec: 10 << 20 }],
            interfaces: vec![InterfaceLimit { device: iface.clone(), inbound_kib_s: 2048, outbound_kib_s: 1024 }],
            ..VmSize::default()
        };
        let after = h.resize(&id, &size).unwrap();
        let s = after.size.unwrap();
        assert_eq!((s.vcpus, s.memory_mib, after.max_vcpus, after.max_memory_mib), (Some(4), Some(768), 4, 2048));
        assert_eq!(s.disks, size.disks);
        assert_eq!(s.interfaces, size.interfaces);
        // Read back independently, with every device of the live XML.
        let all = h.read_size_all(&id).unwrap().size.unwrap();
        assert_eq!((all.vcpus, all.memory_mib), (Some(4), Some(768)));
        assert_eq!(all.disks, size.disks);
        // Applying the same size again changes nothing and succeeds.
        assert_eq!(h.resize(&id, &size).unwrap().size.unwrap().disks, size.disks);
        dom.destroy().unwrap();
    }

    #[test]
    fn a_size_beyond_the_domain_changes_nothing_and_says_why() {
        let h = host();
        let (dom, id) = start(&h, "presage-resize-bad");
        for (size, what) in [
            (VmSize { vcpus: Some(5), memory_mib: Some(512), ..VmSize::default() }, "vcpus 5 is outside 1..=4"),
            (VmSize { vcpus: Some(0), ..VmSize::default() }, "vcpus 0"),
            (VmSize { memory_mib: Some(4096), ..VmSize::default() }, "memory 4096 MiB is outside 64..=2048"),
            (VmSize { cpu_shares: Some(1), ..VmSize::default() }, "cpu_shares 1 is outside 2..=10000"),
            (VmSize { cpu_quota_cores: Some(f64::NAN), ..VmSize::default() }, "cpu quota NaN"),
            (VmSize { cpu_quota_cores: Some(9.0), ..VmSize::default() }, "cpu quota 9 cores"),
        ] {
            let e = h.resize(&id, &size).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("nothing was changed"), "{e}");
        }
        let s = h.read_size_all(&id).unwrap().size.unwrap();
        assert_eq!((s.vcpus, s.memory_mib), (Some(2), Some(1024)), "nothing half-applied");
        let e = h.resize("00000000-0000-0000-0000-000000000000", &VmSize::default()).unwrap_err().to_string();
        assert!(e.contains("no domain"), "{e}");
        dom.destroy().unwrap();
    }

    #[test]
    fn a_knob_that_fails_reverts_the_ones_already_changed() {
        let h = host();
        let (dom, id) = start(&h, "presage-resize-revert");
        // The test driver's scheduler has no cpu_shares: the shares fail after the decrease of
        // memory (decreases first) and the increase of vCPUs, and both are set back.
        let size = VmSize { vcpus: Some(3), memory_mib: Some(512), cpu_shares: Some(2048), ..VmSize::default() };
        let e = h.resize(&id, &size).unwrap_err().to_string();
        assert!(e.contains("cpu_shares 2048") && e.contains("set back: ") && e.contains("memory 1024 MiB") && e.contains("vcpus 2"), "{e}");
        let s = h.read_size_all(&id).unwrap().size.unwrap();
        assert_eq!((s.vcpus, s.memory_mib), (Some(2), Some(1024)), "{e}");
        dom.destroy().unwrap();
    }

    #[test]
    fn decreases_are_ordered_first() {
        assert!(decreases(&Knob::MemoryMib(1024), &Knob::MemoryMib(512)));
        assert!(!decreases(&Knob::Vcpus(2), &Knob::Vcpus(3)));
        assert!(decreases(&Knob::CpuQuota(0.0), &Knob::CpuQuota(1.5)), "no quota to a quota gives less");
        let d = |iops| Knob::Disk(DiskLimit { device: "vda".into(), total_iops_sec: iops, total_bytes_sec: 0 });
        assert!(decreases(&d(0), &d(100)) && !decreases(&d(100), &d(0)));
    }
}
