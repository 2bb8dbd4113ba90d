"""MongoDB transactions: a reply meets its request by `responseTo`, per connection.

Requests that get no reply (OP_INSERT, OP_UPDATE, OP_DELETE,
OP_KILL_CURSORS, an OP_MSG with moreToCome) are published at once.  A
reply seen before its request (capture reordering) waits in a small table
and pairs when the request shows up, with a duration of at least zero.  An
exhaust reply (moreToCome) keeps its request for the next batch.  As in
Packetbeat, requests left unanswered are counted, not published.
An opcode MongoDB does not define is skipped by its length and logged once
per opcode for the whole process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.correlation import KeyedRequests
from agent.protocols.mongodb import parser as wire
from agent.protocols.mongodb.commands import PLUMBING, is_database_command
from agent.protocols.mongodb.fields import (
    FIELDS,
    Request,
    number,
    render_documents,
    to_json,
    transaction,
    unknown_transaction,
)
from agent.protocols.mongodb.parser import BadContent, MongoMessage, MongoParser, decode_document
from agent.protocols.stream import SessionBase
from agent.transport.types import Direction

log = logging.getLogger("pktbeat.mongodb")

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "unknown_opcodes", "gaps",
            "gaps_skipped", "table_overflow")

MAX_PENDING_REQUESTS = 10000  # per connection
MAX_EARLY_REPLIES = 1000  # per connection
MAX_REPORTED_OPCODES = 1024  # distinct unknown opcodes logged by the process; later ones only counted

_reported_opcodes: set[int] = set()


def _report_unknown(opcode: int) -> None:
    if opcode in _reported_opcodes or len(_reported_opcodes) >= MAX_REPORTED_OPCODES:
        return
    _reported_opcodes.add(opcode)
    log.warning("Unknown operation code: %d", opcode)


@dataclass(frozen=True)
class MongodbConfig(ProtocolConfig):
    max_docs: int = opt(10, bounds=(-(2**31), 2**31 - 1))  # documents in `response`; 0 (or less): all
    max_doc_length: int = opt(5000, bounds=(-(2**31), 2**31 - 1))  # characters per document; 0 (or less): no limit


def _awaits_reply(msg: MongoMessage) -> bool:
    if msg.opcode == wire.OP_MSG:
        return not msg.more_to_come
    return msg.opcode in (wire.OP_QUERY, wire.OP_GET_MORE)


class MongoSession(SessionBase[MongodbConfig]):
    def __init__(self, ctx: SessionContext[MongodbConfig]) -> None:
        super().__init__(ctx)
        config = self.config
        want = config.send_response
        self.parsers = (MongoParser(Direction.TO_SERVER, want_documents=config.send_request),
                        MongoParser(Direction.TO_CLIENT, want_documents=want))
        timeout = int(config.transaction_timeout * 1e9)
        self.requests: KeyedRequests[int, Request] = KeyedRequests(ctx.counters, timeout, MAX_PENDING_REQUESTS)
        self.early: KeyedRequests[int, MongoMessage] = KeyedRequests(ctx.counters, timeout, MAX_EARLY_REPLIES)

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        for msg in self.parsers[direction].feed(data, ts_ns):
            self._on_message(direction, msg)
        self._expire(ts_ns)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        parser = self.parsers[direction]
        outcome = parser.gap(nbytes, ts_ns)
        if outcome.in_sync:
            self.counters["gaps_skipped"] += 1
            for msg in outcome.messages:
                self._on_message(direction, msg)
            return
        self.lose_sync(direction)

    def lose_sync(self, direction: Direction) -> None:
        self.parsers[direction].reset()  # pending requests stay: pairing by id survives the loss

    def expire(self, ts_ns: int) -> None:
        self.counters["unmatched_requests"] += len(self.requests.drain())
        self.counters["unmatched_responses"] += len(self.early.drain())

    def pending(self) -> int:
        return len(self.requests)

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered

    def _expire(self, ts_ns: int) -> None:
        if self.requests:
            self.counters["unmatched_requests"] += len(self.requests.expire(ts_ns))
        if self.early:
            self.counters["unmatched_responses"] += len(self.early.expire(ts_ns))

    # -- messages ------------------------------------------------------------------

    def _on_message(self, direction: Direction, msg: MongoMessage) -> None:
        if not msg.known:
            self.counters["unknown_opcodes"] += 1
            _report_unknown(msg.opcode)
            self._publish_unknown(direction, msg)
            return
        if msg.opcode == wire.OP_REPLY or (msg.opcode == wire.OP_MSG and direction is Direction.TO_CLIENT):
            self._on_reply(msg)
        else:
            self._on_request(msg)

    def _on_request(self, msg: MongoMessage) -> None:
        request = self._describe(msg)
        if not _awaits_reply(msg):
            self._publish(request, None)
            return
        early = self.early.pop(msg.request_id)
        if early is not None:
            self._publish(request, early)
            return
        previous, evicted = self.requests.put(msg.request_id, request, msg.ts_ns)
        self.counters["unmatched_requests"] += (previous is not None) + len(evicted)

    def _on_reply(self, msg: MongoMessage) -> None:
        request = self.requests.pop(msg.response_to)
        if request is None:
            _, pushed_out = self.early.put(msg.response_to, msg, msg.ts_ns)
            self.counters["unmatched_responses"] += len(pushed_out)
            return
        self._publish(request, msg)
        if msg.more_to_come:
            # Exhaust cursor: the next batch answers this reply's id, for the same request.
            _, evicted = self.requests.put(msg.request_id, request, msg.ts_ns)
            self.counters["unmatched_requests"] += len(evicted)

    # -- requests ------------------------------------------------------------------

    def _describe(self, msg: MongoMessage) -> Request:
        fields: dict[str, Any] = {}
        name = msg.full_collection_name
        if name is not None:
            fields["fullCollectionName"] = name
        op = msg.opcode
        if op == wire.OP_QUERY:
            return self._describe_query(msg, fields)
        if op == wire.OP_MSG:
            return self._describe_op_msg(msg, fields)
        if op == wire.OP_GET_MORE:
            fields["numberToReturn"] = msg.number_to_return
            fields["cursorId"] = msg.cursor_id
            return Request(msg, "getMore", name or "", None, fields)
        if op == wire.OP_INSERT:
            params = None
            if msg.documents and self.config.send_request:
                params = {"documents": _decode_all(msg.documents)}
            return Request(msg, "insert", name or "", params, fields)
        if op == wire.OP_UPDATE:
            fields["selector"] = to_json(msg.selector)
            fields["update"] = to_json(msg.update)
            return Request(msg, "update", name or "", None, fields)
        if op == wire.OP_DELETE:
            fields["selector"] = to_json(msg.selector)
            return Request(msg, "delete", name or "", None, fields)
        if op == wire.OP_KILL_CURSORS:
            if msg.cursor_ids:
                fields["cursorId"] = msg.cursor_ids[0]
            return Request(msg, "killCursors", "", None, fields)
        return Request(msg, "msg", "", None, fields)  # legacy OP_MSG (1000), or an undecodable body

    @staticmethod
    def _describe_query(msg: MongoMessage, fields: dict[str, Any]) -> Request:
        """A legacy OP_QUERY: a find, or a command on `<db>.$cmd`."""
        name = msg.full_collection_name
        fields["numberToSkip"] = msg.number_to_skip
        fields["numberToReturn"] = msg.number_to_return
        if msg.return_fields is not None:
            fields["returnFieldsSelector"] = to_json(msg.return_fields)
        query = dict(msg.body or {})
        collection = name or ""
        if collection.endswith(".$cmd"):
            method, resource = "otherCommand", collection
            for key, value in query.items():
                if is_database_command(key, value):
                    method = key
                    if isinstance(value, str):
                        resource = collection[:-4] + value
                    del query[key]
                    break
            return Request(msg, method, resource, query, fields)
        if msg.body is not None:
            fields["query"] = to_json(msg.body)
        return Request(msg, "find", collection, query, fields)

    def _describe_op_msg(self, msg: MongoMessage, fields: dict[str, Any]) -> Request:
        body = msg.body or {}
        if not body:
            return Request(msg, "msg", "", None, fields)
        method = next(iter(body))
        value = body[method]
        db = body.get("$db")
        db = db if isinstance(db, str) else ""
        collection = body.get("collection") if method == "getMore" else value
        resource = f"{db}.{collection}" if isinstance(collection, str) else f"{db}.$cmd"
        params = {k: v for k, v in body.items() if k != method and k not in PLUMBING}
        if method == "find":
            skip, limit = number(body.get("skip")), number(body.get("limit"))
            if skip is not None:
                fields["numberToSkip"] = skip
            if limit is not None:
                fields["numberToReturn"] = limit
        elif method == "getMore":
            cursor = number(value)
            if cursor is not None:
                fields["cursorId"] = cursor
        if self.config.send_request:
            for section in msg.sections:
                params[section.identifier] = _decode_all(section.documents)
        return Request(msg, method, resource, params, fields)

    # -- events --------------------------------------------------------------------

    def _publish(self, request: Request, reply: MongoMessage | None) -> None:
        self.ctx.emit(transaction(self.ctx.conn, self.config, request, reply))

    def _publish_unknown(self, direction: Direction, msg: MongoMessage) -> None:
        self.ctx.emit(unknown_transaction(self.ctx.conn, direction, msg))

    def _render_documents(self, docs: list[Any]) -> str:
        return render_documents(docs, self.config.max_docs, self.config.max_doc_length)


def _decode_all(raw_docs: tuple[bytes, ...]) -> list[Any]:
    out: list[Any] = []
    for raw in raw_docs:
        try:
            out.append(decode_document(raw))
        except BadContent:
            out.append(None)
    return out


SPEC = ProtocolSpec(
    name="mongodb",
    config_class=MongodbConfig,
    fields=FIELDS,
    tcp=MongoSession,
    description="MongoDB wire protocol (OP_MSG, OP_COMPRESSED and the legacy opcodes)",
    counters=COUNTERS,
)
