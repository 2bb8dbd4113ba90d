"""MongoDB's event fields (with their index mapping) and the transaction that carries them.

Documents are rendered as the compact JSON Packetbeat shows (`{"me":"you"}`),
with the reconstructed query.  Packetbeat marshals documents with Go's
encoding/json: compact, integral floats without a fraction (`1`, not
`1.0`), ObjectIds as hex strings, binary as base64.  Decision: keys keep
their document order (Go sorts map keys, an accident of its map type;
MongoDB documents are ordered).
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS

from agent.protocols.base import Transaction
from agent.protocols.gostrings import go_float_special
from agent.protocols.mongodb import parser as wire
from agent.protocols.mongodb.parser import BadContent, MongoMessage, decode_document
from agent.transport.types import ConnectionInfo, Direction

if TYPE_CHECKING:
    from agent.protocols.mongodb.plugin import MongodbConfig

# Packetbeat's mongodb fields.yml.  Besides these: method, resource, query, request and response.
FIELDS = """
mongodb.error keyword
mongodb.opcodeName keyword
mongodb.fullCollectionName keyword
mongodb.numberToSkip long
mongodb.numberToReturn long
mongodb.numberReturned long
mongodb.startingFrom keyword
mongodb.query keyword
mongodb.returnFieldsSelector keyword
mongodb.selector keyword
mongodb.update keyword
mongodb.cursorId keyword
"""


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _float(value: float) -> Any:
    special = go_float_special(value)
    if special is not None:
        return special
    if value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _datetime(value: datetime.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    text = value.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    text = text.replace("+00:00", "Z")
    return text.replace(".000Z", "Z")


def _datetime_ms(value: DatetimeMS) -> Any:
    ms = int(value)
    try:
        return _datetime(_EPOCH + datetime.timedelta(milliseconds=ms))
    except OverflowError:
        return ms


def _regex(value: Regex[Any]) -> dict[str, Any]:
    return {"$regex": str(value.pattern), "$options": value.flags if isinstance(value.flags, str) else ""}


# BSON values that are not JSON ones, tried in this order (subclasses included).
_CONVERSIONS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    (float, _float),
    ((int, Int64), int),
    (ObjectId, str),
    (datetime.datetime, _datetime),
    (DatetimeMS, _datetime_ms),
    (Timestamp, lambda value: (value.time << 32) | value.inc),
    ((Binary, bytes), lambda value: base64.b64encode(bytes(value)).decode("ascii")),
    (Regex, _regex),
    ((Code, Decimal128), str),
    (DBRef, lambda value: plain(value.as_doc())),
    (MinKey, lambda value: {"$minKey": 1}),
    (MaxKey, lambda value: {"$maxKey": 1}),
)


def plain(value: Any) -> Any:
    """`value` with BSON types turned into JSON-friendly ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    for kinds, convert in _CONVERSIONS:
        if isinstance(value, kinds):
            return convert(value)
    if hasattr(value, "pattern"):  # re.Pattern
        return {"$regex": value.pattern, "$options": ""}
    return str(value)


def to_json(value: Any) -> str:
    return json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False)


# Data left out of `query` (it stays in `request`), as Packetbeat does.
_HIDDEN = {"insert": "documents", "update": "updates", "findandmodify": "update"}


def reconstruct_query(resource: str, method: str, params: dict[str, Any] | None, skip: int | None,
                      limit: int | None, full: bool) -> str:
    """`db.col.method(params).skip(n).limit(n)`; without `full`, only write commands show their options."""
    text = f"{resource}.{method}("
    if params:
        if full:
            text += to_json(params)
        elif method in _HIDDEN:
            text += to_json({k: v for k, v in params.items() if k != _HIDDEN[method]})
    text += ")"
    if skip is not None and skip > 0:
        text += f".skip({skip})"
    if limit is not None and 0 < limit < 0x7FFFFFFF:
        text += f".limit({limit})"
    return text


def number(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def reply_fields(msg: MongoMessage) -> tuple[dict[str, Any], str, list[Any]]:
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
            cursor_id = number(cursor.get("id"))
            if cursor_id is not None:
                fields["cursorId"] = cursor_id
        if isinstance(batch, list):
            fields["numberReturned"] = len(batch)
            docs = batch
        else:
            docs = [body]
        for section in msg.sections:
            docs.extend(section.documents)
    return fields, error_text(body), docs


def error_text(body: dict[str, Any] | None) -> str:
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


def render_documents(docs: list[Any], max_docs: int, max_len: int) -> str:
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


class Request:
    """A request as the event shows it: its method, resource, parameters and mongodb.* fields."""

    __slots__ = ("fields", "method", "msg", "params", "resource")

    def __init__(self, msg: MongoMessage, method: str, resource: str, params: dict[str, Any] | None,
                 fields: dict[str, Any]) -> None:
        self.msg = msg
        self.method = method
        self.resource = resource
        self.params = params
        self.fields = fields


def transaction(conn: ConnectionInfo, config: MongodbConfig, request: Request,
                reply: MongoMessage | None) -> Transaction:
    """A request and its reply (none for the requests that get none) as Packetbeat publishes them."""
    req = request.msg
    mongodb = dict(request.fields)
    mongodb["opcodeName"] = wire.opcode_name(req.opcode, req.compressed)
    error = ""
    docs: list[Any] = []
    notes = list(req.notes)
    if reply is not None:
        more_fields, error, docs = reply_fields(reply)
        mongodb.update(more_fields)
        notes.extend(reply.notes)
    if error:
        mongodb["error"] = error
    skip = mongodb.get("numberToSkip")
    limit = mongodb.get("numberToReturn")
    fields: dict[str, Any] = {
        "mongodb": mongodb, "method": request.method, "resource": request.resource,
        "query": reconstruct_query(request.resource, request.method, request.params, skip, limit, full=False),
    }
    if config.send_request:
        fields["request"] = reconstruct_query(request.resource, request.method, request.params, skip, limit,
                                              full=True)
    if config.send_response and docs:
        fields["response"] = render_documents(docs, config.max_docs, config.max_doc_length)
    return Transaction(
        type="mongodb", conn=conn, ts_ns=req.ts_ns,
        end_ns=max(reply.ts_ns, req.ts_ns) if reply is not None else None,
        status="Error" if error else "OK", client_bytes=req.size,
        server_bytes=reply.size if reply is not None else None, notes=notes, fields=fields)


def unknown_transaction(conn: ConnectionInfo, direction: Direction, msg: MongoMessage) -> Transaction:
    """Decision: a message of an unknown opcode is shown (Packetbeat only logs it), status Error, so it can
    be found."""
    is_request = direction is Direction.TO_SERVER
    return Transaction(
        type="mongodb", conn=conn, ts_ns=msg.ts_ns, has_request=is_request,
        end_ns=None if is_request else msg.ts_ns, status="Error",
        client_bytes=msg.size if is_request else None, server_bytes=None if is_request else msg.size,
        notes=[f"Unknown operation code: {msg.opcode}", *msg.notes],
        fields={"mongodb": {"opcodeName": wire.opcode_name(msg.opcode)}})
