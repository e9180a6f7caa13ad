#!/usr/bin/env bash
# Check the installed etcdguard .deb with the system Python and the distribution's python3-*
# libraries: the commands run, `etcdguard-agent check` passes and `snapshot` + `verify` work
# against a throwaway etcd 3.4 on 127.0.0.1, and both installed units pass
# `systemd-analyze verify` with nothing on stderr.
#
#   packaging/check-installed.sh [--install] [--purge] [--deb FILE]
#
#   --install   apt-get install the .deb first (default: dist/etcdguard_<version>_all.deb),
#               dependencies resolved from the distribution
#   --purge     afterwards, purge the package and check what it leaves behind; the
#               etcdguard user is deleted again if this run created it
#
# Needs root (for --install/--purge), etcd and etcdctl 3.4 on PATH (scripts/install-etcd.sh),
# systemd-analyze. Everything it starts (etcd, temp dirs) is removed on exit.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
install=0
purge=0
deb=""
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1; shift ;;
    --purge) purge=1; shift ;;
    --deb) deb="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "check-installed.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# The installed commands must work with the system's Python and libraries only.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV ETCDCTL_API
while IFS='=' read -r name _; do
  case "$name" in ETCD_*|ETCDCTL_*) unset "$name" ;; esac
done < <(env)

failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }

