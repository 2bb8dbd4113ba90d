"""Protocols that start TLS part-way hand the connection to the TLS decoder: literal bytes, three ways.

PostgreSQL's SSLRequest answered 'S' (and refused with 'N', which stays
PostgreSQL), MySQL's SSL request packet, SMTP's STARTTLS answered 220.  HTTP's CONNECT and Upgrade are in
tests/protocols/http/test_h2_session.py; the captures of real servers in
test_starttls.py.
"""

from __future__ import annotations

import struct
from typing import Any

from agent.protocols.mysql import wire
from agent.protocols.tls.plugin import TlsSession  # noqa: F401  (the protocol taking over must be importable)
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways
from tests.protocols.mysql import messages as my
from tests.protocols.pgsql import messages as pg
from tests.protocols.smtp import transcripts as smtp
from tests.protocols.tls import builders as b

SNI = "db.example.test"
CLIENT_HELLO = b.record(b.HANDSHAKE, b.client_hello(ciphers=(0xC02F, 0x1301), extensions=[b.sni(SNI)]))
SERVER_FLIGHT = b.record(b.HANDSHAKE, b.server_hello(cipher=0xC02F) + b.server_hello_done())
CLIENT_FINISH = b.record(b.HANDSHAKE, b.client_key_exchange()) + b.CHANGE_CIPHER_SPEC
SERVER_FINISH = b.CHANGE_CIPHER_SPEC + b.app_data()


def tls_steps(start: int) -> list[Step]:
    return [Step(C2S, CLIENT_HELLO, ts_ns=start), Step(S2C, SERVER_FLIGHT, ts_ns=start + 1),
            Step(C2S, CLIENT_FINISH, ts_ns=start + 2), Step(S2C, SERVER_FINISH, ts_ns=start + 3)]


def check_tls(txn: Any) -> None:
    assert txn.type == "tls"
    tls = txn.fields["tls"]
    assert tls["client"]["server_name"] == SNI and tls["established"] is True
    assert tls["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


def test_postgres_ssl_request_accepted() -> None:
    steps = [Step(C2S, pg.SSL_REQUEST, ts_ns=1), Step(S2C, b"S", ts_ns=2), *tls_steps(3)]
    [txn] = assert_same_three_ways("pgsql", steps, server_port=5432)
    check_tls(txn)
    assert txn.ts_ns == 3


def test_postgres_ssl_request_accepted_and_hello_in_the_same_segment_as_s() -> None:
    """A server's 'S' and an (unusual) eager client: what each side holds past the switch goes to TLS."""
    steps = [Step(C2S, pg.SSL_REQUEST + CLIENT_HELLO, ts_ns=1), Step(S2C, b"S" + SERVER_FLIGHT, ts_ns=2),
             Step(C2S, CLIENT_FINISH, ts_ns=3), Step(S2C, SERVER_FINISH, ts_ns=4)]
    [txn] = assert_same_three_ways("pgsql", steps, server_port=5432)
    check_tls(txn)


def test_postgres_gss_encryption_is_not_tls() -> None:
    steps = [Step(C2S, struct.pack("!ii", 8, 80877104), ts_ns=1), Step(S2C, b"G", ts_ns=2), *tls_steps(3)]
    assert assert_same_three_ways("pgsql", steps, server_port=5432) == []


def test_postgres_ssl_refused_stays_postgres() -> None:
    select_one = (pg.row_description("?column?") + pg.data_row(b"1") + pg.complete("SELECT 1") + pg.READY)
    steps = [Step(C2S, pg.SSL_REQUEST, ts_ns=1), Step(S2C, b"N", ts_ns=2), Step(C2S, pg.startup(), ts_ns=3),
             Step(S2C, pg.msg("R", struct.pack("!i", 0)) + pg.READY, ts_ns=4),
             Step(C2S, pg.query("select 1"), ts_ns=5), Step(S2C, select_one, ts_ns=6)]
    [txn] = assert_same_three_ways("pgsql", steps, server_port=5432)
    assert txn.type == "pgsql" and txn.fields["query"] == "select 1"


def _greeting(caps: int) -> bytes:
    payload = (b"\x0a" + b"10.11.6-MariaDB\x00" + struct.pack("<I", 9) + b"12345678\x00"
               + struct.pack("<H", caps & 0xFFFF) + b"\x21\x02\x00" + struct.pack("<H", caps >> 16) + b"\x15"
               + bytes(10) + b"123456789012\x00" + b"mysql_native_password\x00")
    return my.packet(0, payload)


def test_mysql_ssl_request() -> None:
    caps = (wire.CLIENT_PROTOCOL_41 | wire.CLIENT_SECURE_CONNECTION | wire.CLIENT_PLUGIN_AUTH | wire.CLIENT_SSL
            | wire.CLIENT_CONNECT_WITH_DB | 1)
    ssl_request = my.packet(1, struct.pack("<IIB", caps, 1 << 24, 0x21) + bytes(23))
    for pipelined in (False, True):  # clients send the ClientHello right behind the SSL request, often together
        head = [Step(S2C, _greeting(caps), ts_ns=1)]
        if pipelined:
            head.append(Step(C2S, ssl_request + CLIENT_HELLO, ts_ns=2))
            rest = tls_steps(3)[1:]
        else:
            head.append(Step(C2S, ssl_request, ts_ns=2))
            rest = tls_steps(3)
        [txn] = assert_same_three_ways("mysql", [*head, *rest], server_port=3306)
        check_tls(txn)


def test_smtp_starttls() -> None:
    """The SMTP events up to STARTTLS, then the handshake; a client that does not wait for the 220 included."""
    head = [Step(S2C, smtp.GREETING, ts_ns=1), Step(C2S, smtp.EHLO, ts_ns=2), Step(S2C, smtp.EHLO_REPLY, ts_ns=3)]
    ready = b"220 2.0.0 Ready to start TLS\r\n"
    waits = [Step(C2S, b"STARTTLS\r\n", ts_ns=4), Step(S2C, ready, ts_ns=5), *tls_steps(6)]
    eager = [Step(C2S, b"STARTTLS\r\n" + CLIENT_HELLO, ts_ns=4), Step(S2C, ready + SERVER_FLIGHT, ts_ns=5),
             *tls_steps(6)[2:]]
    for steps in (waits, eager):
        txns = assert_same_three_ways("smtp", [*head, *steps], server_port=25)
        assert [t.type for t in txns] == ["smtp", "smtp", "smtp", "tls"]
        assert txns[2].fields["smtp"]["command"] == "STARTTLS"
        check_tls(txns[3])


def test_smtp_starttls_refused_stays_smtp() -> None:
    steps = [Step(S2C, smtp.GREETING, ts_ns=1), Step(C2S, b"STARTTLS\r\n", ts_ns=2),
             Step(S2C, b"454 4.7.0 TLS not available\r\n", ts_ns=3), Step(C2S, b"NOOP\r\n", ts_ns=4),
             Step(S2C, b"250 2.0.0 Ok\r\n", ts_ns=5)]
    txns = assert_same_three_ways("smtp", steps, server_port=25)
    assert [t.fields["smtp"]["command"] for t in txns[1:]] == ["STARTTLS", "NOOP"]
