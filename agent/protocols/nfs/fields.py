"""NFS's event fields (with their index mapping) and the transaction that carries them."""

from __future__ import annotations

from typing import Any

from agent.protocols.base import Transaction
from agent.protocols.nfs.names import AUTH_UNIX, accept_status, auth_flavor, reject_status
from agent.protocols.nfs.parser import RpcCall, RpcReply
from agent.protocols.nfs.procedures import reply_status, request_info, unix_credentials
from agent.transport.types import ConnectionInfo, Direction

# Packetbeat's nfs fields.yml (nfs.* and rpc.*; its untyped ones are keywords), and group.id (ECS), which only
# NFS fills.  Besides these: user.id, host.hostname, source/client.domain, event.action/outcome (common).
FIELDS = """
nfs.version long
nfs.minor_version long
nfs.tag keyword
nfs.opcode keyword
nfs.status keyword
rpc.xid keyword
rpc.status keyword
rpc.auth_flavor keyword
rpc.cred.uid long
rpc.cred.gid long
rpc.cred.gids long
rpc.cred.stamp long
rpc.cred.machinename keyword
group.id keyword
"""

NO_REPLY = "NO_REPLY"
MALFORMED_CREDENTIALS = "RPC AUTH_UNIX credentials are malformed"


class Call:
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


def transaction(conn: ConnectionInfo, pending: Call, reply: RpcReply | None) -> Transaction:
    """A call and its reply (None: it never came) as Packetbeat publishes them; `conn` is the session's."""
    request = pending.request
    if pending.direction is Direction.TO_CLIENT:  # the call's sender is the event's client
        conn = conn.reversed()
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
    return txn
