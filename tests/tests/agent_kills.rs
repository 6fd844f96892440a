//! The fault suite's agent kills: a process writing reservations and borrowing leases through
//! the agent's own desks (`ReservationDesk`, `SizingDesk` on the agent's sled store — the code
//! the agent runs for the coordinator's `Reserve`/`Release`/`GrantLease`/`RevokeLease`
//! commands, which answers only after the write is flushed) is killed with SIGKILL at random
//! moments, `PRESAGE_AGENT_KILLS` times (default 1,000). After every kill the store opens, both
//! desks load it as a restarting agent does, every acknowledged reservation and lease is there,
//! and nothing acknowledged as released or revoked has come back.
//!
//! The writer is this test binary itself, run again with `--ignored --exact` on
//! `desk_writer_child` and told where the store is through the environment.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presage_agent::config::SimulatedConfig;
use presage_agent::hypervisor::simulated::SimulatedHypervisor;
use presage_agent::reservations::ReservationDesk;
use presage_agent::sizing::{SizingDesk, VmView};
use presage_agent::store::{KvStore, SledStore};
use presage_decide::reservation::{Reservation, Resources};
use presage_decide::sizing::Allocation;
use presage_decide::sizing::lease::{Lease, LeaseResource};

const STORE_ENV: &str = "PRESAGE_DESK_WRITER_STORE";
const TRIAL_ENV: &str = "PRESAGE_DESK_WRITER_TRIAL";

fn capacity() -> (Resources, Allocation) {
    (Resources { cpu_mhz: 64_000.0, memory_mib: 262_144.0 }, Allocation::new(32.0, 262_144.0))
}

fn views() -> Vec<VmView> {
    [("lender", 1.0), ("borrower", 0.5)]
        .into_iter()
        .map(|(id, cores)| VmView {
            vm_id: id.into(),
            allocated: Allocation::new(cores, 1024.0),
            limits: Allocation::new(1.0, 1740.0),
            cpu_need: Some(0.2),
            disks: Vec::new(),
            interfaces: Vec::new(),
        })
        .collect()
}

fn hypervisor(dir: &Path) -> SimulatedHypervisor {
    SimulatedHypervisor::load(&SimulatedConfig::replaying(dir.join("traces"))).expect("the simulated host")
}

/// The desks as a restarting agent opens them (an unreadable store fails here).
fn open(dir: &Path) -> (Arc<dyn KvStore>, ReservationDesk, SizingDesk) {
    let store: Arc<dyn KvStore> = Arc::new(SledStore::open(&dir.join("store")).expect("the store opens after a kill"));
    let (res_cap, size_cap) = capacity();
    let reservations = ReservationDesk::open(store.clone(), res_cap, 0.9).expect("the reservations load after a kill");
    let sizing = SizingDesk::open(store.clone(), size_cap, 0.0).expect("the leases load after a kill");
    (store, reservations, sizing)
}

/// The child: reserve, release the oldest past 20, grant a lease, revoke the oldest past 3, and
/// so on until killed; each acknowledged on stdout once the desk has returned (written and
/// flushed), as the agent answers the coordinator.
#[test]
#[ignore = "the writer process of the kill trials below, started by them"]
fn desk_writer_child() {
    let Some(dir) = std::env::var_os(STORE_ENV) else { return };
    let dir = Path::new(&dir);
    let trial = std::env::var(TRIAL_ENV).unwrap_or_default();
    let hv = hypervisor(dir);
    let (_store, mut reservations, mut sizing) = open(dir);
    let vms = views();
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut ack = |line: String| {
        // Marked, apart from what the test harness prints.
        writeln!(out, "@{line}").unwrap();
        out.flush().unwrap();
    };
    ack("ready".into());
    for k in 0.. {
        let id = format!("r-{trial}-{k}");
        reservations.reserve(Reservation::hard(&id, "incoming", 100.0, 256.0, u64::MAX / 2), 0, Resources::default()).unwrap();
        ack(format!("R+ {id}"));
        if reservations.book().entries().len() > 20 {
            let oldest = reservations.book().entries()[0].id.clone();
            ack(format!("R? {oldest}"));
            reservations.release(&oldest).unwrap();
            ack(format!("R- {oldest}"));
        }
        if sizing.leases().len() >= 3 {
            let oldest = sizing.leases().entries()[0].id.clone();
            ack(format!("L? {oldest}"));
            sizing.revoke(&oldest, "test", &vms, 0, &hv).unwrap();
            ack(format!("L- {oldest}"));
        }
        let lease = Lease {
            id: format!("l-{trial}-{k}"),
            resource: LeaseResource::Cpu,
            amount: 0.05,
            lender: Some("lender".into()),
            borrower: "borrower".into(),
            granted_at_ms: 0,
            deadline_ms: u64::MAX / 2,
            reason: "kill trial".into(),
        };
        sizing.grant(lease.clone(), &vms, Allocation::new(2.0, 0.0), 0, &hv).unwrap();
        ack(format!("L+ {}", lease.id));
    }
}

