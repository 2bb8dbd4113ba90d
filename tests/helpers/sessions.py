"""Driving a protocol's session or datagram handler directly with literal bytes.

Every protocol parser test feeds its messages three ways (whole, one byte at
a time, with trailing data) and checks the same transactions come out.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent import metrics
from agent.config.typed import build
from agent.protocols import registry
from agent.protocols.base import SessionContext, Transaction
from agent.transport.session import ParseError
from agent.transport.types import ConnectionInfo, Direction, Endpoint, ip_bytes

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT

CLIENT = Endpoint(ip_bytes("192.168.1.10"), 40000)
SERVER = Endpoint(ip_bytes("192.168.1.20"), 80)


def conn_info(server_port: int = 80, transport: str = "tcp", family: int = 4) -> ConnectionInfo:
    if family == 6:
        return ConnectionInfo(Endpoint(ip_bytes("fd00::10"), 40000), Endpoint(ip_bytes("fd00::20"), server_port),
                              6, transport, 1)
    return ConnectionInfo(CLIENT, Endpoint(SERVER.ip, server_port), 4, transport, 1)


def protocol_config(name: str, **options: Any) -> Any:
    spec = registry.spec(name)
    return build(spec.config_class, options, f"packetbeat.protocols.{name}")


@dataclass
class Step:
    direction: Direction
    data: bytes = b""
    ts_ns: int = 0
    gap: int = 0  # >0: report a gap of this many bytes instead of data
    fin: bool = False


def run_stream(protocol: str, steps: Sequence[Step], *, split: str = "whole", seed: int = 0,
               options: dict[str, Any] | None = None, server_port: int = 80, expire: bool = True,
               conn: ConnectionInfo | None = None,
               hand_over_options: dict[str, dict[str, Any]] | None = None) -> list[Transaction]:
    """Feed `steps` to a fresh session of `protocol`; returns what it emitted.

    split: "whole" (each step's bytes at once), "bytewise" (one byte per feed),
    or "random" (random cut points, seeded).  ParseError is handled the way the
    transport dispatcher handles it: the session is asked to recover.  A hand-over
    to another protocol (`ctx.hand_over`) is done as the transport does it: a
    session of that protocol (its options from `hand_over_options`) takes the
    connection, fed first the bytes handed over.
    """
    spec = registry.spec(protocol)
    assert spec.tcp is not None, f"{protocol} has no TCP session"
    out: list[Transaction] = []
    driver = _Driver(protocol, protocol_config(protocol, **(options or {})), conn or conn_info(server_port), out,
                     hand_over_options or {})
    rng = random.Random(seed)
    last_ts = 0
    for step in steps:
        last_ts = max(last_ts, step.ts_ns)
        if step.gap:
            driver.call(lambda s, st=step: s.gap(st.direction, st.gap, st.ts_ns), step.direction, step.ts_ns)
            continue
        for chunk in _chunks(step.data, split, rng):
            driver.feed(step.direction, chunk, step.ts_ns)
        if step.fin:
            driver.call(lambda s, st=step: s.fin(st.direction, st.ts_ns), step.direction, step.ts_ns)
    if expire:
        driver.session.expire(last_ts + 10**12)
    return out


class _Driver:
    """One connection's session called as the TCP layer calls it, hand-overs included."""

    def __init__(self, protocol: str, config: Any, info: ConnectionInfo, out: list[Transaction],
                 hand_over_options: dict[str, dict[str, Any]]) -> None:
        self.info = info
        self.out = out
        self.hand_over_options = hand_over_options
        self.ctx = SessionContext(protocol, config, info, out.append, metrics.register(f"test.{protocol}"))
        spec = registry.spec(protocol)
        assert spec.tcp is not None
        self.session: Any = spec.tcp(self.ctx)

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        self.call(lambda s: s.feed(direction, data, ts_ns), direction, ts_ns)

    def call(self, action: Any, direction: Direction, ts_ns: int) -> None:
        try:
            action(self.session)
        except ParseError as exc:
            self.session.recover(direction, exc, ts_ns)
        request = self.ctx.handed_over
        if request is None:
            return
        name = request.protocol
        config = protocol_config(name, **self.hand_over_options.get(name, {}))
        self.ctx = SessionContext(name, config, self.info, self.out.append, metrics.register(f"test.{name}"))
        spec = registry.spec(name)
        assert spec.tcp is not None
        self.session = spec.tcp(self.ctx)
        for to in (Direction.TO_SERVER, Direction.TO_CLIENT):
            if request.pending[to]:
                self.feed(to, request.pending[to], request.ts_ns)


def run_datagrams(protocol: str, datagrams: Iterable[tuple[Direction, bytes, int]], *,
                  options: dict[str, Any] | None = None, server_port: int = 53,
                  tick_ns: int | None = None) -> list[Transaction]:
    spec = registry.spec(protocol)
    assert spec.udp is not None, f"{protocol} has no UDP handler"
    out: list[Transaction] = []
    config = protocol_config(protocol, **(options or {}))
    handler = spec.udp(config, out.append, metrics.register(f"test.{protocol}"))
    info = conn_info(server_port, "udp")
    last = 0
    for direction, data, ts in datagrams:
        last = max(last, ts)
        try:
            handler.datagram(direction, info, data, ts)
        except ParseError:
            pass
    handler.tick(tick_ns if tick_ns is not None else last + 10**12)
    return out


def _chunks(data: bytes, split: str, rng: random.Random) -> list[bytes]:
    if not data:
        return []
    if split == "whole":
        return [data]
    if split == "bytewise":
        return [data[i:i + 1] for i in range(len(data))]
    if split == "random":
        cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 8)))) if len(data) > 1 else []
        bounds = [0, *cuts, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]
    raise ValueError(split)


