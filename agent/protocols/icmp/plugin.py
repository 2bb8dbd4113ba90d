"""ICMP transactions: requests paired with replies by (addresses, id, seq); errors stand alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.metrics import Counters
from agent.protocols.base import ProtocolConfig, ProtocolSpec, Transaction
from agent.protocols.correlation import KeyedRequests
from agent.protocols.icmp.fields import FIELDS, message_fields
from agent.protocols.icmp.parser import IcmpMessage, parse
from agent.transport.types import ConnectionInfo, Direction, Endpoint

DUPLICATE_REQUEST = ("Another request with the same Id and Seq was received so this request was closed "
                     "without receiving a response.")
ORPHANED_REQUEST = "Request was received without an associated response."
ORPHANED_RESPONSE = "Response was received without an associated request."


@dataclass(frozen=True)
class IcmpConfig(ProtocolConfig):
    pass


_Key = tuple[int, bytes, bytes, int, int]


class _Pending:
    __slots__ = ("conn", "notes", "request", "ts_ns")

    def __init__(self, conn: ConnectionInfo, request: IcmpMessage, ts_ns: int) -> None:
        self.conn = conn
        self.request = request
        self.ts_ns = ts_ns
        self.notes: list[str] = []


class IcmpHandler:
    def __init__(self, config: ProtocolConfig, emit: Callable[[Transaction], None], counters: Counters) -> None:
        self.emit = emit
        self.counters = counters
        self.requests: KeyedRequests[_Key, _Pending] = KeyedRequests(counters,
                                                                    int(config.transaction_timeout * 1e9))

    def datagram(self, direction: Direction, conn: ConnectionInfo, data: bytes, ts_ns: int) -> None:
        version = 4 if conn.transport == "icmp" else 6
        msg = parse(version, data)
        src, dst = conn.client.ip, conn.server.ip
        if msg.is_request:
            key = (version, src, dst, msg.id, msg.seq)
            previous = self.requests.pop(key)
            if previous is not None:
                previous.notes.append(DUPLICATE_REQUEST)
                self.counters.inc("duplicate_requests")
                self._publish(previous, None, 0)
            pending = _Pending(conn, msg, ts_ns)
            if msg.needs_counterpart:
                _, evicted = self.requests.put(key, pending, ts_ns)
                for old in evicted:
                    self._expired(old)
            else:
                self._publish(pending, None, 0)
            return
        found = self.requests.pop((version, dst, src, msg.id, msg.seq))
        if found is None:
            self.counters.inc("unmatched_responses")
            orphan = _Pending(ConnectionInfo(Endpoint(dst, 0), Endpoint(src, 0), conn.family, conn.transport),
                              msg, ts_ns)
            orphan.notes.append(ORPHANED_RESPONSE)
            self._publish(orphan, msg, ts_ns, response_only=True)
            return
        self._publish(found, msg, ts_ns)

    def _expired(self, pending: _Pending) -> None:
        pending.notes.append(ORPHANED_REQUEST)
        self.counters.inc("unmatched_requests")
        self._publish(pending, None, 0)

    def tick(self, now_ns: int) -> None:
        for pending in self.requests.expire(now_ns):
            self._expired(pending)

    def pending(self) -> int:
        return len(self.requests)

    def _publish(self, pending: _Pending, response: IcmpMessage | None, resp_ts: int,
                 response_only: bool = False) -> None:
        request = None if response_only else pending.request
        icmp: dict[str, Any] = {"version": pending.request.version}
        error = bool(pending.notes)
        txn = Transaction(type="icmp", conn=pending.conn, ts_ns=pending.ts_ns, has_request=request is not None,
                          event_type=("connection",))
        if request is not None:
            icmp["request"] = message_fields(request)
            txn.client_bytes = request.length
            txn.icmp = (request.type, request.code)
            error = error or request.is_error
        if response is not None:
            icmp["response"] = message_fields(response)
            txn.server_bytes = response.length
            txn.end_ns = resp_ts
            if request is None:
                txn.icmp = (response.type, response.code)
            error = error or response.is_error
        txn.status = "Error" if error else "OK"
        txn.notes = pending.notes
        txn.fields = {"icmp": icmp, "path": pending.conn.server.ip_text}
        self.emit(txn)


SPEC = ProtocolSpec(
    name="icmp",
    config_class=IcmpConfig,
    icmp=IcmpHandler,
    fields=FIELDS,
    description="ICMPv4 and ICMPv6 request/response pairs and errors",
    counters=("unmatched_requests", "unmatched_responses", "duplicate_requests", "table_overflow"),
)
