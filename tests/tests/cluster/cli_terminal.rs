//! presagectl as a person at a terminal uses it, and as a script does: `--watch` redraws
//! status and plans until interrupted; colour only when asked for (here, its output is a pipe,
//! not a terminal, so `auto` means none).

use std::time::Duration;

use presage_protocol::pb::ListVmsRequest;
use presage_protocol::tls::Role;
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// Runs presagectl with `args` for `for_how_long`, then interrupts it (SIGINT, as Ctrl-C);
/// its stdout and whether it ended by itself before that.
async fn presagectl_for(dir: &std::path::Path, url: &str, args: &[&str], for_how_long: Duration) -> (String, bool) {
    let bin = built_binaries(&["presagectl"]).join("presagectl");
    let mut child = tokio::process::Command::new(bin)
        .arg("--coordinator")
        .arg(url)
        .arg("--tls-dir")
        .arg(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ended = tokio::time::timeout(for_how_long, child.wait()).await.is_ok();
    if !ended {
        let pid = child.id().unwrap() as i32;
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.expect("presagectl ends on SIGINT").unwrap();
    assert!(out.status.success(), "presagectl {args:?}: {}", out.status);
    (String::from_utf8_lossy(&out.stdout).to_string(), ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_redraws_status_and_plans_until_interrupted_and_colour_is_only_for_terminals() {
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let trace = synthetic_trace(&[("vm-t-1", &[30u32; 60][..]), ("vm-t-2", &[40u32; 60][..])]);
    let data = tempfile::tempdir().unwrap();
    let (a, b) = two_simulated_agents(&pki, &coord.url, data.path(), trace.path());
    let op = client(&coord.url, &pki.issue(Role::Viewer, "lister")).await.unwrap();
    let vms = eventually("both VMs reported", WAIT, || {
        let op = op.clone();
        async move { op.clone().list_vms(ListVmsRequest::default()).await.ok().map(|r| r.into_inner().vms).filter(|v| v.len() == 2) }
    })
    .await;
    let dir = pki.operator_dir("terminal");

    // --watch: drawn again and again until Ctrl-C; no escape codes into a pipe.
    let (out, ended) = presagectl_for(dir.path(), &coord.url, &["status", "--watch", "300ms"], Duration::from_secs(3)).await;
    assert!(!ended, "status --watch ran until interrupted");
    let draws = out.matches("2 reachable").count();
    assert!(draws >= 3, "status drawn {draws} times in 3 s at 300 ms:\n{out}");
    assert!(!out.contains('\x1b'), "no escape codes when stdout is not a terminal:\n{out}");
    // Once, without --watch, it ends by itself.
    let (once, ended) = presagectl_for(dir.path(), &coord.url, &["status"], Duration::from_secs(20)).await;
    assert!(ended && once.matches("2 reachable").count() == 1, "{once}");
    // JSON lines under --watch: each line a whole document.
    let (json, _) = presagectl_for(dir.path(), &coord.url, &["status", "--watch", "300ms", "-o", "json"], Duration::from_secs(2)).await;
    let docs: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(docs.len() >= 2 && docs.iter().all(|d| d["hosts_total"] == 2), "{json}");

    // A finished move, in plans: coloured only when asked for.
    let vm = vms[0].sample.as_ref().unwrap().vm_id.clone();
    let to = if vms[0].host_id == "hv-a" { "hv-b" } else { "hv-a" };
    let (moved, _) = presagectl_for(dir.path(), &coord.url, &["move", &vm, to, "--wait"], Duration::from_secs(60)).await;
    assert!(moved.contains("done"), "{moved}");
    let (plain, _) = presagectl_for(dir.path(), &coord.url, &["plans"], Duration::from_secs(20)).await;
    assert!(plain.contains(": done") && !plain.contains('\x1b'), "{plain}");
    let (coloured, _) = presagectl_for(dir.path(), &coord.url, &["plans", "--color", "always"], Duration::from_secs(20)).await;
    assert!(coloured.contains("\x1b[32mdone\x1b[0m"), "a done plan is green with --color always: {coloured:?}");
    let (never, _) = presagectl_for(dir.path(), &coord.url, &["plans", "--color", "never"], Duration::from_secs(20)).await;
    assert_eq!(never, plain);
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}
