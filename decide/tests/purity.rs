//! The decision core does no I/O, spawns no task, reads no clock and draws no random number.
//! Enforced two ways: its dependency graph (from `cargo metadata`) holds no crate that does, and
//! its sources name none of the standard library's ways to.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates whose presence means I/O, tasks, threads, clocks, randomness, or the wire.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-stream",
    "mio",
    "async-std",
    "futures-executor", // tasks, sockets
    "tonic",
    "hyper",
    "h2",
    "axum",
    "prost",
    "reqwest", // the wire
    "sled",
    "rusqlite", // storage
    "tract-onnx",
    "tract-core",
    "tract-hir", // model inference
    "virt",
    "virt-sys",
    "procfs",
    "sysinfo",
    "libc",
    "nix", // the host
    "rayon",
    "crossbeam-utils",
    "threadpool", // threads
    "rand",
    "getrandom",
    "fastrand", // randomness
    "chrono",
    "time",
    "humantime", // clocks
];

/// Standard-library paths that do I/O, spawn, or read the time.
const FORBIDDEN_PATHS: &[&str] =
    &["std::fs", "std::net", "std::process", "std::thread", "std::env", "std::io::stdin", "Instant::now", "SystemTime", "UNIX_EPOCH"];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // The build host's platform only: a fresh cargo home holds just the crates this platform
    // builds, and `--offline` metadata for every platform would need the others too.
    let version = Command::new(&cargo).arg("-vV").output().expect("running cargo -vV");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let host = version.lines().find_map(|l| l.strip_prefix("host: ")).expect("cargo -vV names the host platform").trim().to_string();
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &host, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Every crate `presage-decide` depends on as a normal (not dev, not build) dependency,
/// directly or not, by name.
fn normal_dependencies(meta: &serde_json::Value) -> BTreeSet<String> {
    let name_of: HashMap<&str, &str> =
        meta["packages"].as_array().unwrap().iter().map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap())).collect();
    let nodes: HashMap<&str, &serde_json::Value> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let root = name_of.iter().find(|(_, n)| **n == "presage-decide").map(|(id, _)| *id).expect("presage-decide in the workspace");
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(name_of[dep_id].to_string()) {
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn the_decision_core_depends_on_no_crate_that_does_io_spawns_or_reads_a_clock() {
    let deps = normal_dependencies(&metadata());
    assert!(deps.contains("serde"), "the walk reached the direct dependencies: {deps:?}");
    let bad: Vec<&String> = deps.iter().filter(|d| FORBIDDEN.contains(&d.as_str())).collect();
    assert!(bad.is_empty(), "presage-decide must stay pure, but depends on {bad:?} (all: {deps:?})");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_decision_core_sources_name_no_io_thread_or_clock() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() >= 5, "found the sources: {files:?}");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for p in FORBIDDEN_PATHS {
                if code.contains(p) {
                    found.push(format!("{}:{}: {p}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "presage-decide must stay pure:\n{}", found.join("\n"));
}
