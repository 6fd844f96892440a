//! The demand archive: every VM's 5-minute steps, kept on disk for months, so the forecast
//! models can be measured and retrained on this host's own VMs rather than on the public traces
//! alone (the agent's store keeps only the week the models read).
//!
//! Layout: `DIR/YYYY-M/<vm>.<epoch s of the first step>.csv`, one file per *segment* (a run of
//! contiguous steps of one VM on this host), in the Bitbrains format the models were trained on
//! (header line, eleven `;`+tab separated columns, one row per step). So a month folder is a
//! trace folder: `presagectl forecast-eval --trace DIR/2026-12` scores the models on it, and
//! `models/train.py --archive DIR` trains on it. Each row holds the means of the step's samples;
//! a few missed steps (an agent restarted, a slow cycle) are filled with the next step's values,
//! as the forecaster fills them; a longer gap (the VM away on another host, the agent down more
//! than an hour) or a new month starts a new segment. Only the newest `months` month folders
//! are kept.
//!
//! Crash safety: rows are appended whole; a row torn by a crash is cut off when the archive is
//! opened again, and the newest month's segments are resumed where they stopped.
//!
//! VM ids are written into file names with every byte outside `[A-Za-z0-9_-]` as `%XX`, so a
//! name has no `.` or `/` of its own.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use presage_forecast::{MAX_HORIZON, STEP_S};
use presage_protocol::pb::{VmSample, VmState};

/// The Bitbrains header line (the public traces' own).
pub const HEADER: &str = "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]";
/// Months kept when the config does not say.
pub const DEFAULT_MONTHS: u32 = 3;
/// Missed steps filled in rather than starting a new segment (the forecaster's own limit).
const MAX_FILLED_GAP: u64 = MAX_HORIZON as u64;
/// How far from a file's end its last row is looked for when the archive is opened.
const TAIL_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("demand archive {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), source }
}

/// A calendar month (UTC), the archive's folder unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    pub month: u8,
}

