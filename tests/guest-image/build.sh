#!/usr/bin/env bash
# Builds a real Linux guest for the tests from Debian packages alone (see
# ../shared/reference/real-guest.md): Debian's cloud kernel, and a busybox-static initramfs that
# loads the kernel's own virtio modules, serves a small CPU-bound HTTP application (busybox httpd
# with a CGI script) and runs presage-guest, which probes the application and reports to the host
# over the virtio-serial port org.presage.guest.0.
#
#   build.sh OUT PRESAGE_GUEST_BINARY
#
# Writes OUT/vmlinuz and OUT/initrd.gz (and keeps the downloaded packages in OUT/debs). The guest
# reads from its kernel command line:
#   presage_slo_ms=N   the application's p99 SLO in ms (default 0: none declared)
#   presage_work=N     loop iterations per request of the application (default 500)
#   presage_probe_ms=N how often presage-guest probes the application (default 500)
#   presage_burn=N     N busy loops (a CPU burner; default 0)
#   presage_balloon=0  leave the balloon driver out (a guest that never meets a balloon target)
#   presage_knobs=1    for the resize benchmark: print on the console every change of the online
#                      CPUs and of MemTotal (`presage-knobs: cpus N mem_kib M`), online hot-plugged
#                      CPUs, and read the disk vda without its cache in a loop (its rate is what
#                      the host measures a disk limit by)
# Needs apt-get (download only; nothing is installed), dpkg-deb, cpio and gzip.
set -euo pipefail
out=${1:?usage: build.sh OUT PRESAGE_GUEST_BINARY}
guest_bin=${2:?usage: build.sh OUT PRESAGE_GUEST_BINARY}
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)
guest_bin=$(cd "$(dirname "$guest_bin")" && pwd)/$(basename "$guest_bin")

if ! file_type=$(od -An -c -N4 "$guest_bin" 2>/dev/null) || [[ $file_type != *E*L*F* ]]; then
  echo "build.sh: $guest_bin is not an ELF binary" >&2
  exit 2
fi

# The kernel package that linux-image-cloud-amd64 stands for today (name it exactly: a glob
# would fetch every version).
kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
cd "$out/debs"
pkg=$(kernel_pkg || true)
if [ -z "$pkg" ]; then
  env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  pkg=$(kernel_pkg)
fi
[ -n "$pkg" ] || { echo "build.sh: apt knows no linux-image-cloud-amd64" >&2; exit 2; }
for p in "$pkg" busybox-static; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -qq "$p" || { apt-get update -qq && apt-get download -qq "$p"; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$(ls "${pkg}"_*.deb | head -1)" "$work/kernel"
dpkg-deb -x "$(ls busybox-static_*.deb | head -1)" "$work/busybox"

root=$work/root
mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,modules,www/cgi-bin}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
cp "$guest_bin" "$root/bin/presage-guest"
# The virtio drivers, in dependency order (virtio_console carries the serial ports).
mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console virtio_balloon virtio_blk"
for m in $mods; do
  f=$(find "$work/kernel/lib/modules" -name "$m.ko" | head -1)
  if [ -n "$f" ]; then cp "$f" "$root/modules/"; fi
done
[ -f "$root/modules/virtio_console.ko" ] || { echo "build.sh: no virtio_console.ko in $pkg" >&2; exit 2; }

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
slo=0
work=500
probe=500
burn=0
balloon=1
knobs=0
for arg in $(cat /proc/cmdline); do
  case $arg in
    presage_slo_ms=*) slo=${arg#presage_slo_ms=} ;;
    presage_work=*) work=${arg#presage_work=} ;;
    presage_probe_ms=*) probe=${arg#presage_probe_ms=} ;;
    presage_burn=*) burn=${arg#presage_burn=} ;;
    presage_balloon=*) balloon=${arg#presage_balloon=} ;;
    presage_knobs=*) knobs=${arg#presage_knobs=} ;;
  esac
done
# presage_balloon=0: a guest that does not cooperate with the balloon (no driver).
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console virtio_balloon virtio_blk; do
  [ "$m" = virtio_balloon ] && [ "$balloon" = 0 ] && continue
  [ -f /modules/$m.ko ] && insmod /modules/$m.ko 2>/dev/null
done
# presage_burn=N: N busy loops, a CPU burner whose speed is the CPU the guest is given.
i=0
while [ $i -lt "$burn" ]; do
  (while :; do :; done) &
  i=$((i + 1))
done
# presage_knobs=1: what the guest sees of its size, on the console as it changes; hot-plugged
# CPUs are brought online by a loop of their own, the lowest offline first (under TCG the kernel
# lists every possible CPU as present after the first hot-plug, and bringing up one that is not
# plugged blocks for seconds before it fails; the report must not wait for that).
if [ "$knobs" = 1 ]; then
  (
    while :; do
      for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
        [ -f "$c" ] && [ "$(cat "$c")" = 0 ] && { echo 1 >"$c" 2>/dev/null; break; }
      done
      sleep 0.05
    done
  ) &
  (
    last=
    while :; do
      now="cpus $(grep -c ^processor /proc/cpuinfo) mem_kib $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
      [ "$now" != "$last" ] && echo "presage-knobs: $now" && last=$now
      sleep 0.02
    done
  ) &
  [ -b /dev/vda ] && (while :; do dd if=/dev/vda of=/dev/null bs=64k iflag=direct 2>/dev/null; done) &
fi
ip link set lo up
# The application: each request runs a fixed amount of CPU work.
cat >/www/cgi-bin/work <<CGI
#!/bin/sh
i=0
while [ \$i -lt $work ]; do i=\$((i + 1)); done
printf 'Content-Type: text/plain\r\n\r\nok\n'
CGI
chmod +x /www/cgi-bin/work
httpd -p 127.0.0.1:8080 -h /www
cat >/etc/presage-guest.toml <<CFG
port = "auto"
interval = "2s"

[[app]]
name = "web"
probe = "http://127.0.0.1:8080/cgi-bin/work"
probe_every = "${probe}ms"
slo_p99_ms = $slo
CFG
# The port appears once virtio_console has probed it.
for _ in $(seq 1 100); do
  grep -qs org.presage.guest.0 /sys/class/virtio-ports/*/name && break
  sleep 0.1
done
echo "presage-guest: starting (slo ${slo} ms, work ${work}, probe every ${probe} ms)"
(
  while :; do
    presage-guest --config /etc/presage-guest.toml
    sleep 1
  done
) &
# What presage-guest costs inside the guest, on the console every 10 s: its resident memory, the
# CPU it used (utime + stime, in clock ticks) and the guest's uptime.
while :; do
  sleep 10
  pid=$(pidof presage-guest)
  [ -n "$pid" ] || continue
  # smaps_rollup counts the pages mapped now; status's VmRSS lags (per-thread counters).
  rss=$(awk '/^Rss:/ { print $2 }' /proc/$pid/smaps_rollup)
  ticks=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  echo "presage-guest-stats rss_kb=$rss cpu_ticks=$ticks hz=$hz uptime_s=$(cut -d' ' -f1 /proc/uptime)"
done
INIT
chmod +x "$root/init"

cp "$(ls "$work"/kernel/boot/vmlinuz-* | head -1)" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$out/initrd.gz")
echo "build.sh: $out/vmlinuz and $out/initrd.gz from $pkg and $(ls busybox-static_*.deb | head -1)"
