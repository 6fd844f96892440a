//! The guest wire: presage-guest, inside a VM, reports what its applications see to the host's
//! agent over the VM's virtio-serial port [`PORT_NAME`] (the same mechanism as
//! qemu-guest-agent). Messages are `guest.proto`'s, each on the byte stream as a two-byte
//! big-endian length and the message, at most [`MAX_FRAME_BYTES`].
//!
//! A session: the host connects to the port's socket and sends a [`GuestHello`] with a fresh
//! random key; the guest answers with [`GuestFrame`]s numbered 1, 2, 3, ..., each carrying an
//! encoded [`GuestReport`] and HMAC-SHA256(key, seq || report). The port binds the identity (a
//! socket belongs to one domain); the key makes frames impossible to replay across sessions or
//! forge over another transport.
//!
//! Guest data is untrusted. The host's [`HostSession`] drops, and counts per VM, every frame
//! that is oversized, beyond the rate limit (checked first, so a flood costs no MAC work),
//! malformed, forged (bad MAC), replayed (sequence number not above the last accepted) or out
//! of range (figures no application can have); nothing a guest sends can make it panic or grow
//! without bound.

use prost::Message;
use ring::hmac;

use crate::guest_pb::{AppFigures, GuestFrame, GuestHello, GuestReport};

/// The virtio-serial port's name (`/sys/class/virtio-ports/*/name` in the guest).
pub const PORT_NAME: &str = "org.presage.guest.0";
pub const WIRE_VERSION: u32 = 1;
/// The largest message either side accepts.
pub const MAX_FRAME_BYTES: usize = 4096;
/// Frames per second the host accepts from one VM by default (a burst of as many).
pub const DEFAULT_MAX_FRAMES_PER_S: u32 = 10;
pub const KEY_BYTES: usize = 32;
/// At most this many applications per report, each name at most [`MAX_NAME_BYTES`].
pub const MAX_APPS: usize = 16;
pub const MAX_NAME_BYTES: usize = 64;
/// Latencies above an hour and throughputs above a billion per second are not measurements.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;
pub const MAX_THROUGHPUT_PER_S: f64 = 1e9;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a message of {0} bytes is over the guest wire's limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("the host's hello is unreadable: {0}")]
    BadHello(String),
}

/// `msg` with its two-byte length prefix.
pub fn encode_message(msg: &impl Message) -> Result<Vec<u8>, WireError> {
    let body = msg.encode_to_vec();
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// A fresh random session key.
pub fn new_key() -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).expect("the system's random source works");
    key
}

fn mac_of(key: &[u8], seq: u64, report: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&seq.to_be_bytes());
    ctx.update(report);
    ctx.sign()
}

/// One piece of a byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Message(Vec<u8>),
    /// A message announced longer than [`MAX_FRAME_BYTES`]: its bytes are skipped.
    Oversized(usize),
}

/// Splits a byte stream into length-prefixed messages, across reads. It holds at most one
/// message's bytes.
#[derive(Clone, Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
    /// Bytes of an oversized message still to skip.
    skip: usize,
}

impl Splitter {
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        loop {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip > 0 {
                    return out;
                }
            }
            // Take what the current message still needs.
            let need = if self.buf.len() < 2 { 2 - self.buf.len() } else { 2 + self.announced() - self.buf.len() };
            let n = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() < 2 {
                return out;
            }
            let len = self.announced();
            if len > MAX_FRAME_BYTES {
                out.push(Piece::Oversized(len));
                self.skip = len;
                self.buf.clear();
                continue;
            }
            if self.buf.len() == 2 + len {
                out.push(Piece::Message(self.buf[2..].to_vec()));
                self.buf.clear();
            } else if bytes.is_empty() {
                return out;
            }
        }
    }

    fn announced(&self) -> usize {
        u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize
    }
}

/// What a host dropped from one VM, by reason, and what it accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GuestCounters {
    pub accepted: u64,
    pub oversized: u64,
    pub rate_limited: u64,
    pub malformed: u64,
    pub forged: u64,
    pub replayed: u64,
    pub out_of_range: u64,
}

impl std::ops::Add for GuestCounters {
    type Output = GuestCounters;

    fn add(self, o: GuestCounters) -> GuestCounters {
        GuestCounters {
            accepted: self.accepted + o.accepted,
            oversized: self.oversized + o.oversized,
            rate_limited: self.rate_limited + o.rate_limited,
            malformed: self.malformed + o.malformed,
            forged: self.forged + o.forged,
            replayed: self.replayed + o.replayed,
            out_of_range: self.out_of_range + o.out_of_range,
        }
    }
}

