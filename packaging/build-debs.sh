#!/usr/bin/env bash
# Builds presage's Debian packages into target/debian/: presage-agent (with presage-libvirt and
# the forecast models), presage-coordinator, presagectl (with man pages and shell completions)
# and presage-guest. Needs cargo-deb (cargo install cargo-deb --locked) and dpkg-dev.
#   packaging/build-debs.sh                 release binaries (what is shipped)
#   packaging/build-debs.sh --profile dev   the test build's binaries (the package test)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--profile" ]; then
  profile="$2"
fi
case "$profile" in
  dev) out=debug ;;
  *) out="$profile" ;;
esac
cargo build --profile "$profile" --locked -p presage-agent -p presage-libvirt -p presage-coordinator -p presagectl -p presage-guest --bins
ctl="target/$out/presagectl"
rm -rf target/packaging
mkdir -p target/packaging/man target/packaging/completions target/debian
"$ctl" man --dir target/packaging/man >/dev/null
gzip -9nf target/packaging/man/*.1
"$ctl" completions bash > target/packaging/completions/presagectl.bash
"$ctl" completions zsh > target/packaging/completions/_presagectl
"$ctl" completions fish > target/packaging/completions/presagectl.fish
for p in presage-agent presage-coordinator presagectl presage-guest; do
  cargo deb --no-build --profile "$profile" --strip -p "$p" -o target/debian/ >/dev/null
done
ls target/debian/*.deb
