//! Decision to effect, per resize knob, on a real guest (`presage-bench knobs`).
//!
//! One real libvirt daemon runs the test guest (`tests/guest-image`, booted with
//! `presage_knobs=1`: it reports its online CPUs and MemTotal on the console as they change,
//! onlines hot-plugged CPUs, and reads its disk without the page cache in a loop) under TCG, its
//! vCPUs pinned to one host core. Each change goes through the agent's resize executor
//! (`presage_libvirt::host::LibvirtHost::resize`, the call the agent's driver makes), and its
//! decision is the instant that call starts. Its effect is when the change shows where it
//! matters:
//!
//! - CPU quota: the guest's CPU burner runs at the new rate (the domain's CPU time, over
//!   [`CPU_WINDOW`] windows lying wholly after the decision).
//! - CPU shares: the guest's share of a core it contends for with a second burning guest.
//! - Disk limit: the rate at which the guest reads its disk (QEMU's block statistics, over
//!   [`DISK_WINDOW`] windows).
//! - Memory (balloon): the guest's own MemTotal has moved 90 % of the way to the target.
//! - vCPUs: the guest has the new CPU online.
//! - Interface bandwidth: applied and read back where the host's kernel has the queueing
//!   disciplines libvirt uses (`htb`, `sfq`); where it does not, the executor's refusal is what is
//!   reported.
//!
//! A rate is known only at the end of a window, so no rate-based figure is below its window.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presage_libvirt::host::LibvirtHost;
use presage_protocol::pb::{DiskLimit, InterfaceLimit, VmSize};
use virt::connect::Connect;
use virt::domain::Domain;

use crate::TwoLibvirtHosts;
use crate::guest_image::{burner_xml, guest_image};

/// The window a CPU rate is measured over (two CFS periods).
pub const CPU_WINDOW: Duration = Duration::from_millis(200);
/// The window a disk rate is measured over (QEMU's throttle lets a burst of a tenth of a second
/// through).
pub const DISK_WINDOW: Duration = Duration::from_millis(500);
/// How long a change may take to show before it counts as not reached.
const EFFECT_LIMIT: Duration = Duration::from_secs(60);
/// How often counters and the console are read.
const POLL: Duration = Duration::from_millis(20);
const GUEST: &str = "knobs";
const MEMORY_MIB: u64 = 256;
const MAX_VCPUS: u32 = 4;
/// How long the guest is left after a CPU hot-plug before the next (its attempts at CPUs it
/// lists but that are not plugged end within this).
const VCPU_SETTLE: Duration = Duration::from_secs(25);

/// Whether rates (per second, one per counter) show a change.
type RateCheck = Box<dyn Fn(&[f64]) -> bool>;
/// Whether the guest's view of itself (online CPUs, MemTotal KiB) shows a change.
type ViewCheck = Box<dyn Fn((u32, u64)) -> bool>;

/// One change of one knob.
#[derive(Clone, Debug)]
pub struct KnobTiming {
    pub knob: &'static str,
    pub change: String,
    /// How long the executor's call took (set, read back, verified).
    pub executor: Duration,
    /// From the decision to the effect; `None`: not seen within the limit.
    pub effect: Option<Duration>,
}

/// What could not be measured, and why.
#[derive(Clone, Debug)]
pub struct KnobRefusal {
    pub knob: &'static str,
    pub change: String,
    pub error: String,
}

#[derive(Default, Debug)]
pub struct KnobReport {
    pub timings: Vec<KnobTiming>,
    pub refusals: Vec<KnobRefusal>,
}

/// The guest's own view of its size, from its console.
struct Console(PathBuf);

impl Console {
    /// The last `presage-knobs: cpus N mem_kib M` line.
    fn latest(&self) -> Option<(u32, u64)> {
        let text = std::fs::read(&self.0).ok()?;
        let text = String::from_utf8_lossy(&text);
        text.lines().rev().find_map(|l| {
            let rest = l.split("presage-knobs: ").nth(1)?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            match f.as_slice() {
                ["cpus", c, "mem_kib", m, ..] => Some((c.parse().ok()?, m.parse().ok()?)),
                _ => None,
            }
        })
    }

