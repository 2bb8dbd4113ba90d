"""What a WHOIS query and its answer become in the event, and the fields' Elasticsearch types."""

from __future__ import annotations

from agent.protocols.base import Transaction
from agent.transport.types import ConnectionInfo

from .parser import AnswerCollector, Query

# One `name type` line per field the protocol adds; the index template is assembled from every registered
# protocol's table, and the corpus mapping test fails on any emitted field missing here.
FIELDS = """
whois.query keyword
whois.answer_lines long
"""

NOTE_ANSWER_LOSS = "Packet loss while capturing the response"


def transaction(conn: ConnectionInfo, query: Query, answer: AnswerCollector, end_ns: int | None,
                send_response: bool, max_answer_lines: int) -> Transaction:
    lines = bytes(answer.kept).decode("utf-8", "replace").splitlines()
    txn = Transaction("whois", conn, ts_ns=query.ts_ns, end_ns=end_ns,
                      client_bytes=query.size, server_bytes=answer.size or None)
    txn.fields = {"whois": {"query": query.text, "answer_lines": len(lines)},
                  "query": query.text, "method": "QUERY"}
    if send_response:
        txn.fields["response"] = "\n".join(lines[:max_answer_lines])
    if answer.lost:
        txn.notes.append(NOTE_ANSWER_LOSS)  # published as error.message
    return txn