impl Month {
    /// The month step `step` (5-minute steps since the epoch) starts in.
    pub fn of_step(step: u64) -> Month {
        let t = time::OffsetDateTime::from_unix_timestamp((step * STEP_S) as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Month { year: t.year(), month: t.month() as u8 }
    }

    /// `YYYY-M`, as the public Bitbrains months are named.
    pub fn folder(self) -> String {
        format!("{}-{}", self.year, self.month)
    }

    /// The month of a folder name; `None` for any other name.
    pub fn parse(name: &str) -> Option<Month> {
        let (y, m) = name.split_once('-')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (all_digits(y) && all_digits(m)).then_some(())?;
        let month = Month { year: y.parse().ok()?, month: m.parse().ok()? };
        (1..=12).contains(&month.month).then_some(month)
    }
}

/// A VM id as it appears in a file name.
pub fn encode_vm(vm: &str) -> String {
    let mut out = String::with_capacity(vm.len());
    for b in vm.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The VM id of an [`encode_vm`] name; `None` when it is not one.
pub fn decode_vm(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = name.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The VM and first step of a segment file's name (`<vm>.<epoch s>.csv`).
fn parse_segment_name(name: &str) -> Option<(String, u64)> {
    let stem = name.strip_suffix(".csv")?;
    let (vm, epoch) = stem.rsplit_once('.')?;
    let epoch: u64 = epoch.parse().ok()?;
    (epoch.is_multiple_of(STEP_S)).then_some(())?;
    Some((decode_vm(vm)?, epoch / STEP_S))
}

/// One step's samples of one VM, summed.
#[derive(Debug, Default)]
struct StepSums {
    step: u64,
    samples: u32,
    cpu: f64,
    memory_used: f64,
    memory_samples: u32,
    disk_read: f64,
    disk_write: f64,
    net_rx: f64,
    net_tx: f64,
    vcpus: u32,
    memory_bytes: u64,
    vcpu_mhz: f64,
}

impl StepSums {
    fn add(&mut self, vm: &VmSample) {
        self.samples += 1;
        self.cpu += vm.cpu_utilisation.clamp(0.0, 1.0);
        if vm.memory_fraction().is_some() {
            self.memory_used += vm.memory_used_bytes as f64;
            self.memory_samples += 1;
        }
        self.disk_read += vm.disk_read_bytes_per_s.max(0.0);
        self.disk_write += vm.disk_write_bytes_per_s.max(0.0);
        self.net_rx += vm.net_rx_bytes_per_s.max(0.0);
        self.net_tx += vm.net_tx_bytes_per_s.max(0.0);
        self.vcpus = self.vcpus.max(vm.vcpus);
        self.memory_bytes = self.memory_bytes.max(vm.memory_bytes);
        self.vcpu_mhz = self.vcpu_mhz.max(vm.vcpu_mhz);
    }

    /// The step's row with the timestamp of step `at` (its own, or a missed step it fills). A
    /// VM whose memory in use was never reported gets a provisioned memory of 0, which readers
    /// take as "no memory series".
    fn row(&self, at: u64, host_mhz_per_core: f64) -> String {
        let n = self.samples.max(1) as f64;
        let cores = self.vcpus.max(1);
        let mhz = if self.vcpu_mhz > 0.0 { self.vcpu_mhz } else { host_mhz_per_core };
        let capacity = cores as f64 * mhz;
        let cpu = self.cpu / n;
        let (memory_kb, used_kb) = if self.memory_samples > 0 {
            (self.memory_bytes as f64 / 1024.0, self.memory_used / self.memory_samples as f64 / 1024.0)
        } else {
            (0.0, 0.0)
        };
        let kb = |bytes: f64| bytes / n / 1024.0;
        format!(
            "{};\t{cores};\t{capacity};\t{};\t{};\t{memory_kb};\t{used_kb};\t{};\t{};\t{};\t{}\n",
            at * STEP_S,
            cpu * capacity,
            cpu * 100.0,
            kb(self.disk_read),
            kb(self.disk_write),
            kb(self.net_rx),
            kb(self.net_tx),
        )
    }
}

/// The file a VM's steps are being appended to.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    month: Month,
    last_step: u64,
}

/// What [`DemandArchive::open`] found and mended.
#[derive(Debug, Default, PartialEq)]
pub struct Opened {
    /// Segments of the newest month that will be continued.
    pub resumed: usize,
    /// Files whose last row was torn (cut off).
    pub torn_rows_cut: usize,
    /// Month folders removed (beyond the months kept).
    pub months_removed: usize,
}

pub struct DemandArchive {
    dir: PathBuf,
    months: usize,
    host_mhz_per_core: f64,
    segments: HashMap<String, Segment>,
    pending: HashMap<String, StepSums>,
    newest: Option<Month>,
}

impl DemandArchive {
    /// Opens (creating) the archive in `dir`, keeping the newest `months` month folders; a VM
    /// whose samples give no vCPU speed is taken to have cores of `host_mhz_per_core`.
    pub fn open(dir: &Path, months: u32, host_mhz_per_core: f64) -> Result<(DemandArchive, Opened), ArchiveError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut archive = DemandArchive {
            dir: dir.to_path_buf(),
            months: months.max(1) as usize,
            host_mhz_per_core: if host_mhz_per_core > 0.0 { host_mhz_per_core } else { 1000.0 },
            segments: HashMap::new(),
            pending: HashMap::new(),
            newest: None,
        };
        let mut opened = Opened { months_removed: archive.prune()?, ..Opened::default() };
        let Some(newest) = archive.month_folders()?.pop() else { return Ok((archive, opened)) };
        archive.newest = Some(newest);
        let folder = dir.join(newest.folder());
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let path = entry.map_err(io(&folder))?.path();
            let Some((vm, first)) = path.file_name().and_then(|n| n.to_str()).and_then(parse_segment_name) else { continue };
            let (last, cut) = mend_tail(&path)?;
            opened.torn_rows_cut += cut as usize;
            let Some(last_step) = last.filter(|l| *l >= first) else { continue };
            if archive.segments.get(&vm).is_none_or(|s| s.last_step < last_step) {
                archive.segments.insert(vm, Segment { path, month: newest, last_step });
            }
        }
        opened.resumed = archive.segments.len();
        Ok((archive, opened))
    }

