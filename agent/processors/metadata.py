"""host.* as libbeat's add_host_metadata fills it, read once from this machine."""

from __future__ import annotations

import functools
import os
import platform
import socket
from typing import Any


def _os_release() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.strip().partition("=")
                if key:
                    info[key] = value.strip('"')
    except OSError:
        pass
    return info


def _addresses() -> tuple[list[str], list[str]]:
    ips: list[str] = []
    macs: list[str] = []
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for link in ipr.get_links():
                mac = link.get_attr("IFLA_ADDRESS")
                name = link.get_attr("IFLA_IFNAME")
                if mac and name != "lo" and mac != "00:00:00:00:00:00" and len(mac) == 17:
                    text = mac.upper().replace(":", "-")
                    if text not in macs:
                        macs.append(text)
            for addr in ipr.get_addr():
                ip = addr.get_attr("IFA_ADDRESS")
                if ip and ip not in ips:
                    ips.append(ip)
    except Exception:
        pass
    return ips, macs


@functools.cache
def host_metadata(with_network: bool = True) -> dict[str, Any]:
    release = _os_release()
    uname = platform.uname()
    host: dict[str, Any] = {
        "name": socket.gethostname(),
        "hostname": socket.gethostname(),
        "architecture": uname.machine,
        "containerized": os.path.exists("/.dockerenv"),
        "os": {
            "family": release.get("ID_LIKE", release.get("ID", "")).split(" ")[0] or "linux",
            "name": release.get("NAME", "Linux"),
            "kernel": uname.release,
            "codename": release.get("VERSION_CODENAME", ""),
            "platform": release.get("ID", "linux"),
            "version": release.get("VERSION", ""),
            "type": "linux",
        },
    }
    try:
        with open("/etc/machine-id", encoding="ascii") as handle:
            host["id"] = handle.read().strip()
    except OSError:
        pass
    if with_network:
        ips, macs = _addresses()
        if ips:
            host["ip"] = ips
        if macs:
            host["mac"] = macs
    host["os"] = {k: v for k, v in host["os"].items() if v}
    return host
