"""NFS transactions: an RPC call to program 100003 paired with its reply by XID.

Each call waits (bounded per connection) for the reply with its XID; one
still unanswered after `transaction_timeout` (default 1m, as Packetbeat)
is published with status `NO_REPLY` and counted in `unmatched_requests`.
A reply without a call is counted, not published.  The event carries
Packetbeat's fields: `rpc.{xid, auth_flavor, cred.*, status}`,
`nfs.{version, minor_version, tag, opcode, status}`, `user.id`, `group.id`,
`host.hostname` and `source.domain` from AUTH_UNIX credentials, and
`network.protocol` nfsv3/nfsv4.

Decisions where Packetbeat is silent: a multi-fragment record is
reassembled (Packetbeat stops parsing the stream); a denied reply
(MSG_DENIED) closes its call with `rpc.status` `rpc_mismatch` or
`auth_error` and status Error (Packetbeat ignores it and later reports
NO_REPLY); a retransmitted call (same XID) replaces the pending one.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext
from agent.protocols.correlation import KeyedRequests
from agent.protocols.errors import ParseError
from agent.protocols.nfs.fields import FIELDS, Call, transaction
from agent.protocols.nfs.names import NFS_PROGRAM
from agent.protocols.nfs.parser import Record, RecordFramer, RpcCall, RpcReply, decode
from agent.protocols.stream import SessionBase, completed
from agent.transport.types import Direction

MAX_PENDING_CALLS = 4096  # per connection

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "non_nfs_calls", "retransmitted_calls",
            "table_overflow", "gaps", "resync_dropped_bytes", "records_lost_to_gaps")


def _check_timeout(value: float) -> str | None:
    return "must be more than 0" if value <= 0 else None


@dataclass(frozen=True)
class NfsConfig(ProtocolConfig):
    transaction_timeout: float = opt(60.0, kind="duration", check=_check_timeout)


class NfsSession(SessionBase[NfsConfig]):
    def __init__(self, ctx: SessionContext[NfsConfig]) -> None:
        super().__init__(ctx)
        self.timeout_ns = int(self.config.transaction_timeout * 1e9)
        self.framers = (RecordFramer(Direction.TO_SERVER), RecordFramer(Direction.TO_CLIENT))
        self.calls: KeyedRequests[int, Call] = KeyedRequests(ctx.counters, self.timeout_ns, MAX_PENDING_CALLS)

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        framer = self.framers[direction]
        synced = framer.synced
        dropped = framer.dropped_bytes
        records, error = completed(lambda: framer.feed(data, ts_ns))
        for record in records:
            self._record(direction, self._decode(record, direction))
        if not synced:
            self.counters.inc("resync_dropped_bytes", framer.dropped_bytes - dropped)
        if error is not None:
            raise error
        self._expire_calls(ts_ns)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters.inc("gaps")
        framer = self.framers[direction]
        mid_record = framer.mid_record
        for record in framer.gap(nbytes, ts_ns).messages:
            self._record(direction, self._decode(record, direction))
        if mid_record and not framer.synced:
            self.counters.inc("records_lost_to_gaps")

    # fin: nothing (a record cut by FIN is incomplete: there is nothing to publish from it); recover: lose_sync.

    def lose_sync(self, direction: Direction) -> None:
        self.framers[direction].reset()

    def expire(self, ts_ns: int) -> None:
        for pending in self.calls.drain():
            self._no_reply(pending)

    def pending(self) -> int:
        return len(self.calls)

    def buffered(self) -> int:
        return self.framers[0].buffered + self.framers[1].buffered

    # -- pairing -------------------------------------------------------------------

    def _decode(self, record: Record, direction: Direction) -> RpcCall | RpcReply | None:
        # A malformed record is counted and skipped: the framing around it is intact.
        try:
            return decode(record, direction)
        except ParseError:
            self.counters.inc("parse_errors")
            return None

    def _record(self, direction: Direction, msg: RpcCall | RpcReply | None) -> None:
        if isinstance(msg, RpcCall):
            self._call(direction, msg)
        elif isinstance(msg, RpcReply):
            self._reply(msg)

    def _call(self, direction: Direction, call: RpcCall) -> None:
        if call.program != NFS_PROGRAM:
            self.counters.inc("non_nfs_calls")  # MOUNT, NLM, the v4.1 callback channel...
            return
        pending = Call(call, direction)
        previous, evicted = self.calls.put(call.xid, pending, call.ts_ns)
        if previous is not None:
            self.counters.inc("retransmitted_calls")
        for old in evicted:
            self._no_reply(old)

    def _reply(self, reply: RpcReply) -> None:
        pending = self.calls.pop(reply.xid)
        if pending is None:
            self.counters.inc("unmatched_responses")
            return
        self._publish(pending, reply)

    def _expire_calls(self, now_ns: int) -> None:
        if self.calls:
            for pending in self.calls.expire(now_ns):
                self._no_reply(pending)

    def _no_reply(self, pending: Call) -> None:
        self.counters.inc("unmatched_requests")
        self._publish(pending, None)

    # -- events --------------------------------------------------------------------

    def _publish(self, pending: Call, reply: RpcReply | None) -> None:
        self.ctx.emit(transaction(self.ctx.conn, pending, reply))


SPEC = ProtocolSpec(
    name="nfs",
    config_class=NfsConfig,
    fields=FIELDS,
    tcp=NfsSession,
    description="NFSv3 and NFSv4.x calls and replies over ONC-RPC (TCP record marking)",
    counters=COUNTERS,
)
