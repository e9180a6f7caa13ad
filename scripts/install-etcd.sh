#!/usr/bin/env bash
# Install the etcd builds the tests and the demo run against:
#   etcd 3.4 from the system's Debian release (etcd-server, etcd-client) into /usr/bin,
#   etcd 3.5.16 (with etcdutl) from Debian trixie, unpacked into a private prefix
#   (default .cache/etcd-3.5) without touching the system's apt sources.
# Idempotent: does nothing when both are already present.
set -euo pipefail

ETCD35_VERSION="${ETCD35_VERSION:-3.5.16-4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix35="${ETCD35_PREFIX:-$root/.cache/etcd-3.5}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  echo "installing etcd 3.4 (etcd-server, etcd-client) from Debian"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends etcd-server etcd-client
fi

if [ ! -x "$prefix35/usr/bin/etcd" ] || [ ! -x "$prefix35/usr/bin/etcdutl" ]; then
  echo "fetching etcd ${ETCD35_VERSION} (trixie) into $prefix35"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  src=/etc/apt/sources.list.d/debian.sources
  uris="$(awk '/^URIs:/ && !/security/ {print; exit}' "$src")"
  signed="$(awk '/^Signed-By:/ {print; exit}' "$src")"
  [ -n "$uris" ] || uris="URIs: http://deb.debian.org/debian"
  [ -n "$signed" ] || signed="Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  printf 'Types: deb\n%s\nSuites: trixie\nComponents: main\n%s\n' "$uris" "$signed" >"$work/trixie.sources"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  opts=(-o "Dir::Etc::SourceList=$work/trixie.sources" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download "etcd-server=${ETCD35_VERSION}" "etcd-client=${ETCD35_VERSION}")
  mkdir -p "$prefix35"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$prefix35"; done
fi

echo "etcd 3.4: $(etcd --version | head -n1)"
echo "etcd 3.5: $("$prefix35/usr/bin/etcd" --version | head -n1) ($prefix35/usr/bin)"
