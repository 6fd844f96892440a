//! The Debian packages, built and installed as an operator would: `packaging/build-debs.sh`
//! (cargo-deb, from the test build's binaries) makes presage-agent, presage-coordinator,
//! presagectl and presage-guest; lintian reports no error on them; `apt-get` installs them with
//! their dependencies into a clean Debian root (debootstrap, minbase, the host's release);
//! there the units pass `systemd-analyze verify`, every binary answers `--version`, the
//! `presage` system user exists in the `libvirt` group, the configurations are conffiles, the
//! models, man pages and completions are where they belong, and a purge removes it all.
//!
//! It needs root (chroot, debootstrap), cargo-deb, lintian and debootstrap: `./presage.sh test`
//! installs them. Where it cannot run it says why and passes without running, unless
//! `PRESAGE_REQUIRE_PACKAGES=1` (set by `.ci/run` when it runs as root), where that fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (chroot and debootstrap)".into());
    }
    for tool in ["cargo-deb", "lintian", "debootstrap", "dpkg-deb"] {
        let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Some(format!("{tool} is not installed (./presage.sh deps installs it)"));
        }
    }
    None
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// A Debian root made by debootstrap, kept (as a tarball) in the tools cache so later runs
/// copy it instead of downloading it again.
fn clean_root(into: &Path) {
    let release = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=").map(str::to_string)))
        .unwrap_or_else(|| "bookworm".into());
    let cache = std::env::var_os("PRESAGE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/presage"));
    std::fs::create_dir_all(&cache).unwrap();
    let tarball = cache.join(format!("debootstrap-{release}-minbase.tar"));
    if !tarball.is_file() {
        let partial = cache.join(format!("debootstrap-{release}-minbase.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        run(
            "debootstrap",
            Command::new("debootstrap").args(["--variant=minbase", &release]).arg(&partial).arg("http://deb.debian.org/debian"),
        );
        run("packing the root", Command::new("tar").arg("-C").arg(&partial).arg("-cf").arg(&tarball).arg("."));
        let _ = std::fs::remove_dir_all(&partial);
    }
    run("unpacking the root", Command::new("tar").arg("-C").arg(into).arg("-xf").arg(&tarball));
}

/// /proc mounted in the root while the test uses it.
struct ProcMount(PathBuf);

