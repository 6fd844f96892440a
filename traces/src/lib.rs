//! Readers for the real VM utilisation traces presage replays: PlanetLab (CPU only, one text file
//! per VM, one integer percent per 5-minute line) and Bitbrains GWA-T-12 (multi-resource, one
//! gzip CSV per VM). The agent's simulated hypervisor and the trace-replay simulator both read
//! traces through this crate, so a VM's demand is the same number wherever it is replayed.
//!
//! Parsing is strict: a malformed line is an error naming the file and the line, never a guess.
//!
//! [`nab`] reads the Numenta Anomaly Benchmark's corpus layout and scores detectors by its rules.

pub mod nab;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Both trace sets sample every five minutes.
pub const STEP_SECONDS: u64 = 300;

/// CloudSim's four VM types for the PlanetLab experiment: (MIPS, RAM in MB).
pub const CLOUDSIM_VM_TYPES: [(f64, u64); 4] = [(2500.0, 870), (2000.0, 1740), (1000.0, 1740), (500.0, 613)];

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace folder {dir} cannot be read: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("trace file {path} cannot be read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Malformed { path: PathBuf, line: usize, reason: String },
    #[error("trace file {path} has no samples")]
    EmptyFile { path: PathBuf },
    #[error("trace folder {dir} holds no trace files{hint}")]
    EmptyDir { dir: PathBuf, hint: &'static str },
    #[error("cannot tell the trace format of {dir}: {why} (give the format explicitly)")]
    UnknownFormat { dir: PathBuf, why: String },
    #[error("vm-order file {path} has no entry for trace file {file:?}")]
    MissingOrderEntry { path: PathBuf, file: String },
    #[error("invalid shard {index}/{count}: the index must be below the count")]
    BadShard { index: usize, count: usize },
}

/// Which public trace set a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    PlanetLab,
    Bitbrains,
}

impl std::str::FromStr for TraceFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "planetlab" => Ok(TraceFormat::PlanetLab),
            "bitbrains" => Ok(TraceFormat::Bitbrains),
            o => Err(format!("unknown trace format {o:?} (expected planetlab or bitbrains)")),
        }
    }
}

impl TraceFormat {
    pub fn name(self) -> &'static str {
        match self {
            TraceFormat::PlanetLab => "planetlab",
            TraceFormat::Bitbrains => "bitbrains",
        }
    }
}

/// The size of a VM: what it was provisioned with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VmSpec {
    pub vcpus: u32,
    /// Per-vCPU speed: MHz for Bitbrains, MIPS for PlanetLab (CloudSim's unit).
    pub cpu_mhz_per_core: f64,
    pub memory_bytes: u64,
}

/// One step of one VM's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Busy fraction of the VM's vCPUs, 0..1.
    pub cpu_utilisation: f64,
    /// `None` when the trace does not record memory (PlanetLab).
    pub memory_used_bytes: Option<u64>,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
}

/// One VM's trace, stored column-wise in `f32` to keep a replaying agent small.
#[derive(Clone, Debug)]
pub struct VmTrace {
    /// The trace file's name (without `.csv.gz` for Bitbrains); used as the VM id.
    pub name: String,
    pub spec: VmSpec,
    /// When the first sample was taken, seconds since the Unix epoch; `None` when the trace does
    /// not say (PlanetLab: its samples start at midnight of the folder's day).
    pub start_epoch_s: Option<u64>,
    cpu: Vec<f32>,
    /// Empty when the trace has no such column.
    memory_kb: Vec<f32>,
    disk_read_kbps: Vec<f32>,
    disk_write_kbps: Vec<f32>,
    net_rx_kbps: Vec<f32>,
    net_tx_kbps: Vec<f32>,
}

impl VmTrace {
    pub fn len(&self) -> usize {
        self.cpu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cpu.is_empty()
    }

