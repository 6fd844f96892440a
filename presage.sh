#!/usr/bin/env bash
# One entry point for a fresh clone: installs what is missing, builds, and runs.
#   ./presage.sh demo [--release] [demo options]   local cluster: coordinator + agents on loopback
#   ./presage.sh test                              the whole test suite (cargo test --workspace)
#   ./presage.sh deps                              only install the system packages
#   ./presage.sh debs                              Debian packages in target/debian/
set -euo pipefail
cd "$(dirname "$0")"

# protoc builds etcd-client's protobufs (presage's own come with a vendored protoc).
PACKAGES=(pkg-config libvirt-dev libvirt0 gcc protobuf-compiler)
# The tests also start two real libvirt daemons and move a KVM guest between them, and boot a
# real Linux guest (Debian's cloud kernel and busybox-static, downloaded with apt-get and packed
# into an initramfs with cpio). The optimiser's tests measure its gap to an exact MILP optimum
# with COIN-OR CBC (linked by the `exact` feature, never by the daemons). The metrics test
# parses both daemons' expositions with the official Prometheus client's OpenMetrics parser. The
# REST contract test runs schemathesis (from PyPI, in a virtual environment of its own) against
# a running coordinator. The web view's test drives Debian's Chromium with Playwright
# (playwright-core from npm, run by Node.js; no browser is downloaded).
# The Debian packages are built with cargo-deb, checked with lintian and installed into a clean
# root made by debootstrap. The etcd store's tests start real etcd members (Debian's etcd-server).
TEST_PACKAGES=(iproute2 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 cpio coinor-libcbc-dev python3-prometheus-client python3-venv chromium lintian debootstrap dpkg-dev etcd-server)
CARGO_DEB_VERSION=3.8.0
SCHEMATHESIS_VERSION=4.32.5
# The newest playwright-core that still runs on Debian 12's Node.js 18.
PLAYWRIGHT_VERSION=1.56.1
TOOLS="${PRESAGE_TOOLS:-$HOME/.cache/presage}"

# schemathesis in $TOOLS/schemathesis-VERSION; exports PRESAGE_SCHEMATHESIS.
install_schemathesis() {
  local venv="$TOOLS/schemathesis-$SCHEMATHESIS_VERSION"
  if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "presage: installing schemathesis $SCHEMATHESIS_VERSION in $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  export PRESAGE_SCHEMATHESIS="$venv/bin/schemathesis"
}

# cargo-deb in $TOOLS/cargo-deb-VERSION, put on the PATH.
install_cargo_deb() {
  local root="$TOOLS/cargo-deb-$CARGO_DEB_VERSION"
  if [ ! -x "$root/bin/cargo-deb" ]; then
    echo "presage: installing cargo-deb $CARGO_DEB_VERSION in $root"
    cargo install --quiet --locked --root "$root" cargo-deb --version "$CARGO_DEB_VERSION"
  fi
  export PATH="$root/bin:$PATH"
}

# playwright-core in $TOOLS/playwright-VERSION (Node.js and npm from Debian where missing);
# exports PRESAGE_PLAYWRIGHT.
install_playwright() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    install_deps nodejs npm
  fi
  local dir="$TOOLS/playwright-$PLAYWRIGHT_VERSION"
  if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
    echo "presage: installing playwright-core $PLAYWRIGHT_VERSION in $dir"
    mkdir -p "$dir"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund "playwright-core@$PLAYWRIGHT_VERSION")
  fi
  export PRESAGE_PLAYWRIGHT="$dir/node_modules/playwright-core"
}

install_deps() {
  local wanted=("${PACKAGES[@]}" "$@")
  if ! command -v cargo >/dev/null 2>&1; then
    echo "presage: cargo is not installed; install Rust from https://rustup.rs and run this again" >&2
    exit 1
  fi
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "presage: please install: ${missing[*]} (libvirt development files and pkg-config)" >&2
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "presage: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    install_deps
    # Only the three binaries the demo runs (not the benchmark or the libvirt driver). The
    # default dev profile compiles in less than half the time of --release and is shared with
    # `./presage.sh test`; `demo --release` runs optimised binaries.
    profile=debug
    build=()
    if [ "${1:-}" = "--release" ]; then
      shift
      profile=release
      build=(--release)
    fi
    cargo build "${build[@]}" --locked -p presagectl -p presage-coordinator -p presage-agent --bins
    exec "target/$profile/presagectl" demo "$@"
    ;;
  test)
    install_deps "${TEST_PACKAGES[@]}"
    install_schemathesis
    install_playwright
    install_cargo_deb
    export PRESAGE_TOOLS="$TOOLS"
    exec cargo test --workspace --locked "$@"
    ;;
  deps)
    install_deps "${TEST_PACKAGES[@]}"
    install_schemathesis
    install_playwright
    install_cargo_deb
    ;;
  debs)
    install_deps dpkg-dev
    install_cargo_deb
    exec packaging/build-debs.sh "$@"
    ;;
  *)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
