"""Bounded fuzzing of the HTTP/2 layer: mutated frames and HPACK blocks.

No exception leaves `H2Connection` (a lost header state is a stop with a
note, not an error), and whatever the input, what it holds stays within its
named limits: open streams, held header and body bytes, buffered frame
bytes, the HPACK dynamic tables.
"""

from __future__ import annotations

import random

from hpack import Encoder
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import metrics
from agent.protocols.base import SessionContext, Transaction
from agent.protocols.http import h2streams
from agent.protocols.http.h2frames import FRAME_HEADER, MAX_HEADER_BLOCK, PREFACE
from agent.protocols.http.h2streams import H2_COUNTERS, H2Connection
from agent.protocols.http.parser import ParserConfig
from agent.protocols.http.plugin import HttpSession
from agent.transport.types import Direction
from tests.helpers.sessions import conn_info, play_script, protocol_config
from tests.protocols.http.h2wire import C2S, S2C, Conversation, upgrade_conversation

CONFIG = ParserConfig(include_request_body_for=(b"",), include_response_body_for=(b"",), max_message_size=4096)
HELD_LIMIT = 8192


def _base_conversation() -> list[tuple[Direction, bytes]]:
    conv = Conversation()
    grpc = [("content-type", "application/grpc"), ("te", "trailers")]
    for i in range(3):
        sid = conv.request("GET", f"/p{i}", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-n", str(i))])
        conv.respond(sid, 200, b"r" * 300, headers=[("content-type", "text/plain")])
    sid = conv.request("POST", "/pkg.S/M", headers=grpc, body=b"\x00\x00\x00\x00\x01x")
    conv.respond(sid, 200, b"\x00\x00\x00\x00\x01y", headers=[("content-type", "application/grpc")],
                 trailers=[("grpc-status", "3"), ("grpc-message", "bad%20arg")])
    big = conv.request("GET", "/big", headers=[("x-big", "z" * 20000)])
    conv.respond(big, 200, b"padded", end=False)
    conv.send_data(S2C, big, b"more", pad=7)
    pushed_parent = conv.request("GET", "/")
    conv.respond(pushed_parent, 200, b"<html>", end=False)
    conv.push(pushed_parent, "/s.css", body=b"css")
    conv.reset(C2S, pushed_parent)
    return conv.steps


BASE = _base_conversation()
BASE_BYTES = {C2S: b"".join(d for dr, d in BASE if dr == C2S), S2C: b"".join(d for dr, d in BASE if dr == S2C)}


def _mutate(data: bytes, rng: random.Random, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        if not out:
            break
        kind = rng.randrange(5)
        at = rng.randrange(len(out))
        if kind == 0:
            out[at] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        elif kind == 2:
            del out[at:at + rng.randrange(1, 40)]
        elif kind == 3:  # a hostile length in what may be a frame header
            out[at:at + 3] = rng.choice((b"\xff\xff\xff", b"\x00\x40\x00", b"\x00\x00\x00"))
        else:
            end = min(len(out), at + rng.randrange(1, 200))
            out[at:at] = out[at:end]
    return bytes(out)


def _check_bounds(h2: H2Connection) -> None:
    assert h2.open_streams <= h2streams.MAX_OPEN_STREAMS
    assert 0 <= h2.held <= h2.held_limit
    for reader in h2.readers.values():
        assert reader.buffer.unread + reader.buffer._held_bytes <= FRAME_HEADER + MAX_HEADER_BLOCK + 65536
        assert len(reader._block) <= MAX_HEADER_BLOCK
    for decoder in h2.decoders.values():
        assert decoder.header_table._current_size <= h2streams.MAX_HPACK_TABLE
        assert decoder.header_table.maxsize <= h2streams.MAX_HPACK_TABLE


def _feed_all(h2: H2Connection, pieces: list[tuple[Direction, bytes]], rng: random.Random) -> int:
    published = 0
    for direction, data in pieces:
        at = 0
        while at < len(data):
            step = rng.choice((1, 7, 64, 1500, len(data)))
            published += len(h2.feed(direction, data[at:at + step], 1))
            at += step
            _check_bounds(h2)
        if rng.random() < 0.05:
            published += len(h2.gap(direction, rng.randrange(1, 100), 2))
    published += len(h2.drain())
    _check_bounds(h2)
    return published


def _new() -> H2Connection:
    counters = metrics.register("test.h2fuzz", H2_COUNTERS)
    return H2Connection(CONFIG, counters, client_preface=PREFACE, held_limit=HELD_LIMIT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_mutated_conversations(seed: int, mutations: int) -> None:
    rng = random.Random(seed)
    pieces = []
    for direction, data in BASE:
        pieces.append((direction, _mutate(data, rng, mutations) if rng.random() < 0.5 else data))
    _feed_all(_new(), pieces, rng)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=6), st.integers(0, 2**32 - 1))
def test_random_hpack_blocks(blocks: list[bytes], seed: int) -> None:
    """Arbitrary bytes as header blocks, some behind a valid block so the dynamic table has entries."""
    rng = random.Random(seed)
    encoder = Encoder()
    valid = encoder.encode([(":method", "GET"), (":path", "/a"), (":scheme", "http"), (":authority", "h"),
                            ("x-indexed", "v" * 50)])
    frames = [PREFACE, _headers(1, valid)]
    stream = 3
    for block in blocks:
        if rng.random() < 0.3 and len(block) > 2:  # split across CONTINUATION frames
            cut = rng.randrange(1, len(block))
            first = HeadersFrame(stream, block[:cut])
            cont = ContinuationFrame(stream, block[cut:])
            cont.flags.add("END_HEADERS")
            frames += [bytes(first.serialize()), bytes(cont.serialize())]
        else:
            frames.append(_headers(stream, block))
        frames.append(bytes(DataFrame(stream, b"d" * rng.randrange(0, 50), flags=["END_STREAM"]).serialize()))
        stream += 2
    h2 = _new()
    _feed_all(h2, [(C2S, b"".join(frames))], rng)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 255), st.integers(0, 9), st.binary(max_size=80)),
                max_size=12), st.integers(0, 2**32 - 1))