    /// The archive's month folders, oldest first.
    fn month_folders(&self) -> Result<Vec<Month>, ArchiveError> {
        let mut months = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            if entry.file_type().map_err(io(&self.dir))?.is_dir()
                && let Some(m) = entry.file_name().to_str().and_then(Month::parse)
            {
                months.push(m);
            }
        }
        months.sort();
        Ok(months)
    }

    /// Removes the month folders beyond the newest `months`; returns how many went.
    fn prune(&self) -> Result<usize, ArchiveError> {
        let folders = self.month_folders()?;
        let old = folders.len().saturating_sub(self.months);
        for m in &folders[..old] {
            let path = self.dir.join(m.folder());
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
        Ok(old)
    }

    /// Adds this cycle's samples of running VMs, taken during step `step`: every VM's step that
    /// ended before it is written. Keeps going past a VM it cannot write (the first error is returned).
    pub fn record(&mut self, step: u64, vms: &[VmSample]) -> Result<(), ArchiveError> {
        let mut first_error = None;
        let mut done: Vec<(String, StepSums)> = Vec::new();
        self.pending.retain(|vm, sums| {
            let keep = sums.step >= step;
            if !keep {
                done.push((vm.clone(), std::mem::take(sums)));
            }
            keep
        });
        done.sort_by_key(|(_, s)| s.step);
        for (vm, sums) in done {
            if let Err(e) = self.write(&vm, &sums) {
                first_error.get_or_insert(e);
            }
        }
        // Only running VMs: a shut-off domain, or the paused instance of a migration on its way
        // here, asks for nothing, and its zeros are not its demand.
        for vm in vms.iter().filter(|v| v.state == VmState::Running as i32) {
            let sums = self.pending.entry(vm.vm_id.clone()).or_insert_with(|| StepSums { step, ..StepSums::default() });
            if sums.step == step {
                sums.add(vm);
            }
        }
        // A VM gone longer than a fillable gap starts a new segment if it comes back.
        self.segments.retain(|_, s| s.last_step + MAX_FILLED_GAP + 1 >= step);
        first_error.map_or(Ok(()), Err)
    }

    /// Appends one completed step of `vm`.
    fn write(&mut self, vm: &str, sums: &StepSums) -> Result<(), ArchiveError> {
        let step = sums.step;
        let month = Month::of_step(step);
        let mut text = String::new();
        let path = match self.segments.get(vm) {
            Some(s) if s.month == month && step <= s.last_step => return Ok(()), // written before a restart
            Some(s) if s.month == month && step - s.last_step <= MAX_FILLED_GAP + 1 => {
                for missed in s.last_step + 1..step {
                    text.push_str(&sums.row(missed, self.host_mhz_per_core));
                }
                s.path.clone()
            }
            _ => {
                let folder = self.dir.join(month.folder());
                std::fs::create_dir_all(&folder).map_err(io(&folder))?;
                if self.newest.is_none_or(|n| month > n) {
                    self.newest = Some(month);
                    self.prune()?;
                }
                let path = folder.join(format!("{}.{}.csv", encode_vm(vm), step * STEP_S));
                // A file of this name left by a crash before its first row keeps its header.
                if std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
                    text.push_str(HEADER);
                    text.push('\n');
                }
                path
            }
        };
        text.push_str(&sums.row(step, self.host_mhz_per_core));
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        file.write_all(text.as_bytes()).map_err(io(&path))?;
        self.segments.insert(vm.to_string(), Segment { path, month, last_step: step });
        Ok(())
    }
}

