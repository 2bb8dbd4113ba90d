"""Bounded fuzzing: whatever the bytes, only ParseError may leave the TLS parser and session."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocols.tls.certificates import Certificate
from agent.protocols.tls.parser import DirectionParser
from agent.transport.session import ParseError
from agent.transport.types import Direction
from tests.helpers.sessions import C2S, S2C, Step, run_stream
from tests.protocols.tls import builders as b

FUZZ = settings(max_examples=150, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])


@cache
def chain_ders() -> tuple[bytes, bytes]:
    leaf, ca = b.make_chain()
    return b.der(leaf), b.der(ca)


@cache
def handshake_streams() -> tuple[bytes, bytes]:
    """(client bytes, server bytes) of a complete TLS 1.2 handshake with a certificate chain."""
    leaf, ca = chain_ders()
    client = (b.record(b.HANDSHAKE, b.client_hello(session_id=b"\x05" * 32, extensions=[
        b.sni("fuzz.test"), b.alpn("h2"), b.groups(29, 23), b.point_formats(0), b.status_request(),
        b.client_versions(0x0304, 0x0303), b.signature_algorithms(0x0403), b.session_ticket(b"\x01" * 8)]))
        + b.record(b.HANDSHAKE, b.client_key_exchange()) + b.CHANGE_CIPHER_SPEC + b.app_data(20))
    flight = (b.server_hello(session_id=b"\x05" * 32, extensions=[b.alpn("h2"), b.server_version(0x0303),
                                                                 b.session_ticket()])
              + b.certificate(leaf, ca) + b.certificate_status(b"\x30\x03\x0a\x01\x00")
              + b.server_key_exchange_ecdhe() + b.certificate_request() + b.server_hello_done())
    server = b.records(b.HANDSHAKE, flight, 500) + b.alert(1, 112) + b.CHANGE_CIPHER_SPEC + b.app_data(30)
    return client, server


def mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 6))):
        if not out:
            break
        pos = draw(st.integers(0, len(out) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            out[pos] ^= draw(st.integers(1, 255))
        elif action == "delete":
            del out[pos:pos + draw(st.integers(1, 40))]
        elif action == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        else:
            del out[pos:]
    return bytes(out)


@st.composite
def sessions(draw: st.DrawFn) -> list[Step]:
    client, server = handshake_streams()
    client, server = mutate(client, draw), mutate(server, draw)
    steps: list[Step] = []
    pos = {C2S: 0, S2C: 0}
    data = {C2S: client, S2C: server}
    ts = 1
    while pos[C2S] < len(client) or pos[S2C] < len(server):
        direction = draw(st.sampled_from([C2S, S2C]))
        if pos[direction] >= len(data[direction]):
            direction = direction.other
        size = 900 - draw(st.integers(0, 899))  # shrinks towards few, large chunks
        chunk = data[direction][pos[direction]:pos[direction] + size]
        pos[direction] += size
        ts += 1
        if draw(st.integers(0, 15)) == 0:
            steps.append(Step(direction, gap=draw(st.integers(1, 3000)), ts_ns=ts))
        else:
            steps.append(Step(direction, chunk, ts_ns=ts, fin=draw(st.integers(0, 30)) == 0))
    return steps


@FUZZ
@given(steps=sessions(), split=st.sampled_from(["whole", "random"]), seed=st.integers(0, 3),
       options=st.sampled_from([{}, {"include_raw_certificates": True, "include_ja4": True, "include_curve": True,
                                     "fingerprints": ["md5", "sha256"]}, {"include_detailed_fields": False}]))
def test_mutated_handshakes_never_crash_the_session(steps: list[Step], split: str, seed: int,
                                                     options: dict[str, object]) -> None:
    # run_stream hands ParseError to session.recover, as the dispatcher does; anything else fails the test.
    out = run_stream("tls", steps, split=split, seed=seed, options=options, server_port=443)
    assert len(out) <= 1
    for txn in out:
        assert txn.type == "tls" and txn.status in ("OK", "Error")


@FUZZ
@given(chunks=st.lists(st.binary(max_size=300), max_size=12),
       prefix=st.sampled_from([b"", b"\x16\x03\x01", b"\x16\x03\x03\x00\x40\x01\x00\x00", b"\x15\x03\x03\x00\x02"]))
def test_random_bytes_raise_only_parse_error(chunks: list[bytes], prefix: bytes) -> None:
    parser = DirectionParser(Direction.TO_SERVER)
    try:
        for chunk in [prefix, *chunks]:
            parser.feed(chunk, 0)
    except ParseError as exc:
        assert exc.protocol == "tls" and exc.offset >= 0
    assert parser.buffered <= len(prefix) + sum(map(len, chunks))


@FUZZ
@given(data=st.data())
def test_mangled_certificates_load_or_are_refused(data: st.DataObject) -> None:
    mangled = mutate(data.draw(st.sampled_from(chain_ders())), data.draw)
    cert = Certificate.load(mangled)
    if cert is not None:
        fields = cert.x509_fields()
        assert isinstance(fields["serial_number"], str)
        cert.hashes(("md5", "sha1", "sha256"))
        cert.pem()