impl ProcMount {
    fn new(root: &Path) -> ProcMount {
        let proc = root.join("proc");
        run("mounting /proc", Command::new("mount").args(["-t", "proc", "proc"]).arg(&proc));
        ProcMount(proc)
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn in_root(root: &Path, what: &str, args: &[&str]) -> String {
    run(what, Command::new("chroot").arg(root).env("DEBIAN_FRONTEND", "noninteractive").env("LC_ALL", "C").args(args))
}

#[test]
fn the_packages_build_pass_lintian_and_install_in_a_clean_debian_root() {
    if let Some(why) = missing() {
        assert!(std::env::var("PRESAGE_REQUIRE_PACKAGES").is_err(), "PRESAGE_REQUIRE_PACKAGES is set but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let ws = workspace();
    run("packaging/build-debs.sh", Command::new(ws.join("packaging/build-debs.sh")).args(["--profile", "dev"]).current_dir(&ws));
    let debs: Vec<PathBuf> = ["presage-agent", "presage-coordinator", "presagectl", "presage-guest"]
        .iter()
        .map(|p| {
            let deb = ws.join(format!("target/debian/{p}_{}-1_amd64.deb", env!("CARGO_PKG_VERSION")));
            assert!(deb.is_file(), "{} was not built", deb.display());
            deb
        })
        .collect();

    // lintian: no errors (warnings are listed in the output for whoever reads it).
    let lintian = Command::new("lintian").args(["--tag-display-limit", "0"]).args(&debs).output().unwrap();
    let report = String::from_utf8_lossy(&lintian.stdout).to_string() + &String::from_utf8_lossy(&lintian.stderr);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian reports errors:\n{}", errors.join("\n"));
    eprintln!("lintian:\n{report}");

    // A clean root: install with apt, dependencies from the archive.
    let scratch = tempfile::Builder::new().prefix("presage-root-").tempdir_in("/var/tmp").unwrap();
    let root = scratch.path();
    clean_root(root);
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    std::fs::create_dir_all(root.join("tmp/debs")).unwrap();
    let mut inside = Vec::new();
    for deb in &debs {
        let name = deb.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::copy(deb, root.join("tmp/debs").join(&name)).unwrap();
        inside.push(format!("/tmp/debs/{name}"));
    }
    let _proc = ProcMount::new(root);
    in_root(root, "apt-get update", &["apt-get", "update", "-qq"]);
    let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"];
    install.extend(inside.iter().map(String::as_str));
    in_root(root, "apt-get install of the packages", &install);

    // The units parse, with every ExecStart binary in place.
    let verify = in_root(
        root,
        "systemd-analyze verify",
        &["systemd-analyze", "verify", "presage-agent.service", "presage-coordinator.service", "presage-guest.service"],
    );
    assert!(!verify.lines().any(|l| l.contains("presage") && !l.contains("Documentation")), "systemd-analyze verify complains:\n{verify}");
    // Installed, not enabled: an unconfigured daemon must not start at boot.
    for unit in ["presage-agent.service", "presage-coordinator.service"] {
        let state = Command::new("chroot").arg(root).args(["systemctl", "is-enabled", unit]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "disabled", "{unit}");
    }
    // Every binary runs.
    for bin in ["presage-agent", "presage-libvirt", "presage-coordinator", "presagectl", "presage-guest"] {
        let v = in_root(root, bin, &[bin, "--version"]);
        assert!(v.contains(env!("CARGO_PKG_VERSION")), "{bin} --version: {v}");
    }
    // The static user, in libvirt's group; the configurations are conffiles; the files are there.
    let id = in_root(root, "id presage", &["id", "presage"]);
    assert!(id.contains("(libvirt)"), "{id}");
    for (package, conffile) in [
        ("presage-agent", "/etc/presage/agent.toml"),
        ("presage-coordinator", "/etc/presage/coordinator.toml"),
        ("presage-guest", "/etc/presage/guest.toml"),
    ] {
        let c = in_root(root, "dpkg-query", &["dpkg-query", "-W", "-f=${Conffiles}", package]);
        assert!(c.contains(conffile), "{package}'s conffiles: {c}");
    }
    for file in [
        "usr/share/presage/models/cpu-quantiles-v2.onnx",
        "usr/share/presage/models/memory-quantiles-v2.onnx",
        "usr/share/presage/models/placement-shortfall-v1.onnx",
        "usr/share/man/man1/presagectl.1.gz",
        "usr/share/man/man1/presagectl-plan.1.gz",
        "usr/share/bash-completion/completions/presagectl",
        "usr/lib/sysusers.d/presage-agent.conf",
        "usr/share/doc/presage-agent/copyright",
        "usr/share/doc/presage-agent/changelog.Debian.gz",
    ] {
        assert!(root.join(file).is_file(), "{file} is not installed");
    }
    let tls = std::fs::metadata(root.join("etc/presage/tls")).unwrap();
    assert!(tls.is_dir(), "/etc/presage/tls is made for the certificates");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(tls.permissions().mode() & 0o007, 0, "/etc/presage/tls is not world-readable");
    }

    // A purge takes the packages and their configurations away.
    in_root(
        root,
        "apt-get purge",
        &["apt-get", "purge", "-y", "-qq", "presage-agent", "presage-coordinator", "presagectl", "presage-guest"],
    );
    for gone in ["usr/bin/presage-agent", "usr/bin/presagectl", "etc/presage/agent.toml", "etc/presage/coordinator.toml"] {
        assert!(!root.join(gone).exists(), "{gone} is left after a purge");
    }
}
