//! The real Linux guest of the real-guest tests and the resize benchmark: Debian's cloud kernel
//! and a busybox-static initramfs around the static presage-guest, built by
//! `tests/guest-image/build.sh` and cached under `target/guest-image` (rebuilt when the script or
//! presage-guest is newer).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The static presage-guest (built into `target/guest-static`, apart from the workspace's own
/// build, whose flags differ) and the guest image built around it; returns the image's folder.
/// Panics naming the step that failed (the tests and the benchmark cannot go on without it).
pub fn guest_image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--offline", "--release", "-p", "presage-guest", "--target", "x86_64-unknown-linux-gnu"])
        .env("CARGO_TARGET_DIR", target.join("guest-static"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(&root)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the static presage-guest failed");
    let bin = target.join("guest-static/x86_64-unknown-linux-gnu/release/presage-guest");
    let script = root.join("tests/guest-image/build.sh");
    let image = target.join("guest-image");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let initrd = modified(&image.join("initrd.gz"));
    let fresh = image.join("vmlinuz").is_file() && initrd.is_some() && initrd >= modified(&bin) && initrd >= modified(&script);
    if !fresh {
        let out = Command::new("bash").arg(&script).arg(&image).arg(&bin).output().expect("running build.sh");
        assert!(out.status.success(), "build.sh failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    image
}

/// A guest running a CPU burner (`burn` busy loops), its one vCPU pinned to host CPU `cpu`
/// (QEMU's own threads to CPU 0); `balloon`: whether it loads the balloon driver (a guest without
/// it never meets a target).
pub fn burner_xml(name: &str, image: &Path, console: &Path, cpu: usize, burn: u32, balloon: bool) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/><emulatorpin cpuset='0'/></cputune>\
         <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 panic=-1 quiet presage_burn={burn} presage_balloon={}</cmdline></os>\
         <devices><serial type='file'><source path='{}'/></serial><memballoon model='virtio'/></devices></domain>",
        image.join("vmlinuz").display(),
        image.join("initrd.gz").display(),
        u8::from(balloon),
        console.display()
    )
}
