#!/usr/bin/env bash
# Set-up for pktbeat on Debian 12, as root, then one of:
#   scripts/setup.sh run  [pktbeat run options]   live capture with ./packetbeat.yml
#   scripts/setup.sh test [pytest options]        the whole test suite (what .ci/run calls)
#   scripts/setup.sh                              set-up only
# Every step checks first and does nothing when its work is already done, so a
# second run takes a second or two.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-setup}"
[ $# -gt 0 ] && shift

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (BPF, TC and network namespaces need it)"
[ -r /etc/debian_version ] || die "this script targets Debian 12"

# Packages: the capture stack, then the real servers and tools the tests drive.
APT_PACKAGES=(
  python3 python3-venv python3-dev python3-bpfcc gcc make
  iproute2 iputils-ping ethtool tcpdump tshark curl openssl ca-certificates procps psmisc socat netcat-openbsd
  nginx-light dnsmasq-base bind9-dnsutils
  redis-server redis-tools memcached sip-tester busybox rabbitmq-server
  postgresql postgresql-contrib postgresql-client
  mariadb-server mariadb-client
  wrk dnsperf libmemcached-tools
)

missing_packages() {
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || printf '%s\n' "$pkg"
  done
}

apt_install() {
  local -a todo
  mapfile -t todo < <(missing_packages "$@")
  [ ${#todo[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${todo[*]}"
  # Servers are started by the tests inside their own namespaces; keep the
  # package scripts from starting system-wide copies that would hold ports.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
  fi
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${todo[@]}" >/tmp/pktbeat-apt.log 2>&1; then
    apt-get update -q >>/tmp/pktbeat-apt.log 2>&1 || true
    apt-get install -y -q --no-install-recommends "${todo[@]}" >>/tmp/pktbeat-apt.log 2>&1 \
      || { [ $created_policy -eq 1 ] && rm -f "$policy"; tail -20 /tmp/pktbeat-apt.log >&2; die "apt-get failed (log: /tmp/pktbeat-apt.log)"; }
  fi
  [ $created_policy -eq 1 ] && rm -f "$policy"
  return 0
}

# BCC compiles against /lib/modules/$(uname -r)/build.  When the running kernel
# has no headers package (custom kernels), Debian's generic headers work: link them.
kernel_headers() {
  local mod="/lib/modules/$(uname -r)"
  if [ -e "$mod/build/include/linux/kconfig.h" ] || [ -e "$mod/build/Makefile" ]; then
    return 0
  fi
  if apt-get install -y -q --no-install-recommends "linux-headers-$(uname -r)" >/dev/null 2>&1; then
    say "installed linux-headers-$(uname -r)"
    return 0
  fi
  apt_install linux-headers-amd64
  local arch common
  arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [ -n "$arch" ] && [ -n "$common" ] || die "no usable kernel headers under /usr/src"
  mkdir -p "$mod"
  ln -sfn "$arch" "$mod/build"
  ln -sfn "$common" "$mod/source"
  say "no headers package for kernel $(uname -r): linked $mod/build -> $arch and $mod/source -> $common"
}

python_env() {
  local venv="$ROOT/.venv" stamp
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import bcc' 2>/dev/null; then
    rm -rf "$venv"
    say "creating $venv from /usr/bin/python3 with --system-site-packages"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
  fi
  stamp=$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
  if [ "$(cat "$venv/.pktbeat-installed" 2>/dev/null)" != "$stamp" ] || [ ! -x "$venv/bin/pktbeat" ]; then
    say "installing pktbeat and its Python dependencies into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]" >/tmp/pktbeat-pip.log 2>&1 \
      || { tail -20 /tmp/pktbeat-pip.log >&2; die "pip install failed (log: /tmp/pktbeat-pip.log)"; }
    echo "$stamp" > "$venv/.pktbeat-installed"
  fi
  # Native (mypyc) builds of the per-packet modules: ~20% faster replay. Rebuilt whenever those
  # sources change; agent/accel.py ignores a build that does not match them.
  if ! "$venv/bin/python" "$ROOT/scripts/accel.py" check 2>/dev/null; then
    say "compiling the per-packet modules with mypyc into $venv/pktbeat-accel (about a minute)"
    if ! PKTBEAT_PURE_PYTHON=1 "$venv/bin/python" "$ROOT/scripts/accel.py" build >/tmp/pktbeat-accel.log 2>&1; then
      say "warning: mypyc build failed, running pure Python (log: /tmp/pktbeat-accel.log)"
    fi
  fi
}

apt_install "${APT_PACKAGES[@]}"
kernel_headers
python_env

case "$MODE" in
  setup) say "ready: $ROOT/.venv/bin/pktbeat" ;;
  run)   exec "$ROOT/.venv/bin/pktbeat" run -c "$ROOT/packetbeat.yml" "$@" ;;
  test)
    "$ROOT/.venv/bin/ruff" check agent tests bench docs
    "$ROOT/.venv/bin/mypy" --no-error-summary
    exec "$ROOT/.venv/bin/python" -m pytest "$@" ;;
  *) die "unknown mode '$MODE' (use run, test, or nothing for set-up only)" ;;
esac
