//! `presagectl demo` stops its whole cluster on SIGTERM, SIGINT and SIGHUP, whenever the signal
//! arrives, and its daemons stop by themselves if presagectl is killed outright (SIGKILL): no
//! process of the demo survives it. Runs the real binaries.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The demo's three binaries, built with this test's profile; the folder they are in.
fn binaries() -> PathBuf {
    presage_tests::built_binaries(&["presagectl", "presage-coordinator", "presage-agent"])
}

/// A small PlanetLab-format trace folder: six VMs, a day of 5-minute steps.
fn trace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for v in 0..6 {
        let lines: String = (0..288).map(|i| format!("{}\n", 10 + (i * 7 + v * 13) % 60)).collect();
        std::fs::write(dir.path().join(format!("vm-{v}")), lines).unwrap();
    }
    dir
}

/// Processes whose command line names `path` (the demo's daemons are started with their
/// configuration files in the demo's work folder).
fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    work: Option<PathBuf>,
}

impl Demo {
    fn start(bin_dir: &Path, trace: &Path, cwd: &Path) -> Demo {
        let mut child = Command::new(bin_dir.join("presagectl"))
            .args(["demo", "--agents", "2", "--duration", "10m", "--refresh", "1s", "--sample-interval", "1s", "--trace"])
            .arg(trace)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting presagectl demo");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines, seen: Vec::new(), work: None }
    }

    /// Reads the demo's output until a line contains `marker`; remembers the work folder.
    fn wait_for(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(w) = line.strip_prefix("work folder (certificates, configs, stores, logs): ") {
                        self.work = Some(PathBuf::from(w));
                    }
                    let hit = line.contains(marker);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no line with {marker:?} from the demo; it printed:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the child we started and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, signal) }, 0);
    }

    /// Waits for presagectl to exit and returns its status and the rest of its output.
    fn finish(mut self) -> (std::process::ExitStatus, String, PathBuf) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("presagectl demo did not exit within 60 s of the signal; it printed:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.seen.extend(self.lines.try_iter());
        (status, self.seen.join("\n"), self.work.expect("the demo printed its work folder"))
    }
}

#[test]
fn sigterm_sigint_and_sighup_stop_every_process_of_the_demo() {
    let bins = binaries();
    let trace = trace();
    let cwd = tempfile::tempdir().unwrap();
    // (signal, when it is sent: after the first table, or while the daemons start)
    for (signal, name, marker) in [
        (libc::SIGTERM, "SIGTERM", "busiest VMs:"),
        (libc::SIGHUP, "SIGHUP", "busiest VMs:"),
        (libc::SIGINT, "SIGINT", "busiest VMs:"),
        (libc::SIGTERM, "SIGTERM", "work folder"),
    ] {
        let mut demo = Demo::start(&bins, trace.path(), cwd.path());
        demo.wait_for(marker);
        let work = demo.work.clone().expect("the work folder is printed first");
        if marker != "work folder" {
            assert!(processes_naming(&work).len() >= 3, "the coordinator and both agents run: {:?}", processes_naming(&work));
        }
        demo.signal(signal);
        let (status, out, work) = demo.finish();
        assert!(status.success(), "{name} ({marker}): presagectl exited with {status}:\n{out}");
        assert!(out.contains(&format!("stopping ({name})")), "{name} ({marker}): it said why it stopped:\n{out}");
        let left = processes_naming(&work);
        assert!(left.is_empty(), "{name} ({marker}): demo processes survived: {left:?}\n{out}");
        assert!(!work.exists(), "{name} ({marker}): the temporary work folder {} is left behind", work.display());
    }
}

#[test]
fn the_daemons_stop_by_themselves_when_presagectl_is_killed() {
    let bins = binaries();
    let trace = trace();
    let cwd = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(&bins, trace.path(), cwd.path());
    demo.wait_for("busiest VMs:");
    let work = demo.work.clone().unwrap();
    assert!(processes_naming(&work).len() >= 3, "{:?}", processes_naming(&work));
    demo.signal(libc::SIGKILL);
    let (status, _, work) = demo.finish();
    assert!(!status.success());
    // The kernel sends each daemon SIGTERM (PR_SET_PDEATHSIG); they stop as they would on any.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut left = processes_naming(&work);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = processes_naming(&work);
    }
    assert!(left.is_empty(), "demo processes survived presagectl's SIGKILL: {left:?}");
    let _ = std::fs::remove_dir_all(&work);
}