    /// Usage at `step`, wrapping around the end of the trace.
    pub fn usage(&self, step: u64) -> Usage {
        let i = (step % self.cpu.len() as u64) as usize;
        let col = |v: &Vec<f32>| v.get(i).map(|x| *x as f64 * 1024.0).unwrap_or(0.0);
        Usage {
            cpu_utilisation: self.cpu[i] as f64,
            memory_used_bytes: self.memory_kb.get(i).map(|kb| (*kb as f64 * 1024.0) as u64),
            disk_read_bytes_per_s: col(&self.disk_read_kbps),
            disk_write_bytes_per_s: col(&self.disk_write_kbps),
            net_rx_bytes_per_s: col(&self.net_rx_kbps),
            net_tx_bytes_per_s: col(&self.net_tx_kbps),
        }
    }

    /// The CPU utilisation column (fraction of the VM's vCPUs), for forecasting and simulation.
    pub fn cpu_series(&self) -> &[f32] {
        &self.cpu
    }

    /// Memory in use, KB per sample; empty when the trace has no memory column (PlanetLab).
    pub fn memory_kb_series(&self) -> &[f32] {
        &self.memory_kb
    }

    /// The most it reads and writes together in any step, bytes per second (0 when the trace
    /// has no disk columns).
    pub fn peak_disk_bytes_per_s(&self) -> f64 {
        let rd = self.disk_read_kbps.iter().map(|x| *x as f64);
        let both = rd.zip(self.disk_write_kbps.iter().map(|x| *x as f64)).map(|(r, w)| r + w);
        both.fold(0.0, f64::max) * 1024.0
    }

    /// The most traffic in its busier direction in any step, bytes per second (0 when the
    /// trace has no network columns).
    pub fn peak_net_bytes_per_s(&self) -> f64 {
        let busier = self.net_rx_kbps.iter().zip(&self.net_tx_kbps).map(|(r, t)| r.max(*t) as f64);
        busier.fold(0.0, f64::max) * 1024.0
    }
}

/// Which of a folder's VMs to load: the files are sorted by name, then every `count`-th file
/// starting at `index` is taken (so `count` agents can share one trace folder), up to `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub index: usize,
    pub count: usize,
    /// 0 means no limit.
    pub limit: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Selection { index: 0, count: 1, limit: 0 }
    }
}

/// VM sizes by trace file name, from a CloudSim `vm_order` CSV
/// (`vm_id,trace_file,vm_type,vm_mips,vm_pes,vm_ram_mb`).
#[derive(Clone, Debug)]
pub struct VmOrder {
    path: PathBuf,
    entries: Vec<(String, VmSpec)>,
}

impl VmOrder {
    pub fn load(path: &Path) -> Result<VmOrder, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read { path: path.into(), source })?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if n == 0 && line.starts_with("vm_id") || line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| TraceError::Malformed { path: path.into(), line: line_no, reason };
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 6 {
                return Err(bad(format!("expected 6 comma-separated fields, found {}", f.len())));
            }
            let mips: f64 = f[3].trim().parse().map_err(|_| bad(format!("vm_mips {:?} is not a number", f[3])))?;
            let pes: u32 = f[4].trim().parse().map_err(|_| bad(format!("vm_pes {:?} is not an integer", f[4])))?;
            let ram: u64 = f[5].trim().parse().map_err(|_| bad(format!("vm_ram_mb {:?} is not an integer", f[5])))?;
            if mips <= 0.0 || pes == 0 || ram == 0 {
                return Err(bad("vm_mips, vm_pes and vm_ram_mb must be positive".into()));
            }
            entries.push((f[1].to_string(), VmSpec { vcpus: pes, cpu_mhz_per_core: mips, memory_bytes: ram << 20 }));
        }
        Ok(VmOrder { path: path.into(), entries })
    }

    /// Trace file names in CloudSim's VM-id order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(f, _)| f.as_str())
    }

    pub fn spec(&self, file: &str) -> Result<VmSpec, TraceError> {
        self.entries
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, s)| *s)
            .ok_or_else(|| TraceError::MissingOrderEntry { path: self.path.clone(), file: file.into() })
    }
}

