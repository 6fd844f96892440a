//! The driver's side of the pipe (`proto/presage/v1/libvirt_driver.proto`): it reads
//! `DriverRequest` frames, answers `open` by connecting to libvirt, runs every other call on a
//! thread of its own (an abort must get through while a migration blocks its thread), and writes
//! each `DriverReply` as it is ready. When the agent goes away (its end of the pipe closes) the
//! driver aborts the migrations it started, as the agent's own shutdown would, and ends.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use presage_protocol::PRESAGE_VERSION;
use presage_protocol::frames::{FrameError, read_frame, write_frame};
use presage_protocol::pb::driver_failure::Kind;
use presage_protocol::pb::driver_reply::Outcome;
use presage_protocol::pb::driver_request::Call;
use presage_protocol::pb::{DriverEmpty, DriverFailure, DriverObservation, DriverOpened, DriverReply, DriverRequest};
use tracing::{debug, info, info_span, warn};

use crate::host::{HostError, LibvirtHost};

/// Why the driver stopped reading requests.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the agent's requests are unreadable: {0}")]
    Frame(#[from] FrameError),
}

/// Replies go out one frame at a time from whichever thread finished its call.
struct Replies<W: Write + Send>(Arc<Mutex<W>>);

impl<W: Write + Send> Clone for Replies<W> {
    fn clone(&self) -> Self {
        Replies(Arc::clone(&self.0))
    }
}

impl<W: Write + Send> Replies<W> {
    fn send(&self, id: u64, outcome: Outcome) {
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = write_frame(&mut *out, &DriverReply { id, outcome: Some(outcome) }) {
            // The agent is gone; its end of the request pipe closes too and ends `serve`.
            debug!(id, error = %e, "a reply could not be written");
        }
    }
}

/// How long the driver waits, once its input has ended, for calls still running (their replies
/// go out if the agent still reads them) before it exits anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Counts the calls running on their threads.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightCall {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        InFlightCall(Arc::clone(self))
    }

    /// Waits until no call runs, or `limit` passes; the number still running.
    fn wait_idle(&self, limit: Duration) -> usize {
        let count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let (count, _) = self.idle.wait_timeout_while(count, limit, |c| *c > 0).unwrap_or_else(|p| p.into_inner());
        *count
    }
}

struct InFlightCall(Arc<InFlight>);

