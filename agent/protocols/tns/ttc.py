"""TTC (Two-Task Common), the RPC layer inside TNS DATA packets: what a call is, and how it ended.

Only what can be decoded reliably without the statement's column types:

- a client call: its function (OALL8 = 94 executes SQL, re-execute 4/78,
  fetch 5, commit 14, rollback 15, logoff 9, authentication 118/115), the
  SQL text of an OALL8, the cursor a re-execute names, the user and the
  client's key/value pairs of an authentication call;
- how the server ended the call: the end-of-call error block (TTI_OER:
  error number, rows processed, cursor id, message) or a status message,
  read from the end of the response, so describe information and row data
  before it need no decoding;
- the protocol negotiation (the server's banner, the TTC field version both
  sides support) and native network encryption (ANO, 0xDEADBEEF).

Integers use Oracle's variable-length form: a length byte (high bit: a
negative value), then that many big-endian bytes.  Byte strings have a
length byte, or 0xFE and chunks.  Layouts follow python-oracledb's thin
driver and Wireshark's TNS dissector (facts of the wire format).  A layout
that depends on the negotiated field version is validated by a length the
message repeats (the SQL's) or by ending exactly at the end of the data,
and not decoded when neither version fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.protocols.cursor import Cursor
from agent.protocols.errors import ParseError
from agent.protocols.tns.parser import PROTOCOL

MSG_PROTOCOL, MSG_DATA_TYPES, MSG_FUNCTION, MSG_ERROR, MSG_STATUS, MSG_PIGGYBACK = 1, 2, 3, 4, 9, 17
MSG_END_OF_RESPONSE = 29
FN_EXECUTE, FN_REEXECUTE, FN_REEXECUTE_FETCH, FN_FETCH = 94, 4, 78, 5
FN_COMMIT, FN_ROLLBACK, FN_LOGOFF, FN_AUTH_ONE, FN_AUTH_TWO = 14, 15, 9, 118, 115
FN_CLOSE_CURSORS = 105
FIELD_VERSION_12_2, FIELD_VERSION_12_2_EXT1, FIELD_VERSION_20_1, FIELD_VERSION_23_1_EXT_1 = 8, 9, 14, 18
NO_DATA_FOUND = 1403  # the end of a fetch, not a failure
ANO_MAGIC = b"\xde\xad\xbe\xef"
MAX_OER_SCAN = 4096  # the end-of-call block is looked for in this many final bytes of a response
MAX_AUTH_PAIRS = 64
MAX_CURSORS = 4096

FUNCTION_NAMES = {FN_EXECUTE: "OALL8", FN_REEXECUTE: "OEXEC", FN_REEXECUTE_FETCH: "OEXFEN", FN_FETCH: "OFETCH",
                  FN_COMMIT: "OCOMMIT", FN_ROLLBACK: "OROLLBACK", FN_LOGOFF: "OLOGOFF", FN_AUTH_ONE: "OSESSKEY",
                  FN_AUTH_TWO: "OAUTH", 147: "OPING"}


class _Malformed(Exception):
    """This reading of the bytes does not hold (another layout may)."""


def _cursor(data: bytes, pos: int = 0) -> Cursor:
    return Cursor(data, pos, protocol=PROTOCOL)


def ub(c: Cursor) -> int:
    """An Oracle variable-length integer (sign in the length byte's high bit)."""
    length = c.u8("integer length")
    negative = length & 0x80
    length &= 0x7F
    if length > 8:
        raise _Malformed("integer wider than 8 bytes")
    value = int.from_bytes(c.take(length, "integer"), "big") if length else 0
    return -value if negative else value


def chunked(c: Cursor, limit: int = 1 << 20) -> bytes | None:
    """Bytes with a length byte (0/255: none), or 0xFE then (ub4 length, bytes) chunks up to a zero length."""
    length = c.u8("length")
    if length in (0, 255):
        return None
    if length != 254:
        return c.take(length, "bytes")
    parts: list[bytes] = []
    total = 0
    while True:
        size = ub(c)
        if size <= 0:
            return b"".join(parts)
        total += size
        if total > limit:
            raise _Malformed("chunked value over its limit")
        parts.append(c.take(size, "chunk"))


def text_with_length(c: Cursor) -> bytes | None:
    """A ub4 length, then (when not zero) the bytes with their own length."""
    return chunked(c) if ub(c) > 0 else None


# -- client calls ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One client request, as far as it is understood."""

    function: int  # TTC function code; 0 for a non-function message (protocol, data types)
    message: int  # TTC message type of the request
    sql: str | None = None  # OALL8: the statement
    cursor_id: int = 0  # re-execute / fetch: the cursor named
    user: str | None = None  # authentication
    pairs: dict[str, str] = field(default_factory=dict)  # authentication key/values (secrets left out)
    closed_cursors: tuple[int, ...] = ()  # a close-cursors piggyback before the call


SECRET_KEYS = frozenset({"AUTH_PASSWORD", "AUTH_SESSKEY", "AUTH_PBKDF2_SPEEDY_KEY", "AUTH_NEWPASSWORD",
                         "AUTH_TOKEN", "AUTH_SIGNATURE"})


def parse_call(payload: bytes, field_version: int | None) -> Call | None:
    """The client call a DATA payload starts with; None when it is not TTC this decoder knows."""
    if not payload:
        return None
    kind = payload[0]
    if kind in (MSG_PROTOCOL, MSG_DATA_TYPES):
        return Call(0, kind)
    if kind not in (MSG_FUNCTION, MSG_PIGGYBACK):
        return None
    tokens = (field_version >= FIELD_VERSION_23_1_EXT_1,) if field_version is not None else (False, True)
    for token in tokens:
        try:
            return _function_call(payload, token, field_version)
        except (_Malformed, ParseError):
            continue
    return None


def _header(c: Cursor, token: bool) -> tuple[int, int, int]:
    """(message type, function code, sequence number) of a function or piggyback header."""
    kind, function, seq = c.u8("message type"), c.u8("function"), c.u8("sequence")
    if token:
        ub(c)
    return kind, function, seq


def _function_call(payload: bytes, token: bool, field_version: int | None) -> Call:
    c = _cursor(payload)
    closed: tuple[int, ...] = ()
    kind, function, _ = _header(c, token)
    while kind == MSG_PIGGYBACK:
        if function != FN_CLOSE_CURSORS:
            raise _Malformed("a piggybacked call this decoder does not read")
        c.u8("pointer")
        count = ub(c)
        if not 0 <= count <= MAX_CURSORS:
            raise _Malformed("cursor count")
        closed += tuple(ub(c) for _ in range(count))
        kind, function, _ = _header(c, token)
    if kind != MSG_FUNCTION:
        raise _Malformed("no function after the piggybacks")
    call = Call(function, kind, closed_cursors=closed)
    if function == FN_EXECUTE:
        call.sql, call.cursor_id = _execute(c, field_version)
    elif function in (FN_REEXECUTE, FN_REEXECUTE_FETCH, FN_FETCH):
        call.cursor_id = ub(c)
    elif function in (FN_AUTH_ONE, FN_AUTH_TWO):
        call.user, call.pairs = _authentication(c)
    return call


def _execute(c: Cursor, field_version: int | None) -> tuple[str | None, int]:
    """(SQL text, cursor id) of an OALL8; the text is None for a cursor executed again."""
    ub(c)  # options
    cursor_id = ub(c)
    has_sql = c.u8("sql pointer")
    sql_length = ub(c)
    c.u8("al8i4 pointer")
    ub(c)  # al8i4 length
    c.skip(2, "al8o4 pointers")
    for _ in range(3):  # prefetch buffer size, rows, max long size
        ub(c)
    c.u8("binds pointer")
    ub(c)  # binds
    c.skip(5, "al8app .. al8kvl pointers")
    c.u8("defines pointer")
    ub(c)  # defines
    ub(c)  # registration id
    c.skip(3, "al8objlist, al8objlen, al8blv pointers")
    ub(c)  # al8blvl
    c.u8("al8dnam pointer")
    ub(c)  # al8dnaml
    ub(c)  # al8regid_msb
    c.u8("al8pidmlrc pointer")
    ub(c)  # al8pidmlrcbl
    c.u8("al8pidmlrcl pointer")
    if not has_sql or sql_length <= 0:
        return None, cursor_id
    return _sql_text(c, sql_length, field_version), cursor_id


# The fields 12.2 and 12.2 EXT1 add before the SQL text: (pointer, ub4) pairs and a pointer.
_EXTRA_FIELDS = {0: (), FIELD_VERSION_12_2: ("p", "u", "p", "u", "p"),
                 FIELD_VERSION_12_2_EXT1: ("p", "u", "p", "u", "p", "p", "u")}


def _sql_text(c: Cursor, sql_length: int, field_version: int | None) -> str:
    if field_version is not None:
        level = FIELD_VERSION_12_2_EXT1 if field_version >= FIELD_VERSION_12_2_EXT1 else \
            FIELD_VERSION_12_2 if field_version >= FIELD_VERSION_12_2 else 0
        candidates = [_EXTRA_FIELDS[level]]
    else:
        candidates = list(_EXTRA_FIELDS.values())[::-1]
    start = c.pos
    for extra in candidates:
        c.pos = start
        try:
            for kind in extra:
                if kind == "p":
                    c.u8("pointer")
                else:
                    ub(c)
            raw = chunked(c)
        except (_Malformed, ParseError):
            continue
        if raw is not None and len(raw) == sql_length:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
    raise _Malformed("no layout gives the SQL text its declared length")


def _authentication(c: Cursor) -> tuple[str | None, dict[str, str]]:
    has_user = c.u8("user pointer")
    ub(c)  # user length
    ub(c)  # authentication mode
    c.u8("pairs pointer")
    count = ub(c)
    if not 0 <= count <= MAX_AUTH_PAIRS:
        raise _Malformed("key/value count")
    c.skip(2, "pointers")
    user = chunked(c) if has_user else None
    pairs: dict[str, str] = {}
    for _ in range(count):
        key = text_with_length(c) or b""
        value = text_with_length(c) or b""
        ub(c)  # flags
        name = key.decode("utf-8", "replace").rstrip("\0")
        if name not in SECRET_KEYS:
            pairs[name] = value.decode("utf-8", "replace").rstrip("\0")
    return (user.decode("utf-8", "replace") if user else None), pairs


# -- how a call ended --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndOfCall:
    error: int  # ORA- error number; 0 for success
    rows: int  # rows processed (DML) or fetched so far
    cursor_id: int
    message: str  # the server's error message, "" on success

    @property
    def failed(self) -> bool:
        return self.error not in (0, NO_DATA_FOUND)


def end_of_call(data: bytes, field_version: int | None) -> EndOfCall | None:
    """The end-of-call block that ends `data` (an error block, or a status), or None when it does not end there."""
    end = len(data)
    if end and data[-1] == MSG_END_OF_RESPONSE:
        end -= 1
    if end >= 3 and data[end - 3] == MSG_STATUS:
        status = _status(data, end - 3, end)
        if status is not None:
            return status
    floor = max(0, end - MAX_OER_SCAN)
    pos = data.rfind(MSG_ERROR, floor, end)
    while pos >= 0:
        for late in _late_fields(field_version):
            try:
                found = _error_block(data, pos + 1, end, late)
            except (_Malformed, ParseError):
                continue
            if found is not None:
                return found
        pos = data.rfind(MSG_ERROR, floor, pos)
    return None


def _late_fields(field_version: int | None) -> tuple[bool, ...]:
    if field_version is None:
        return (True, False)
    return (field_version >= FIELD_VERSION_20_1,)


def _status(data: bytes, pos: int, end: int) -> EndOfCall | None:
    c = _cursor(data, pos + 1)
    try:
        ub(c)
        ub(c)
    except (_Malformed, ParseError):
        return None
    return EndOfCall(0, 0, 0, "") if c.pos == end else None


def _error_block(data: bytes, pos: int, end: int, late: bool) -> EndOfCall | None:
    c = Cursor(data, pos, end, PROTOCOL)
    for _ in range(6):  # call status, sequence, current row, error number, two array element errors
        ub(c)
    cursor_id = ub(c)
    ub(c)  # error position
    c.skip(6, "sql type .. warning flags")
    for _ in range(2):  # rowid: rba, partition
        ub(c)
    c.skip(1, "rowid")
    for _ in range(2):  # rowid: block, slot
        ub(c)
    ub(c)  # os error
    c.skip(2, "statement and call numbers")
    ub(c)  # padding
    ub(c)  # successful iterations
    if ub(c) > 0:  # oerrdd
        chunked(c)
    _batch_errors(c)
    error = ub(c)
    rows = ub(c)
    if late:
        ub(c)
        ub(c)
    message = ""
    if error:
        raw = chunked(c)
        message = raw.decode("utf-8", "replace").strip() if raw else ""
    if c.pos != end or error < 0 or rows < 0 or cursor_id < 0:
        return None
    if error and not message[:3].isalpha():
        return None  # an error comes with its "ORA-nnnnn: ..." text
    return EndOfCall(error, rows, cursor_id, message)


def _batch_errors(c: Cursor) -> None:
    """Skip the batch error codes, offsets and messages of array DML."""
    for _ in range(2):  # codes, then row offsets: a count, then the values (long form: each after its length)
        count = ub(c)
        if count:
            long_form = c.u8("batch form") == 254
            for _ in range(count):
                if long_form:
                    ub(c)
                ub(c)
            if long_form:
                c.skip(1, "end marker")
    messages = ub(c)
    if messages:
        c.skip(1, "packed size")
        for _ in range(messages):
            ub(c)
            chunked(c)
            c.skip(2, "end marker")


# -- negotiation -----------------------------------------------------------------------------------


def server_protocol(payload: bytes) -> tuple[str, int | None] | None:
    """(banner, TTC field version) of the server's answer to the protocol negotiation."""
    c = _cursor(payload)
    try:
        if c.u8("message") != MSG_PROTOCOL:
            return None
        c.skip(2, "version")
        banner = c.cstring("banner").decode("utf-8", "replace")
        c.skip(3, "character set and flags")
        elements = c.u16le("elements")
        c.skip(elements * 5, "elements")
        c.skip(c.u16("fdo length"), "fdo")
        caps = chunked(c)
    except (_Malformed, ParseError):
        return None
    return banner, (caps[7] if caps is not None and len(caps) > 7 else None)


def client_field_version(payload: bytes) -> int | None:
    """The TTC field version a client offers in its data types message."""
    c = _cursor(payload)
    try:
        if c.u8("message") != MSG_DATA_TYPES:
            return None
        c.skip(5, "character sets and flags")
        caps = chunked(c)
    except (_Malformed, ParseError):
        return None
    return caps[7] if caps is not None and len(caps) > 7 else None


def ano_encryption(payload: bytes) -> bool | None:
    """Whether a server's ANO answer turns encryption or checksums on; None when it is not an ANO packet.

    Layout: magic, length (2), version (4), service count (2), flags (1); per service its type (2), sub-packet
    count (2) and error (4); per sub-packet its length (2), type (2) and value.  The encryption (2) and data
    integrity (3) services name the algorithm chosen in a one-byte sub-packet (type 2); 0 is none.
    """
    if not payload.startswith(ANO_MAGIC):
        return None
    c = _cursor(payload, 4)
    try:
        c.skip(6, "length and version")
        services = c.u16("services")
        c.skip(1, "flags")
        for _ in range(min(services, 16)):
            service, subpackets = c.u16("service"), c.u16("sub-packets")
            c.skip(4, "error")
            for _ in range(min(subpackets, 64)):
                length, kind = c.u16("length"), c.u16("type")
                value = c.take(length, "value")
                if service in (2, 3) and kind == 2 and length == 1 and value[0]:
                    return True
    except ParseError:
        return True  # an ANO answer this decoder cannot follow: assume the worst, decode nothing after it
    return False


def version_text(number: int) -> str:
    """An Oracle version number as text (python-oracledb's client version, Oracle's VSNNUM)."""
    return ".".join(str(part) for part in ((number >> 24) & 0xFF, (number >> 20) & 0x0F, (number >> 12) & 0x0F,
                                           (number >> 8) & 0x0F, number & 0x0F))
