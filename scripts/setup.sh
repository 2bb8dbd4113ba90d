#!/usr/bin/env bash
# Set-up for pktbeat on Debian 12, as root, then one of:
#   scripts/setup.sh run  [pktbeat run options]   runtime set-up, then live capture with ./packetbeat.yml
#   scripts/setup.sh test [pytest options]        test set-up, then the whole test suite (what .ci/run calls)
#   scripts/setup.sh                              runtime set-up only (no servers, no test tools)
#   scripts/setup.sh dev                          test set-up only (what a developer's worktree needs)
#   scripts/setup.sh plan run|test                the Debian packages that mode needs, one per line; changes nothing
# The runtime set-up installs only what the agent needs on a monitored host: BCC, kernel headers,
# a venv with pktbeat's runtime dependencies.  Test mode adds the servers and tools the tests drive
# and the test extras.  Every step checks first and does nothing when its work is already done, so
# a second run takes a second or two.
# PKTBEAT_VENV puts the venv elsewhere (default: ./.venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-setup}"
[ $# -gt 0 ] && shift
VENV="${PKTBEAT_VENV:-$ROOT/.venv}"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# What the agent needs at run time (the native build needs the compiler and Python headers).
RUNTIME_PACKAGES=(python3 python3-venv python3-bpfcc ca-certificates python3-dev gcc)
# What the tests add: the real servers and clients they drive, packet tools, tmux for `pktbeat top`,
# systemd for `systemd-analyze verify` of the unit (this machine's init need not be systemd).
TEST_PACKAGES=(
  make iproute2 iputils-ping ethtool tcpdump tshark curl openssl procps psmisc socat netcat-openbsd tmux systemd
  nginx-light dnsmasq-base bind9-dnsutils
  redis-server redis-tools memcached sip-tester busybox rabbitmq-server
  postgresql postgresql-contrib postgresql-client
  mariadb-server mariadb-client
  wrk dnsperf libmemcached-tools tcpreplay
  exim4-daemon-light swaks libnet-ssleay-perl
  slapd ldap-utils nghttp2-client
)

# The headers package BCC compiles against: the running kernel's own, or Debian's generic one.
headers_package() {
  local own="linux-headers-$(uname -r)"
  if apt-cache show "$own" >/dev/null 2>&1; then echo "$own"; else echo linux-headers-amd64; fi
}

packages_for() {
  printf '%s\n' "${RUNTIME_PACKAGES[@]}"
  headers_package
  [ "$1" = test ] && printf '%s\n' "${TEST_PACKAGES[@]}"
  return 0
}

if [ "$MODE" = plan ]; then
  case "${1:-}" in
    run|test) packages_for "$1"; exit 0 ;;
    *) die "usage: scripts/setup.sh plan run|test" ;;
  esac
fi

case "$MODE" in
  setup|run) LEVEL=run ;;
  test|dev) LEVEL=test ;;
  *) die "unknown mode '$MODE' (use run, test, dev, plan run|test, or nothing for set-up only)" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (BPF, TC and network namespaces need it)"
[ -r /etc/debian_version ] || die "this script targets Debian 12"

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
  # slapd: the tests run their own slapd with its own configuration; no system-wide directory
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
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

# The venv records what it was set up for: a test venv also serves `run`, never the reverse.
python_env() {
  local stamp want extras
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
    rm -rf "$VENV"
    say "creating $VENV from /usr/bin/python3 with --system-site-packages"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
  stamp=$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)
  want="$stamp $LEVEL"
  case "$(cat "$VENV/.pktbeat-installed" 2>/dev/null)" in
    "$stamp test") [ -x "$VENV/bin/pktbeat" ] && return 0 ;;
    "$want") [ -x "$VENV/bin/pktbeat" ] && return 0 ;;
  esac
  extras=""
  [ "$LEVEL" = test ] && extras="[test,bench]"
  say "installing pktbeat and its ${LEVEL/run/runtime} Python dependencies into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT$extras" >/tmp/pktbeat-pip.log 2>&1 \
    || { tail -20 /tmp/pktbeat-pip.log >&2; die "pip install failed (log: /tmp/pktbeat-pip.log)"; }
  echo "$want" > "$VENV/.pktbeat-installed"
}

# Native (mypyc) builds of the per-packet modules: ~20% faster replay. Rebuilt whenever those sources
# change; agent/accel.py ignores a build that does not match them.  A runtime venv has no mypy: the
# build then reuses ./.venv's matching build, or compiles in a throw-away venv.
native_build() {
  "$VENV/bin/python" "$ROOT/scripts/accel.py" check 2>/dev/null && return 0
  local builder="$VENV" scratch=""
  if [ ! -x "$VENV/bin/mypyc" ]; then
    if [ "$VENV" != "$ROOT/.venv" ] && [ -x "$ROOT/.venv/bin/python" ] \
        && "$ROOT/.venv/bin/python" "$ROOT/scripts/accel.py" check 2>/dev/null; then
      rm -rf "$VENV/pktbeat-accel"
      cp -a "$ROOT/.venv/pktbeat-accel" "$VENV/pktbeat-accel"
      "$VENV/bin/python" "$ROOT/scripts/accel.py" check 2>/dev/null && return 0
    fi
    scratch=$(mktemp -d /tmp/pktbeat-accel-venv.XXXXXX)
    /usr/bin/python3 -m venv --system-site-packages "$scratch"
    "$scratch/bin/pip" install -q --disable-pip-version-check "mypy>=1.11" -e "$ROOT" >/tmp/pktbeat-accel.log 2>&1 \
      || { rm -rf "$scratch"; say "warning: no mypy for the native build, running pure Python"; return 0; }
    builder="$scratch"
  fi
  say "compiling the per-packet modules with mypyc into $VENV/pktbeat-accel (about a minute)"
  if PKTBEAT_PURE_PYTHON=1 "$builder/bin/python" "$ROOT/scripts/accel.py" build >>/tmp/pktbeat-accel.log 2>&1; then
    if [ -n "$scratch" ]; then
      rm -rf "$VENV/pktbeat-accel"
      cp -a "$scratch/pktbeat-accel" "$VENV/pktbeat-accel"
    fi
  else
    say "warning: mypyc build failed, running pure Python (log: /tmp/pktbeat-accel.log)"
  fi
  [ -n "$scratch" ] && rm -rf "$scratch"
  return 0
}

mapfile -t PACKAGES < <(packages_for "$LEVEL" | grep -v '^linux-headers-')
apt_install "${PACKAGES[@]}"
kernel_headers
python_env
native_build

case "$MODE" in
  setup|dev) say "ready: $VENV/bin/pktbeat" ;;
  run)   exec "$VENV/bin/pktbeat" run -c "$ROOT/packetbeat.yml" "$@" ;;
  test)
    "$VENV/bin/ruff" check agent tests bench docs
    "$VENV/bin/mypy" --no-error-summary
    exec "$VENV/bin/python" -m pytest "$@" ;;
esac