    fn wait_for(&self, start: Instant, ok: impl Fn((u32, u64)) -> bool) -> Option<Duration> {
        while start.elapsed() < EFFECT_LIMIT {
            if self.latest().is_some_and(&ok) {
                return Some(start.elapsed());
            }
            std::thread::sleep(POLL);
        }
        None
    }
}

/// Polls the counters `read` gives until the rates over the last `window` (lying wholly after
/// `start`) satisfy `ok`; returns when that window ended.
fn time_to_rate(
    start: Instant,
    window: Duration,
    read: impl Fn() -> anyhow::Result<Vec<f64>>,
    ok: impl Fn(&[f64]) -> bool,
) -> anyhow::Result<Option<Duration>> {
    let mut samples: VecDeque<(Instant, Vec<f64>)> = VecDeque::new();
    samples.push_back((Instant::now(), read()?));
    while start.elapsed() < EFFECT_LIMIT {
        std::thread::sleep(POLL);
        let (now, v) = (Instant::now(), read()?);
        while samples.len() > 1 && now.duration_since(samples[1].0) >= window {
            samples.pop_front();
        }
        let (then, old) = &samples[0];
        let span = now.duration_since(*then);
        if span >= window {
            let rates: Vec<f64> = v.iter().zip(old).map(|(a, b)| (a - b) / span.as_secs_f64()).collect();
            if ok(&rates) {
                return Ok(Some(now.duration_since(start)));
            }
        }
        samples.push_back((now, v));
    }
    Ok(None)
}

fn cpu_seconds(dom: &Domain) -> anyhow::Result<f64> {
    Ok(dom.info().context("reading a domain's CPU time")?.cpu_time as f64 / 1e9)
}

fn disk_bytes(dom: &Domain) -> anyhow::Result<f64> {
    Ok(dom.block_stats("vda").context("reading the guest's disk statistics")?.rd_bytes as f64)
}

/// The benchmark's guest: `MAX_VCPUS` vCPUs of which one online (the rest hot-pluggable), all
/// pinned to host CPU `cpu`; a CPU burner; a raw disk `vda` read without cache; a tap interface.
fn knobs_xml(image: &Path, console: &Path, disk: &Path, cpu: usize) -> String {
    let vcpus: String = (0..MAX_VCPUS)
        .map(|i| {
            format!("<vcpu id='{i}' enabled='{}' hotpluggable='{}'/>", if i == 0 { "yes" } else { "no" }, if i == 0 { "no" } else { "yes" })
        })
        .collect();
    let pins: String = (0..MAX_VCPUS).map(|i| format!("<vcpupin vcpu='{i}' cpuset='{cpu}'/>")).collect();
    format!(
        "<domain type='qemu'><name>{GUEST}</name><memory unit='MiB'>{MEMORY_MIB}</memory><vcpu current='1'>{MAX_VCPUS}</vcpu>\
         <vcpus>{vcpus}</vcpus><cputune>{pins}<emulatorpin cpuset='0'/></cputune>\
         <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 panic=-1 quiet presage_burn=1 presage_knobs=1</cmdline></os>\
         <devices><serial type='file'><source path='{}'/></serial><memballoon model='virtio'/>\
         <disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
         <interface type='ethernet'><model type='virtio'/></interface></devices></domain>",
        image.join("vmlinuz").display(),
        image.join("initrd.gz").display(),
        console.display(),
        disk.display()
    )
}

