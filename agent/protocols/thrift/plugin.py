"""Thrift transactions: a call paired with its reply, as Packetbeat pairs them.

One call waits per connection.  A reply is paired with it when the method
name and the sequence id match; a mismatched reply gives no transaction
(counted as an unmatched response).  A call that is never answered is a
oneway call: it is published when the next call arrives or when the
connection ends (FIN), without reply fields and without destination bytes.
A call sent with the ONEWAY message type is published at once (it never
gets a reply).  Calls still waiting when the connection goes idle are
dropped and counted, as Packetbeat drops them.

With `idl_files`, parameters and exceptions are named from the IDL and
`thrift.service` is set.  A gap in a reply still publishes the transaction
with the request's values and the note "Packet loss while capturing the
response"; a gap in a call loses that call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from agent.config.typed import ConfigError, opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.thrift import idl as idl_module
from agent.protocols.thrift.idl import Idl, IdlError, IdlMethod
from agent.protocols.thrift.parser import (
    EXCEPTION,
    ONEWAY,
    ParserSettings,
    ThriftMessage,
    ThriftParser,
    format_struct,
)
from agent.transport.session import ParseError
from agent.transport.types import Direction

log = logging.getLogger(__name__)

PACKET_LOSS_NOTE = "Packet loss while capturing the response"

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "gaps", "oversized_frames",
            "skipped_bytes", "oneway_calls", "mismatched_replies")


def _transport(value: str) -> str | None:
    return None if value in ("socket", "framed") else f"transport type {value!r} is not known (socket or framed)"


def _protocol(value: str) -> str | None:
    return None if value == "binary" else f"protocol type {value!r} is not known (only binary is supported)"


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be 1 or more"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


@cache
def load_idl(paths: tuple[str, ...]) -> Idl:
    """The IDL of `paths`, read once per process."""
    idl = idl_module.load(paths)
    for warning in idl.warnings:
        log.warning("thrift IDL: %s", warning)
    return idl


@dataclass(frozen=True)
class ThriftConfig(ProtocolConfig):
    transport_type: str = opt("socket", check=_transport, doc="socket (TSocket) or framed (TFramed)")
    protocol_type: str = opt("binary", check=_protocol)
    idl_files: tuple[str, ...] = opt((), doc="Thrift IDL files naming parameters and exceptions")
    string_max_size: int = opt(200, check=_not_negative)
    collection_max_size: int = opt(15, check=_not_negative)
    drop_after_n_struct_fields: int = opt(500, check=_positive)
    capture_reply: bool = opt(True)
    obfuscate_strings: bool = opt(False)

    def __post_init__(self) -> None:
        if self.idl_files:
            try:
                load_idl(tuple(self.idl_files))
            except IdlError as exc:
                raise ConfigError("packetbeat.protocols.thrift.idl_files",
                                  f"error parsing Thrift IDL file {exc}") from None

    def parser_settings(self) -> ParserSettings:
        return ParserSettings(framed=self.transport_type == "framed", string_max_size=self.string_max_size,
                              collection_max_size=self.collection_max_size,
                              drop_after_n_struct_fields=self.drop_after_n_struct_fields,
                              obfuscate_strings=self.obfuscate_strings, capture_reply=self.capture_reply)


class ThriftSession:
    def __init__(self, ctx: SessionContext) -> None:
        config = ctx.config
        assert isinstance(config, ThriftConfig)
        self.ctx = ctx
        self.config = config
        self.counters = ctx.counters
        settings = config.parser_settings()
        self.parsers = (ThriftParser(Direction.TO_SERVER, settings), ThriftParser(Direction.TO_CLIENT, settings))
        self.idl = load_idl(tuple(config.idl_files)) if config.idl_files else None
        self.call: ThriftMessage | None = None  # the call waiting for its reply

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        parser = self.parsers[direction]
        try:
            messages = parser.feed(data, ts_ns)
        finally:
            self._count_parser(parser)
        for msg in messages:
            if msg.is_request:
                self._on_call(msg)
            else:
                self._on_reply(msg)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        parser = self.parsers[direction]
        partial = parser.cut_short()
        parser.reset()
        if partial is not None and not partial.is_request:
            self._on_reply(partial)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if self.call is not None:
            self._publish_oneway(self.call)
            self.call = None

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters["parse_errors"] += 1
        self.parsers[direction].reset()

    def expire(self, ts_ns: int) -> None:
        if self.call is not None:
            self.counters["unmatched_requests"] += 1
            self.call = None

    def pending(self) -> int:
        return 1 if self.call is not None else 0

    def buffered(self) -> int:
        return self.parsers[0].buffered + self.parsers[1].buffered

    # -- pairing -------------------------------------------------------------------

    def _count_parser(self, parser: ThriftParser) -> None:
        if parser.oversized_frames:
            self.counters["oversized_frames"] += parser.oversized_frames
            parser.oversized_frames = 0
        if parser.skipped_bytes:
            self.counters["skipped_bytes"] += parser.skipped_bytes
            parser.skipped_bytes = 0

    def _on_call(self, msg: ThriftMessage) -> None:
        if self.call is not None:
            # Two calls without a reply between them: the first was a oneway call.
            self.counters["unmatched_requests"] += 1
            self._publish_oneway(self.call)
            self.call = None
        if not self.config.capture_reply:
            self.parsers[Direction.TO_CLIENT].resume()
        if msg.type == ONEWAY:
            self._publish_oneway(msg)
        else:
            self.call = msg

    def _on_reply(self, msg: ThriftMessage) -> None:
        call = self.call
        if call is None:
            self.counters["unmatched_responses"] += 1
            return
        if call.method != msg.method or call.seqid != msg.seqid:
            self.counters["unmatched_responses"] += 1
            self.counters["mismatched_replies"] += 1
            return
        self.call = None
        self._publish(call, msg)

    # -- events --------------------------------------------------------------------

    def _method(self, name: str) -> IdlMethod | None:
        return self.idl.find_method(name) if self.idl is not None else None

    def _publish_oneway(self, call: ThriftMessage) -> None:
        self.counters["oneway_calls"] += 1
        self._publish(call, None)

    def _publish(self, call: ThriftMessage, reply: ThriftMessage | None) -> None:
        config = self.config
        limit = config.collection_max_size
        method = self._method(call.method)
        params = format_struct(call.fields, call.more_fields, limit, method.params if method else None)
        service = method.service if method else ""
        query = call.method + params
        thrift: dict[str, Any] = {"params": params}
        if service:
            thrift["service"] = service
        fields: dict[str, Any] = {"method": call.method, "path": service, "query": query, "thrift": thrift}
        if config.send_request:
            fields["request"] = query
        status = "OK"
        notes: list[str] = []
        if reply is not None:
            return_value, exceptions = self._reply_values(reply, method, limit)
            thrift["return_value"] = return_value
            if exceptions:
                thrift["exceptions"] = exceptions
                status = "Error"
            if config.send_response:
                fields["response"] = f"Exceptions: {exceptions}" if exceptions else return_value
            if reply.lost:
                notes.append(PACKET_LOSS_NOTE)
        self.ctx.emit(Transaction(
            type="thrift", conn=self.ctx.conn, ts_ns=call.ts_ns,
            end_ns=max(reply.ts_ns, call.ts_ns) if reply is not None else None,
            status=status, client_bytes=call.size or None,
            server_bytes=(reply.size or None) if reply is not None else None,
            notes=notes, fields=fields))

    @staticmethod
    def _reply_values(reply: ThriftMessage, method: IdlMethod | None, limit: int) -> tuple[str, str]:
        """(return_value, exceptions): field 0 is the return value, any other field an exception."""
        if not reply.fields:
            return "", ""
        first = reply.fields[0]
        if first.id == 0:
            return first.value, ""
        # A TApplicationException (message type EXCEPTION) is not one of the method's declared exceptions.
        names = method.exceptions if method is not None and reply.type != EXCEPTION else None
        return "", format_struct(reply.fields, reply.more_fields, limit, names)


def _session(ctx: SessionContext) -> ThriftSession:
    return ThriftSession(ctx)


SPEC = ProtocolSpec(
    name="thrift",
    config_class=ThriftConfig,
    tcp=_session,
    description="Apache Thrift RPC (TBinary protocol over TSocket or TFramed) calls paired with their replies",
    counters=COUNTERS,
)
