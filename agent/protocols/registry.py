"""The protocol table.  Adding a protocol = its package + one line here.

Each line names the module holding the protocol's `SPEC`; modules are
imported lazily, so a protocol's dependencies cost nothing when it is off.
"""

from __future__ import annotations

import importlib
from functools import cache

from agent.protocols.base import ProtocolSpec

# type -> module with a module-level `SPEC: ProtocolSpec`
PROTOCOLS: dict[str, str] = {
    "icmp": "agent.protocols.icmp.plugin",
    "http": "agent.protocols.http.plugin",
    "dns": "agent.protocols.dns.plugin",
    "tls": "agent.protocols.tls.plugin",
    "mysql": "agent.protocols.mysql.plugin",
    "pgsql": "agent.protocols.pgsql.plugin",
    "redis": "agent.protocols.redis.plugin",
    "mongodb": "agent.protocols.mongodb.plugin",
    "memcache": "agent.protocols.memcache.plugin",
    "amqp": "agent.protocols.amqp.plugin",
    "cassandra": "agent.protocols.cassandra.plugin",
    "thrift": "agent.protocols.thrift.plugin",
    "nfs": "agent.protocols.nfs.plugin",
    "sip": "agent.protocols.sip.plugin",
    "dhcpv4": "agent.protocols.dhcpv4.plugin",
    "smtp": "agent.protocols.smtp.plugin",
    "tns": "agent.protocols.tns.plugin",
}

# Packetbeat protocols pktbeat does not decode yet: configuring them is a warning, not an error.
NOT_YET_SUPPORTED: frozenset[str] = frozenset()


class UnknownProtocol(KeyError):
    pass


@cache
def spec(name: str) -> ProtocolSpec:
    module_name = PROTOCOLS.get(name)
    if module_name is None:
        raise UnknownProtocol(name)
    module = importlib.import_module(module_name)
    found = getattr(module, "SPEC", None)
    if not isinstance(found, ProtocolSpec) or found.name != name:
        raise TypeError(f"{module_name} must define SPEC = ProtocolSpec(name={name!r}, ...)")
    return found


def available() -> list[str]:
    """Protocols whose package is present (a missing package is skipped, not fatal)."""
    out = []
    for name in PROTOCOLS:
        try:
            spec(name)
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out
