"""The transport's value types: compiled (mypyc) or not, they behave as the frozen dataclasses they replaced."""

from __future__ import annotations

import pickle
import socket

import pytest

from agent.capture.tunnel import TunnelInfo
from agent.transport import types
from agent.transport.types import ConnectionInfo, Endpoint, ip_bytes, ip_text


def test_ip_text_prints_as_inet_ntop_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(types, "_ip_texts", {})
    monkeypatch.setattr(types, "IP_TEXT_CACHE_LIMIT", 2)
    for text in ("0.0.0.0", "10.2.30.255", "255.255.255.255", "::1", "2001:db8::8:800:200c:417a", "::ffff:10.0.0.1"):
        raw = ip_bytes(text)
        family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
        assert ip_text(raw) == ip_text(raw) == socket.inet_ntop(family, raw)
        assert 1 <= len(types._ip_texts) <= 2


def test_endpoints_and_connections_compare_hash_print_and_pickle_by_value() -> None:
    tunnel = TunnelInfo(("vxlan",), 42, ip_bytes("192.0.2.1"), ip_bytes("192.0.2.2"))
    conn = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 40000), Endpoint(ip_bytes("10.0.0.2"), 53), 4, "udp", 7,
                          tunnel)
    same = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), 40000), Endpoint(ip_bytes("10.0.0.2"), 53), 4, "udp",
                          conn_id=7, tunnel=tunnel)
    assert conn == same and hash(conn) == hash(same) and len({conn, same}) == 1
    assert conn != ConnectionInfo(conn.client, conn.server, 4, "tcp", 7, tunnel)
    assert conn.client != (conn.client.ip, conn.client.port)  # not a tuple
    assert pickle.loads(pickle.dumps(conn)) == conn
    assert repr(conn.client) == "Endpoint(ip=b'\\n\\x00\\x00\\x01', port=40000)"
    assert repr(conn).startswith("ConnectionInfo(client=Endpoint(") and repr(conn).endswith(f"tunnel={tunnel!r})")
    assert str(conn.server) == "10.0.0.2:53"
    back = conn.reversed()
    assert (back.client, back.server, back.tunnel) == (conn.server, conn.client, tunnel.reversed())
    assert back.reversed() == conn
