//! Samples the real machine the agent runs on: CPU, memory, load and network from `/proc`
//! (procfs), the CPU model and speed from sysinfo, physical NICs from `/sys/class/net`, and the
//! agent process's own cost. Rates (CPU busy fraction, bytes per second) come from the difference
//! between two consecutive samples, so the first sample reports zero rates.

use std::time::Instant;

use presage_protocol::pb::{AgentSelf, HostCapacity, HostUsage, Nic};
use procfs::{Current, CurrentSI};

#[derive(Debug, thiserror::Error)]
#[error("reading {what} from /proc failed: {detail}")]
pub struct SampleError {
    what: &'static str,
    detail: String,
}

fn proc_err(what: &'static str) -> impl FnOnce(procfs::ProcError) -> SampleError {
    move |e| SampleError { what, detail: e.to_string() }
}

#[derive(Clone, Copy)]
struct Counters {
    at: Instant,
    cpu_busy: u64,
    cpu_total: u64,
    net_rx: u64,
    net_tx: u64,
}

/// Keeps the previous counters so each call can report rates.
pub struct HostSampler {
    previous: Option<Counters>,
}

impl Default for HostSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSampler {
    pub fn new() -> HostSampler {
        HostSampler { previous: None }
    }

    /// The machine's capacity: cores, per-core MHz, memory and physical NICs.
    pub fn capacity() -> Result<HostCapacity, SampleError> {
        let mut sys = sysinfo::System::new().map_err(|e| SampleError { what: "cpu list", detail: e.to_string() })?;
        sys.refresh_cpu_all();
        let cpus = sys.cpus();
        let mhz = cpus.iter().map(|c| c.frequency()).max().unwrap_or(0) as f64;
        let model = cpus.first().map(|c| c.brand().trim().to_string()).unwrap_or_default();
        let mem = procfs::Meminfo::current().map_err(proc_err("meminfo"))?;
        Ok(HostCapacity {
            cpu_cores: cpus.len().max(1) as u32,
            cpu_mhz_per_core: mhz,
            memory_bytes: mem.mem_total,
            nics: physical_nics(),
            cpu_model: model,
            disk_bytes_per_s: 0.0,
        })
    }

    /// Current usage of the whole machine.
    pub fn sample(&mut self) -> Result<HostUsage, SampleError> {
        let stat = procfs::KernelStats::current().map_err(proc_err("stat"))?;
        let t = &stat.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        let total = t.user + t.nice + t.system + idle + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + t.steal.unwrap_or(0);
        let mem = procfs::Meminfo::current().map_err(proc_err("meminfo"))?;
        let load = procfs::LoadAverage::current().map_err(proc_err("loadavg"))?;
        let (mut rx, mut tx) = (0u64, 0u64);
        for (name, dev) in procfs::net::dev_status().map_err(proc_err("net/dev"))? {
            if name != "lo" {
                rx += dev.recv_bytes;
                tx += dev.sent_bytes;
            }
        }
        let now = Counters { at: Instant::now(), cpu_busy: total - idle, cpu_total: total, net_rx: rx, net_tx: tx };
        let mut usage = HostUsage {
            cpu_utilisation: 0.0,
            memory_used_bytes: mem.mem_total.saturating_sub(mem.mem_available.unwrap_or(mem.mem_free)),
            load_avg_1m: load.one as f64,
            net_rx_bytes_per_s: 0.0,
            net_tx_bytes_per_s: 0.0,
            // Pressure stall information is optional in the kernel: without it, no figure.
            cpu_pressure_some_pct: procfs::CpuPressure::current().ok().map(|p| p.some.avg10 as f64),
        };
        if let Some(p) = self.previous {
            let dt = now.at.duration_since(p.at).as_secs_f64();
            let dtotal = now.cpu_total.saturating_sub(p.cpu_total);
            if dtotal > 0 {
                usage.cpu_utilisation = now.cpu_busy.saturating_sub(p.cpu_busy) as f64 / dtotal as f64;
            }
            if dt > 0.0 {
                usage.net_rx_bytes_per_s = now.net_rx.saturating_sub(p.net_rx) as f64 / dt;
                usage.net_tx_bytes_per_s = now.net_tx.saturating_sub(p.net_tx) as f64 / dt;
            }
        }
        self.previous = Some(now);
        Ok(usage)
    }
}

/// The agent process's resident memory and CPU time so far.
pub fn agent_self() -> AgentSelf {
    match procfs::process::Process::myself().and_then(|p| p.stat()) {
        Ok(s) => AgentSelf {
            rss_bytes: s.rss * procfs::page_size(),
            cpu_seconds_total: (s.utime + s.stime) as f64 / procfs::ticks_per_second() as f64,
            ..Default::default()
        },
        Err(_) => AgentSelf::default(),
    }
}

/// NICs backed by a device (not loopback, bridges or taps), with their link speed when known.
fn physical_nics() -> Vec<Nic> {
    let mut nics = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.path().join("device").exists() {
                continue;
            }
            let speed = std::fs::read_to_string(e.path().join("speed"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|s| *s > 0)
                .unwrap_or(0) as u64;
            nics.push(Nic { name, speed_mbps: speed });
        }
    }
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let cap = HostSampler::capacity().unwrap();
        assert!(cap.cpu_cores >= 1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(cap.memory_bytes, total_kb * 1024);
        let mut s = HostSampler::new();
        let first = s.sample().unwrap();
        assert_eq!(first.cpu_utilisation, 0.0, "no rate without a previous sample");
        assert!(first.memory_used_bytes > 0 && first.memory_used_bytes < cap.memory_bytes);
        // Burn CPU so the busy counter must move between samples.
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let second = s.sample().unwrap();
        assert!(second.cpu_utilisation > 0.0 && second.cpu_utilisation <= 1.0, "{}", second.cpu_utilisation);
        let me = agent_self();
        assert!(me.rss_bytes > 0 && me.cpu_seconds_total > 0.0);
    }
}
