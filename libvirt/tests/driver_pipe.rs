//! The driver process as the agent sees it: length-delimited frames on its stdin and stdout.
//! Requests that are wrong get a reply that says why; a stream that is not frames ends the
//! driver with a clear message and status 2, without a panic.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use presage_protocol::frames::{read_frame, write_frame};
use presage_protocol::pb::driver_failure::Kind;
use presage_protocol::pb::driver_reply::Outcome;
use presage_protocol::pb::driver_request::Call;
use presage_protocol::pb::{DriverEmpty, DriverOpen, DriverReply, DriverRequest, DriverVm};

fn driver() -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_presage-libvirt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting presage-libvirt")
}

fn request(id: u64, call: Call) -> DriverRequest {
    DriverRequest { id, call: Some(call) }
}

fn open(id: u64, uri: &str, version: &str) -> DriverRequest {
    request(id, Call::Open(DriverOpen { uri: uri.into(), migration: None, presage_version: version.into() }))
}

/// Sends `requests`, closes stdin and returns every reply, the exit status and stderr.
fn exchange(requests: &[DriverRequest]) -> (Vec<DriverReply>, std::process::ExitStatus, String) {
    let mut child = driver();
    let mut stdin = child.stdin.take().unwrap();
    for r in requests {
        write_frame(&mut stdin, r).unwrap();
    }
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let mut replies = Vec::new();
    while let Some(r) = read_frame::<DriverReply>(&mut stdout).unwrap() {
        replies.push(r);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (replies, status, err)
}

fn failure(r: &DriverReply) -> (Kind, &str) {
    match &r.outcome {
        Some(Outcome::Failure(f)) => (Kind::try_from(f.kind).unwrap(), f.message.as_str()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn requests_before_open_without_a_call_or_from_another_release_are_refused_with_a_reason() {
    let version = presage_protocol::PRESAGE_VERSION;
    let (replies, status, _) = exchange(&[
        request(1, Call::Observe(DriverEmpty {})),
        DriverRequest { id: 2, call: None },
        open(3, "test:///default", "0.0.0-other"),
        open(4, "test:///no/such/config.xml", version),
    ]);
    assert!(status.success(), "the driver ends cleanly when its input ends: {status}");
    assert_eq!(replies.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let (kind, why) = failure(&replies[0]);
    assert_eq!(kind, Kind::Request);
    assert!(why.contains("observe before open"), "{why}");
    let (kind, why) = failure(&replies[1]);
    assert!(kind == Kind::Request && why.contains("names no call"), "{why}");
    let (kind, why) = failure(&replies[2]);
    assert!(kind == Kind::Request && why.contains("0.0.0-other") && why.contains(version), "{why}");
    let (kind, why) = failure(&replies[3]);
    assert!(kind == Kind::Libvirt && why.contains("no/such/config.xml"), "{why}");
}

#[test]
fn an_open_driver_answers_each_call_under_its_id() {
    let version = presage_protocol::PRESAGE_VERSION;
    let (replies, status, _) = exchange(&[
        open(10, "test:///default", version),
        request(11, Call::Observe(DriverEmpty {})),
        request(12, Call::Inspect(DriverVm { vm_id: "00000000-0000-4000-8000-000000000000".into() })),
        request(13, Call::AbortMigration(DriverVm { vm_id: "00000000-0000-4000-8000-000000000000".into() })),
        open(14, "test:///default", version),
    ]);
    assert!(status.success(), "{status}");
    let by_id = |id| replies.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no reply to {id}: {replies:?}"));
    assert!(matches!(&by_id(10).outcome, Some(Outcome::Opened(o)) if o.presage_version == version && !o.libvirt_version.is_empty()));
    match &by_id(11).outcome {
        // libvirt's test driver starts with one running domain named "test".
        Some(Outcome::Observation(o)) => assert!(o.vms.iter().any(|v| v.name == "test"), "{o:?}"),
        other => panic!("observe answered {other:?}"),
    }
    match &by_id(12).outcome {
        Some(Outcome::Presence(p)) => assert!(!p.present && !p.running && p.state == "absent", "{p:?}"),
        other => panic!("inspect answered {other:?}"),
    }
    let (kind, why) = failure(by_id(13));
    assert!(kind == Kind::Migration && why.contains("no longer on this host"), "{why}");
    let (kind, why) = failure(by_id(14));
    assert!(kind == Kind::Request && why.contains("already open"), "{why}");
}

#[test]
fn a_stream_that_is_not_frames_ends_the_driver_with_a_clear_message() {
    for garbage in [&[0xffu8; 12][..], &[0x05, 0x08][..], &[0x03, 0xff, 0xff, 0xff][..]] {
        let mut child = driver();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(garbage).unwrap();
        drop(stdin);
        let status = child.wait().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{garbage:?}: {err}");
        assert!(err.contains("the agent's requests are unreadable"), "{garbage:?}: {err}");
        assert!(!err.contains("panic"), "{err}");
    }
}
