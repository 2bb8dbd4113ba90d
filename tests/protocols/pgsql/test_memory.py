"""A 100 MB result set streams through a session in bounded memory (acceptance d)."""

from __future__ import annotations

import tracemalloc

from agent import metrics
from agent.protocols.base import SessionContext
from agent.protocols.pgsql.plugin import SPEC
from tests.helpers.sessions import C2S, S2C, conn_info, protocol_config
from tests.protocols.pgsql import messages as m

TOTAL = 100 << 20
CHUNK = 64 << 10
ROW = 1000


def _run(row_size: int) -> tuple[list, int, int]:
    out: list = []
    config = protocol_config("pgsql", send_response=True, send_request=True)
    session = SPEC.tcp(SessionContext("pgsql", config, conn_info(5432), out.append,  # type: ignore[misc]
                                      metrics.register("test.pgsql.memory")))
    row = m.data_row(b"x" * (row_size // 2), b"y" * (row_size // 2))
    block = row * max(1, (1 << 20) // len(row))
    rows_per_block = len(block) // len(row)
    blocks = TOTAL // len(block)
    session.feed(C2S, m.query("select a, b from big"), 0)
    tracemalloc.start()
    try:
        session.feed(S2C, m.row_description("a", "b"), 1)
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(blocks):
            for start in range(0, len(block), CHUNK):
                session.feed(S2C, block[start:start + CHUNK], 2)
        session.feed(S2C, m.complete("SELECT 0") + m.READY, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, blocks * rows_per_block, peak - base


def test_100mb_of_small_rows_in_bounded_memory() -> None:
    [txn], rows, held = _run(ROW)
    assert txn.fields["pgsql"]["num_rows"] == rows
    assert txn.server_bytes >= 95 << 20
    assert txn.fields["response"].count("\n") == 11
    assert held < 4 << 20, f"{held >> 10} KiB held while 100 MB streamed past"


def test_rows_larger_than_a_segment_in_bounded_memory() -> None:
    [txn], rows, held = _run(3 << 20)  # every row spans dozens of feeds
    assert txn.fields["pgsql"]["num_rows"] == rows
    assert held < 8 << 20, f"{held >> 10} KiB held while 100 MB streamed past"
