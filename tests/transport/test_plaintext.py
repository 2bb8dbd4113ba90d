"""TLS plaintext streams: the kernel's plaintext records fed to real protocol sessions, sans IO.

HTTP/1.1 and Redis plaintext as the kernel would send it (from the client's
or the server's end), whole, byte by byte and with trailing data; lost bytes
become gaps; the other end of the same connection is ignored; unrouted ports,
the connection limit, idle expiry and SSL_free's close record.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent import metrics
from agent.capture.tlsrecord import (
    F_CLOSE,
    F_LAST_CHUNK,
    RECEIVED,
    ROLE_CLIENT,
    ROLE_SERVER,
    SENT,
    PlaintextRecord,
    TlsRecordError,
    decode_plaintext_record,
    encode_plaintext_record,
)
from agent.config.load import from_tree
from agent.protocols.base import Transaction
from agent.runtime import wiring
from agent.runtime.plaintext import PAYLOAD_SOURCE, TlsPlaintext
from agent.transport.plaintext import PLAINTEXT_COUNTERS, PlaintextLimits, PlaintextStreams
from agent.transport.types import ConnectionInfo, Endpoint

CLIENT_IP, SERVER_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
CLIENT_PORT, HTTPS, REDIS_TLS = 40000, 443, 6380
REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
CONFIG = from_tree({"packetbeat": {
    "protocols": [{"type": "http", "ports": [80]}, {"type": "redis", "ports": [6379]}, {"type": "tls", "ports": [443]}],
    "tls_plaintext": {"enabled": True, "ports": {"http": [HTTPS], "redis": [REDIS_TLS]}}}})


def _record(data: bytes, direction: int, offset: int, role: int = ROLE_CLIENT, port: int = HTTPS,
            client_port: int = CLIENT_PORT, flags: int = F_LAST_CHUNK, missing: int = 0, source: int = 1,
            ts_ns: int = 1_000_000_000) -> PlaintextRecord:
    local, remote = (CLIENT_IP, client_port), (SERVER_IP, port)
    if role == ROLE_SERVER:
        local, remote = remote, local
    return PlaintextRecord(ts_ns, 100 + source, 0x7F0000 + source, 4026531840, 4, local[0], local[1], remote[0],
                           remote[1], direction, role, offset, data, missing, flags)


def _streams(limits: PlaintextLimits | None = None) -> tuple[PlaintextStreams, list[Transaction]]:
    out: list[Transaction] = []
    counters = metrics.Counters("test.tls_plaintext", PLAINTEXT_COUNTERS)
    return PlaintextStreams(wiring.plaintext_bindings(CONFIG, out.append), limits, counters), out


def _pieces(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    return [data[i:i + 1] for i in range(len(data))]


def _exchange(streams: PlaintextStreams, request: bytes, response: bytes, how: str, role: int = ROLE_CLIENT,
              port: int = HTTPS) -> None:
    """What the client (or server) end's SSL calls give, in `how` pieces; then SSL_free."""
    out_dir, in_dir = (SENT, RECEIVED) if role == ROLE_CLIENT else (RECEIVED, SENT)
    for data, direction in ((request, out_dir), (response, in_dir)):
        offset = 0
        for piece in _pieces(data, how):
            streams.record(_record(piece, direction, offset, role, port))
            offset += len(piece)
    streams.record(_record(b"", SENT, 0, role, port, flags=F_CLOSE))


def _http(txn: Transaction) -> tuple[Any, ...]:
    fields = txn.fields
    return (txn.type, fields["method"], fields["url"]["path"], fields["http"]["response"]["status_code"],
            txn.conn.client, txn.conn.server)


@pytest.mark.parametrize("how", ["whole", "bytes"])
@pytest.mark.parametrize("role", [ROLE_CLIENT, ROLE_SERVER])
def test_http_from_either_end(how: str, role: int) -> None:
    streams, out = _streams()
    _exchange(streams, REQUEST, RESPONSE, how, role)
    assert [_http(t) for t in out] == [("http", "GET", "/index.html", 200, Endpoint(CLIENT_IP, CLIENT_PORT),
                                        Endpoint(SERVER_IP, HTTPS))]
    assert len(streams) == 0 and streams.counters["closed"] == 1


def test_trailing_data_stays_for_the_next_request() -> None:
    streams, out = _streams()
    streams.record(_record(REQUEST + b"GET /second HTTP/1.1\r\n", SENT, 0))
    streams.record(_record(RESPONSE, RECEIVED, 0))
    assert [t.fields["url"]["path"] for t in out] == ["/index.html"]
    streams.record(_record(b"Host: x\r\n\r\n", SENT, len(REQUEST) + 22))
    streams.record(_record(RESPONSE, RECEIVED, len(RESPONSE)))
    assert [t.fields["url"]["path"] for t in out] == ["/index.html", "/second"]


