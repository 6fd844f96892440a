//! A real KVM host, reached through libvirt by way of the `presage-libvirt` driver process
//! (crate `presage-libvirt`), so that the agent itself never loads libvirt's libraries (an agent
//! of a simulated host does without them entirely), and a libvirt call that crashes takes down
//! the driver rather than the agent.
//!
//! [`LibvirtDriver`] starts the driver, opens the connection through it, and sends each
//! [`Hypervisor`] call as a `DriverRequest` frame on its stdin. A reader thread hands each
//! `DriverReply` on its stdout to the call waiting for it (a migration gets its progress replies
//! as they come). If the driver exits, the calls waiting on it fail with its exit status and the
//! next call starts a new driver. If the agent dies, the driver sees its stdin close, aborts the
//! migrations it started and exits.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presage_protocol::PRESAGE_VERSION;
use presage_protocol::frames::{read_frame, write_frame};
use presage_protocol::pb::driver_failure::Kind;
use presage_protocol::pb::driver_reply::Outcome;
use presage_protocol::pb::driver_request::Call;
use presage_protocol::pb::{
    DriverEmpty, DriverMigrate, DriverOpen, DriverReply, DriverRequest, DriverResize, DriverVm, HostCapacity, LibvirtMigrationSettings,
    SimulatedVm, VmPresence, VmSize, VmSizeReadback,
};
use tracing::{info, warn};

use super::{Hypervisor, HypervisorError, MigrationProgress, MigrationTarget, Observation, ProgressSink, StartedSink};

/// The driver program's name, looked for beside the agent's binary and then on PATH.
pub const DRIVER_PROGRAM: &str = "presage-libvirt";

/// How long a call other than a migration may take before the agent stops waiting for it.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// The driver program an agent starts when `[hypervisor] driver` is not set: `presage-libvirt`
/// beside the agent's own binary if it is there, else whatever PATH finds.
pub fn default_driver() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(DRIVER_PROGRAM))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(DRIVER_PROGRAM))
}

/// What the reader thread shares with the callers: who waits for which reply, and why the
/// driver went away once it has.
#[derive(Default)]
struct Waiting {
    calls: HashMap<u64, mpsc::Sender<Outcome>>,
    gone: Option<String>,
}

/// One running driver process.
struct DriverProcess {
    pid: u32,
    /// Closing it (dropping the process) tells the driver to stop.
    stdin: Mutex<BufWriter<ChildStdin>>,
    waiting: Arc<Mutex<Waiting>>,
}

impl DriverProcess {
    fn start(program: &Path) -> Result<DriverProcess, String> {
        let mut child =
            Command::new(program).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|e| {
                format!(
                    "cannot start the libvirt driver {}: {e} (install presage-libvirt beside presage-agent or set `[hypervisor] driver`)",
                    program.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("the libvirt driver's pipes were not set up".into());
        };
        let pid = child.id();
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let shared = Arc::clone(&waiting);
        let spawned = std::thread::Builder::new().name("libvirt-driver-replies".into()).spawn(move || read_replies(child, stdout, &shared));
        if let Err(e) = spawned {
            return Err(format!("no thread to read the libvirt driver's replies: {e}"));
        }
        Ok(DriverProcess { pid, stdin: Mutex::new(BufWriter::new(stdin)), waiting })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gone(&self) -> Option<String> {
        self.waiting().gone.clone()
    }
}

/// Hands each reply to the call waiting for it until the driver's stdout ends, then reaps the
/// driver and fails every call still waiting (by dropping its sender) with the reason.
fn read_replies(mut child: Child, stdout: std::process::ChildStdout, waiting: &Mutex<Waiting>) {
    let mut input = std::io::BufReader::new(stdout);
    let why = loop {
        match read_frame::<DriverReply>(&mut input) {
            Ok(Some(DriverReply { id, outcome: Some(outcome) })) => {
                let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                let last = !matches!(outcome, Outcome::Progress(_) | Outcome::Started(_));
                let sender = if last { w.calls.remove(&id) } else { w.calls.get(&id).cloned() };
                if let Some(s) = sender {
                    let _ = s.send(outcome);
                }
            }
            Ok(Some(DriverReply { id, outcome: None })) => warn!(id, "the libvirt driver sent a reply without an outcome"),
            Ok(None) => break "its output ended".to_string(),
            Err(e) => {
                // Replies can no longer be told apart: stop this driver; the next call starts another.
                let _ = child.kill();
                break format!("its output is unreadable ({e})");
            }
        }
    };
    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| format!("status unknown: {e}"));
    let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
    w.gone = Some(format!("the libvirt driver (pid {}) stopped: {why}, {status}", child.id()));
    w.calls.clear();
}

/// The agent's libvirt hypervisor: calls go to a `presage-libvirt` process.
pub struct LibvirtDriver {
    uri: String,
    program: PathBuf,
    migration: LibvirtMigrationSettings,
    process: Mutex<Option<Arc<DriverProcess>>>,
    next_id: AtomicU64,
}

impl LibvirtDriver {
    /// Starts `program` (see [`default_driver`]) and connects it to libvirt at `uri`; a driver
    /// that cannot start, or a URI libvirt refuses, is an error here, at the agent's start.
    pub fn start(uri: &str, program: &Path, migration: LibvirtMigrationSettings) -> Result<LibvirtDriver, HypervisorError> {
        let driver =
            LibvirtDriver { uri: uri.into(), program: program.into(), migration, process: Mutex::new(None), next_id: AtomicU64::new(1) };
        driver.process()?;
        Ok(driver)
    }

