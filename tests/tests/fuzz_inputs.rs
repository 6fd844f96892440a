//! Fuzzing of every input that comes from outside a trust boundary, with property tests
//! (proptest): arbitrary bytes, and valid inputs mutated (bytes flipped, inserted, removed,
//! cut short). Each input either parses or is refused with an error that says what is wrong —
//! never a panic. Bounded for CI: `PRESAGE_FUZZ_CASES` cases per property (default 1,000).
//!
//! - protobuf messages from agents (decoded, validated, then registered and ingested into the
//!   coordinator's state when valid) and driver frames;
//! - REST bodies, through the coordinator's real router (each route with a JSON body);
//! - dependency declarations (JSON);
//! - configuration files of the agent, the coordinator and the guest agent;
//! - trace files (PlanetLab, Bitbrains, NAB series);
//! - guest frames, through the agent's host side of the guest channel.

use std::path::Path;
use std::time::{Duration, Instant};

use presage_protocol::pb::{self, AgentMessage, agent_message};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;

fn runner() -> TestRunner {
    let cases = std::env::var("PRESAGE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000);
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// `valid` with a few random edits: flipped bytes, inserted bytes, removed ranges, cut short.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>(), 1usize..16), 1..6);
    edits.prop_map(move |edits| {
        let mut b = valid.clone();
        for (kind, at, byte, n) in edits {
            let i = if b.is_empty() { 0 } else { at.index(b.len()) };
            match kind {
                0 if !b.is_empty() => b[i] ^= byte.max(1),
                1 => b.splice(i..i, std::iter::repeat_n(byte, n)).for_each(drop),
                2 if !b.is_empty() => drop(b.drain(i..(i + n).min(b.len()))),
                _ => b.truncate(i),
            }
        }
        b
    })
}

/// Arbitrary bytes, or `valid` mutated.
fn inputs(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), mutated(valid)]
}

fn valid_register() -> pb::Register {
    pb::Register {
        protocol_version: presage_protocol::PROTOCOL_VERSION,
        host_id: "hv-1".into(),
        agent_version: "1".into(),
        capacity: Some(pb::HostCapacity { cpu_cores: 8, cpu_mhz_per_core: 2600.0, memory_bytes: 32 << 30, ..Default::default() }),
        hypervisor_kind: "simulated".into(),
        boot_id: "b".into(),
        zone: "z1".into(),
        rack: "r1".into(),
        ..Default::default()
    }
}