impl GuestCounters {
    pub fn dropped(&self) -> u64 {
        self.oversized + self.rate_limited + self.malformed + self.forged + self.replayed + self.out_of_range
    }
}

/// Checks that a report's figures are ones an application can have: the field and the reason
/// of the first that is not.
pub fn validate(report: &GuestReport) -> Result<(), String> {
    if !(report.interval_s.is_finite() && report.interval_s > 0.0 && report.interval_s <= 3600.0) {
        return Err(format!("interval_s is {}; it must be in (0, 3600]", report.interval_s));
    }
    if report.apps.len() > MAX_APPS {
        return Err(format!("{} applications; at most {MAX_APPS}", report.apps.len()));
    }
    for (i, a) in report.apps.iter().enumerate() {
        check_app(a).map_err(|why| format!("apps[{i}]: {why}"))?;
    }
    Ok(())
}

fn check_app(a: &AppFigures) -> Result<(), String> {
    if a.name.is_empty() || a.name.len() > MAX_NAME_BYTES || a.name.chars().any(char::is_control) {
        return Err(format!("name must be 1..={MAX_NAME_BYTES} bytes without control characters"));
    }
    for (field, v) in [("latency_p50_ms", a.latency_p50_ms), ("latency_p95_ms", a.latency_p95_ms), ("latency_p99_ms", a.latency_p99_ms)] {
        if !(v.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&v)) {
            return Err(format!("{field} is {v}; it must be in 0..={MAX_LATENCY_MS}"));
        }
    }
    if !(a.latency_p50_ms <= a.latency_p95_ms && a.latency_p95_ms <= a.latency_p99_ms) {
        return Err(format!("percentiles out of order: p50 {} p95 {} p99 {}", a.latency_p50_ms, a.latency_p95_ms, a.latency_p99_ms));
    }
    if !(a.throughput_per_s.is_finite() && (0.0..=MAX_THROUGHPUT_PER_S).contains(&a.throughput_per_s)) {
        return Err(format!("throughput_per_s is {}; it must be in 0..={MAX_THROUGHPUT_PER_S}", a.throughput_per_s));
    }
    if !(a.error_rate.is_finite() && (0.0..=1.0).contains(&a.error_rate)) {
        return Err(format!("error_rate is {}; it must be in 0..=1", a.error_rate));
    }
    if !(a.latency_slo_p99_ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&a.latency_slo_p99_ms)) {
        return Err(format!("latency_slo_p99_ms is {}; it must be in 0..={MAX_LATENCY_MS}", a.latency_slo_p99_ms));
    }
    Ok(())
}

/// A token bucket: `rate` per second, a burst of as many.
#[derive(Clone, Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at_ms: Option<u64>,
}