    /// The driver's process id (while one runs).
    pub fn driver_pid(&self) -> Option<u32> {
        self.process.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|p| p.gone().is_none()).map(|p| p.pid)
    }

    fn error(&self, detail: impl Into<String>) -> HypervisorError {
        HypervisorError::Libvirt { uri: self.uri.clone(), detail: detail.into() }
    }

    /// The running driver, started (and opened) if there is none or the last one stopped.
    fn process(&self) -> Result<Arc<DriverProcess>, HypervisorError> {
        let mut current = self.process.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = current.as_ref() {
            match p.gone() {
                None => return Ok(Arc::clone(p)),
                Some(why) => warn!(%why, "starting a new libvirt driver"),
            }
        }
        *current = None;
        let process = Arc::new(DriverProcess::start(&self.program).map_err(|e| self.error(e))?);
        let open =
            Call::Open(DriverOpen { uri: self.uri.clone(), migration: Some(self.migration), presage_version: PRESAGE_VERSION.into() });
        match self.exchange(&process, open, Some(CALL_TIMEOUT), Events::NONE)? {
            Outcome::Opened(o) => {
                info!(pid = process.pid, uri = %self.uri, libvirt = %o.libvirt_version, "libvirt driver started");
            }
            other => return Err(self.unexpected("open", other)),
        }
        *current = Some(Arc::clone(&process));
        Ok(process)
    }

    /// Sends `call` and waits for its last reply (a migration's `started` and progress replies
    /// go to `events`).
    fn exchange(
        &self,
        process: &DriverProcess,
        call: Call,
        timeout: Option<Duration>,
        events: Events<'_>,
    ) -> Result<Outcome, HypervisorError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = call.name();
        let (tx, rx) = mpsc::channel();
        {
            let mut w = process.waiting();
            if let Some(why) = &w.gone {
                return Err(self.error(format!("{name}: {why}")));
            }
            w.calls.insert(id, tx);
        }
        let sent = {
            let mut stdin = process.stdin.lock().unwrap_or_else(|p| p.into_inner());
            write_frame(&mut *stdin, &DriverRequest { id, call: Some(call) })
        };
        if let Err(e) = sent {
            process.waiting().calls.remove(&id);
            return Err(self.error(format!("{name}: the libvirt driver (pid {}) does not take requests: {e}", process.pid)));
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let next = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match next {
                Ok(Outcome::Started(_)) => (events.started)(),
                Ok(Outcome::Progress(p)) => (events.progress)(MigrationProgress {
                    elapsed_ms: p.elapsed_ms,
                    data_total: p.data_total,
                    data_processed: p.data_processed,
                    data_remaining: p.data_remaining,
                    bytes_per_s: p.bytes_per_s,
                }),
                Ok(Outcome::Failure(f)) => {
                    return Err(match Kind::try_from(f.kind).unwrap_or(Kind::Libvirt) {
                        Kind::Precheck => HypervisorError::Precheck(f.message),
                        Kind::Migration => HypervisorError::Migration(f.message),
                        Kind::Guest => HypervisorError::Guest(f.message),
                        Kind::Request => self.error(format!("the libvirt driver refused {name}: {}", f.message)),
                        Kind::Libvirt | Kind::Unspecified => self.error(f.message),
                    });
                }
                Ok(outcome) => return Ok(outcome),
                Err(RecvTimeoutError::Timeout) => {
                    process.waiting().calls.remove(&id);
                    let waited = timeout.unwrap_or_default().as_secs();
                    return Err(self.error(format!("the libvirt driver (pid {}) did not answer {name} within {waited} s", process.pid)));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let why = process.gone().unwrap_or_else(|| "the libvirt driver stopped".into());
                    return Err(self.error(format!("{name}: {why}; the next call starts a new driver")));
                }
            }
        }
    }

    /// Sends `call` to the running driver (starting one if needed) and waits for its answer.
    fn call(&self, call: Call, timeout: Option<Duration>, events: Events<'_>) -> Result<Outcome, HypervisorError> {
        let process = self.process()?;
        self.exchange(&process, call, timeout, events)
    }

    fn unexpected(&self, name: &str, outcome: Outcome) -> HypervisorError {
        self.error(format!("the libvirt driver answered {name} with {outcome:?}"))
    }

    fn vm_call(&self, vm_id: &str, call: fn(DriverVm) -> Call) -> Result<Outcome, HypervisorError> {
        self.call(call(DriverVm { vm_id: vm_id.into() }), Some(CALL_TIMEOUT), Events::NONE)
    }

    fn done(&self, name: &str, outcome: Outcome) -> Result<(), HypervisorError> {
        match outcome {
            Outcome::Done(_) => Ok(()),
            other => Err(self.unexpected(name, other)),
        }
    }
}

