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
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.correlation import KeyedRequests
from agent.protocols.mongodb import parser as wire
from agent.protocols.mongodb.commands import PLUMBING, is_database_command
from agent.protocols.mongodb.parser import BadContent, MongoMessage, MongoParser, decode_document
from agent.protocols.mongodb.render import reconstruct_query, to_json
from agent.transport.session import ParseError
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


class _Request:
    __slots__ = ("fields", "method", "msg", "params", "resource")

    def __init__(self, msg: MongoMessage, method: str, resource: str, params: dict[str, Any] | None,
                 fields: dict[str, Any]) -> None:
        self.msg = msg
        self.method = method
        self.resource = resource
        self.params = params
        self.fields = fields


def _awaits_reply(msg: MongoMessage) -> bool:
    if msg.opcode == wire.OP_MSG:
        return not msg.more_to_come
    return msg.opcode in (wire.OP_QUERY, wire.OP_GET_MORE)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class MongoSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, MongodbConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        want = config.send_response
        self.parsers = (MongoParser(Direction.TO_SERVER, want_documents=config.send_request),
                        MongoParser(Direction.TO_CLIENT, want_documents=want))
        timeout = int(config.transaction_timeout * 1e9)
        self.requests: KeyedRequests[int, _Request] = KeyedRequests(ctx.counters, timeout, MAX_PENDING_REQUESTS)
        self.early: KeyedRequests[int, MongoMessage] = KeyedRequests(ctx.counters, timeout, MAX_EARLY_REPLIES)

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        for msg in self.parsers[direction].feed(data, ts_ns):
            self._on_message(direction, msg)
        self._expire(ts_ns)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        parser = self.parsers[direction]
        if parser.gap(nbytes):
            self.counters["gaps_skipped"] += 1
            for msg in parser.feed(b"", ts_ns):
                self._on_message(direction, msg)
            return
        parser.reset()  # pending requests stay: pairing by id survives the loss

    def fin(self, direction: Direction, ts_ns: int) -> None:
        pass

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters["parse_errors"] += 1
        self.parsers[direction].reset()

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

    def _describe(self, msg: MongoMessage) -> _Request:
        fields: dict[str, Any] = {}
        name = msg.full_collection_name
        if name is not None:
            fields["fullCollectionName"] = name
        op = msg.opcode
        if op == wire.OP_QUERY:
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
                return _Request(msg, method, resource, query, fields)
            if msg.body is not None:
                fields["query"] = to_json(msg.body)
            return _Request(msg, "find", collection, query, fields)
        if op == wire.OP_MSG:
            return self._describe_op_msg(msg, fields)
        if op == wire.OP_GET_MORE:
            fields["numberToReturn"] = msg.number_to_return
            fields["cursorId"] = msg.cursor_id
            return _Request(msg, "getMore", name or "", None, fields)
        if op == wire.OP_INSERT:
            params = None
            if msg.documents and self.config.send_request:
                params = {"documents": _decode_all(msg.documents)}
            return _Request(msg, "insert", name or "", params, fields)
        if op == wire.OP_UPDATE:
            fields["selector"] = to_json(msg.selector)
            fields["update"] = to_json(msg.update)
            return _Request(msg, "update", name or "", None, fields)
        if op == wire.OP_DELETE:
            fields["selector"] = to_json(msg.selector)
            return _Request(msg, "delete", name or "", None, fields)
        if op == wire.OP_KILL_CURSORS:
            if msg.cursor_ids:
                fields["cursorId"] = msg.cursor_ids[0]
            return _Request(msg, "killCursors", "", None, fields)
        return _Request(msg, "msg", "", None, fields)  # legacy OP_MSG (1000), or an undecodable body

    def _describe_op_msg(self, msg: MongoMessage, fields: dict[str, Any]) -> _Request:
        body = msg.body or {}
        if not body:
            return _Request(msg, "msg", "", None, fields)
        method = next(iter(body))
        value = body[method]
        db = body.get("$db")
        db = db if isinstance(db, str) else ""
        collection = body.get("collection") if method == "getMore" else value
        resource = f"{db}.{collection}" if isinstance(collection, str) else f"{db}.$cmd"
        params = {k: v for k, v in body.items() if k != method and k not in PLUMBING}
        if method == "find":
            skip, limit = _int(body.get("skip")), _int(body.get("limit"))
            if skip is not None:
                fields["numberToSkip"] = skip
            if limit is not None:
                fields["numberToReturn"] = limit
        elif method == "getMore":
            cursor = _int(value)
            if cursor is not None:
                fields["cursorId"] = cursor
        if self.config.send_request:
            for section in msg.sections:
                params[section.identifier] = _decode_all(section.documents)
        return _Request(msg, method, resource, params, fields)

    # -- replies -------------------------------------------------------------------

    def _reply_fields(self, msg: MongoMessage) -> tuple[dict[str, Any], str, list[Any]]:
        """(mongodb.* fields, error text, documents for `response`)."""
        fields: dict[str, Any] = {}
        body = msg.body
        docs: list[Any] = []
        if msg.opcode == wire.OP_REPLY:
            if msg.cursor_id is not None:
                fields["cursorId"] = msg.cursor_id
                fields["startingFrom"] = msg.starting_from
                fields["numberReturned"] = msg.number_returned
            docs = list(msg.documents)
        elif body is not None:
            cursor = body.get("cursor")
            batch = None
            if isinstance(cursor, dict):
                batch = cursor.get("firstBatch", cursor.get("nextBatch"))
                cursor_id = _int(cursor.get("id"))
                if cursor_id is not None:
                    fields["cursorId"] = cursor_id
            if isinstance(batch, list):
                fields["numberReturned"] = len(batch)
                docs = batch
            else:
                docs = [body]
            for section in msg.sections:
                docs.extend(section.documents)
        return fields, _error_text(body), docs

    # -- events --------------------------------------------------------------------

    def _publish(self, request: _Request, reply: MongoMessage | None) -> None:
        req = request.msg
        mongodb = dict(request.fields)
        mongodb["opcodeName"] = wire.opcode_name(req.opcode, req.compressed)
        error = ""
        docs: list[Any] = []
        notes = list(req.notes)
        if reply is not None:
            reply_fields, error, docs = self._reply_fields(reply)
            mongodb.update(reply_fields)
            notes.extend(reply.notes)
        if error:
            mongodb["error"] = error
        skip = mongodb.get("numberToSkip")
        limit = mongodb.get("numberToReturn")
        fields: dict[str, Any] = {
            "mongodb": mongodb, "method": request.method, "resource": request.resource,
            "query": reconstruct_query(request.resource, request.method, request.params, skip, limit, full=False),
        }
        if self.config.send_request:
            fields["request"] = reconstruct_query(request.resource, request.method, request.params, skip, limit,
                                                  full=True)
        if self.config.send_response and docs:
            fields["response"] = self._render_documents(docs)
        self.ctx.emit(Transaction(
            type="mongodb", conn=self.ctx.conn, ts_ns=req.ts_ns,
            end_ns=max(reply.ts_ns, req.ts_ns) if reply is not None else None,
            status="Error" if error else "OK", client_bytes=req.size,
            server_bytes=reply.size if reply is not None else None, notes=notes, fields=fields))

    def _publish_unknown(self, direction: Direction, msg: MongoMessage) -> None:
        """Decision: the message is shown (Packetbeat only logs it), status Error, so it can be found."""
        is_request = direction is Direction.TO_SERVER
        self.ctx.emit(Transaction(
            type="mongodb", conn=self.ctx.conn, ts_ns=msg.ts_ns, has_request=is_request,
            end_ns=None if is_request else msg.ts_ns, status="Error",
            client_bytes=msg.size if is_request else None, server_bytes=None if is_request else msg.size,
            notes=[f"Unknown operation code: {msg.opcode}", *msg.notes],
            fields={"mongodb": {"opcodeName": wire.opcode_name(msg.opcode)}}))

    def _render_documents(self, docs: list[Any]) -> str:
        max_docs = self.config.max_docs
        max_len = self.config.max_doc_length
        lines: list[str] = []
        for i, doc in enumerate(docs):
            if max_docs > 0 and i >= max_docs:
                lines.append("[...]")
                break
            if isinstance(doc, bytes):
                try:
                    doc = decode_document(doc)
                except BadContent:
                    continue
            text = to_json(doc)
            if max_len > 0 and len(text) > max_len:
                text = text[:max_len] + " ..."
            lines.append(text)
        return "\n".join(lines)


def _decode_all(raw_docs: tuple[bytes, ...]) -> list[Any]:
    out: list[Any] = []
    for raw in raw_docs:
        try:
            out.append(decode_document(raw))
        except BadContent:
            out.append(None)
    return out


def _error_text(body: dict[str, Any] | None) -> str:
    """The error a reply document reports: $err, writeErrors, writeConcernError, or ok: 0."""
    if not body:
        return ""
    if "$err" in body:
        return to_json(body["$err"])
    if "writeErrors" in body:
        return to_json(body["writeErrors"])
    if "writeConcernError" in body:
        return to_json(body["writeConcernError"])
    ok = body.get("ok")
    if isinstance(ok, (int, float)) and not isinstance(ok, bool) and ok == 0:
        message = body.get("errmsg")
        return message if isinstance(message, str) and message else to_json(body)
    return ""


def _session(ctx: SessionContext) -> MongoSession:
    return MongoSession(ctx)


SPEC = ProtocolSpec(
    name="mongodb",
    config_class=MongodbConfig,
    tcp=_session,
    description="MongoDB wire protocol (OP_MSG, OP_COMPRESSED and the legacy opcodes)",
    counters=COUNTERS,
)
