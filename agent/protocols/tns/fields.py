"""Oracle TNS event fields (with their index mapping) and the transactions that carry them.

- One connect event per connect attempt (`event.action: tns.connect`,
  `method: CONNECT`): the descriptor's SERVICE_NAME, SID, HOST, PORT,
  PROGRAM and USER, the client's TNS and driver versions, and the outcome:
  accepted (with the logon that followed, when it is seen), refused (with
  the listener's reason text and TNS error), or redirected (with the target).
- One query event per SQL call (`event.action: tns.query`): the SQL text
  (OALL8, or a re-executed cursor's), rows processed, the ORA- error, and
  COMMIT / ROLLBACK as their own events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.protocols.base import Transaction
from agent.protocols.tns.connect import LISTENER_ERRORS, descriptor_fields, first, listener_error
from agent.protocols.tns.ttc import FUNCTION_NAMES, Call, EndOfCall, version_text
from agent.transport.types import ConnectionInfo

FIELDS = """
tns.outcome keyword
tns.version long
tns.resends long
tns.encrypted boolean
tns.function keyword
tns.cursor_id long
tns.rows long
tns.error_code long
tns.error_message keyword +text
tns.connect.service_name keyword
tns.connect.sid keyword
tns.connect.instance_name keyword
tns.connect.server keyword
tns.connect.host keyword
tns.connect.port long
tns.connect.protocol keyword
tns.connect.program keyword
tns.connect.client_host keyword
tns.connect.os_user keyword
tns.connect.connection_id keyword
tns.accept.version long
tns.accept.sdu long
tns.refuse.reason keyword +text
tns.refuse.user_reason long
tns.refuse.system_reason long
tns.redirect.address keyword
tns.redirect.host keyword
tns.redirect.port long
tns.client.driver keyword
tns.client.version keyword
tns.server.banner keyword
"""

NOTE_NO_REPLY = "The connection ended before the server answered"
NOTE_NO_END_OF_CALL = "The end of the server's answer was not recognised"
NOTE_ENCRYPTED = "Native network encryption: nothing after the connect is decoded"

OUTCOME_ACCEPTED, OUTCOME_REFUSED, OUTCOME_REDIRECTED = "accepted", "refused", "redirected"


@dataclass
class Attempt:
    """One connect attempt, from the client's CONNECT to its outcome (and logon, when accepted)."""

    ts_ns: int
    version: int = 0
    descriptor: str = ""
    client_bytes: int = 0
    server_bytes: int = 0
    resends: int = 0
    outcome: str | None = None
    end_ns: int | None = None
    accept_version: int = 0
    accept_sdu: int = 0
    refuse_reason: str = ""
    refuse_reasons: tuple[int, int] = (0, 0)
    redirect: str = ""
    encrypted: bool = False
    banner: str = ""
    user: str | None = None
    pairs: dict[str, str] = field(default_factory=dict)
    logon: EndOfCall | None = None
    notes: list[str] = field(default_factory=list)


