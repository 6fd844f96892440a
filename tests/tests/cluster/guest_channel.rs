//! The guest channel end to end on loopback: a real `presage-guest` process measures an
//! application (statsd timings pushed over UDP) and reports over a Unix socket standing in for
//! the virtio-serial port; a real agent, reaching libvirt's test driver through
//! `presage-libvirt`, finds the port in the domain's live XML, and the coordinator shows the
//! figures. The test plays QEMU's part: it binds the port's socket and relays what the guest
//! writes, message by message, so that it can also play a hostile guest.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presage_agent::config::HypervisorConfig;
use presage_protocol::guest::{GuestSession, HostSession, Piece, Splitter, new_key};
use presage_protocol::guest_pb::GuestReport;
use presage_protocol::pb::{GuestApps, ListVmsRequest};
use presage_protocol::tls::Role;
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn node_xml(port: &Path) -> String {
    format!(
        "<node><cpu><mode>fixed</mode><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads><active>4</active>\
         <mhz>2600</mhz><model>x86_64</model></cpu><memory>8388608</memory>\
         <domain type='test'><name>guest-1</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid><memory unit='MiB'>256</memory>\
         <vcpu>1</vcpu><os><type>hvm</type></os><devices><channel type='unix'><source mode='bind' path='{}'/>\
         <target type='virtio' name='org.presage.guest.0'/></channel></devices></domain></node>",
        port.display()
    )
}

/// QEMU's part: the agent connects to `port`, the guest to `guest`; what the agent sends goes to
/// the guest as is, what the guest sends goes to the agent one whole message at a time. The
/// returned writer reaches the agent (for hostile messages); the last message the guest sent
/// is kept (for replays).
/// The writer to the agent, and the last whole message the guest sent.
type Relay = (Arc<Mutex<UnixStream>>, Arc<Mutex<Option<Vec<u8>>>>);

fn relay(port: UnixListener, guest: UnixListener) -> Relay {
    let (agent_side, _) = port.accept().expect("the agent connects to the port");
    let (guest_side, _) = guest.accept().expect("the guest connects");
    let to_agent = Arc::new(Mutex::new(agent_side.try_clone().unwrap()));
    let last = Arc::new(Mutex::new(None));
    let (mut from_agent, mut to_guest) = (agent_side, guest_side.try_clone().unwrap());
    std::thread::spawn(move || std::io::copy(&mut from_agent, &mut to_guest));
    let (mut from_guest, writer, keep) = (guest_side, to_agent.clone(), last.clone());
    std::thread::spawn(move || {
        let mut splitter = Splitter::default();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from_guest.read(&mut buf) {
            if n == 0 {
                break;
            }
            for piece in splitter.push(&buf[..n]) {
                if let Piece::Message(m) = piece {
                    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
                    framed.extend(&m);
                    let _ = writer.lock().unwrap().write_all(&framed);
                    *keep.lock().unwrap() = Some(framed);
                }
            }
        }
    });
    (to_agent, last)
}

