//! The real `presage-coordinator` binary as a child process, for the fault suite: started from a
//! configuration file, logging to a file, killed with any signal, started again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A coordinator process; killed (SIGKILL) on drop.
pub struct CoordinatorProcess {
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl CoordinatorProcess {
    /// Starts `bin/presage-coordinator --config config`, stderr appended to `log`.
    pub fn start(bin: &Path, config: PathBuf, log: PathBuf) -> CoordinatorProcess {
        let mut p = CoordinatorProcess { config, log, child: None };
        p.spawn(bin);
        p
    }

    /// Starts it (again).
    pub fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("coordinator log");
        let child = Command::new(bin.join("presage-coordinator"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting presage-coordinator");
        self.child = Some(child);
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGTERM...) without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child this harness started; no memory is shared.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// SIGKILL: no resignation, no cleanup; waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for it to exit by itself; its exit status.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.take().and_then(|mut c| c.wait().ok())
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