/// Cuts a torn last row off `path` (one without its newline) and returns the step of the last
/// whole row (`None`: no row), and whether a row was cut.
fn mend_tail(path: &Path) -> Result<(Option<u64>, bool), ArchiveError> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(from)).map_err(io(path))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(io(path))?;
    let mut cut = false;
    if tail.last().is_some_and(|b| *b != b'\n') {
        let keep = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        tail.truncate(keep);
        file.set_len(from + keep as u64).map_err(io(path))?;
        cut = true;
    }
    drop(file);
    let last_row = tail.split(|b| *b == b'\n').rev().find(|l| !l.is_empty());
    let step = last_row
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split(';').next())
        .and_then(|ts| ts.trim().parse::<u64>().ok())
        .map(|epoch| epoch / STEP_S);
    Ok((step, cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimulatedConfig;
    use crate::hypervisor::simulated::SimulatedHypervisor;
    use presage_traces::{Selection, TraceFormat, load_dir, read_bitbrains};

    /// 2025-12-01 00:00 UTC, in steps.
    const DEC_1: u64 = 1_764_547_200 / STEP_S;

    fn sample(vm: &str, cpu: f64, used_mib: u64) -> VmSample {
        VmSample {
            vm_id: vm.into(),
            vcpus: 2,
            memory_bytes: 4 << 30,
            memory_used_bytes: used_mib << 20,
            cpu_utilisation: cpu,
            vcpu_mhz: 2000.0,
            state: VmState::Running as i32,
            ..VmSample::default()
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
        out.sort();
        out
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
        out
    }

    /// A Bitbrains-format month of three VMs, values varying step to step.
    fn write_trace(dir: &Path, steps: usize) {
        for (k, cores) in [(1u64, 2u32), (2, 4), (3, 1)] {
            let mut text = format!("{HEADER}\n");
            for i in 0..steps as u64 {
                let pct = ((i * 37 + k * 11) % 97) as f64 * 0.9 + 0.25;
                let used_kb = 500_000.0 + ((i * 7919 + k) % 1000) as f64 * 1024.0;
                let cap = cores as f64 * 2600.0;
                text.push_str(&format!(
                    "{};\t{cores};\t{cap};\t{};\t{pct};\t4194304;\t{used_kb};\t{};\t2.5;\t{};\t0.5\n",
                    1_372_629_804 + i * 300,
                    pct / 100.0 * cap,
                    (i % 5) as f64,
                    (i % 3) as f64 * 1.5,
                ));
            }
            std::fs::write(dir.join(format!("{k}.csv")), text).unwrap();
        }
    }

    #[test]
    fn a_replayed_trace_comes_back_from_the_archive_as_the_same_trace() {
        let trace_dir = tempfile::tempdir().unwrap();
        write_trace(trace_dir.path(), 400);
        let set = load_dir(trace_dir.path(), Some(TraceFormat::Bitbrains), Selection::default(), None).unwrap();
        let hv = SimulatedHypervisor::from_traces(set.clone(), &SimulatedConfig::replaying(trace_dir.path()));
        let archive_dir = tempfile::tempdir().unwrap();
        let (mut archive, opened) = DemandArchive::open(archive_dir.path(), 3, 2600.0).unwrap();
        assert_eq!(opened, Opened::default());
        // Three samples a step, as an agent sampling every 100 s would take; the step after the
        // last completes it.
        for s in 0..=400u64 {
            for _ in 0..3 {
                archive.record(DEC_1 + s, &hv.observe_step(s % 400).vms).unwrap();
            }
        }
        assert_eq!(
            files(archive_dir.path()),
            [format!("2025-12/1.{}.csv", DEC_1 * 300), format!("2025-12/2.{}.csv", DEC_1 * 300), format!("2025-12/3.{}.csv", DEC_1 * 300)]
        );
        let back = load_dir(&archive_dir.path().join("2025-12"), None, Selection::default(), None).unwrap();
        assert_eq!(back.format, TraceFormat::Bitbrains);
        for (a, b) in set.vms.iter().zip(&back.vms) {
            assert_eq!(b.name, format!("{}.{}", a.name, DEC_1 * 300));
            assert_eq!((b.len(), b.spec.vcpus, b.spec.memory_bytes), (a.len(), a.spec.vcpus, a.spec.memory_bytes));
            assert!((b.spec.cpu_mhz_per_core - a.spec.cpu_mhz_per_core).abs() < 1e-9);
            assert_eq!(b.start_epoch_s, Some(DEC_1 * 300));
            for (i, (x, y)) in a.cpu_series().iter().zip(b.cpu_series()).enumerate() {
                assert!((x - y).abs() < 1e-6, "{} step {i}: cpu {x} became {y}", a.name);
            }
            for (i, (x, y)) in a.memory_kb_series().iter().zip(b.memory_kb_series()).enumerate() {
                assert!((x - y).abs() <= 1.0, "{} step {i}: memory {x} KB became {y}", a.name);
            }
            for s in [0, 17, 399] {
                let (u, v) = (a.usage(s), b.usage(s));
                for (x, y) in [
                    (u.disk_read_bytes_per_s, v.disk_read_bytes_per_s),
                    (u.disk_write_bytes_per_s, v.disk_write_bytes_per_s),
                    (u.net_rx_bytes_per_s, v.net_rx_bytes_per_s),
                    (u.net_tx_bytes_per_s, v.net_tx_bytes_per_s),
                ] {
                    assert!((x - y).abs() < 1e-3, "{} step {s}: {x} B/s became {y}", a.name);
                }
            }
        }
    }

    #[test]
    fn a_step_is_its_samples_mean_short_gaps_are_filled_and_long_ones_start_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut archive, _) = DemandArchive::open(dir.path(), 3, 2600.0).unwrap();
        let mut record = |step: u64, vms: &[VmSample]| archive.record(DEC_1 + step, vms).unwrap();
        for s in 0..5 {
            record(s, &[sample("a", 0.2, 1000), sample("b", 0.5, 100)]);
            record(s, &[sample("a", 0.4, 3000)]); // "b" sampled once this step
        }
        // Steps 5 to 7 missed; step 8 fills them. Then a gap of 20 steps: a new segment.
        for s in [8, 9, 30, 31] {
            record(s, &[sample("a", 0.6, 2000)]);
        }
        let first = dir.path().join(format!("2025-12/a.{}.csv", DEC_1 * 300));
        let a = read_bitbrains(&first, "a".into()).unwrap();
        let cpu: Vec<f32> = a.cpu_series().to_vec();
        assert_eq!(cpu, [0.3, 0.3, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6, 0.6, 0.6].map(|v: f32| v));
        assert_eq!(a.memory_kb_series()[0], 2000.0 * 1024.0, "memory in use is the mean of the step's samples");
        let second = read_bitbrains(&dir.path().join(format!("2025-12/a.{}.csv", (DEC_1 + 30) * 300)), "a".into()).unwrap();
        assert_eq!(second.len(), 1, "step 31 is still open");
        // "b" left at step 5: its five steps were written when step 5 began.
        let b = read_bitbrains(&dir.path().join(format!("2025-12/b.{}.csv", DEC_1 * 300)), "b".into()).unwrap();
        assert_eq!(b.cpu_series(), [0.5; 5]);
        // A domain that is not running (shut off, or an incoming migration's paused instance) is not archived.
        for s in 40..43 {
            archive.record(DEC_1 + s, &[VmSample { state: VmState::Paused as i32, ..sample("c", 0.0, 100) }]).unwrap();
        }
        assert!(!walk(dir.path()).iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with("c.")));
    }

    #[test]
    fn a_new_month_gets_a_new_folder_and_only_the_newest_months_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("notes")).unwrap();
        let (mut archive, _) = DemandArchive::open(dir.path(), 2, 2600.0).unwrap();
        // The last two steps of November, then December; then January and February.
        let nov_30_2355 = DEC_1 - 1;
        for s in nov_30_2355 - 1..DEC_1 + 2 {
            archive.record(s, &[sample("a", 0.5, 100)]).unwrap();
        }
        assert_eq!(
            files(dir.path()),
            [format!("2025-11/a.{}.csv", (DEC_1 - 2) * 300), format!("2025-12/a.{}.csv", DEC_1 * 300)],
            "a segment does not cross into a new month"
        );
        let jan_1 = DEC_1 + 31 * 288;
        let feb_1 = jan_1 + 31 * 288;
        for s in [jan_1, jan_1 + 1, feb_1, feb_1 + 1] {
            archive.record(s, &[sample("a", 0.5, 100)]).unwrap();
        }
        let months: Vec<String> = files(dir.path()).iter().map(|f| f.split('/').next().unwrap().to_string()).collect();
        assert_eq!(months, ["2026-1", "2026-2"], "November went when January came, December when February did");
        assert!(dir.path().join("notes").is_dir(), "folders that are not months are left alone");
        drop(archive);
        let (_, opened) = DemandArchive::open(dir.path(), 1, 2600.0).unwrap();
        assert_eq!(opened.months_removed, 1);
    }

    #[test]
    fn a_restart_cuts_a_torn_row_and_continues_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut archive, _) = DemandArchive::open(dir.path(), 3, 2600.0).unwrap();
        for s in 0..6 {
            archive.record(DEC_1 + s, &[sample("web 1/α", 0.25, 100)]).unwrap();
        }
        drop(archive);
        let path = dir.path().join(format!("2025-12/web%201%2F%CE%B1.{}.csv", DEC_1 * 300));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(format!("{};\t2;\t40", (DEC_1 + 5) * 300).as_bytes()).unwrap(); // torn by a crash
        drop(f);
        assert!(read_bitbrains(&path, "x".into()).is_err(), "a torn row is malformed");

        let (mut archive, opened) = DemandArchive::open(dir.path(), 3, 2600.0).unwrap();
        assert_eq!((opened.resumed, opened.torn_rows_cut), (1, 1));
        // Down for three steps (5 to 7): they are filled, and the file goes on.
        for s in 8..11 {
            archive.record(DEC_1 + s, &[sample("web 1/α", 0.75, 100)]).unwrap();
        }
        assert_eq!(files(dir.path()).len(), 1);
        let t = read_bitbrains(&path, "x".into()).unwrap();
        assert_eq!(t.cpu_series(), [0.25, 0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75, 0.75]);
    }

    #[test]
    fn a_write_that_fails_is_reported_with_its_path_and_the_archive_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut archive, _) = DemandArchive::open(dir.path(), 3, 2600.0).unwrap();
        std::fs::write(dir.path().join("2025-12"), b"in the way").unwrap();
        archive.record(DEC_1, &[sample("a", 0.5, 100)]).unwrap();
        let e = archive.record(DEC_1 + 1, &[sample("a", 0.5, 100)]).unwrap_err().to_string();
        assert!(e.contains("2025-12"), "{e}");
        std::fs::remove_file(dir.path().join("2025-12")).unwrap();
        for s in 2..4 {
            archive.record(DEC_1 + s, &[sample("a", 0.5, 100)]).unwrap();
        }
        assert_eq!(files(dir.path()), [format!("2025-12/a.{}.csv", (DEC_1 + 1) * 300)], "step 0 is lost, the rest is written");
    }

    #[test]
    fn vm_ids_round_trip_through_file_names_and_unreported_memory_stays_unreported() {
        for id in ["9c2f6a1e-1b2c-4d5e-8f90-0a1b2c3d4e5f", "web.1/../x", "ü %41", ""] {
            let name = encode_vm(id);
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'%'), "{name}");
            assert_eq!(decode_vm(&name).as_deref(), Some(id));
            assert_eq!(parse_segment_name(&format!("{name}.600.csv")), Some((id.to_string(), 2)));
        }
        assert_eq!(decode_vm("a.b"), None);
        assert_eq!(decode_vm("%4"), None);
        assert_eq!(parse_segment_name("a.601.csv"), None, "not on a step");
        assert_eq!(
            ["2025-12", "1970-1", "2025-13", "25", "x-1"].map(Month::parse).map(|m| m.map(Month::folder)),
            [Some("2025-12".to_string()), Some("1970-1".to_string()), None, None, None]
        );

        let dir = tempfile::tempdir().unwrap();
        let (mut archive, _) = DemandArchive::open(dir.path(), 3, 2600.0).unwrap();
        for s in 0..3 {
            archive.record(DEC_1 + s, &[VmSample { memory_used_bytes: 0, ..sample("p", 0.5, 0) }]).unwrap();
        }
        let set = load_dir(&dir.path().join("2025-12"), None, Selection::default(), None).unwrap();
        assert_eq!(set.vms[0].spec.memory_bytes, 0);
        assert!(presage_forecast::eval::series_of(&set, presage_forecast::eval::Target::Memory).is_empty());
        assert_eq!(presage_forecast::eval::series_of(&set, presage_forecast::eval::Target::Cpu)[0].values, [0.5, 0.5]);
    }
}
