#!/usr/bin/env bash
# Builds dist/pktbeat_<version>_amd64.deb with dpkg-deb (run as root on Debian 12, after scripts/setup.sh).
#   scripts/package.sh [--out DIR]
# Layout (Packetbeat's, under pktbeat names):
#   /opt/pktbeat                    the program: a venv from Debian's /usr/bin/python3 with
#                                   --system-site-packages (so python3-bpfcc's bcc imports), pktbeat and its
#                                   runtime dependencies, and the native (mypyc) build of the per-packet modules
#   /usr/bin/pktbeat                wrapper: path.home/config/data/logs = the four directories below
#   /usr/share/pktbeat              path.home (reference config, README)
#   /etc/pktbeat/packetbeat.yml     path.config, a conffile
#   /var/lib/pktbeat, /var/log/pktbeat   path.data and path.logs, made by postinst for the pktbeat user
#   /lib/systemd/system/pktbeat.service
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/dist"
[ "${1:-}" = "--out" ] && OUT="$2"
say() { printf 'package: %s\n' "$*" >&2; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the package's files must be root's)"
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing"
VERSION=$(/usr/bin/python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' \
  "$ROOT/pyproject.toml")
STAGE=$(mktemp -d /tmp/pktbeat-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
APP=/opt/pktbeat
VENV="$STAGE$APP"
LOG=/tmp/pktbeat-package.log
: > "$LOG"

say "venv $APP from /usr/bin/python3 with --system-site-packages"
/usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-compile --no-build-isolation "$ROOT" >>"$LOG" 2>&1 \
  || { tail -20 "$LOG" >&2; die "pip install failed (log: $LOG)"; }
"$VENV/bin/pip" uninstall -q -y pip setuptools >>"$LOG" 2>&1 || true
# The kernel program's sources sit beside the agent package (agent/capture/record.py: BPF_DIR).
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp -r "$ROOT/bpf" "$SITE/bpf"

# The native build must match the installed sources; the set-up's own build does when the tree is the same.
native_ok() { (cd / && "$VENV/bin/python" -c \
  'import sys, agent.accel as a; sys.exit(0 if a.matching_build(a.build_dir()) else 1)'); }
if [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" "$ROOT/scripts/accel.py" check 2>/dev/null; then
  cp -a "$ROOT/.venv/pktbeat-accel" "$VENV/pktbeat-accel"
fi
if ! native_ok; then
  rm -rf "$VENV/pktbeat-accel"
  say "compiling the native modules with mypyc (about a minute)"
  builder=$(mktemp -d /tmp/pktbeat-accel-venv.XXXXXX)
  /usr/bin/python3 -m venv --system-site-packages "$builder"
  if "$builder/bin/pip" install -q --disable-pip-version-check "mypy>=1.11" -e "$ROOT" >>"$LOG" 2>&1 \
      && PKTBEAT_PURE_PYTHON=1 "$builder/bin/python" "$ROOT/scripts/accel.py" build >>"$LOG" 2>&1; then
    cp -a "$builder/pktbeat-accel" "$VENV/pktbeat-accel"
  fi
  rm -rf "$builder"
fi
if native_ok; then say "native modules included"; else rm -rf "$VENV/pktbeat-accel"; say "warning: no native build, pure Python (log: $LOG)"; fi

# A venv records where it was made: point its scripts and config at $APP.
grep -rlI --null "$VENV" "$VENV/bin" "$VENV/pyvenv.cfg" | xargs -0 -r sed -i "s#$VENV#$APP#g"
find "$VENV" -name '__pycache__' -prune -exec rm -rf {} +
"$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / "$VENV/lib" >>"$LOG" 2>&1 || die "compileall failed (log: $LOG)"

install -D -m 0755 "$ROOT/deploy/debian/pktbeat.sh" "$STAGE/usr/bin/pktbeat"
install -D -m 0644 "$ROOT/packetbeat.yml" "$STAGE/etc/pktbeat/packetbeat.yml"
install -D -m 0644 "$ROOT/packetbeat.yml" "$STAGE/usr/share/pktbeat/packetbeat.reference.yml"
install -D -m 0644 "$ROOT/README.md" "$STAGE/usr/share/doc/pktbeat/README.md"
install -D -m 0644 "$ROOT/deploy/systemd/pktbeat.service" "$STAGE/lib/systemd/system/pktbeat.service"

mkdir -p "$STAGE/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$ROOT/deploy/debian/$script" "$STAGE/DEBIAN/$script"
done
echo /etc/pktbeat/packetbeat.yml > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$SIZE/" "$ROOT/deploy/debian/control.in" > "$STAGE/DEBIAN/control"

mkdir -p "$OUT"
DEB="$OUT/pktbeat_${VERSION}_amd64.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$STAGE" "$DEB" >>"$LOG" 2>&1 || { tail -5 "$LOG" >&2; die "dpkg-deb failed"; }
say "built $DEB ($(du -h "$DEB" | cut -f1), installed size $((SIZE / 1024)) MiB)"
echo "$DEB"
