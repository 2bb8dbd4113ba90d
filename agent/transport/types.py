"""Types the transport layer hands to protocol parsers: direction and endpoints."""

from __future__ import annotations

import enum
import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=65536)
def ip_text(raw: bytes) -> str:
    """The printable form of a 4- or 16-byte address (cached: events repeat addresses)."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    text = socket.inet_ntop(socket.AF_INET6, raw)
    if text.startswith("::ffff:") and "." in text:
        return text  # keep IPv4-mapped form as the kernel shows it
    return text


def ip_bytes(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: bytes  # 4 or 16 bytes
    port: int  # 0 for ICMP

    @property
    def ip_text(self) -> str:
        return ip_text(self.ip)

    def __str__(self) -> str:
        return f"{self.ip_text}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Who is client and who is server on one connection or datagram exchange."""

    client: Endpoint
    server: Endpoint
    family: int  # 4 or 6
    transport: str  # "tcp", "udp", "icmp", "ipv6-icmp"
    conn_id: int = 0  # unique per TCP connection in this process
    tunnel: TunnelInfo | None = None  # what carried it, seen from the client (outer_src on the client's side)

    def reversed(self) -> ConnectionInfo:
        tunnel = self.tunnel.reversed() if self.tunnel is not None else None
        return ConnectionInfo(self.server, self.client, self.family, self.transport, self.conn_id, tunnel)
