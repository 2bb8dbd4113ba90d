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

from agent.config.typed import ConfigError, opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.stream import SessionBase
from agent.protocols.thrift import idl as idl_module
from agent.protocols.thrift.fields import FIELDS, transaction
from agent.protocols.thrift.idl import Idl, IdlError
from agent.protocols.thrift.parser import ONEWAY, ParserSettings, ThriftMessage, ThriftParser
from agent.transport.types import Direction

log = logging.getLogger(__name__)

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


class ThriftSession(SessionBase[ThriftConfig]):
    def __init__(self, ctx: SessionContext[ThriftConfig]) -> None:
        super().__init__(ctx)
        config = self.config
        settings = config.parser_settings()
        self.parsers = (ThriftParser(Direction.TO_SERVER, settings, ctx.counters),
                        ThriftParser(Direction.TO_CLIENT, settings, ctx.counters))
        self.idl = load_idl(tuple(config.idl_files)) if config.idl_files else None
        self.call: ThriftMessage | None = None  # the call waiting for its reply

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        for msg in self.parsers[direction].feed(data, ts_ns):
            if msg.is_request:
                self._on_call(msg)
            else:
                self._on_reply(msg)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters["gaps"] += 1
        for cut in self.parsers[direction].gap(nbytes, ts_ns).messages:
            if not cut.is_request:  # a reply cut short still answers its call, with a note
                self._on_reply(cut)

    def fin(self, direction: Direction, ts_ns: int) -> None:
        if self.call is not None:
            self._publish_oneway(self.call)
            self.call = None

    def lose_sync(self, direction: Direction) -> None:
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

    def _publish_oneway(self, call: ThriftMessage) -> None:
        self.counters["oneway_calls"] += 1
        self._publish(call, None)

    def _publish(self, call: ThriftMessage, reply: ThriftMessage | None) -> None:
        method = self.idl.find_method(call.method) if self.idl is not None else None
        self.ctx.emit(transaction(self.ctx.conn, self.config, call, reply, method))


SPEC = ProtocolSpec(
    name="thrift",
    config_class=ThriftConfig,
    fields=FIELDS,
    tcp=ThriftSession,
    description="Apache Thrift RPC (TBinary protocol over TSocket or TFramed) calls paired with their replies",
    counters=COUNTERS,
)