/// A loaded trace folder.
#[derive(Clone, Debug)]
pub struct TraceSet {
    /// The folder's name, e.g. `20110303`.
    pub name: String,
    pub format: TraceFormat,
    pub vms: Vec<VmTrace>,
}

impl TraceSet {
    pub fn step_seconds(&self) -> u64 {
        STEP_SECONDS
    }
}

fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, TraceError> {
    let rd = std::fs::read_dir(dir).map_err(|source| TraceError::Dir { dir: dir.into(), source })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| TraceError::Dir { dir: dir.into(), source })?;
        let path = entry.path();
        if path.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                files.push((name, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Guesses the format from the file names: Bitbrains files end in `.csv.gz` or `.csv`.
pub fn detect_format(dir: &Path) -> Result<TraceFormat, TraceError> {
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(TraceError::EmptyDir { dir: dir.into(), hint: "" });
    }
    let csv = files.iter().filter(|(n, _)| n.ends_with(".csv.gz") || n.ends_with(".csv")).count();
    match csv {
        0 => Ok(TraceFormat::PlanetLab),
        n if n == files.len() => Ok(TraceFormat::Bitbrains),
        n => Err(TraceError::UnknownFormat { dir: dir.into(), why: format!("{n} of {} files are CSV, the rest are not", files.len()) }),
    }
}

/// Loads the selected VMs of a trace folder. PlanetLab VM sizes come from `order` when given
/// (CloudSim's exact assignment), otherwise from CloudSim's rule `type = i / ceil(n / 4)` over the
/// folder's files sorted by name. Bitbrains sizes come from the files themselves.
pub fn load_dir(dir: &Path, format: Option<TraceFormat>, selection: Selection, order: Option<&VmOrder>) -> Result<TraceSet, TraceError> {
    if selection.count == 0 || selection.index >= selection.count {
        return Err(TraceError::BadShard { index: selection.index, count: selection.count });
    }
    let format = match format {
        Some(f) => f,
        None => detect_format(dir)?,
    };
    let all = list_files(dir)?;
    if all.is_empty() {
        return Err(TraceError::EmptyDir { dir: dir.into(), hint: "" });
    }
    let total = all.len();
    let block = total.div_ceil(CLOUDSIM_VM_TYPES.len());
    let mut vms = Vec::new();
    for (i, (name, path)) in all.into_iter().enumerate() {
        if i % selection.count != selection.index {
            continue;
        }
        if selection.limit != 0 && vms.len() >= selection.limit {
            break;
        }
        let vm = match format {
            TraceFormat::PlanetLab => {
                let spec = match order {
                    Some(o) => o.spec(&name)?,
                    None => {
                        let (mips, ram_mb) = CLOUDSIM_VM_TYPES[(i / block).min(3)];
                        VmSpec { vcpus: 1, cpu_mhz_per_core: mips, memory_bytes: ram_mb << 20 }
                    }
                };
                read_planetlab(&path, name, spec)?
            }
            TraceFormat::Bitbrains => {
                let vm_name = name.trim_end_matches(".gz").trim_end_matches(".csv").to_string();
                read_bitbrains(&path, vm_name)?
            }
        };
        vms.push(vm);
    }
    if vms.is_empty() {
        return Err(TraceError::EmptyDir { dir: dir.into(), hint: " for this shard" });
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(TraceSet { name, format, vms })
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, TraceError> {
    let file = std::fs::File::open(path).map_err(|source| TraceError::Read { path: path.into(), source })?;
    let reader: Box<dyn Read> =
        if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    Ok(Box::new(BufReader::new(reader)))
}

/// Reads one PlanetLab file: one integer percent (0..=100) per line.
pub fn read_planetlab(path: &Path, name: String, spec: VmSpec) -> Result<VmTrace, TraceError> {
    let mut cpu = Vec::with_capacity(288);
    for (n, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|source| TraceError::Read { path: path.into(), source })?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let bad = |reason: String| TraceError::Malformed { path: path.into(), line: n + 1, reason };
        let v: u32 = t.parse().map_err(|_| bad(format!("expected an integer CPU percent, found {t:?}")))?;
        if v > 100 {
            return Err(bad(format!("CPU percent {v} is above 100")));
        }
        cpu.push(v as f32 / 100.0);
    }
    if cpu.is_empty() {
        return Err(TraceError::EmptyFile { path: path.into() });
    }
    Ok(VmTrace {
        name,
        spec,
        start_epoch_s: None,
        cpu,
        memory_kb: Vec::new(),
        disk_read_kbps: Vec::new(),
        disk_write_kbps: Vec::new(),
        net_rx_kbps: Vec::new(),
        net_tx_kbps: Vec::new(),
    })
}

/// Reads one Bitbrains file (`;`+tab separated, header line, 11 columns).
pub fn read_bitbrains(path: &Path, name: String) -> Result<VmTrace, TraceError> {
    let mut t = VmTrace {
        name,
        spec: VmSpec { vcpus: 0, cpu_mhz_per_core: 0.0, memory_bytes: 0 },
        start_epoch_s: None,
        cpu: Vec::new(),
        memory_kb: Vec::new(),
        disk_read_kbps: Vec::new(),
        disk_write_kbps: Vec::new(),
        net_rx_kbps: Vec::new(),
        net_tx_kbps: Vec::new(),
    };
    let mut capacity_mhz = 0.0f64;
    let mut memory_kb = 0.0f64;
    for (n, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|source| TraceError::Read { path: path.into(), source })?;
        if n == 0 && line.starts_with("Timestamp") || line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| TraceError::Malformed { path: path.into(), line: n + 1, reason };
        let fields: Vec<&str> = line.split(';').map(str::trim).collect();
        if fields.len() != 11 {
            return Err(bad(format!("expected 11 ';'-separated fields, found {}", fields.len())));
        }
        let mut v = [0f64; 11];
        for (k, f) in fields.iter().enumerate() {
            v[k] = f.parse().map_err(|_| bad(format!("field {} is not a number: {f:?}", k + 1)))?;
            if !v[k].is_finite() || v[k] < 0.0 {
                return Err(bad(format!("field {} must be a finite non-negative number, found {f:?}", k + 1)));
            }
        }
        let cores = v[1] as u32;
        if t.start_epoch_s.is_none() {
            t.start_epoch_s = Some(v[0] as u64);
        }
        t.spec.vcpus = t.spec.vcpus.max(cores);
        capacity_mhz = capacity_mhz.max(v[2]);
        memory_kb = memory_kb.max(v[5]);
        t.cpu.push((v[4] / 100.0).clamp(0.0, 1.0) as f32);
        t.memory_kb.push(v[6] as f32);
        t.disk_read_kbps.push(v[7] as f32);
        t.disk_write_kbps.push(v[8] as f32);
        t.net_rx_kbps.push(v[9] as f32);
        t.net_tx_kbps.push(v[10] as f32);
    }
    if t.cpu.is_empty() {
        return Err(TraceError::EmptyFile { path: path.into() });
    }
    if t.spec.vcpus == 0 {
        return Err(TraceError::Malformed { path: path.into(), line: 2, reason: "CPU cores is 0 on every line".into() });
    }
    t.spec.cpu_mhz_per_core = capacity_mhz / t.spec.vcpus as f64;
    t.spec.memory_bytes = (memory_kb * 1024.0) as u64;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    #[test]
    fn planetlab_values_sizes_and_shards() {
        let d = tempfile::tempdir().unwrap();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            write(d.path(), name, &format!("{}\n{}\n7\n", i * 10, 100 - i));
        }
        let all = load_dir(d.path(), None, Selection::default(), None).unwrap();
        assert_eq!(all.format, TraceFormat::PlanetLab);
        assert_eq!(all.vms.len(), 5);
        // ceil(5/4) = 2 files per type: a,b type 0; c,d type 1; e type 2.
        assert_eq!(all.vms[0].spec.cpu_mhz_per_core, 2500.0);
        assert_eq!(all.vms[2].spec.cpu_mhz_per_core, 2000.0);
        assert_eq!(all.vms[4].spec.memory_bytes, 1740 << 20);
        assert_eq!(all.vms[1].usage(0).cpu_utilisation, 0.1f32 as f64);
        assert_eq!(all.vms[1].usage(1).cpu_utilisation, 0.99f32 as f64);
        assert_eq!(all.vms[1].usage(3).cpu_utilisation, all.vms[1].usage(0).cpu_utilisation, "wraps");
        let shard = load_dir(d.path(), None, Selection { index: 1, count: 2, limit: 0 }, None).unwrap();
        let names: Vec<_> = shard.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
    }

    #[test]
    fn malformed_planetlab_line_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "vm1", "5\n6\nx7\n");
        let err = load_dir(d.path(), None, Selection::default(), None).unwrap_err().to_string();
        assert!(err.contains("vm1:3"), "{err}");
        write(d.path(), "vm1", "5\n101\n");
        let err = load_dir(d.path(), None, Selection::default(), None).unwrap_err().to_string();
        assert!(err.contains("vm1:2") && err.contains("above 100"), "{err}");
    }

    #[test]
    fn empty_folder_and_bad_shard_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(load_dir(d.path(), None, Selection::default(), None), Err(TraceError::EmptyDir { .. })));
        write(d.path(), "a", "1\n");
        assert!(matches!(load_dir(d.path(), None, Selection { index: 2, count: 2, limit: 0 }, None), Err(TraceError::BadShard { .. })));
    }

    #[test]
    fn bitbrains_gz_columns() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("7.csv.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        writeln!(gz, "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]").unwrap();
        writeln!(gz, "1372629804;\t2;\t5000.0;\t1250.0;\t25.0;\t4096.0;\t1024.0;\t2.0;\t4.0;\t1.0;\t0.5").unwrap();
        writeln!(gz, "1372630104;\t2;\t5000.0;\t500.0;\t10.0;\t4096.0;\t2048.0;\t0.0;\t0.0;\t0.0;\t0.0").unwrap();
        gz.finish().unwrap();
        let set = load_dir(d.path(), None, Selection::default(), None).unwrap();
        assert_eq!(set.format, TraceFormat::Bitbrains);
        let vm = &set.vms[0];
        assert_eq!(vm.name, "7");
        assert_eq!(vm.spec, VmSpec { vcpus: 2, cpu_mhz_per_core: 2500.0, memory_bytes: 4096 * 1024 });
        let u = vm.usage(0);
        assert_eq!(u.cpu_utilisation, 0.25);
        assert_eq!(u.memory_used_bytes, Some(1024 * 1024));
        assert_eq!(u.disk_write_bytes_per_s, 4096.0);
        assert_eq!(vm.usage(1).memory_used_bytes, Some(2048 * 1024));
    }

    #[test]
    fn vm_order_gives_sizes_and_reports_missing_entries() {
        let d = tempfile::tempdir().unwrap();
        let traces = d.path().join("day");
        std::fs::create_dir(&traces).unwrap();
        write(&traces, "x", "1\n");
        write(&traces, "y", "2\n");
        let order = d.path().join("order.csv");
        std::fs::write(&order, "vm_id,trace_file,vm_type,vm_mips,vm_pes,vm_ram_mb\n0,x,3,500,1,613\n").unwrap();
        let o = VmOrder::load(&order).unwrap();
        let err = load_dir(&traces, None, Selection::default(), Some(&o)).unwrap_err();
        assert!(matches!(&err, TraceError::MissingOrderEntry { file, .. } if file == "y"), "{err}");
        std::fs::write(&order, "vm_id,trace_file,vm_type,vm_mips,vm_pes,vm_ram_mb\n0,x,3,500,1,613\n1,y,0,2500,1\n").unwrap();
        let err = VmOrder::load(&order).unwrap_err().to_string();
        assert!(err.contains("order.csv:3"), "{err}");
    }
}
