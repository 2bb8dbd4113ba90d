"""What an NFS call is (version, operation, v4 tag and minor version) and how its reply ended.

For an NFSv4 COMPOUND the operation is the first "first-class" one: the
operations that only set a COMPOUND up (SEQUENCE, PUTFH, GETATTR, SAVEFH...)
are skipped, their arguments decoded just enough to reach the next one.
When none is found the last operation seen names the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.protocols.nfs.names import V4_FIRST_CLASS, V4_OPERATIONS, nfs_status, v3_procedure
from agent.protocols.nfs.parser import RpcCall, RpcReply
from agent.protocols.nfs.xdr import Xdr, XdrError

V4_COMPOUND = 1
V4_SESSION_ID = 16

# Arguments of the set-up operations, skipped to reach the next operation.
OP_GETATTR, OP_LOOKUP, OP_NVERIFY, OP_PUTFH, OP_RENEW, OP_SECINFO, OP_VERIFY, OP_SEQUENCE = (
    9, 15, 17, 22, 30, 33, 37, 53)


@dataclass(frozen=True, slots=True)
class NfsRequest:
    version: int
    procedure: int
    opcode: str | None
    tag: str | None = None
    minor_version: int | None = None

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"version": self.version}
        if self.tag is not None:
            out["tag"] = self.tag
        if self.minor_version is not None:
            out["minor_version"] = self.minor_version
        if self.opcode is not None:
            out["opcode"] = self.opcode
        return out


@dataclass(frozen=True, slots=True)
class UnixCredentials:
    stamp: int
    machinename: str
    uid: int
    gid: int
    gids: list[int]


def _skip_arguments(op: int, xdr: Xdr) -> None:
    if op == OP_GETATTR:
        xdr.uint_vector()
    elif op in (OP_LOOKUP, OP_PUTFH, OP_SECINFO):
        xdr.dynamic_opaque()
    elif op in (OP_NVERIFY, OP_VERIFY):
        xdr.uint_vector()
        xdr.dynamic_opaque()
    elif op == OP_RENEW:
        xdr.uhyper()
    elif op == OP_SEQUENCE:
        xdr.opaque(V4_SESSION_ID)
        for _ in range(4):  # sequence id, slot id, highest slot id, cache this
            xdr.uint()


def main_v4_operation(xdr: Xdr) -> str:
    """The operation that names a COMPOUND (the cursor is at its operation count)."""
    current = "ILLEGAL"
    try:
        count = xdr.uint()
        for _ in range(count):
            op = xdr.uint()
            name = V4_OPERATIONS.get(op)
            if name is None:
                return "ILLEGAL"
            current = name
            if op in V4_FIRST_CLASS:
                break
            _skip_arguments(op, xdr)
    except XdrError:
        pass  # a cut or malformed COMPOUND: the last operation seen names it
    return current


def request_info(call: RpcCall) -> NfsRequest:
    version = call.version
    if version == 3:
        return NfsRequest(3, call.procedure, v3_procedure(call.procedure))
    if version == 4:
        if call.procedure == 0:
            return NfsRequest(4, 0, "NULL")
        if call.procedure == V4_COMPOUND:
            xdr = Xdr(call.body, call.args_at)
            try:
                tag = xdr.string()
                minor = xdr.uint()
            except XdrError:
                return NfsRequest(4, V4_COMPOUND, None)
            return NfsRequest(4, V4_COMPOUND, main_v4_operation(xdr), tag, minor)
        return NfsRequest(4, call.procedure, None)
    return NfsRequest(version, call.procedure, None)


def reply_status(request: NfsRequest, reply: RpcReply) -> str | None:
    """The NFS status of a successful RPC reply (its results start with it), None when cut short."""
    if request.procedure == 0:
        return nfs_status(0)  # NULL has no results
    try:
        return nfs_status(Xdr(reply.body, reply.results_at).uint())
    except XdrError:
        return None


def unix_credentials(body: bytes) -> UnixCredentials | None:
    """AUTH_UNIX (AUTH_SYS) credentials, None when malformed."""
    xdr = Xdr(body)
    try:
        stamp = xdr.uint()
        machine = xdr.string()
        uid = xdr.uint()
        gid = xdr.uint()
        gids = xdr.uint_vector()
    except XdrError:
        return None
    return UnixCredentials(stamp, machine, uid, gid, gids)
