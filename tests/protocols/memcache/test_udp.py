"""Memcache over UDP: frame headers, messages over several datagrams (duplicates, any order), timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from agent.metrics import Counters
from agent.protocols.base import Transaction
from agent.protocols.memcache.plugin import SPEC, MemcacheUdp
from agent.transport.session import ParseError
from tests.helpers.sessions import C2S, S2C, conn_info, protocol_config
from tests.protocols.memcache.messages import GET, SETQ, binary, u32, udp_frame

MS = 1_000_000


def handler(**options: Any) -> tuple[MemcacheUdp, list[Transaction], Counters]:
    out: list[Transaction] = []
    counters = Counters("test.memcache.udp")
    assert SPEC.udp is not None
    h = SPEC.udp(protocol_config("memcache", **options), out.append, counters)
    assert isinstance(h, MemcacheUdp)
    return h, out, counters


CONN = conn_info(11211, "udp")


def test_request_and_reply_pair_by_request_id() -> None:
    h, out, _ = handler()
    h.datagram(C2S, CONN, udp_frame(7, 0, 1, b"get a\r\n"), 1 * MS)
    h.datagram(C2S, CONN, udp_frame(8, 0, 1, b"get b\r\n"), 2 * MS)
    h.datagram(S2C, CONN, udp_frame(8, 0, 1, b"END\r\n"), 3 * MS)
    h.datagram(S2C, CONN, udp_frame(7, 0, 1, b"VALUE a 0 1\r\nx\r\nEND\r\n"), 4 * MS)
    assert [(t.fields["memcache"]["request"]["keys"], t.end_ns) for t in out] == [(["b"], 3 * MS), (["a"], 4 * MS)]
    assert out[1].fields["memcache"]["response"]["keys"] == ["a"] and out[1].status == "OK"
    assert out[0].server_bytes == len(b"get b\r\n")  # the request size, without the frame header
    assert h.pending() == 0


def test_reply_over_several_datagrams_with_duplicates_and_reordering() -> None:
    h, out, counters = handler(maxvalues=-1)
    value = bytes(range(256)) * 20  # six datagrams
    reply = b"VALUE big 0 %d\r\n" % len(value) + value + b"\r\nEND\r\n"
    parts = [reply[i:i + 1000] for i in range(0, len(reply), 1000)]
    h.datagram(C2S, CONN, udp_frame(3, 0, 1, b"get big\r\n"), 1)
    order = [2, 0, 2, 1, 0, *list(range(3, len(parts)))]
    for seq in order:
        h.datagram(S2C, CONN, udp_frame(3, seq, len(parts), parts[seq]), 2)
    (txn,) = out
    response = txn.fields["memcache"]["response"]
    assert response["bytes"] == len(value) and response["count_values"] == 1
    assert counters["udp_duplicates"] == 2 and txn.client_bytes == len(reply)
    # A duplicate after the exchange was published starts a message that never completes: dropped, counted.
    h.datagram(S2C, CONN, udp_frame(3, 1, len(parts), parts[1]), 3)
    h.tick(10**15)
    assert len(out) == 1 and counters["udp_dropped_messages"] == 1


def test_quiet_and_noreply_requests_are_published_at_once() -> None:
    h, out, _ = handler()
    h.datagram(C2S, CONN, udp_frame(1, 0, 1, b"set k 0 0 1 noreply\r\nv\r\n"), 1)
    h.datagram(C2S, CONN, udp_frame(2, 0, 1, binary(SETQ, key=b"k", extras=u32(0) + u32(0), value=b"v")), 2)
    assert [t.status for t in out] == ["OK", "OK"] and h.pending() == 0
    assert out[1].fields["memcache"]["request"]["quiet"] is True


def test_unanswered_request_after_udptransactiontimeout() -> None:
    h, out, counters = handler(udptransactiontimeout="10ms")
    h.datagram(C2S, CONN, udp_frame(5, 0, 1, binary(GET, key=b"k")), 1 * MS)
    h.tick(5 * MS)
    assert out == [] and h.pending() == 1
    h.tick(12 * MS)
    (txn,) = out
    assert txn.status == "Server Error" and txn.end_ns is None and counters["unmatched_requests"] == 1
    h.datagram(S2C, CONN, udp_frame(6, 0, 1, b"STORED\r\n"), 20 * MS)
    h.tick(40 * MS)
    assert out[1].status == "Client Error" and not out[1].has_request


def test_default_udp_timeout_is_ten_seconds() -> None:
    h, _out, _ = handler()
    assert h.timeout_ns == 10 * 1000 * MS


@pytest.mark.parametrize("bad", [b"\x00\x01", udp_frame(1, 0, 0, b"get a\r\n"), udp_frame(1, 0, 2000, b"x"),
                                 udp_frame(1, 5, 2, b"x")])
def test_bad_frame_headers_are_rejected(bad: bytes) -> None:
    h, out, _ = handler()
    with pytest.raises(ParseError):
        h.datagram(C2S, CONN, bad, 1)
    assert out == [] and h.pending() == 0


def test_datagram_count_changing_drops_the_exchange() -> None:
    h, _out, counters = handler()
    h.datagram(S2C, CONN, udp_frame(9, 0, 3, b"VALUE"), 1)
    with pytest.raises(ParseError, match="changed"):
        h.datagram(S2C, CONN, udp_frame(9, 1, 2, b" k 0 1"), 2)
    assert counters["udp_dropped_messages"] == 1 and not h.exchanges


def test_incomplete_message_is_dropped() -> None:
    h, out, counters = handler()
    with pytest.raises(ParseError, match="incomplete"):
        h.datagram(C2S, CONN, udp_frame(4, 0, 1, b"set k 0 0 10\r\nabc"), 1)
    h.tick(10**15)
    assert out == [] and counters["udp_dropped_messages"] == 1


def test_exchange_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.protocols.memcache import plugin

    monkeypatch.setattr(plugin, "MAX_UDP_TRANSACTIONS", 10)
    h, out, counters = handler()
    for i in range(25):
        h.datagram(C2S, CONN, udp_frame(i, 0, 1, b"get k%d\r\n" % i), i)
    assert len(h.exchanges) == 10 and counters["udp_table_overflow"] == 15 and len(out) == 15
