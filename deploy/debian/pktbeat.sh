#!/bin/sh
# /usr/bin/pktbeat: the installed program with Packetbeat's installed layout (each path can still be
# overridden with --path.home/config/data/logs or -E path.*=...).
PKTBEAT_PATH_HOME="${PKTBEAT_PATH_HOME:-/usr/share/pktbeat}"
PKTBEAT_PATH_CONFIG="${PKTBEAT_PATH_CONFIG:-/etc/pktbeat}"
PKTBEAT_PATH_DATA="${PKTBEAT_PATH_DATA:-/var/lib/pktbeat}"
PKTBEAT_PATH_LOGS="${PKTBEAT_PATH_LOGS:-/var/log/pktbeat}"
export PKTBEAT_PATH_HOME PKTBEAT_PATH_CONFIG PKTBEAT_PATH_DATA PKTBEAT_PATH_LOGS
exec /opt/pktbeat/bin/pktbeat "$@"
