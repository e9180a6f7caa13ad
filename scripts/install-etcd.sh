#!/usr/bin/env bash
# Install the etcd builds the tests and the demo run against:
#   etcd 3.4 from the system's Debian release (etcd-server, etcd-client) into /usr/bin,
#   etcd 3.5.30 (with etcdutl) from Debian forky (the newest 3.5 Debian ships), unpacked into a private prefix
#   without touching the system's apt sources.
# Where etcd 3.5 goes, and where the tests and the demo look for it: $ETCDGUARD_ETCD35_BIN
# (a directory holding etcd, etcdctl and etcdutl; default .cache/etcd-3.5/usr/bin). When it
# already holds them nothing is downloaded; a directory ending in /usr/bin is filled from the
# packages; any other that lacks them is an error (nothing is written there).
# Says what it downloads, from where and about how big, before it does.
# Idempotent: does nothing when both are already present.
set -euo pipefail

ETCD35_VERSION="${ETCD35_VERSION:-3.5.30-2}"
ETCD35_SUITE="${ETCD35_SUITE:-forky}"
ETCD35_SIZE="about 20 MB to download, 65 MB unpacked"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${ETCDGUARD_ETCD35_BIN:-}" ]; then
  bin35="${ETCDGUARD_ETCD35_BIN%/}"
elif [ -n "${ETCD35_PREFIX:-}" ]; then          # the name this script read before ETCDGUARD_ETCD35_BIN
  bin35="${ETCD35_PREFIX%/}/usr/bin"
else
  bin35="$root/.cache/etcd-3.5/usr/bin"
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  echo "installing etcd 3.4 (etcd-server, etcd-client) from Debian"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends etcd-server etcd-client
fi

# The project's own cache holding an older download (etcd 3.5.16 before 3.5.30 was the primary 3.5):
# replace it. A directory the operator named is used as it is.
want35="${ETCD35_VERSION%%-*}"
if [ "$bin35" = "$root/.cache/etcd-3.5/usr/bin" ] && [ -x "$bin35/etcd" ] \
   && ! "$bin35/etcd" --version 2>/dev/null | grep -qx "etcd Version: $want35"; then
  echo "replacing $("$bin35/etcd" --version | head -n1) in $root/.cache/etcd-3.5 with $want35"
  rm -rf "$root/.cache/etcd-3.5"
fi

if [ ! -x "$bin35/etcd" ] || [ ! -x "$bin35/etcdutl" ]; then
  case "$bin35" in
    */usr/bin) prefix35="${bin35%/usr/bin}" ;;
    *) echo "install-etcd.sh: ETCDGUARD_ETCD35_BIN=$bin35 holds no etcd and etcdutl; point it at a directory" \
            "that has etcd >= 3.5.10 with etcdutl, or unset it to download etcd 3.5 into $root/.cache" >&2
       exit 2 ;;
  esac
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  src=/etc/apt/sources.list.d/debian.sources
  uris="$(awk '/^URIs:/ && !/security/ {print; exit}' "$src")"
  signed="$(awk '/^Signed-By:/ {print; exit}' "$src")"
  [ -n "$uris" ] || uris="URIs: http://deb.debian.org/debian"
  [ -n "$signed" ] || signed="Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  printf 'Types: deb\n%s\nSuites: %s\nComponents: main\n%s\n' "$uris" "$ETCD35_SUITE" "$signed" >"$work/etcd35.sources"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  opts=(-o "Dir::Etc::SourceList=$work/etcd35.sources" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
  echo "downloading etcd ${ETCD35_VERSION} (etcd-server, etcd-client) from Debian ${ETCD35_SUITE}" \
       "(${uris#URIs: }; ${ETCD35_SIZE}) into $prefix35;" \
       "set ETCDGUARD_ETCD35_BIN to a directory that holds etcd 3.5 to skip this"
  apt-get "${opts[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${opts[@]}" download "etcd-server=${ETCD35_VERSION}" "etcd-client=${ETCD35_VERSION}")
  mkdir -p "$prefix35"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$prefix35"; done
fi

echo "etcd 3.4: $(etcd --version | head -n1)"
echo "etcd 3.5: $("$bin35/etcd" --version | head -n1) ($bin35)"
