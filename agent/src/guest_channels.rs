//! The host's end of each VM's presage-guest port. Every sampling cycle [`GuestChannels::attach`]
//! connects to the ports of VMs whose hypervisor names one (the Unix socket behind the domain's
//! `org.presage.guest.0` channel), sends the session's hello, and reads the guest's frames on a
//! task of their own through [`HostSession`], which drops and counts whatever is oversized,
//! flooding, malformed, forged, replayed or out of range. The latest accepted report and the
//! counts go into the VM's sample. A socket belongs to one domain, so a report is that VM's.
//!
//! Guest data is untrusted: it is reported as the guest's claim, and nothing here acts on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use presage_protocol::guest::{GuestCounters, HostSession, MAX_FRAME_BYTES, new_key};
use presage_protocol::guest_pb::GuestReport;
use presage_protocol::pb::{GuestApps, GuestFrameCounts, VmSample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

/// How long after a failed or closed connection the port is tried again.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);
/// How often, at most, a VM's dropped frames are logged.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Channel {
    path: String,
    connected: bool,
    last_attempt: Option<Instant>,
    latest: Option<(u64, GuestReport)>,
    /// Counts of the sessions that ended, and of the current one.
    ended: GuestCounters,
    current: GuestCounters,
    last_drop_log: Option<Instant>,
    logged_dropped: u64,
}

impl Channel {
    fn counts(&self) -> GuestCounters {
        self.ended + self.current
    }
}

/// Every VM's guest port on this host.
#[derive(Clone)]
pub struct GuestChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    max_frames_per_s: u32,
    cancel: CancellationToken,
}

impl GuestChannels {
    pub fn new(max_frames_per_s: u32, cancel: CancellationToken) -> GuestChannels {
        GuestChannels { channels: Default::default(), max_frames_per_s, cancel }
    }

    /// Connects to new ports, forgets VMs that are gone, and puts each VM's latest report and
    /// frame counts into its sample. Call from the runtime.
    pub fn attach(&self, samples: &mut [VmSample]) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.retain(|vm, _| samples.iter().any(|s| &s.vm_id == vm && !s.guest_channel.is_empty()));
        for s in samples.iter_mut() {
            if s.guest_channel.is_empty() {
                continue;
            }
            let ch = channels.entry(s.vm_id.clone()).or_default();
            if ch.path != s.guest_channel {
                // A new domain, or the port moved (the VM was restarted or migrated here).
                *ch = Channel { path: s.guest_channel.clone(), ended: ch.counts(), ..Channel::default() };
            }
            if !ch.connected && ch.last_attempt.is_none_or(|t| t.elapsed() >= RECONNECT_AFTER) {
                ch.connected = true;
                ch.last_attempt = Some(Instant::now());
                let (vm, path, this) = (s.vm_id.clone(), ch.path.clone(), self.clone());
                tokio::spawn(async move { this.serve(&vm, &path).await }.instrument(info_span!("guest_channel", vm = %s.vm_id)));
            }
            let c = ch.counts();
            if c.dropped() > ch.logged_dropped && ch.last_drop_log.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
                warn!(vm = %s.vm_id, dropped = c.dropped(), ?c, "frames from the guest were dropped");
                ch.logged_dropped = c.dropped();
                ch.last_drop_log = Some(Instant::now());
            }
            let (received_ms, report) = ch.latest.clone().unwrap_or_default();
            s.guest = Some(GuestApps {
                received_ms,
                interval_s: report.interval_s,
                apps: report.apps,
                frames: Some(GuestFrameCounts {
                    accepted: c.accepted,
                    oversized: c.oversized,
                    rate_limited: c.rate_limited,
                    malformed: c.malformed,
                    forged: c.forged,
                    replayed: c.replayed,
                    out_of_range: c.out_of_range,
                }),
            });
        }
    }

    /// One session on `path`: hello, then frames until the socket closes or the agent stops.
    async fn serve(&self, vm: &str, path: &str) {
        let result = self.session(vm, path).await;
        if let Err(e) = &result {
            debug!(vm, path, error = %e, "guest port not served");
        }
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get_mut(vm).filter(|c| c.path == path) {
            ch.connected = false;
            ch.ended = ch.counts();
            ch.current = GuestCounters::default();
        }
    }

    async fn session(&self, vm: &str, path: &str) -> std::io::Result<()> {
        let mut stream = tokio::net::UnixStream::connect(path).await?;
        let mut session = HostSession::new(new_key(), self.max_frames_per_s);
        stream.write_all(&session.hello()).await?;
        let mut buf = vec![0u8; MAX_FRAME_BYTES];
        loop {
            let n = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                n = stream.read(&mut buf) => n?,
            };
            if n == 0 {
                return Ok(());
            }
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
            let reports = session.receive(&buf[..n], now_ms);
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            let Some(ch) = channels.get_mut(vm).filter(|c| c.path == path) else { return Ok(()) };
            ch.current = session.counters;
            if let Some(r) = reports.into_iter().last() {
                ch.latest = Some((now_ms, r));
            }
        }
    }
}
