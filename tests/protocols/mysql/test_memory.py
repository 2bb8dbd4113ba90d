"""A 100 MB result set streams through a session in bounded memory (acceptance d)."""

from __future__ import annotations

import tracemalloc

from agent import metrics
from agent.protocols.base import SessionContext
from agent.protocols.mysql.plugin import SPEC
from tests.helpers.sessions import C2S, S2C, conn_info, protocol_config
from tests.protocols.mysql import messages as m

TOTAL = 100 << 20
CHUNK = 64 << 10
ROW = 1000


def test_100mb_result_set_in_bounded_memory() -> None:
    out: list = []
    config = protocol_config("mysql", send_response=True, send_request=True)
    session = SPEC.tcp(SessionContext("mysql", config, conn_info(3306), out.append,  # type: ignore[misc]
                                      metrics.register("test.mysql.memory")))
    header = (m.packet(1, b"\x02") + m.packet(2, m.column(b"db", b"big", b"a"))
              + m.packet(3, m.column(b"db", b"big", b"b")) + m.packet(4, m.EOF_PAYLOAD))
    row = m.packet(5, m.lstr(b"x" * (ROW // 2)) + m.lstr(b"y" * (ROW // 2 - 10)))
    block = row * ((1 << 20) // len(row))
    rows_per_block = (1 << 20) // len(row)
    blocks = TOTAL // len(block)
    session.feed(C2S, m.query("select a, b from big"), 0)
    tracemalloc.start()
    try:
        session.feed(S2C, header, 1)
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(blocks):
            for start in range(0, len(block), CHUNK):
                session.feed(S2C, block[start:start + CHUNK], 2)
        session.feed(S2C, m.packet(6, m.EOF_PAYLOAD), 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [txn] = out
    assert txn.fields["mysql"]["num_rows"] == blocks * rows_per_block
    assert blocks * len(block) >= 95 << 20
    assert txn.fields["response"].count("\n") == 11  # header and max_rows rows
    assert peak - base < 4 << 20, f"{(peak - base) >> 10} KiB held while 100 MB streamed past"