fn valid_report() -> pb::Report {
    pb::Report {
        seq: 3,
        sampled_at_ms: 1_700_000_000_000,
        host: Some(pb::HostUsage { cpu_utilisation: 0.4, ..Default::default() }),
        vms: (0..3)
            .map(|i| pb::VmSample {
                vm_id: format!("vm-{i}"),
                vcpus: 2,
                memory_bytes: 4 << 30,
                cpu_utilisation: 0.3,
                state: 1,
                disk_devices: vec!["vda".into()],
                interface_devices: vec!["vnet0".into()],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn protobuf_messages_from_agents_are_refused_or_taken_never_a_panic() {
    use presage_coordinator::state::ClusterState;
    use presage_coordinator::validate;
    let valid = [
        AgentMessage { body: Some(agent_message::Body::Register(valid_register())) }.encode_to_vec(),
        AgentMessage { body: Some(agent_message::Body::Report(valid_report())) }.encode_to_vec(),
    ];
    let state = std::cell::RefCell::new(ClusterState::new(Duration::from_secs(30)));
    state.borrow_mut().register(&valid_register(), 1, Instant::now());
    let (decoded, taken) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    for v in valid {
        runner()
            .run(&inputs(v), |bytes| {
                let Ok(msg) = AgentMessage::decode(bytes.as_slice()) else { return Ok(()) };
                decoded.set(decoded.get() + 1);
                match msg.body {
                    Some(agent_message::Body::Register(r)) if validate::register(&r).is_ok() => {
                        taken.set(taken.get() + 1);
                        state.borrow_mut().register(&r, 2, Instant::now());
                    }
                    // ingest validates itself; an invalid report is an error, not a panic.
                    Some(agent_message::Body::Report(r)) if state.borrow_mut().ingest("hv-1", 1, r.clone(), Instant::now()).is_ok() => {
                        taken.set(taken.get() + 1);
                    }
                    Some(agent_message::Body::MigrationProgress(p)) => drop(validate::migration_progress(&p)),
                    _ => {}
                }
                Ok(())
            })
            .unwrap();
    }
    let (decoded, taken) = (decoded.get(), taken.get());
    assert!(decoded > 0 && taken > 0, "the mutations reach the validation ({decoded} decoded, {taken} taken)");
}

#[test]
fn driver_frames_are_refused_or_read_never_a_panic() {
    let mut valid = Vec::new();
    presage_protocol::frames::write_frame(&mut valid, &valid_report()).unwrap();
    presage_protocol::frames::write_frame(&mut valid, &valid_register()).unwrap();
    runner()
        .run(&inputs(valid), |bytes| {
            let mut input = bytes.as_slice();
            // Up to the first error, as the driver's reader does.
            while let Ok(Some(_)) = presage_protocol::frames::read_frame::<pb::Report>(&mut input) {}
            Ok(())
        })
        .unwrap();
}

#[test]
fn guest_frames_are_counted_as_refused_or_taken_never_a_panic() {
    use presage_protocol::guest::{GuestSession, HostSession, new_key};
    let mut host = HostSession::new(new_key(), 1_000_000);
    // The hello without its two-byte length prefix, as the guest's splitter hands it over.
    let mut guest = GuestSession::from_hello(&host.hello()[2..]).expect("the host's hello");
    let report = presage_protocol::guest_pb::GuestReport {
        sent_ms: 1,
        interval_s: 5.0,
        apps: vec![presage_protocol::guest_pb::AppFigures {
            name: "shop".into(),
            latency_p50_ms: 5.0,
            latency_p95_ms: 20.0,
            latency_p99_ms: 35.0,
            throughput_per_s: 120.0,
            requests: 600,
            ..Default::default()
        }],
        oom_kills: 0,
    };
    let valid = guest.seal(&report).expect("a small report seals");
    assert_eq!(host.receive(&valid, 0).len(), 1, "the unmutated frame is taken");
    let (host, now) = (std::cell::RefCell::new(host), std::cell::Cell::new(1));
    runner()
        .run(&inputs(valid), |bytes| {
            now.set(now.get() + 1);
            let _ = host.borrow_mut().receive(&bytes, now.get());
            Ok(())
        })
        .unwrap();
    let counters = &host.borrow().counters;
    assert!(counters.dropped() > 0, "the mutated frames are counted as dropped: {counters:?}");
}

/// Writes `bytes` to a file named `name` in a fresh folder and calls `f` with its path.
fn with_file<T>(name: &str, bytes: &[u8], f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    f(&path)
}

#[test]
fn configuration_files_are_refused_with_the_reason_or_loaded_never_a_panic() {
    let agent = b"host_id = \"hv-1\"\ncoordinator = [\"https://10.0.0.1:7400\", \"https://10.0.0.2:7400\"]\ndata_dir = \"/var/lib/presage\"\nsample_interval = \"10s\"\n[tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n[hypervisor]\nkind = \"simulated\"\ntrace_dir = \"/t\"\n[capacity]\ndisk_mb_per_s = 400\n".to_vec();
    let coordinator = b"listen = \"0.0.0.0:7400\"\ndata_dir = \"/var/lib/presage-coordinator\"\nhost_timeout = \"30s\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n[policy]\nname = \"presage\"\ninterval = \"60s\"\n[cluster]\nstore = \"etcd\"\nelection = true\n[cluster.etcd]\nendpoints = [\"https://10.0.0.1:2379\"]\n".to_vec();
    let guest = b"port = \"/dev/virtio-ports/org.presage.guest.0\"\napp = \"shop\"\ninterval = \"5s\"\n".to_vec();
    runner()
        .run(&inputs(agent), |bytes| {
            if let Err(e) = presage_agent::config::AgentConfig::parse(&String::from_utf8_lossy(&bytes), Path::new("agent.toml")) {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(&inputs(coordinator), |bytes| {
            if let Err(e) =
                presage_coordinator::config::CoordinatorConfig::parse(&String::from_utf8_lossy(&bytes), Path::new("coordinator.toml"))
            {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(&inputs(guest), |bytes| {
            let _ = with_file("guest.toml", &bytes, presage_guest::config::GuestConfig::load);
            Ok(())
        })
        .unwrap();
}

#[test]
fn dependency_declarations_are_refused_with_the_field_or_taken_never_a_panic() {
    let valid = br#"[{"vm":"web-1","app":"shop","type":"frontend","requires":[{"type":"cart","latency_ms":2}],"prefers":[{"vm":"cache-1","latency_ms":1,"importance":0.5}],"spread":{"group":"web","across":"rack"}},{"vm":"cart-1","app":"shop","type":"cart"}]"#.to_vec();
    let (refused, taken) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner()
        .run(&inputs(valid), |bytes| {
            match presage_coordinator::ecosystem::parse_declarations(&bytes) {
                Ok(_) => taken.set(taken.get() + 1),
                Err((field, why)) => {
                    prop_assert!(!field.is_empty() && !why.is_empty(), "an error names the field and the reason");
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(refused.get() > 0, "mutations are refused ({} taken)", taken.get());
}

#[test]
fn trace_files_are_refused_with_the_reason_or_read_never_a_panic() {
    let planetlab = (0..288).map(|i| format!("{}\n", (i * 7) % 100)).collect::<String>().into_bytes();
    let bitbrains = b"Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]\n1376314846;\t4;\t11703.99824;\t10.39999908;\t0.088;\t67108864;\t6129274.4;\t0;\t2.6;\t0;\t0\n1376315146;\t4;\t11703.99824;\t15.6;\t0.133;\t67108864;\t5279192.0;\t0;\t4.2;\t1.1;\t0.2\n".to_vec();
    let nab = b"timestamp,value\n2014-04-01 00:00:00,20.5\n2014-04-01 00:05:00,21.0\n2014-04-01 00:10:00,19.2\n".to_vec();
    let spec = presage_traces::VmSpec { vcpus: 1, cpu_mhz_per_core: 1000.0, memory_bytes: 1 << 30 };
    runner()
        .run(&inputs(planetlab), |bytes| {
            let _ = with_file("vm", &bytes, |p| presage_traces::read_planetlab(p, "vm".into(), spec));
            Ok(())
        })
        .unwrap();
    runner()
        .run(&inputs(bitbrains), |bytes| {
            let _ = with_file("1.csv", &bytes, |p| presage_traces::read_bitbrains(p, "1".into()));
            Ok(())
        })
        .unwrap();
    runner()
        .run(&inputs(nab), |bytes| {
            let _ = with_file("s.csv", &bytes, |p| presage_traces::nab::read_series(p, "s".into()));
            Ok(())
        })
        .unwrap();
}

/// A JSON value of any shape (nested a few levels), for request bodies.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_]{0,12}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof!["[a-z_]{1,16}", Just("vm_id".to_string()), Just("cpu_cores".to_string()), Just("memory_mib".to_string())],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_bodies_are_refused_with_a_reason_never_a_panic() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use presage_coordinator::transport::PeerInfo;
    use presage_protocol::tls::{PeerIdentity, Role};
    use proptest::strategy::ValueTree;
    use tower::ServiceExt;

    let pki = presage_tests::Pki::new();
    let coord = presage_tests::RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let admin = PeerInfo { identity: PeerIdentity { role: Role::Admin, name: "fuzz".into() }, remote: "127.0.0.1:1".parse().unwrap() };
    let router = presage_coordinator::rest::router(coord.shared.clone()).layer(axum::Extension(admin));
    // Every route that takes a body, from the API's own OpenAPI document.
    let doc = router.clone().oneshot(Request::get("/v1/openapi.json").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(doc.status(), StatusCode::OK);
    let doc: serde_json::Value =
        serde_json::from_slice(&http_body_util::BodyExt::collect(doc.into_body()).await.unwrap().to_bytes()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["post", "put", "patch"] {
            if item.get(method).is_some_and(|op| op.get("requestBody").is_some()) {
                // Path parameters filled with a name nothing has.
                let concrete = path.split('/').map(|seg| if seg.starts_with('{') { "fuzz-x" } else { seg }).collect::<Vec<_>>().join("/");
                routes.push((method.to_uppercase(), concrete));
            }
        }
    }
    assert!(routes.len() >= 5, "the OpenAPI document lists the routes with bodies: {routes:?}");
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        mutated(br#"{"vm_id":"web","cpu_cores":2,"memory_mib":4096,"dry_run":true}"#.to_vec()),
    ];
    let cases = std::env::var("PRESAGE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000u32) / 4;
    let mut runner = TestRunner::new(Config { cases: cases.max(16), failure_persistence: None, ..Config::default() });
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (method, path) in &routes {
        let samples: Vec<Vec<u8>> = (0..cases.max(16)).map(|_| bodies.new_tree(&mut runner).unwrap().current()).collect();
        for body in samples {
            let req = Request::builder()
                .method(method.as_str())
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let answer = router.clone().oneshot(req).await.unwrap();
            let status = answer.status();
            *statuses.entry(status.as_u16()).or_default() += 1;
            let bytes = http_body_util::BodyExt::collect(answer.into_body()).await.unwrap().to_bytes();
            assert!(
                !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
                "{method} {path} with {:?} answered {status}: {}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&bytes)
            );
            if status.is_client_error() {
                let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!("{method} {path}: a {status} without a JSON error ({e}): {}", String::from_utf8_lossy(&bytes))
                });
                // The API's documented error: a code, and the reason (with the field when one is at fault).
                assert!(
                    error["code"].as_str().is_some_and(|c| !c.is_empty()) && error["reason"].as_str().is_some_and(|m| !m.is_empty()),
                    "{method} {path}: a {status} that does not say what is wrong: {error}"
                );
            }
        }
    }
    eprintln!("{} routes with bodies fuzzed, answers by status: {statuses:?}", routes.len());
    coord.stop().await;
}