/// What the writer acknowledged: what must be in the store, what must not, and the one removal
/// of each kind it may have been making when it died.
#[derive(Default)]
struct Ledger {
    reserved: BTreeSet<String>,
    released: BTreeSet<String>,
    leased: BTreeSet<String>,
    revoked: BTreeSet<String>,
    releasing: Option<String>,
    revoking: Option<String>,
}

impl Ledger {
    /// Takes one line of the writer's; whether it was an acknowledgement.
    fn read(&mut self, line: &str) -> bool {
        let Some((kind, id)) = line.find('@').and_then(|at| line[at + 1..].split_once(' ')) else { return false };
        let id = id.to_string();
        match kind {
            "R+" => drop(self.reserved.insert(id)),
            "R?" => self.releasing = Some(id),
            "R-" => {
                self.releasing = None;
                self.reserved.remove(&id);
                self.released.insert(id);
            }
            "L+" => drop(self.leased.insert(id)),
            "L?" => self.revoking = Some(id),
            "L-" => {
                self.revoking = None;
                self.leased.remove(&id);
                self.revoked.insert(id);
            }
            other => panic!("unexpected line from the writer: {other} {id}"),
        }
        !kind.ends_with('?')
    }

    /// Compares with what the store holds after a kill; then takes the store's word for what
    /// the dead writer had under way (a write not yet acknowledged may or may not be there).
    fn check(&mut self, held: &BTreeSet<String>, leases: &BTreeSet<String>) -> Vec<String> {
        let mut problems = Vec::new();
        let lost = |acked: &BTreeSet<String>, stored: &BTreeSet<String>, maybe_gone: &Option<String>| -> Vec<String> {
            acked.iter().filter(|id| !stored.contains(*id) && maybe_gone.as_ref() != Some(*id)).cloned().collect()
        };
        let back = |gone: &BTreeSet<String>, stored: &BTreeSet<String>| -> Vec<String> { gone.intersection(stored).cloned().collect() };
        for (what, ids) in [
            ("acknowledged reservations lost", lost(&self.reserved, held, &self.releasing)),
            ("released reservations back", back(&self.released, held)),
            ("acknowledged leases lost", lost(&self.leased, leases, &self.revoking)),
            ("revoked leases back", back(&self.revoked, leases)),
        ] {
            if !ids.is_empty() {
                problems.push(format!("{what}: {ids:?}"));
            }
        }
        for (acked, gone, stored, under_way) in [
            (&mut self.reserved, &mut self.released, held, self.releasing.take()),
            (&mut self.leased, &mut self.revoked, leases, self.revoking.take()),
        ] {
            if let Some(id) = under_way
                && !stored.contains(&id)
            {
                acked.remove(&id);
                gone.insert(id);
            }
            for id in stored {
                if !gone.contains(id) {
                    acked.insert(id.clone());
                }
            }
        }
        problems
    }
}

#[test]
fn an_agent_killed_while_writing_reservations_and_leases_loses_nothing_it_acknowledged() {
    let trials: usize = std::env::var("PRESAGE_AGENT_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    for name in ["lender", "borrower"] {
        std::fs::write(traces.join(name), "100\n".repeat(300)).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut ledger = Ledger::default();
    let (mut acks, mut killed_mid_write) = (0usize, 0usize);
    let began = Instant::now();
    for trial in 0..trials {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "desk_writer_child", "--nocapture", "--test-threads", "1"])
            .env(STORE_ENV, dir.path())
            .env(TRIAL_ENV, trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Killed after a random number of acknowledgements (0 to 40), as soon as it prints it:
        // the write after it is under way.
        let wait_for = fastrand::usize(0..40);
        let mut seen = 0;
        let mut ready = false;
        for line in lines.by_ref() {
            let line = line.unwrap();
            // (The harness's "test desk_writer_child ... " comes before the first one.)
            if line.ends_with("@ready") {
                ready = true;
            } else if ledger.read(&line) {
                seen += 1;
                acks += 1;
            }
            if ready && seen >= wait_for {
                break;
            }
        }
        assert!(ready, "trial {trial}: the writer did not start (its store did not open?)");
        // A short random pause puts some kills inside the flush itself.
        if fastrand::bool() {
            std::thread::sleep(Duration::from_micros(fastrand::u64(0..2000)));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_write += 1;
        }
        // Drain what it printed before dying: acknowledged too.
        for line in lines.map_while(Result::ok) {
            if ledger.read(&line) {
                acks += 1;
            }
        }
        let (_store, reservations, sizing) = open(dir.path());
        let held: BTreeSet<String> = reservations.book().entries().iter().map(|r| r.id.clone()).collect();
        let leases: BTreeSet<String> = sizing.leases().entries().iter().map(|l| l.id.clone()).collect();
        let problems = ledger.check(&held, &leases);
        assert!(problems.is_empty(), "trial {trial}: {}", problems.join("; "));
    }
    eprintln!(
        "{trials} writers killed with SIGKILL ({killed_mid_write} while running) after {acks} acknowledged writes in {:.0} s: \
         the store opened every time, 0 acknowledged reservations or leases lost, 0 released or revoked ones back",
        began.elapsed().as_secs_f64()
    );
}