def test_redis_by_its_plaintext_port_and_by_its_own_port() -> None:
    streams, out = _streams()
    command = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    _exchange(streams, command, b"+OK\r\n", "whole", port=REDIS_TLS)
    _exchange(streams, command, b"+OK\r\n", "bytes", port=6379)  # TLS on the protocol's own port
    assert [(t.type, t.fields["method"], t.conn.server.port) for t in out] == [("redis", "SET", REDIS_TLS),
                                                                                ("redis", "SET", 6379)]


def test_lost_bytes_are_gaps_and_the_stream_goes_on() -> None:
    streams, out = _streams()
    body = b"x" * 100
    post = b"POST /up HTTP/1.1\r\nContent-Length: 100\r\n\r\n"
    streams.record(_record(post + body[:40], SENT, 0, missing=60))  # the kernel copied 40 of 100 body bytes
    streams.record(_record(RESPONSE, RECEIVED, 0))
    streams.record(_record(REQUEST, SENT, len(post) + 100 + 7, flags=F_LAST_CHUNK))  # 7 more bytes lost (ring full)
    streams.record(_record(RESPONSE, RECEIVED, len(RESPONSE)))
    assert streams.counters["gaps"] == 2 and streams.counters["gap_bytes"] == 67
    assert out[0].fields["method"] == "POST"


def test_the_other_end_of_the_same_connection_is_ignored() -> None:
    streams, out = _streams()
    streams.record(_record(REQUEST, SENT, 0, ROLE_CLIENT, source=1))
    streams.record(_record(REQUEST, RECEIVED, 0, ROLE_SERVER, source=2))  # the server's SSL_read of it
    streams.record(_record(RESPONSE, SENT, 0, ROLE_SERVER, source=2))
    streams.record(_record(RESPONSE, RECEIVED, 0, ROLE_CLIENT, source=1))
    streams.record(_record(b"", SENT, 0, ROLE_SERVER, source=2, flags=F_CLOSE))  # not the decoded end's close
    assert len(out) == 1 and streams.counters["other_side"] == 2 and len(streams) == 1


def test_unrouted_ports_limit_and_expiry() -> None:
    streams, out = _streams(PlaintextLimits(max_connections=2))
    streams.record(_record(REQUEST, SENT, 0, port=9999))
    assert streams.counters["unrouted"] == 1 and len(streams) == 0
    for i in range(3):
        streams.record(_record(REQUEST, SENT, 0, client_port=41000 + i, ts_ns=10**9 + i))
    assert len(streams) == 2 and streams.counters["connections_evicted"] == 1
    streams.expire(10**9 + 2 + 10 * 10**9)  # http's transaction_timeout: 10 s
    assert len(streams) == 0 and streams.counters["connections_expired"] == 2
    assert all(t.status == "Error" or t.fields for t in out)  # requests without responses were published


def test_records_round_trip_and_bad_ones_are_refused() -> None:
    rec = _record(REQUEST, SENT, 12345, missing=7)
    raw = encode_plaintext_record(rec)
    assert decode_plaintext_record(raw) == rec
    assert decode_plaintext_record(raw, ts_offset=5).ts_ns == rec.ts_ns + 5
    for bad in (raw[:40], raw[:-1], raw[:52] + b"\x09" + raw[53:]):  # short, truncated payload, family 9
        with pytest.raises(TlsRecordError):
            decode_plaintext_record(bad)


def test_events_get_the_handshake_of_their_connection_and_the_payload_source() -> None:
    out: list[Transaction] = []
    plain = TlsPlaintext(out.append, lambda emit: wiring.plaintext_bindings(CONFIG, emit), 100)
    conn = ConnectionInfo(Endpoint(CLIENT_IP, CLIENT_PORT), Endpoint(SERVER_IP, HTTPS), 4, "tcp", 1)
    handshake = {"version": "1.3", "cipher": "TLS_AES_128_GCM_SHA256", "established": True, "detailed": {"x": 1}}
    plain.wire_transaction(Transaction(type="tls", conn=conn, ts_ns=1, fields={"tls": handshake}, domain="ex.test"))
    for rec in (_record(REQUEST, SENT, 0), _record(RESPONSE, RECEIVED, 0)):
        plain.record(encode_plaintext_record(rec), 0)
    plain.record(b"\0" * 10, 0)
    assert [t.type for t in out] == ["tls", "http"]
    http = out[1]
    assert http.fields["tls"] == {"version": "1.3", "cipher": "TLS_AES_128_GCM_SHA256", "established": True}
    assert http.fields["pktbeat"] == {"payload": {"source": PAYLOAD_SOURCE}} and http.domain == "example.test"
    assert plain.counters["with_handshake"] >= 1 and plain.counters["bad_records"] >= 1
