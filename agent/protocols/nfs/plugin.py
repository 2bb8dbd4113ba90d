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
from typing import Any

from agent.config.typed import opt
from agent.protocols.base import ProtocolConfig, ProtocolSpec, SessionContext, Transaction
from agent.protocols.correlation import KeyedRequests
from agent.protocols.nfs.names import AUTH_UNIX, NFS_PROGRAM, accept_status, auth_flavor, reject_status
from agent.protocols.nfs.parser import Record, RecordFramer, RpcCall, RpcReply, decode
from agent.protocols.nfs.procedures import reply_status, request_info, unix_credentials
from agent.transport.session import ParseError
from agent.transport.types import Direction

MAX_PENDING_CALLS = 4096  # per connection
NO_REPLY = "NO_REPLY"
MALFORMED_CREDENTIALS = "RPC AUTH_UNIX credentials are malformed"

COUNTERS = ("unmatched_requests", "unmatched_responses", "parse_errors", "non_nfs_calls", "retransmitted_calls",
            "table_overflow", "gaps", "resync_dropped_bytes", "records_lost_to_gaps")


def _check_timeout(value: float) -> str | None:
    return "must be more than 0" if value <= 0 else None


@dataclass(frozen=True)
class NfsConfig(ProtocolConfig):
    transaction_timeout: float = opt(60.0, kind="duration", check=_check_timeout)


class _Call:
    """What a pending call needs for its event (not the record: a WRITE's head is 64 KiB)."""

    __slots__ = ("cred", "cred_flavor", "cred_malformed", "direction", "request", "size", "ts_ns", "xid")

    def __init__(self, call: RpcCall, direction: Direction) -> None:
        self.xid = call.xid
        self.size = call.size
        self.ts_ns = call.ts_ns
        self.request = request_info(call)
        self.cred_flavor = call.cred_flavor
        self.cred = unix_credentials(call.cred) if call.cred_flavor == AUTH_UNIX else None
        self.cred_malformed = call.cred_flavor == AUTH_UNIX and self.cred is None
        self.direction = direction  # the way the call travelled: its sender is the event's client


class NfsSession:
    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.counters = ctx.counters
        self.timeout_ns = int(ctx.config.transaction_timeout * 1e9)
        self.framers = (RecordFramer(Direction.TO_SERVER), RecordFramer(Direction.TO_CLIENT))
        self.calls: KeyedRequests[int, _Call] = KeyedRequests(ctx.counters, self.timeout_ns, MAX_PENDING_CALLS)

    # -- StreamSession -----------------------------------------------------------

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> None:
        framer = self.framers[direction]
        synced = framer.synced
        dropped = framer.dropped_bytes
        try:
            for record in framer.feed(data, ts_ns):
                self._record(direction, self._decode(record, direction))
        finally:
            if not synced:
                self.counters.inc("resync_dropped_bytes", framer.dropped_bytes - dropped)
        self._expire_calls(ts_ns)

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> None:
        self.counters.inc("gaps")
        framer = self.framers[direction]
        mid_record = framer.mid_record
        for record in framer.gap(nbytes):
            self._record(direction, self._decode(record, direction))
        if mid_record and not framer.synced:
            self.counters.inc("records_lost_to_gaps")

    def fin(self, direction: Direction, ts_ns: int) -> None:
        pass  # a record cut by FIN is incomplete: there is nothing to publish from it

    def recover(self, direction: Direction, error: ParseError, ts_ns: int) -> None:
        self.counters.inc("parse_errors")
        self.framers[direction].lose_sync()

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
        pending = _Call(call, direction)
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

    def _no_reply(self, pending: _Call) -> None:
        self.counters.inc("unmatched_requests")
        self._publish(pending, None)

    # -- events --------------------------------------------------------------------

    def _publish(self, pending: _Call, reply: RpcReply | None) -> None:
        request = pending.request
        conn = self.ctx.conn if pending.direction is Direction.TO_SERVER else self.ctx.conn.reversed()
        rpc: dict[str, Any] = {"xid": f"{pending.xid:08x}", "auth_flavor": auth_flavor(pending.cred_flavor)}
        nfs: dict[str, Any] = request.fields()
        fields: dict[str, Any] = {"rpc": rpc, "nfs": nfs}
        event: dict[str, Any] = {}
        txn = Transaction(type="nfs", conn=conn, ts_ns=pending.ts_ns, client_bytes=pending.size, fields=fields,
                          protocol_override={3: "nfsv3", 4: "nfsv4"}.get(request.version, "nfs"))
        if request.opcode:
            event["action"] = f"nfs.{request.opcode}"
        cred = pending.cred
        if pending.cred_malformed:
            txn.notes.append(MALFORMED_CREDENTIALS)
        elif cred is not None:
            machine = cred.machinename or conn.client.ip_text
            rpc["cred"] = {"stamp": cred.stamp, "machinename": machine, "uid": cred.uid, "gid": cred.gid,
                           "gids": cred.gids}
            fields["user"] = {"id": cred.uid}
            fields["group"] = {"id": cred.gid}
            fields["host"] = {"hostname": machine}
            if cred.machinename:
                fields["source"] = {"domain": cred.machinename}
                fields["client"] = {"domain": cred.machinename}
        if reply is None:
            txn.status = NO_REPLY
        else:
            txn.end_ns = reply.ts_ns
            txn.server_bytes = reply.size
            if reply.accepted:
                rpc["status"] = accept_status(reply.stat)
                if reply.stat == 0:
                    status = reply_status(request, reply)
                    if status is not None:
                        nfs["status"] = status
                else:
                    event["outcome"] = "failure"
            else:
                rpc["status"] = reject_status(reply.stat)
                event["outcome"] = "failure"
                txn.status = "Error"
        if event:
            fields["event"] = event
        self.ctx.emit(txn)


SPEC = ProtocolSpec(
    name="nfs",
    config_class=NfsConfig,
    tcp=NfsSession,
    description="NFSv3 and NFSv4.x calls and replies over ONC-RPC (TCP record marking)",
    counters=COUNTERS,
)
