//! The host's end of each VM's presage-guest port. Every sampling cycle [`GuestChannels::attach`]
//! connects to the ports of VMs whose hypervisor names one (the Unix socket behind the domain's
//! `org.presage.guest.0` channel), sends the session's hello, and reads the guest's frames on a
//! task of their own through [`HostSession`], which drops and counts whatever is oversized,
//! flooding, malformed, forged, replayed or out of range. The latest accepted report and the
//! counts go into the VM's sample. A socket belongs to one domain, so a report is that VM's.
//!
//! Guest data is untrusted: it is reported as the guest's claim, and nothing here acts on it.
//!
//! How the host reaches a port is a [`GuestTransport`]: the virtio-serial port behind a Unix
//! socket ([`VirtioSerialSocket`]) is the one this machine can run (it has no vhost-vsock); a
//! vsock adapter would connect to the guest's CID instead, and the session's MAC and sequence
//! numbers keep frames honest over any transport.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presage_protocol::guest::{GuestCounters, HostSession, MAX_FRAME_BYTES, new_key};
use presage_protocol::guest_pb::GuestReport;
use presage_protocol::pb::{GuestApps, GuestFrameCounts, VmSample};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

/// How long after a failed or closed connection the port is tried again.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);
/// How often, at most, a VM's dropped frames are logged.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// A byte stream to one guest's port.
pub trait GuestStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> GuestStream for T {}

/// A connection being made to a guest's port.
pub type Connecting = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn GuestStream>>> + Send>>;

/// How the host reaches a guest's port, given the address its hypervisor names for it.
pub trait GuestTransport: Send + Sync + 'static {
    fn connect(&self, address: &str) -> Connecting;
}

/// The virtio-serial port `org.presage.guest.0`, behind the Unix socket the domain's XML names.
pub struct VirtioSerialSocket;

impl GuestTransport for VirtioSerialSocket {
    fn connect(&self, address: &str) -> Connecting {
        let path = address.to_string();
        Box::pin(async move { Ok(Box::new(tokio::net::UnixStream::connect(path).await?) as Box<dyn GuestStream>) })
    }
}

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
    transport: Arc<dyn GuestTransport>,
}

impl GuestChannels {
    /// Over the virtio-serial port's Unix socket.
    pub fn new(max_frames_per_s: u32, cancel: CancellationToken) -> GuestChannels {
        GuestChannels::with_transport(max_frames_per_s, cancel, Arc::new(VirtioSerialSocket))
    }

    pub fn with_transport(max_frames_per_s: u32, cancel: CancellationToken, transport: Arc<dyn GuestTransport>) -> GuestChannels {
        GuestChannels { channels: Default::default(), max_frames_per_s, cancel, transport }
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
                oom_kills: report.oom_kills,
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
        let mut stream = self.transport.connect(path).await?;
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
            let now_ms = crate::unix_ms();
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

#[cfg(test)]
mod tests {
    use super::*;
    use presage_protocol::guest::GuestSession;
    use presage_protocol::guest_pb::AppFigures;

    /// A transport whose "port" is an in-memory pipe: the other ends wait in `guests`.
    struct Pipes {
        guests: Arc<Mutex<Vec<tokio::io::DuplexStream>>>,
    }

    impl GuestTransport for Pipes {
        fn connect(&self, _address: &str) -> Connecting {
            let (host, guest) = tokio::io::duplex(64 * 1024);
            self.guests.lock().unwrap().push(guest);
            Box::pin(async move { Ok(Box::new(host) as Box<dyn GuestStream>) })
        }
    }

    /// Any transport carries the same sealed session: the guest's report arrives through the
    /// trait, and a frame sealed with another key is counted as forged.
    #[tokio::test]
    async fn reports_arrive_over_any_transport_and_forgeries_are_counted() {
        let guests = Arc::new(Mutex::new(Vec::new()));
        let channels = GuestChannels::with_transport(10, CancellationToken::new(), Arc::new(Pipes { guests: guests.clone() }));
        let mut samples = vec![VmSample { vm_id: "vm-1".into(), guest_channel: "pipe:1".into(), ..Default::default() }];
        channels.attach(&mut samples);
        let mut guest = loop {
            if let Some(g) = guests.lock().unwrap().pop() {
                break g;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut hello = [0u8; 2];
        guest.read_exact(&mut hello).await.unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(hello) as usize];
        guest.read_exact(&mut body).await.unwrap();
        let mut session = GuestSession::from_hello(&body).unwrap();
        let report = GuestReport {
            interval_s: 2.0,
            apps: vec![AppFigures {
                name: "web".into(),
                latency_p50_ms: 1.0,
                latency_p95_ms: 2.0,
                latency_p99_ms: 3.0,
                requests: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        // A frame sealed with another session's key first, then the guest's own.
        let mut forger = GuestSession::from_hello(&HostSession::new(new_key(), 10).hello()[2..]).unwrap();
        guest.write_all(&forger.seal(&report).unwrap()).await.unwrap();
        guest.write_all(&session.seal(&report).unwrap()).await.unwrap();
        let got = loop {
            channels.attach(&mut samples);
            let g = samples[0].guest.clone().unwrap();
            if g.frames.as_ref().is_some_and(|f| f.forged == 1 && f.accepted == 1) {
                break g;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(got.apps[0].latency_p99_ms, 3.0);
        assert!(got.received_ms > 0);
    }
}
