//! libvirt's bulk domain statistics (`virConnectGetAllDomainStats`), which virt 0.5 hands back
//! as raw records: a small unsafe module over `virt::sys` that copies each record's typed
//! parameters into plain Rust values and frees the list.
//!
//! presage reads the contention signals from them: `vcpu.N.delay` (nanoseconds a vCPU was
//! runnable but waited for a host CPU, from the kernel's schedstat), `balloon.swap_in`,
//! `balloon.swap_out` (kB the guest swapped), `balloon.current` and `balloon.maximum` (kB).

use std::collections::HashMap;
use std::ffi::CStr;

use virt::connect::Connect;
use virt::sys;

/// One domain's statistics: its UUID and each numeric parameter by name (strings are skipped).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainStats {
    pub uuid: String,
    pub values: HashMap<String, f64>,
}

impl DomainStats {
    /// The sum over the domain's vCPUs of `vcpu.N.<suffix>`.
    pub fn vcpu_sum(&self, suffix: &str) -> Option<f64> {
        let tail = format!(".{suffix}");
        let mut found = false;
        let mut sum = 0.0;
        for (k, v) in &self.values {
            if let Some(index) = k.strip_prefix("vcpu.").and_then(|r| r.strip_suffix(&tail))
                && index.parse::<u32>().is_ok()
            {
                found = true;
                sum += v;
            }
        }
        found.then_some(sum)
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
}

/// The vCPU and balloon statistics of every domain on `conn`.
pub fn vcpu_and_balloon(conn: &Connect) -> Result<Vec<DomainStats>, virt::error::Error> {
    all_domain_stats(conn, sys::VIR_DOMAIN_STATS_VCPU | sys::VIR_DOMAIN_STATS_BALLOON)
}

/// `virConnectGetAllDomainStats(conn, stats, 0)`, copied out.
pub fn all_domain_stats(conn: &Connect, stats: u32) -> Result<Vec<DomainStats>, virt::error::Error> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is an open connection for the duration of the call; libvirt allocates the
    // NULL-terminated record list into `records`, which is freed below on every path.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), stats, &mut records, 0) };
    if n < 0 {
        return Err(virt::error::Error::last_error());
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned `n` valid record pointers; each record's `params` holds
        // `nparams` initialised typed parameters, and `dom` is a valid domain.
        unsafe {
            let rec = *records.add(i);
            if rec.is_null() {
                break;
            }
            let mut uuid = [0 as std::os::raw::c_char; 37];
            let uuid = if sys::virDomainGetUUIDString((*rec).dom, uuid.as_mut_ptr()) == 0 {
                CStr::from_ptr(uuid.as_ptr()).to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let mut values = HashMap::new();
            for k in 0..(*rec).nparams.max(0) as usize {
                let p = &*(*rec).params.add(k);
                let name = CStr::from_ptr(p.field.as_ptr()).to_string_lossy().into_owned();
                let value = match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => Some(p.value.i as f64),
                    sys::VIR_TYPED_PARAM_UINT => Some(p.value.ui as f64),
                    sys::VIR_TYPED_PARAM_LLONG => Some(p.value.l as f64),
                    sys::VIR_TYPED_PARAM_ULLONG => Some(p.value.ul as f64),
                    sys::VIR_TYPED_PARAM_DOUBLE => Some(p.value.d),
                    sys::VIR_TYPED_PARAM_BOOLEAN => Some(if p.value.b != 0 { 1.0 } else { 0.0 }),
                    _ => None,
                };
                if let Some(v) = value {
                    values.insert(name, v);
                }
            }
            out.push(DomainStats { uuid, values });
        }
    }
    if !records.is_null() {
        // SAFETY: the list came from virConnectGetAllDomainStats and is freed once.
        unsafe { sys::virDomainStatsRecordListFree(records) };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test driver keeps no vCPU or balloon statistics, but the call, the copy and the free
    /// run for real: every domain comes back with its UUID.
    #[test]
    fn the_test_drivers_domains_come_back_with_their_uuids() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        let stats = all_domain_stats(&conn, sys::VIR_DOMAIN_STATS_STATE).unwrap();
        let dom = conn.lookup_domain_by_name("test").unwrap();
        let s = stats.iter().find(|s| s.uuid == dom.uuid_string().unwrap()).expect("the test domain");
        assert!(s.get("state.state").is_some(), "{s:?}");
        assert!(vcpu_and_balloon(&conn).is_ok());
    }

    #[test]
    fn vcpu_sums_add_every_vcpu_and_nothing_else() {
        let values: HashMap<String, f64> = [("vcpu.0.delay", 5.0), ("vcpu.1.delay", 7.0), ("vcpu.current", 2.0), ("vcpu.0.time", 100.0)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        let s = DomainStats { uuid: "u".into(), values };
        assert_eq!(s.vcpu_sum("delay"), Some(12.0));
        assert_eq!(s.vcpu_sum("wait"), None);
    }
}