/// Where a migration's replies before its last go.
#[derive(Clone, Copy)]
struct Events<'a> {
    started: StartedSink<'a>,
    progress: ProgressSink<'a>,
}

impl Events<'static> {
    const NONE: Events<'static> = Events { started: &|| {}, progress: &|_| {} };
}

impl Hypervisor for LibvirtDriver {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn capacity(&self) -> Result<HostCapacity, HypervisorError> {
        match self.call(Call::Capacity(DriverEmpty {}), Some(CALL_TIMEOUT), Events::NONE)? {
            Outcome::Capacity(c) => Ok(c),
            other => Err(self.unexpected("capacity", other)),
        }
    }

    fn observe(&self) -> Result<Observation, HypervisorError> {
        match self.call(Call::Observe(DriverEmpty {}), Some(CALL_TIMEOUT), Events::NONE)? {
            Outcome::Observation(o) => Ok(Observation { vms: o.vms, host_usage: None, trace: None }),
            other => Err(self.unexpected("observe", other)),
        }
    }

    fn migrate_out(
        &self,
        vm_id: &str,
        target: &MigrationTarget,
        started: StartedSink<'_>,
        progress: ProgressSink<'_>,
    ) -> Result<Option<SimulatedVm>, HypervisorError> {
        let call = Call::MigrateOut(DriverMigrate {
            vm_id: vm_id.into(),
            host: target.host.clone(),
            uri: target.uri.clone(),
            data_uri: target.data_uri.clone(),
        });
        // A live migration takes as long as the guest's memory takes to copy: no deadline here;
        // the coordinator's executor bounds it and aborts it.
        let outcome = self.call(call, None, Events { started, progress })?;
        self.done("migrate_out", outcome).map(|()| None)
    }

    fn inspect(&self, vm_id: &str) -> Result<VmPresence, HypervisorError> {
        match self.vm_call(vm_id, Call::Inspect)? {
            Outcome::Presence(p) => Ok(p),
            other => Err(self.unexpected("inspect", other)),
        }
    }

    fn adopt(&self, vm: &SimulatedVm) -> Result<(), HypervisorError> {
        Err(HypervisorError::Migration(format!("{}: a libvirt host does not adopt simulated VMs (libvirt moves the VM itself)", vm.vm_id)))
    }

    /// libvirt finishes a live migration by itself: nothing is left to let go of once the VM
    /// no longer runs here.
    fn complete_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let outcome = self.vm_call(vm_id, Call::CompleteMigration)?;
        self.done("complete_migration", outcome)
    }

    /// Aborts the domain's migration job; the domain keeps running here.
    fn abort_migration(&self, vm_id: &str) -> Result<(), HypervisorError> {
        let outcome = self.vm_call(vm_id, Call::AbortMigration)?;
        self.done("abort_migration", outcome)
    }

    fn resize(&self, vm_id: &str, size: &VmSize) -> Result<VmSizeReadback, HypervisorError> {
        match self.call(Call::Resize(DriverResize { vm_id: vm_id.into(), size: Some(size.clone()) }), Some(CALL_TIMEOUT), Events::NONE)? {
            Outcome::Size(s) => Ok(s),
            other => Err(self.unexpected("resize", other)),
        }
    }

    fn read_size(&self, vm_id: &str) -> Result<VmSizeReadback, HypervisorError> {
        match self.vm_call(vm_id, Call::ReadSize)? {
            Outcome::Size(s) => Ok(s),
            other => Err(self.unexpected("read_size", other)),
        }
    }

    /// The agent is stopping: the driver aborts the migrations it started (their VMs keep
    /// running here) and is told to stop by its stdin closing when this is dropped.
    fn shutdown(&self) {
        let process = self.process.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(p) = process.filter(|p| p.gone().is_none())
            && let Err(e) = self.exchange(&p, Call::Shutdown(DriverEmpty {}), Some(Duration::from_secs(20)), Events::NONE)
        {
            warn!(error = %e, "the libvirt driver's shutdown failed");
        }
    }
}