def connect_transaction(conn: ConnectionInfo, attempt: Attempt, send_request: bool) -> Transaction:
    fields = descriptor_fields(attempt.descriptor)
    connect: dict[str, Any] = {}
    for key, suffixes in (("service_name", ("CONNECT_DATA.SERVICE_NAME",)), ("sid", ("CONNECT_DATA.SID",)),
                          ("instance_name", ("CONNECT_DATA.INSTANCE_NAME",)), ("server", ("CONNECT_DATA.SERVER",)),
                          ("host", ("ADDRESS.HOST",)), ("protocol", ("ADDRESS.PROTOCOL",)),
                          ("program", ("CID.PROGRAM",)), ("client_host", ("CID.HOST",)),
                          ("os_user", ("CID.USER",)), ("connection_id", ("CONNECTION_ID",))):
        value = first(fields, *suffixes)
        if value:
            connect[key] = value
    port = first(fields, "ADDRESS.PORT")
    if port and port.isdigit():
        connect["port"] = int(port)
    tns: dict[str, Any] = {"connect": connect, "version": attempt.version}
    if attempt.outcome:
        tns["outcome"] = attempt.outcome
    if attempt.resends:
        tns["resends"] = attempt.resends
    status = "OK"
    if attempt.outcome == OUTCOME_ACCEPTED:
        tns["accept"] = {"version": attempt.accept_version, "sdu": attempt.accept_sdu}
        tns["encrypted"] = attempt.encrypted
    elif attempt.outcome == OUTCOME_REFUSED:
        status = "Error"
        tns["refuse"] = {"reason": attempt.refuse_reason, "user_reason": attempt.refuse_reasons[0],
                         "system_reason": attempt.refuse_reasons[1]}
        code = listener_error(attempt.refuse_reason)
        if code is not None:
            tns["error_code"] = code
            tns["error_message"] = f"TNS-{code:05d}: {LISTENER_ERRORS.get(code, 'refused by the listener')}"
    elif attempt.outcome == OUTCOME_REDIRECTED:
        tns["redirect"] = _redirect_fields(attempt.redirect)
    _client_fields(attempt, tns)
    out: dict[str, Any] = {"method": "CONNECT", "tns": tns,
                           "query": f"CONNECT {connect.get('service_name') or connect.get('sid') or ''}".rstrip()}
    if attempt.logon is not None and attempt.logon.failed:
        status = "Error"
        tns["error_code"] = attempt.logon.error
        tns["error_message"] = attempt.logon.message
    if attempt.user:
        out["user"] = {"name": attempt.user}
    out["event"] = {"action": "tns.connect", "outcome": "success" if status == "OK" else "failure"}
    if send_request:
        out["request"] = attempt.descriptor
    return Transaction(type="tns", conn=conn, ts_ns=attempt.ts_ns, end_ns=attempt.end_ns, status=status,
                       client_bytes=attempt.client_bytes or None, server_bytes=attempt.server_bytes or None,
                       notes=list(attempt.notes), fields=out)


def _redirect_fields(redirect: str) -> dict[str, Any]:
    address = redirect.split("\0", 1)[0]
    fields = descriptor_fields(address)
    out: dict[str, Any] = {"address": address}
    host = first(fields, "HOST")
    port = first(fields, "PORT")
    if host:
        out["host"] = host
    if port and port.isdigit():
        out["port"] = int(port)
    return out


def _client_fields(attempt: Attempt, tns: dict[str, Any]) -> None:
    client: dict[str, Any] = {}
    driver = attempt.pairs.get("SESSION_CLIENT_DRIVER_NAME")
    if driver:
        client["driver"] = driver
    version = attempt.pairs.get("SESSION_CLIENT_VERSION", "")
    if version.isdigit():
        client["version"] = version_text(int(version))
    if client:
        tns["client"] = client
    if attempt.banner:
        tns["server"] = {"banner": attempt.banner}


@dataclass
class CallState:
    """A call in progress: the request, then the answer's bytes as they come."""

    call: Call | None
    ts_ns: int
    request: bytearray
    client_bytes: int = 0
    server_bytes: int = 0
    end_ns: int | None = None
    answered: bool = False  # the server has started answering
    tail: bytearray = field(default_factory=bytearray)  # the answer's last bytes, for its end-of-call block


def statement_method(sql: str) -> str:
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    return words[0].upper() if words else ""


def call_transaction(conn: ConnectionInfo, state: CallState, sql: str | None, end: EndOfCall | None,
                     user: str | None, notes: list[str], send_response: bool) -> Transaction:
    """A SQL call (or a commit/rollback) and how it ended."""
    call = state.call
    assert call is not None
    tns: dict[str, Any] = {"function": FUNCTION_NAMES.get(call.function, str(call.function))}
    out: dict[str, Any] = {"tns": tns}
    if sql is not None:
        out["method"] = statement_method(sql)
        out["query"] = sql
        action = "tns.query"
    else:
        out["method"] = "COMMIT" if call.function == 14 else "ROLLBACK"
        out["query"] = out["method"]
        action = "tns." + out["method"].lower()
    status = "Error" if end is None or end.failed else "OK"
    if end is not None:
        if end.cursor_id:
            tns["cursor_id"] = end.cursor_id
        tns["rows"] = end.rows
        if end.error:
            tns["error_code"] = end.error
            tns["error_message"] = end.message
        if send_response:
            out["response"] = end.message or "OK"
    if user:
        out["user"] = {"name": user}
    out["event"] = {"action": action, "outcome": "success" if status == "OK" else "failure"}
    return Transaction(type="tns", conn=conn, ts_ns=state.ts_ns, end_ns=state.end_ns, status=status,
                       client_bytes=state.client_bytes or None, server_bytes=state.server_bytes or None,
                       notes=notes, fields=out)