impl Bucket {
    fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = self.at_ms.map_or(0, |t| now_ms.saturating_sub(t)) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.at_ms = Some(now_ms.max(self.at_ms.unwrap_or(0)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The host's end of one session with one guest.
#[derive(Clone, Debug)]
pub struct HostSession {
    key: [u8; KEY_BYTES],
    max_frames_per_s: u32,
    last_seq: u64,
    bucket: Bucket,
    splitter: Splitter,
    pub counters: GuestCounters,
    /// The reason the last frame was dropped, for the log.
    pub last_drop: Option<String>,
}

impl HostSession {
    pub fn new(key: [u8; KEY_BYTES], max_frames_per_s: u32) -> HostSession {
        let rate = max_frames_per_s.max(1) as f64;
        HostSession {
            key,
            max_frames_per_s,
            last_seq: 0,
            bucket: Bucket { rate, tokens: rate, at_ms: None },
            splitter: Splitter::default(),
            counters: GuestCounters::default(),
            last_drop: None,
        }
    }

    /// The hello to send first, with its length prefix.
    pub fn hello(&self) -> Vec<u8> {
        let hello = GuestHello {
            version: WIRE_VERSION,
            key: self.key.to_vec(),
            max_frames_per_s: self.max_frames_per_s,
            max_frame_bytes: MAX_FRAME_BYTES as u32,
        };
        encode_message(&hello).expect("a hello is far below the limit")
    }

    /// Takes bytes read from the port at `now_ms` and returns the reports accepted.
    pub fn receive(&mut self, bytes: &[u8], now_ms: u64) -> Vec<GuestReport> {
        let mut out = Vec::new();
        for piece in self.splitter.push(bytes) {
            match self.accept(piece, now_ms) {
                Ok(report) => {
                    self.counters.accepted += 1;
                    out.push(report);
                }
                Err(why) => self.last_drop = Some(why),
            }
        }
        out
    }

    fn accept(&mut self, piece: Piece, now_ms: u64) -> Result<GuestReport, String> {
        let c = &mut self.counters;
        let body = match piece {
            Piece::Oversized(n) => {
                c.oversized += 1;
                return Err(format!("a frame of {n} bytes (limit {MAX_FRAME_BYTES})"));
            }
            Piece::Message(body) => body,
        };
        if !self.bucket.take(now_ms) {
            c.rate_limited += 1;
            return Err(format!("over {} frames per second", self.max_frames_per_s));
        }
        let frame = GuestFrame::decode(body.as_slice()).map_err(|e| {
            c.malformed += 1;
            format!("not a frame: {e}")
        })?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut signed = frame.seq.to_be_bytes().to_vec();
        signed.extend_from_slice(&frame.report);
        if hmac::verify(&key, &signed, &frame.mac).is_err() {
            c.forged += 1;
            return Err(format!("frame {} does not carry this session's MAC", frame.seq));
        }
        if frame.seq <= self.last_seq {
            c.replayed += 1;
            return Err(format!("frame {} replayed (last accepted {})", frame.seq, self.last_seq));
        }
        let report = GuestReport::decode(frame.report.as_slice()).map_err(|e| {
            c.malformed += 1;
            format!("frame {}: not a report: {e}", frame.seq)
        })?;
        // A sealed frame moves the sequence on even if its figures are refused: it cannot be
        // sent again.
        self.last_seq = frame.seq;
        validate(&report).map_err(|why| {
            c.out_of_range += 1;
            format!("frame {}: {why}", frame.seq)
        })?;
        Ok(report)
    }
}

/// The guest's end of a session: seals reports with the key of the host's last hello.
#[derive(Clone, Debug)]
pub struct GuestSession {
    key: Vec<u8>,
    next_seq: u64,
    pub max_frames_per_s: u32,
}

impl GuestSession {
    /// A session from the host's hello (a message, without its length prefix).
    pub fn from_hello(message: &[u8]) -> Result<GuestSession, WireError> {
        let hello = GuestHello::decode(message).map_err(|e| WireError::BadHello(e.to_string()))?;
        if hello.version != WIRE_VERSION {
            return Err(WireError::BadHello(format!("version {} (this guest speaks {WIRE_VERSION})", hello.version)));
        }
        if hello.key.len() != KEY_BYTES {
            return Err(WireError::BadHello(format!("a key of {} bytes (expected {KEY_BYTES})", hello.key.len())));
        }
        Ok(GuestSession { key: hello.key, next_seq: 1, max_frames_per_s: hello.max_frames_per_s })
    }

    /// `report` sealed as the session's next frame, with its length prefix.
    pub fn seal(&mut self, report: &GuestReport) -> Result<Vec<u8>, WireError> {
        let report = report.encode_to_vec();
        let seq = self.next_seq;
        let frame = GuestFrame { seq, mac: mac_of(&self.key, seq, &report).as_ref().to_vec(), report };
        let out = encode_message(&frame)?;
        self.next_seq += 1;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(p99: f64) -> GuestReport {
        GuestReport {
            sent_ms: 1,
            interval_s: 5.0,
            apps: vec![AppFigures {
                name: "web".into(),
                latency_p50_ms: 1.0,
                latency_p95_ms: 2.0,
                latency_p99_ms: p99,
                throughput_per_s: 100.0,
                error_rate: 0.01,
                requests: 500,
                latency_slo_p99_ms: 0.0,
            }],
            oom_kills: 0,
        }
    }

    fn pair() -> (HostSession, GuestSession) {
        let host = HostSession::new(new_key(), DEFAULT_MAX_FRAMES_PER_S);
        let hello = host.hello();
        let guest = GuestSession::from_hello(&hello[2..]).unwrap();
        (host, guest)
    }

    #[test]
    fn sealed_reports_arrive_across_any_split_of_the_stream() {
        let (mut host, mut guest) = pair();
        let mut stream = Vec::new();
        for i in 0..5 {
            stream.extend(guest.seal(&report(3.0 + i as f64)).unwrap());
        }
        // One byte at a time, 200 ms apart (within the rate).
        let mut got = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            got.extend(host.receive(std::slice::from_ref(b), 200 * i as u64 / 10));
        }
        assert_eq!(got.iter().map(|r| r.apps[0].latency_p99_ms).collect::<Vec<_>>(), vec![3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(host.counters, GuestCounters { accepted: 5, ..GuestCounters::default() });
    }

    #[test]
    fn hostile_frames_are_dropped_and_counted_by_reason() {
        let (mut host, mut guest) = pair();
        let mut now = 0;
        let mut tick = || {
            now += 1000;
            now
        };
        // Oversized: announced 60,000 bytes, then the bytes; the stream stays in step.
        let mut big = 60_000u16.to_be_bytes().to_vec();
        big.extend(vec![7u8; 60_000]);
        big.extend(guest.seal(&report(3.0)).unwrap());
        assert_eq!(host.receive(&big, tick()).len(), 1);
        // Malformed: bytes that are no frame.
        assert!(host.receive(&[0, 3, 0xff, 0xff, 0xff], tick()).is_empty());
        // Forged: a frame sealed with another key.
        let mut other = GuestSession::from_hello(&HostSession::new(new_key(), 10).hello()[2..]).unwrap();
        other.next_seq = 100;
        assert!(host.receive(&other.seal(&report(3.0)).unwrap(), tick()).is_empty());
        // Replayed: the same sealed frame twice.
        let frame = guest.seal(&report(3.0)).unwrap();
        assert_eq!(host.receive(&frame, tick()).len(), 1);
        assert!(host.receive(&frame, tick()).is_empty());
        // Out of range: p99 below p95, a NaN, an error rate of 2, an SLO that is NaN or negative.
        for bad in [
            report(1.5),
            report(f64::NAN),
            GuestReport { apps: vec![AppFigures { error_rate: 2.0, ..report(3.0).apps[0].clone() }], ..report(3.0) },
            GuestReport { apps: vec![AppFigures { latency_slo_p99_ms: f64::NAN, ..report(3.0).apps[0].clone() }], ..report(3.0) },
            GuestReport { apps: vec![AppFigures { latency_slo_p99_ms: -1.0, ..report(3.0).apps[0].clone() }], ..report(3.0) },
        ] {
            assert!(host.receive(&guest.seal(&bad).unwrap(), tick()).is_empty());
        }
        // A flood: 100 valid frames in one instant; 10 (the burst) get through.
        let flood: Vec<u8> = (0..100).flat_map(|_| guest.seal(&report(3.0)).unwrap()).collect();
        let t = tick();
        assert_eq!(host.receive(&flood, t).len(), 10);
        assert_eq!(
            host.counters,
            GuestCounters { accepted: 12, oversized: 1, malformed: 1, forged: 1, replayed: 1, out_of_range: 5, rate_limited: 90 }
        );
        assert!(host.last_drop.as_deref().unwrap().contains("frames per second"));
    }

    /// Whatever bytes arrive, in whatever pieces, the host neither panics nor holds more than
    /// one message's bytes, and counts every piece it could not accept.
    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let (mut host, _) = pair();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000u64 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(host.receive(&bytes, round * 1000).is_empty());
            assert!(host.splitter.buf.len() <= 2 + MAX_FRAME_BYTES);
        }
        assert_eq!(host.counters.accepted, 0);
        assert!(host.counters.dropped() > 0);
    }

    #[test]
    fn a_bad_hello_is_refused_with_the_reason() {
        assert!(matches!(GuestSession::from_hello(&[0xff, 0xff]), Err(WireError::BadHello(_))));
        let short = GuestHello { version: WIRE_VERSION, key: vec![1; 5], ..GuestHello::default() }.encode_to_vec();
        assert!(GuestSession::from_hello(&short).unwrap_err().to_string().contains("5 bytes"));
        let future = GuestHello { version: 9, key: vec![1; KEY_BYTES], ..GuestHello::default() }.encode_to_vec();
        assert!(GuestSession::from_hello(&future).unwrap_err().to_string().contains("version 9"));
        let too_big = GuestReport { apps: vec![report(3.0).apps[0].clone(); 100], ..report(3.0) };
        let mut g = GuestSession::from_hello(&HostSession::new(new_key(), 10).hello()[2..]).unwrap();
        assert!(matches!(g.seal(&too_big), Err(WireError::TooLarge(_))));
    }
}