impl Drop for InFlightCall {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        *count -= 1;
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

fn failure(kind: Kind, message: impl Into<String>) -> Outcome {
    Outcome::Failure(DriverFailure { kind: kind as i32, message: message.into() })
}

fn host_failure(e: HostError) -> Outcome {
    let kind = match e {
        HostError::Libvirt { .. } => Kind::Libvirt,
        HostError::Migration(_) => Kind::Migration,
        HostError::Precheck(_) => Kind::Precheck,
        HostError::Guest(_) => Kind::Guest,
    };
    // The kind says what the variant's Display adds ("pre-check failed", the URI the agent
    // knows): send only the detail.
    let message = match e {
        HostError::Precheck(m) | HostError::Migration(m) | HostError::Guest(m) | HostError::Libvirt { detail: m, .. } => m,
    };
    failure(kind, message)
}

/// Runs one call against the open host; progress replies go out as the migration reports them.
fn run_call<W: Write + Send>(host: &LibvirtHost, id: u64, call: Call, replies: &Replies<W>) -> Outcome {
    let done = |r: Result<(), HostError>| r.map_or_else(host_failure, |()| Outcome::Done(DriverEmpty {}));
    match call {
        Call::Open(_) => failure(Kind::Request, "the driver is already open"),
        Call::Capacity(_) => host.capacity().map_or_else(host_failure, Outcome::Capacity),
        Call::Observe(_) => host.observe().map_or_else(host_failure, |vms| Outcome::Observation(DriverObservation { vms })),
        Call::Inspect(v) => host.inspect(&v.vm_id).map_or_else(host_failure, Outcome::Presence),
        Call::CompleteMigration(v) => done(host.complete_migration(&v.vm_id)),
        Call::AbortMigration(v) => done(host.abort_migration(&v.vm_id)),
        Call::MigrateOut(m) => {
            let started = || replies.send(id, Outcome::Started(DriverEmpty {}));
            done(host.migrate_out(&m, &started, &|p| replies.send(id, Outcome::Progress(p))))
        }
        Call::Shutdown(_) => {
            host.shutdown();
            Outcome::Done(DriverEmpty {})
        }
        Call::Resize(r) => host.resize(&r.vm_id, &r.size.unwrap_or_default()).map_or_else(host_failure, Outcome::Size),
        Call::ReadSize(v) => host.read_size_all(&v.vm_id).map_or_else(host_failure, Outcome::Size),
    }
}

/// Serves requests from `input` until it ends (the agent stopped or died), answering on
/// `output`. Returns an error when the input is not a stream of requests; either way the
/// migrations this driver started have been aborted by then.
pub fn serve<R: Read, W: Write + Send + 'static>(mut input: R, output: W) -> Result<(), DriverError> {
    // libvirt's default handler prints every error to stderr, expected ones included (a lookup
    // of a VM that left, an abort with no job); each call's error goes back to the agent instead.
    virt::error::clear_error_callback();
    let replies = Replies(Arc::new(Mutex::new(output)));
    let mut host: Option<Arc<LibvirtHost>> = None;
    let in_flight = Arc::new(InFlight::default());
    let end = loop {
        let request = match read_frame::<DriverRequest>(&mut input) {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(()),
            Err(e) => break Err(DriverError::Frame(e)),
        };
        let id = request.id;
        let Some(call) = request.call else {
            replies.send(id, failure(Kind::Request, format!("request {id} names no call (an agent of another release?)")));
            continue;
        };
        let name = call.name();
        let span = info_span!("libvirt_call", id, call = name);
        match (call, &host) {
            (Call::Open(open), None) => {
                let _enter = span.enter();
                if open.presage_version != PRESAGE_VERSION {
                    replies.send(
                        id,
                        failure(
                            Kind::Request,
                            format!(
                                "presage-libvirt {PRESAGE_VERSION} cannot serve presage-agent {}: install the driver of the agent's release",
                                open.presage_version
                            ),
                        ),
                    );
                    continue;
                }
                let settings = open.migration.unwrap_or_else(crate::host::default_migration_settings);
                match LibvirtHost::connect_with(&open.uri, settings) {
                    Ok(h) => {
                        let libvirt_version = h.library_version();
                        info!(uri = %open.uri, libvirt = %libvirt_version, "connected to libvirt");
                        host = Some(Arc::new(h));
                        replies.send(id, Outcome::Opened(DriverOpened { presage_version: PRESAGE_VERSION.into(), libvirt_version }));
                    }
                    Err(e) => replies.send(id, host_failure(e)),
                }
            }
            (_, None) => {
                replies.send(id, failure(Kind::Request, format!("{name} before open: the first request must open a libvirt connection")))
            }
            (call, Some(h)) => {
                let (h, r, running) = (Arc::clone(h), replies.clone(), in_flight.enter());
                let spawned = std::thread::Builder::new().name(format!("libvirt-{name}")).spawn(move || {
                    let _running = running;
                    let _enter = span.enter();
                    let outcome = run_call(&h, id, call, &r);
                    r.send(id, outcome);
                });
                if let Err(e) = spawned {
                    replies.send(id, failure(Kind::Libvirt, format!("no thread for {name}: {e}")));
                }
            }
        }
    };
    if let Some(h) = host {
        if end.is_err() {
            warn!("the agent's pipe broke: aborting this driver's migrations");
        }
        h.shutdown();
        let left = in_flight.wait_idle(DRAIN_WAIT);
        if left > 0 {
            warn!(calls = left, "libvirt calls still running {} s after the agent went away; exiting without them", DRAIN_WAIT.as_secs());
        }
    }
    end
}