async fn guest_apps(op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>) -> Option<GuestApps> {
    let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
    vms.into_iter().find_map(|v| v.sample.filter(|s| s.name == "guest-1")?.guest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_figures_reach_the_coordinator_and_a_hostile_guest_is_counted_not_obeyed() {
    let bins = built_binaries(&["presage-libvirt", "presage-guest"]);
    let dir = tempfile::tempdir().unwrap();
    let (port, guest_sock) = (dir.path().join("port.sock"), dir.path().join("guest.sock"));
    std::fs::write(dir.path().join("node.xml"), node_xml(&port)).unwrap();
    let (port_listener, guest_listener) = (UnixListener::bind(&port).unwrap(), UnixListener::bind(&guest_sock).unwrap());

    // The application's statsd address, and the guest agent measuring it every second.
    let statsd = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let statsd_addr = statsd.local_addr().unwrap();
    drop(statsd);
    let cfg = dir.path().join("guest.toml");
    std::fs::write(
        &cfg,
        format!("port = \"unix:{}\"\ninterval = \"1s\"\n[[app]]\nname = \"web\"\nstatsd = \"{statsd_addr}\"\n", guest_sock.display()),
    )
    .unwrap();
    let mut guest = std::process::Command::new(bins.join("presage-guest")).arg("--config").arg(&cfg).spawn().unwrap();

    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let mut agent_cfg =
        simulated_agent(&pki, "hv-g", &coord.url, &dir.path().join("agent"), &shared_data().join("planetlab/20110303"), (0, 1), 1);
    agent_cfg.hypervisor = HypervisorConfig::Libvirt {
        uri: format!("test://{}", dir.path().join("node.xml").display()),
        driver: Some(bins.join("presage-libvirt")),
    };
    let agent = RunningAgent::start(agent_cfg);
    let (to_agent, last) = tokio::task::spawn_blocking(move || relay(port_listener, guest_listener)).await.unwrap();

    // The application reports latencies 1..=100 ms, again and again.
    let app = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pusher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let lines: String = (1..=100).map(|ms| format!("web.latency:{ms}|ms\n")).collect();
                let _ = app.send_to(lines.as_bytes(), statsd_addr);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let op = client(&coord.url, &pki.issue(Role::Viewer, "vera")).await.unwrap();
    let seen = eventually("the guest's figures at the coordinator", WAIT, || {
        let op = op.clone();
        async move { guest_apps(&op).await.filter(|g| g.apps.iter().any(|a| a.name == "web" && a.requests > 0)) }
    })
    .await;
    let web = seen.apps.iter().find(|a| a.name == "web").unwrap();
    // Every interval holds whole rounds of 1..=100: nearest-rank p50 50, p99 99.
    assert_eq!((web.latency_p50_ms, web.latency_p99_ms), (50.0, 99.0), "{seen:?}");
    assert!(web.throughput_per_s > 0.0 && web.error_rate == 0.0, "{seen:?}");
    let before = seen.frames.unwrap();
    // presagectl vms shows them.
    let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.unwrap().into_inner().vms;
    let views: Vec<presagectl::view::VmView> = vms.into_iter().map(Into::into).collect();
    let table = presagectl::view::vms_table(&views);
    assert!(table.contains("web 99.0"), "{table}");

    // A hostile guest: an oversized message, garbage, a replayed frame, a forged one, and a
    // flood; all written between whole messages of the real guest.
    let replay = last.lock().unwrap().clone().expect("the guest has sent a frame");
    let mut forger = GuestSession::from_hello(&HostSession::new(new_key(), 10).hello()[2..]).unwrap();
    let forged = forger.seal(&GuestReport { interval_s: 1.0, ..GuestReport::default() }).unwrap();
    {
        let mut w = to_agent.lock().unwrap();
        let mut big = 5000u16.to_be_bytes().to_vec();
        big.extend(vec![0u8; 5000]);
        w.write_all(&big).unwrap();
        w.write_all(&[0, 4, 0xff, 0xff, 0xff, 0xff]).unwrap();
        w.write_all(&replay).unwrap();
        w.write_all(&forged).unwrap();
        for _ in 0..200 {
            w.write_all(&forged).unwrap();
        }
    }
    let after = eventually("the hostile frames are counted", WAIT, || {
        let op = op.clone();
        async move {
            let f = guest_apps(&op).await?.frames?;
            (f.oversized > before.oversized
                && f.malformed > before.malformed
                && f.replayed > before.replayed
                && f.forged > before.forged
                && f.rate_limited > before.rate_limited)
                .then_some(f)
        }
    })
    .await;
    // The agent kept running and keeps taking the real guest's reports.
    eventually("the real guest's reports are still accepted", WAIT, || {
        let op = op.clone();
        async move { guest_apps(&op).await?.frames.filter(|f| f.accepted > after.accepted + 1) }
    })
    .await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pusher.join().unwrap();
    let _ = guest.kill();
    let _ = guest.wait();
    agent.stop().await;
    coord.stop().await;
}