/// Runs every knob `rounds` times each way (vCPUs: as many hot-plugs as the guest has room for).
pub fn run(rounds: usize) -> anyhow::Result<KnobReport> {
    let image = guest_image();
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let hosts = TwoLibvirtHosts::start();
    let uri = hosts.uri("a");
    let conn = Connect::open(Some(&uri)).with_context(|| format!("connecting to {uri}"))?;
    let host = LibvirtHost::connect(&uri).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = hosts.shared_dir();
    let disk = dir.join("knobs.raw");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let console = Console(dir.join("knobs.console"));
    let dom = conn.create_domain_xml(&knobs_xml(&image, &console.0, &disk, cpu), 0).context("starting the guest")?;
    let Some(booted) = console.wait_for(Instant::now(), |_| true) else { bail!("the guest did not report its size within a minute") };
    let id = dom.uuid_string().context("the guest's UUID")?;
    let (_, base_kib) = console.latest().context("the guest's first report")?;
    eprintln!("guest up in {:.1} s ({base_kib} KiB MemTotal)", booted.as_secs_f64());
    let mut report = KnobReport::default();
    // The executor's call on a thread of its own, the effect watched from the same instant.
    let measure = |report: &mut KnobReport,
                   knob: &'static str,
                   change: String,
                   size: VmSize,
                   watch: &dyn Fn(Instant) -> anyhow::Result<Option<Duration>>|
     -> anyhow::Result<()> {
        let start = Instant::now();
        let (called, effect) = std::thread::scope(|scope| {
            let call = scope.spawn(|| host.resize(&id, &size).map(|_| start.elapsed()));
            let effect = watch(start);
            (call.join().expect("the executor's thread"), effect)
        });
        match called {
            Ok(executor) => report.timings.push(KnobTiming { knob, change, executor, effect: effect? }),
            Err(e) => report.refusals.push(KnobRefusal { knob, change, error: e.to_string() }),
        }
        Ok(())
    };
    let set = |report: &mut KnobReport, knob: &'static str, change: &str, size: VmSize| {
        if let Err(e) = host.resize(&id, &size) {
            report.refusals.push(KnobRefusal { knob, change: change.into(), error: e.to_string() });
        }
    };
    let cpu_rate = || cpu_seconds(&dom).map(|s| vec![s]);

    // The burner alone on its core: a quota is the rate it runs at.
    time_to_rate(Instant::now(), Duration::from_secs(1), cpu_rate, |r| r[0] > 0.8)?
        .context("the guest's burner never ran above 0.8 cores")?;
    for _ in 0..rounds {
        for (cores, ok) in [(0.3, (|r: &[f64]| r[0] <= 0.36) as fn(&[f64]) -> bool), (0.8, |r: &[f64]| r[0] >= 0.7)] {
            let change = format!("quota to {cores} cores");
            let size = VmSize { cpu_quota_cores: Some(cores), ..VmSize::default() };
            measure(&mut report, "cpu quota", change, size, &|start| time_to_rate(start, CPU_WINDOW, cpu_rate, ok))?;
        }
    }
    set(&mut report, "cpu quota", "no quota", VmSize { cpu_quota_cores: Some(0.0), ..VmSize::default() });

    // The disk: 2 MB/s and no limit.
    const LIMIT: u64 = 2_000_000;
    let disk_rate = || disk_bytes(&dom).map(|b| vec![b]);
    for _ in 0..rounds {
        let steps: [(u64, RateCheck); 2] =
            [(LIMIT, Box::new(|r| r[0] <= LIMIT as f64 * 1.2)), (0, Box::new(|r| r[0] >= LIMIT as f64 * 2.0))];
        for (bytes, ok) in steps {
            let change = if bytes == 0 { "no limit".to_string() } else { format!("limit {} MB/s", bytes / 1_000_000) };
            let size =
                VmSize { disks: vec![DiskLimit { device: "vda".into(), total_bytes_sec: bytes, total_iops_sec: 0 }], ..VmSize::default() };
            measure(&mut report, "disk", change, size, &|start| time_to_rate(start, DISK_WINDOW, disk_rate, &ok))?;
        }
    }

    // The balloon: 96 MiB out and back; the guest's MemTotal 90 % of the way there.
    const OUT_MIB: u64 = 96;
    let drop_kib = OUT_MIB * 1024;
    for _ in 0..rounds {
        let steps: [(u64, ViewCheck); 2] = [
            (MEMORY_MIB - OUT_MIB, Box::new(move |(_, m)| m + drop_kib * 9 / 10 <= base_kib)),
            (MEMORY_MIB, Box::new(move |(_, m)| m + drop_kib / 10 >= base_kib)),
        ];
        for (mib, ok) in steps {
            let change = format!("memory to {mib} MiB");
            let size = VmSize { memory_mib: Some(mib), ..VmSize::default() };
            measure(&mut report, "memory", change, size, &|start| Ok(console.wait_for(start, &ok)))?;
        }
    }

    // Shares: a second burner on the same core; the guest's share of it follows its weight.
    let rival_console = dir.join("rival.console");
    let rival =
        conn.create_domain_xml(&burner_xml("rival", &image, &rival_console, cpu, 1, true), 0).context("starting the rival guest")?;
    let both = || Ok(vec![cpu_seconds(&dom)?, cpu_seconds(&rival)?]);
    let share = |r: &[f64]| r[0] / (r[0] + r[1]).max(1e-9);
    time_to_rate(Instant::now(), Duration::from_secs(1), both, |r| r[1] > 0.3)
        .context("watching the rival")?
        .context("the rival never burned")?;
    set(&mut report, "cpu shares", "shares to 1024", VmSize { cpu_shares: Some(1024), ..VmSize::default() });
    time_to_rate(Instant::now(), Duration::from_secs(1), both, |r| (share(r) - 0.5).abs() < 0.1)?
        .context("the two burners never split their core evenly at equal shares")?;
    for _ in 0..rounds {
        let steps: [(u64, RateCheck); 2] = [(4096, Box::new(move |r| share(r) >= 0.7)), (1024, Box::new(move |r| share(r) <= 0.6))];
        for (shares, ok) in steps {
            let change = format!("shares to {shares} (rival 1024)");
            let size = VmSize { cpu_shares: Some(shares), ..VmSize::default() };
            measure(&mut report, "cpu shares", change, size, &|start| time_to_rate(start, CPU_WINDOW, both, &ok))?;
        }
    }
    let _ = rival.destroy();

    // vCPUs: hot-plugged one at a time (each after the guest has settled from the last: see
    // tests/guest-image/build.sh on the CPUs it wrongly lists as present); then one taken away.
    for n in 2..=MAX_VCPUS.min(rounds as u32 + 1) {
        let size = VmSize { vcpus: Some(n), ..VmSize::default() };
        measure(&mut report, "vcpus", format!("vcpus {} to {n}", n - 1), size, &|start| Ok(console.wait_for(start, |(c, _)| c == n)))?;
        std::thread::sleep(VCPU_SETTLE);
    }
    let online = console.latest().map_or(1, |(c, _)| c);
    if online > 1 {
        let size = VmSize { vcpus: Some(online - 1), ..VmSize::default() };
        measure(&mut report, "vcpus", format!("vcpus {online} to {}", online - 1), size, &|start| {
            Ok(console.wait_for(start, |(c, _)| c == online - 1))
        })?;
    }

    // Interface bandwidth on the guest's tap.
    let iface = host
        .read_size_all(&id)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .size
        .and_then(|s| s.interfaces.first().map(|i| i.device.clone()))
        .context("the guest's tap interface")?;
    for (kib, change) in [(1000, "in/out 1000 KiB/s"), (0, "no limit")] {
        let size = VmSize {
            interfaces: vec![InterfaceLimit { device: iface.clone(), inbound_kib_s: kib, outbound_kib_s: kib }],
            ..VmSize::default()
        };
        measure(&mut report, "interface", change.into(), size, &|_| Ok(None))?;
    }
    let _ = dom.destroy();
    drop(hosts);
    Ok(report)
}

/// Median and largest of `v` (empty: `None`).
pub fn median_max(mut v: Vec<Duration>) -> Option<(Duration, Duration)> {
    v.sort();
    Some((*v.get(v.len() / 2)?, *v.last()?))
}
