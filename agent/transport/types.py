"""Types the transport layer hands to protocol parsers: direction and endpoints.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Endpoint and ConnectionInfo are hand-written rather than frozen dataclasses: a
compiled frozen dataclass keeps the interpreted `__init__` that sets each field
with object.__setattr__, thousands of instructions per object, and a resolver
sees a new client port in every query.  Native, one costs about a hundred when
compiled code makes it.  They behave as the dataclasses did: equal and hashed
by their fields, the same repr, picklable, and their Final fields cannot be set.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from typing import Final

from agent.capture.tunnel import TunnelInfo


class Direction(enum.IntEnum):
    """Which way bytes flow, decided once per packet by the transport layer."""

    TO_SERVER = 0  # client -> server: requests
    TO_CLIENT = 1  # server -> client: responses

    @property
    def other(self) -> Direction:
        return Direction.TO_CLIENT if self is Direction.TO_SERVER else Direction.TO_SERVER


TO_SERVER = Direction.TO_SERVER
TO_CLIENT = Direction.TO_CLIENT


IP_TEXT_CACHE_LIMIT = 65536  # addresses whose printable form is remembered; the whole cache is dropped when full
_ip_texts: dict[bytes, str] = {}


def ip_text(raw: bytes) -> str:
    """The printable form of a 4- or 16-byte address (remembered: events repeat addresses)."""
    text = _ip_texts.get(raw)
    if text is None:
        # IPv4 as inet_ntop prints it, without its call; IPv6 (IPv4-mapped included) as the kernel shows it.
        text = f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}" if len(raw) == 4 else socket.inet_ntop(socket.AF_INET6, raw)
        if len(_ip_texts) >= IP_TEXT_CACHE_LIMIT:
            _ip_texts.clear()
        _ip_texts[raw] = text
    return text


def ip_bytes(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


class Endpoint:
    """One end of a conversation.  Immutable: its fields are Final (read-only in the compiled class)."""

    __slots__ = ("ip", "port")

    def __init__(self, ip: bytes, port: int) -> None:
        self.ip: Final = ip  # 4 or 16 bytes
        self.port: Final = port  # 0 for ICMP

    @property
    def ip_text(self) -> str:
        return ip_text(self.ip)

    def __str__(self) -> str:
        return f"{self.ip_text}:{self.port}"

    def __repr__(self) -> str:
        return f"Endpoint(ip={self.ip!r}, port={self.port!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Endpoint:
            return NotImplemented
        assert isinstance(other, Endpoint)
        return self.ip == other.ip and self.port == other.port

    def __hash__(self) -> int:
        return hash((self.ip, self.port))

    def __reduce__(self) -> tuple[type[Endpoint], tuple[bytes, int]]:
        return Endpoint, (self.ip, self.port)


class ConnectionInfo:
    """Who is client and who is server on one connection or datagram exchange.  Immutable, as Endpoint."""

    __slots__ = ("client", "conn_id", "family", "server", "transport", "tunnel")

    def __init__(self, client: Endpoint, server: Endpoint, family: int, transport: str, conn_id: int = 0,
                 tunnel: TunnelInfo | None = None) -> None:
        self.client: Final = client
        self.server: Final = server
        self.family: Final = family  # 4 or 6
        self.transport: Final = transport  # "tcp", "udp", "icmp", "ipv6-icmp"
        self.conn_id: Final = conn_id  # unique per TCP connection in this process
        # What carried it, seen from the client (outer_src on the client's side).
        self.tunnel: Final = tunnel

    def _fields(self) -> tuple[Endpoint, Endpoint, int, str, int, TunnelInfo | None]:
        return self.client, self.server, self.family, self.transport, self.conn_id, self.tunnel

    def __repr__(self) -> str:
        return (f"ConnectionInfo(client={self.client!r}, server={self.server!r}, family={self.family!r}, "
                f"transport={self.transport!r}, conn_id={self.conn_id!r}, tunnel={self.tunnel!r})")

    def __eq__(self, other: object) -> bool:
        if type(other) is not ConnectionInfo:
            return NotImplemented
        assert isinstance(other, ConnectionInfo)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __reduce__(self) -> tuple[type[ConnectionInfo], tuple[object, ...]]:
        return ConnectionInfo, self._fields()

    def reversed(self) -> ConnectionInfo:
        tunnel = self.tunnel.reversed() if self.tunnel is not None else None
        return ConnectionInfo(self.server, self.client, self.family, self.transport, self.conn_id, tunnel)