def test_random_frames(frames: list[tuple[int, int, int, bytes]], seed: int) -> None:
    """Frames of any type, flags and stream with arbitrary payloads, on both directions."""
    rng = random.Random(seed)
    wire: dict[Direction, list[bytes]] = {C2S: [PREFACE], S2C: []}
    for frame_type, flags, stream, payload in frames:
        header = len(payload).to_bytes(3, "big") + bytes((frame_type, flags)) + stream.to_bytes(4, "big")
        wire[rng.choice((C2S, S2C))].append(header + payload)
    _feed_all(_new(), [(C2S, b"".join(wire[C2S])), (S2C, b"".join(wire[S2C]))], rng)


def test_hostile_lengths_stay_bounded() -> None:
    """A 16 MiB DATA frame streams past; a 16 MiB HEADERS frame stops decoding before anything is buffered."""
    h2 = _new()
    sid_block = Encoder().encode([(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "h")])
    h2.feed(C2S, PREFACE + _headers(1, sid_block, end_stream=False), 1)
    header = (0xFFFFFF).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")
    h2.feed(C2S, header, 1)
    for _ in range(255):
        h2.feed(C2S, b"x" * 65536, 1)
        _check_bounds(h2)
    h2.feed(C2S, b"x" * (0xFFFFFF - 255 * 65536), 1)
    assert h2.streams[1].request is not None and h2.streams[1].request.stored <= CONFIG.max_message_size
    h2.feed(C2S, (0xFFFFFF).to_bytes(3, "big") + b"\x01\x04" + (3).to_bytes(4, "big"), 1)
    assert h2.stopped.startswith("header block frame")
    _check_bounds(h2)


def _headers(stream: int, block: bytes, end_stream: bool = True) -> bytes:
    frame = HeadersFrame(stream, block)
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return bytes(frame.serialize())


# -- the http session on mutated HTTP/2 connections (prior knowledge, server first, h2c upgrade) ----------------

SESSION_OPTIONS = {"send_all_headers": True, "include_body_for": ["text", "grpc"], "send_request": True,
                   "send_response": True, "max_message_size": 4096}
CONVERSATIONS = [BASE, [BASE[1], BASE[0], *BASE[2:]], upgrade_conversation()]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(CONVERSATIONS) - 1), st.integers(0, 2**32 - 1), st.integers(0, 8))
def test_http_session_on_mutated_http2(which: int, seed: int, mutations: int) -> None:
    rng = random.Random(seed)
    script: list[tuple[Direction, object]] = []
    for direction, data in CONVERSATIONS[which]:
        script.append((direction, _mutate(data, rng, mutations) if mutations and rng.random() < 0.4 else data))
        if rng.random() < 0.03:
            script.append((direction, rng.randrange(1, 200)))  # a gap
    out: list[Transaction] = []
    session = HttpSession(SessionContext("http", protocol_config("http", **SESSION_OPTIONS), conn_info(8080),
                                         out.append, metrics.register("test.h2fuzz.session")))
    play_script(session, script, rng.randrange(0, 64))
    for txn in out:
        assert txn.type == "http" and txn.status in ("OK", "Error")