def summary(txns: Sequence[Transaction]) -> list[dict[str, Any]]:
    """What a test compares across split modes: everything except object identity."""
    return [{"type": t.type, "status": t.status, "ts": t.ts_ns, "end": t.end_ns, "has_request": t.has_request,
             "client_bytes": t.client_bytes, "server_bytes": t.server_bytes, "notes": list(t.notes),
             "fields": t.fields} for t in txns]


def assert_same_three_ways(protocol: str, steps: Sequence[Step], **kwargs: Any) -> list[Transaction]:
    """Whole, bytewise and random splits must give identical transactions; returns the whole-run ones."""
    whole = run_stream(protocol, steps, split="whole", **kwargs)
    bytewise = run_stream(protocol, steps, split="bytewise", **kwargs)
    assert summary(bytewise) == summary(whole), "byte-by-byte feeding changed the result"
    for seed in range(3):
        rand = run_stream(protocol, steps, split="random", seed=seed, **kwargs)
        assert summary(rand) == summary(whole), f"random split (seed {seed}) changed the result"
    return whole


def session_script(*payloads: Any, junk_size: int = 60, gap_max: int = 3000, max_size: int = 25) -> Any:
    """A hypothesis strategy of (direction, item) steps for `play_script`.

    An item is bytes (random junk up to `junk_size`, or one of `payloads`: strategies of valid messages),
    an int (a gap of that many bytes) or None (FIN).
    """
    from hypothesis import strategies as st

    directions = st.sampled_from([Direction.TO_SERVER, Direction.TO_CLIENT])
    items = [st.binary(max_size=junk_size), *payloads, st.integers(1, gap_max), st.none()]
    return st.lists(st.one_of(*[st.tuples(directions, item) for item in items]), max_size=max_size)


def play_script(session: Any, script: list[tuple[Direction, Any]], cut: int) -> None:
    """Drive a session through `script` as the transport would; bytes are also cut at `cut` (mid-message).

    ParseError gets the dispatcher's treatment (recover); any other exception fails the test.
    Ends with an idle expiry, after which nothing may be pending.
    """
    for ts, (direction, item) in enumerate(script):
        if item is None:
            session.fin(direction, ts)
        elif isinstance(item, int):
            session.gap(direction, item, ts)
        else:
            for part in (item[:cut], item[cut:]):
                try:
                    session.feed(direction, part, ts)
                except ParseError as exc:
                    session.recover(direction, exc, ts)
    session.expire(10**12)
    assert session.pending() == 0
