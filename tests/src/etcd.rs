//! Real etcd members for the tests: a cluster of `n` started from Debian's `etcd-server` (or
//! `$PRESAGE_ETCD`) on loopback ports of their own, data in a temporary folder, each member
//! killable and restartable; every member is killed when the cluster is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `$PRESAGE_ETCD`, else `/usr/bin/etcd`; panics saying how to get it.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PRESAGE_ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.exists(),
        "no etcd at {} (looked at $PRESAGE_ETCD, then /usr/bin/etcd): `./presage.sh test` installs Debian's etcd-server",
        path.display()
    );
    path
}

/// A loopback port nothing listens on now, below the kernel's ephemeral range (32768 and up on
/// Linux): a port the kernel hands out (`bind(0)`) can be taken, before etcd binds it or while a
/// killed member is down, by any process's outgoing connection, and etcd then fails with "address
/// already in use". Ports are tried in a sequence that differs per process and never repeats within
/// one, so concurrent tests do not pick the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` (etcd's `--listen-metrics-urls`), whatever the client port speaks.
    health_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
    /// The members' certificate, and the CA whose clients they accept (mutual TLS on the
    /// client port); `None`: plain HTTP.
    tls: Option<presage_protocol::tls::TlsFiles>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each says it is healthy (a leader is elected).
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, None)
    }

    /// [`start`](Self::start) with mutual TLS on the client port: `server` is the members'
    /// certificate and key, its CA the one clients' certificates must come from.
    pub fn start_with(n: usize, server: Option<presage_protocol::tls::TlsFiles>) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("a folder for etcd");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                health_port: free_port(),
                child: None,
            })
            .collect();
        let initial = members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect::<Vec<_>>().join(",");
        let mut c = EtcdCluster { dir, members, initial, tls: server };
        for i in 0..n {
            c.spawn(i, "new");
        }
        for i in 0..n {
            c.wait_healthy(i, Duration::from_secs(30));
        }
        c
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).expect("etcd log file");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut etcd = Command::new(etcd_binary());
        if let Some(t) = &self.tls {
            etcd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = etcd
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", m.health_port)])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial, "--initial-cluster-state", state, "--initial-cluster-token", "presage-test"])
            // Quick elections on loopback (defaults: 100 ms heartbeat, 1 s election timeout).
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` answers `/health` with `"health":"true"`.
    pub fn wait_healthy(&self, i: usize, limit: Duration) {
        let port = self.members[i].health_port;
        let until = Instant::now() + limit;
        loop {
            if health(port).is_some_and(|b| b.contains("\"health\":\"true\"")) {
                return;
            }
            assert!(Instant::now() < until, "etcd member {} not healthy within {limit:?}; its log: {}", self.members[i].name, self.log(i));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.members[i].name))).unwrap_or_default()
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members.iter().map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port)).collect()
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy(i, Duration::from_secs(30));
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The body of `GET /health` on a member's client port, if it answers.
fn health(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}
