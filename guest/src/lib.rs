//! presage-guest: the agent inside a VM. It measures the applications named in its config —
//! statsd timings and counters they push over UDP or in an HTTP `POST`, and/or probes of a local
//! HTTP endpoint —
//! and every interval sends their latency percentiles, throughput and error rate to the host's
//! agent over the virtio-serial port `org.presage.guest.0`, sealed with the key of the host's
//! last hello (`presage_protocol::guest`). It never reads anything else from the host; a host
//! that reconnects sends a new hello and a new session starts.
//!
//! Plain threads and blocking I/O: no async runtime, so the binary is small and static and its
//! footprint stays within a few MiB.

pub mod config;
pub mod figures;
pub mod http_push;
pub mod port;
pub mod probe;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use presage_protocol::guest_pb::GuestReport;

use crate::config::GuestConfig;
use crate::figures::Interval;

/// Each application's interval, shared by its collectors and the reporter.
pub type Intervals = Arc<Mutex<BTreeMap<String, Interval>>>;

/// Hands statsd lines pushed for `app` (over UDP or HTTP) to its interval.
fn feed(intervals: &Intervals, app: &str, lines: &str) {
    if let Some(i) = intervals.lock().unwrap_or_else(|p| p.into_inner()).get_mut(app) {
        i.statsd(app, lines);
    }
}

/// Starts a collector thread per statsd address, HTTP push address and probe.
pub fn start_collectors(cfg: &GuestConfig, intervals: &Intervals) -> std::io::Result<()> {
    for app in &cfg.apps {
        intervals.lock().unwrap_or_else(|p| p.into_inner()).insert(app.name.clone(), Interval::with_slo(app.slo_p99_ms));
        if let Some(addr) = app.statsd {
            let socket = UdpSocket::bind(addr)?;
            let (name, intervals) = (app.name.clone(), intervals.clone());
            std::thread::Builder::new().name(format!("statsd-{name}")).spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = socket.recv(&mut buf) {
                    feed(&intervals, &name, &String::from_utf8_lossy(&buf[..n]));
                }
            })?;
        }
        if let Some(addr) = app.http {
            let listener = std::net::TcpListener::bind(addr)?;
            let (name, intervals) = (app.name.clone(), intervals.clone());
            std::thread::Builder::new()
                .name(format!("http-{name}"))
                .spawn(move || http_push::serve(listener, move |body| feed(&intervals, &name, body)))?;
        }
        if let Some(url) = &app.probe {
            let target = probe::HttpTarget::parse(url).map_err(std::io::Error::other)?;
            let (name, intervals, every) = (app.name.clone(), intervals.clone(), app.probe_every);
            std::thread::Builder::new().name(format!("probe-{name}")).spawn(move || {
                loop {
                    let (ms, ok) = target.probe(Duration::from_secs(5));
                    if let Some(i) = intervals.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&name) {
                        i.request(ms, ok);
                    }
                    std::thread::sleep(every.saturating_sub(Duration::from_secs_f64(ms / 1e3)));
                }
            })?;
        }
    }
    Ok(())
}

/// Closes every application's interval into one report.
pub fn report(intervals: &Intervals, seconds: f64) -> GuestReport {
    let mut map = intervals.lock().unwrap_or_else(|p| p.into_inner());
    let apps = map.iter_mut().map(|(name, i)| i.close(name, seconds)).collect();
    let sent_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let oom_kills = std::fs::read_to_string("/proc/vmstat").ok().as_deref().and_then(oom_kills).unwrap_or(0);
    GuestReport { sent_ms, interval_s: seconds, apps, oom_kills }
}

/// The kernel's OOM-kill count from the text of `/proc/vmstat` (`oom_kill N`; absent before
/// Linux 4.13).
pub fn oom_kills(vmstat: &str) -> Option<u64> {
    vmstat.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// Runs the guest agent until the process is stopped: collectors, then a report every
/// interval over the port (reopened when it fails).
pub fn run(cfg: GuestConfig) -> Result<(), String> {
    let intervals: Intervals = Arc::new(Mutex::new(BTreeMap::new()));
    start_collectors(&cfg, &intervals).map_err(|e| format!("starting the collectors: {e}"))?;
    let path = cfg.port_path(std::path::Path::new("/sys"))?;
    let mut link = port::PortLink::new(path);
    let mut last = Instant::now();
    loop {
        std::thread::sleep(cfg.interval.saturating_sub(last.elapsed()));
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        let r = report(&intervals, seconds);
        if let Err(e) = link.send(&r) {
            eprintln!("presage-guest: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_oom_kill_count_is_read_from_vmstat() {
        let vmstat = "nr_free_pages 12345\noom_kill_other 9\noom_kill 3\npgfault 77\n";
        assert_eq!(super::oom_kills(vmstat), Some(3));
        assert_eq!(super::oom_kills("nr_free_pages 1\n"), None, "older kernels have no counter");
        assert_eq!(super::oom_kills("oom_kill many\n"), None);
    }
}