work="$(mktemp -d /tmp/etcdguard-check.XXXXXX)"
etcd_pid=""
user_existed=0
getent passwd etcdguard >/dev/null && user_existed=1
cleanup() {
  if [ -n "$etcd_pid" ] && kill -0 "$etcd_pid" 2>/dev/null; then
    kill -KILL "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$install" = 1 ]; then
  if [ -z "$deb" ]; then
    version="$(sed -n '/^\[project\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml")"
    deb="$root/dist/etcdguard_${version}_all.deb"
  fi
  [ -f "$deb" ] || { echo "check-installed.sh: $deb not found; run make packages" >&2; exit 2; }
  case "$deb" in /*) ;; *) deb="$PWD/$deb" ;; esac
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall "$deb"
fi

dpkg-query -W -f='${Status} ${Version}\n' etcdguard 2>/dev/null | grep -q '^install ok installed' \
  || { echo "check-installed.sh: the etcdguard package is not installed (use --install)" >&2; exit 2; }
pass "package installed: $(dpkg-query -W -f='${Version}' etcdguard)"

# -- the code and its libraries come from the system -----------------------------------------
where="$(/usr/bin/python3 - <<'EOF'
import etcdguard.agent, grpc, zmq, prometheus_client, sdnotify, yaml
for m in (etcdguard.agent, grpc, zmq, prometheus_client, sdnotify, yaml):
    print(m.__name__, m.__file__)
EOF
)" || where=""
if [ -z "$where" ]; then
  fail "system python3 cannot import etcdguard and its libraries"
else
  bad="$(echo "$where" | grep -v ' /usr/lib/python3/dist-packages/' || true)"
  if [ -n "$bad" ]; then fail "imported from outside /usr/lib/python3/dist-packages: $bad"; else pass "imports from the distribution's dist-packages"; fi
fi
for cmd in etcdguard-agent etcdguard-coordinator etcdguardctl; do
  if [ "$(head -n1 "/usr/bin/$cmd")" = "#!/usr/bin/python3" ]; then pass "/usr/bin/$cmd uses /usr/bin/python3"; else fail "/usr/bin/$cmd shebang"; fi
done
if out="$(etcdguard-agent --help 2>&1)" && grep -q "snapshot" <<<"$out"; then pass "etcdguard-agent --help"; else fail "etcdguard-agent --help: $out"; fi
if out="$(etcdguard-agent --version 2>&1)"; then pass "etcdguard-agent --version: $out"; else fail "etcdguard-agent --version: $out"; fi
for cmd in etcdguard-coordinator etcdguardctl; do
  if out="$($cmd --help 2>&1)"; then pass "$cmd --help"; else fail "$cmd --help: $(tail -n1 <<<"$out")"; fi
done
missing=""
for doc in "$root"/docs/*.md; do
  [ -f "/usr/share/doc/etcdguard/$(basename "$doc")" ] || missing="$missing $(basename "$doc")"
done
if [ -z "$missing" ]; then pass "every file of docs/ in /usr/share/doc/etcdguard"; else fail "docs not installed:$missing"; fi
for cmd in etcdguard-agent etcdguard-coordinator etcdguardctl; do
  if [ -f "/usr/share/man/man8/$cmd.8.gz" ]; then pass "man page $cmd(8)"; else fail "no man page $cmd(8)"; fi
done

# -- a throwaway etcd 3.4 on free loopback ports --------------------------------------------------
read -r client_port peer_port < <(/usr/bin/python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
endpoint="http://127.0.0.1:$client_port"
etcd --name check1 --data-dir "$work/etcd" \
  --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "check1=http://127.0.0.1:$peer_port" --initial-cluster-state new \
  --initial-cluster-token "check-$$" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
deadline=$((SECONDS + 30))
until etcdctl --endpoints "$endpoint" --dial-timeout 1s endpoint health >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$etcd_pid" 2>/dev/null; then
    echo "check-installed.sh: etcd did not become healthy; its log:" >&2
    tail -n 20 "$work/etcd.log" >&2
    exit 1
  fi
  sleep 0.2
done
for i in $(seq 1 50); do etcdctl --endpoints "$endpoint" put "/check/key$i" "value $i" >/dev/null; done
pass "etcd $(etcd --version | awk '/etcd Version/ {print $3}') up at $endpoint"

# -- etcdguard-agent snapshot + verify, no config file (etcdctl's flags) --------------------------
snap="$work/out/snap.db"
mkdir -p "$work/out"
if json="$(etcdguard-agent snapshot --endpoints "$endpoint" --output "$snap" --json 2>"$work/snapshot.err")"; then
  if /usr/bin/python3 - "$snap" "$json" <<'EOF'
import json, os, sys
path, meta = sys.argv[1], json.loads(sys.argv[2])
missing = [k for k in ("path", "size", "sha256", "revision", "created_at") if k not in meta]
assert not missing, f"--json lacks {missing}"
assert os.path.samefile(meta["path"], path), meta["path"]
assert meta["size"] == os.path.getsize(path), (meta["size"], os.path.getsize(path))
assert meta["revision"] >= 51, meta["revision"]
EOF
  then pass "snapshot --json: $(wc -c <"$snap") bytes"; else fail "snapshot --json output: $json"; fi
else
  fail "etcdguard-agent snapshot: $(cat "$work/snapshot.err")"
fi
if [ -f "$snap" ]; then
  if etcdguard-agent verify "$snap" >"$work/verify.out" 2>&1; then pass "verify of a good snapshot exits 0"; else fail "verify: $(cat "$work/verify.out")"; fi
  cp "$snap" "$work/out/damaged.db"
  /usr/bin/python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(4096); b = f.read(1); f.seek(4096); f.write(bytes([b[0] ^ 0xFF]))' "$work/out/damaged.db"
  rc=0; etcdguard-agent verify "$work/out/damaged.db" >/dev/null 2>&1 || rc=$?
  if [ "$rc" = 1 ]; then pass "verify of a damaged snapshot exits 1"; else fail "verify of a damaged snapshot exited $rc, expected 1"; fi
fi

# -- etcdguard-agent check with a config for this etcd ---------------------------------------------
echo "$etcd_pid" >"$work/etcd.pid"
cat >"$work/agent.toml" <<EOF
[etcd]
runtime = "process"
start_command = ["etcd", "--name", "check1", "--data-dir", "$work/etcd"]
pid_file = "$work/etcd.pid"
endpoints = ["$endpoint"]
name = "check1"
data_dir = "$work/etcd"
peer_url = "http://127.0.0.1:$peer_port"

[backup]
dir = "$work/store"

[server]
enabled = false

[metrics]
enabled = false

[state]
dir = "$work/state"
EOF
rc=0; etcdguard-agent check --config "$work/agent.toml" >"$work/check.out" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then pass "etcdguard-agent check exits 0"; else fail "etcdguard-agent check exited $rc: $(cat "$work/check.out")"; fi
rc=0; etcdguard-agent check --config "$work/missing.toml" >/dev/null 2>&1 || rc=$?
if [ "$rc" = 2 ]; then pass "check with a missing config exits 2"; else fail "check with a missing config exited $rc, expected 2"; fi

# -- the installed units ---------------------------------------------------------------------------
for unit in etcdguard-agent etcdguard-coordinator; do
  file=/lib/systemd/system/$unit.service
  err="$(systemd-analyze verify "$file" 2>&1 >/dev/null)" || true
  if [ -z "$err" ]; then pass "systemd-analyze verify $unit.service: no complaints"; else fail "systemd-analyze verify $unit.service: $err"; fi
  score="$(systemd-analyze security --offline=true "$file" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')"
  pass "exposure of $unit.service: $score"
done
for path in /var/lib/etcdguard:700:root /var/lib/etcdguard-coordinator:700:etcdguard /etc/etcdguard/keys:750:root; do
  IFS=: read -r dir mode owner <<<"$path"
  got="$(stat -c '%a:%U' "$dir" 2>/dev/null || echo missing)"
  if [ "$got" = "$mode:$owner" ]; then pass "$dir $got"; else fail "$dir is $got, expected $mode:$owner"; fi
done

# -- purge -------------------------------------------------------------------------------------------
if [ "$purge" = 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q etcdguard >/dev/null
  for gone in /usr/bin/etcdguard-agent /usr/lib/python3/dist-packages/etcdguard /etc/etcdguard/agent.toml; do
    if [ -e "$gone" ]; then fail "$gone still there after purge"; else pass "purge removed $gone"; fi
  done
  if [ -d /var/lib/etcdguard/snapshots ] && [ -n "$(ls -A /var/lib/etcdguard/snapshots)" ]; then
    pass "purge kept the non-empty snapshot store"
  elif [ -e /var/lib/etcdguard ]; then
    fail "purge left /var/lib/etcdguard without snapshots in it"
  else
    pass "purge removed /var/lib/etcdguard"
  fi
  if [ "$user_existed" = 0 ] && getent passwd etcdguard >/dev/null; then
    userdel etcdguard 2>/dev/null || true
    getent group etcdguard >/dev/null && groupdel etcdguard 2>/dev/null || true
  fi
fi

if [ "$failures" -gt 0 ]; then
  echo "check-installed.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "check-installed.sh: all checks passed"
