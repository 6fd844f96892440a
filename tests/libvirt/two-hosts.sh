#!/usr/bin/env bash
# Two real libvirt "hosts" on one machine, for the live-migration test (see
# ../shared/reference/libvirt-two-hosts.md for why each step is needed).
#
#   two-hosts.sh start BASE    start host "a" and host "b" under BASE (root, /dev/kvm, libvirtd)
#   two-hosts.sh stop BASE     stop both and destroy their guests
#
# Each host is a libvirtd + virtlogd pair in a private mount namespace with its own run, state,
# log, cache and config directories and its own host_uuid, bind-mounted over the standard paths.
# Both share the network namespace. From outside, host X's libvirt is
#   qemu+unix:///system?socket=BASE/X/run/libvirt-sock
# and its migration data channel listens on tcp://127.0.0.1:PORT (a: 49170, b: 49180).
set -euo pipefail
cmd=${1:?usage: two-hosts.sh start|stop BASE}
base=${2:?usage: two-hosts.sh start|stop BASE}

prepare_system() {
  getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  id libvirt-qemu >/dev/null 2>&1 || useradd -r -g kvm -s /usr/sbin/nologin libvirt-qemu
  mkdir -p /var/log/libvirt /var/lib/libvirt /var/cache/libvirt /run/libvirt /etc/libvirt
}

start_host() {
  local name=$1 uuid=$2 port=$3 d=$base/$1
  mkdir -p "$d"/{run,lib,log,cache,etc}
  cat >"$d/etc/libvirtd.conf" <<CONF
host_uuid = "$uuid"
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:$d/log/libvirtd.log"
CONF
  cat >"$d/etc/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
migration_port_min = $port
migration_port_max = $((port + 9))
CONF
  cp /etc/libvirt/libvirt.conf "$d/etc/" 2>/dev/null || true
  unshare --mount --propagation private -- bash -c "
    set -e
    mount --bind '$d/run' /run/libvirt
    mount --bind '$d/lib' /var/lib/libvirt
    mount --bind '$d/log' /var/log/libvirt
    mount --bind '$d/cache' /var/cache/libvirt
    mount --bind '$d/etc' /etc/libvirt
    virtlogd -d -p '$d/virtlogd.pid'
    libvirtd -d -p '$d/libvirtd.pid'
  "
  for _ in $(seq 1 100); do
    [ -S "$d/run/libvirt-sock" ] && return 0
    sleep 0.1
  done
  echo "two-hosts.sh: libvirtd of host $name did not open $d/run/libvirt-sock; see $d/log" >&2
  return 1
}

stop_host() {
  local d=$base/$1
  [ -S "$d/run/libvirt-sock" ] && for dom in $(virsh -c "qemu+unix:///system?socket=$d/run/libvirt-sock" list --all --name 2>/dev/null); do
    virsh -c "qemu+unix:///system?socket=$d/run/libvirt-sock" destroy "$dom" >/dev/null 2>&1 || true
    virsh -c "qemu+unix:///system?socket=$d/run/libvirt-sock" undefine "$dom" >/dev/null 2>&1 || true
  done
  for p in libvirtd virtlogd; do
    if [ -f "$d/$p.pid" ]; then kill "$(cat "$d/$p.pid")" 2>/dev/null || true; fi
  done
}

case $cmd in
  start)
    [ "$(id -u)" = 0 ] || { echo "two-hosts.sh: needs root" >&2; exit 2; }
    [ -w /dev/kvm ] || { echo "two-hosts.sh: needs /dev/kvm" >&2; exit 2; }
    command -v libvirtd >/dev/null || { echo "two-hosts.sh: libvirtd is not installed (apt install libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86)" >&2; exit 2; }
    prepare_system
    mkdir -p "$base"
    start_host a 5a0c1a7e-0000-4000-8000-00000000000a 49170
    start_host b 5a0c1a7e-0000-4000-8000-00000000000b 49180
    ;;
  stop)
    stop_host a || true
    stop_host b || true
    ;;
  *) echo "usage: two-hosts.sh start|stop BASE" >&2; exit 2 ;;
esac
