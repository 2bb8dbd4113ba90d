"""Literal PostgreSQL messages for the parser tests (hex from Packetbeat's Go tests, builders for the rest)."""

from __future__ import annotations

import struct


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def msg(typ: str, body: bytes) -> bytes:
    return typ.encode() + struct.pack("!i", len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def query(sql: str) -> bytes:
    return msg("Q", cstr(sql))


def row_description(*names: str, fmt: int = 0, oid: int = 25) -> bytes:
    body = struct.pack("!h", len(names))
    for i, name in enumerate(names):
        body += cstr(name) + struct.pack("!ihihih", 0, i + 1, oid, -1, -1, fmt)
    return msg("T", body)


def data_row(*values: bytes | None) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return msg("D", body)


def complete(tag: str) -> bytes:
    return msg("C", cstr(tag))


READY = msg("Z", b"I")


def error(code: str, message: str, severity: str = "ERROR", typ: str = "E") -> bytes:
    return msg(typ, b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code) + b"M" + cstr(message)
               + b"\0")


def parse(sql: str, name: str = "", oids: tuple[int, ...] = ()) -> bytes:
    return msg("P", cstr(name) + cstr(sql) + struct.pack("!h", len(oids)) + b"".join(struct.pack("!I", o)
                                                                                      for o in oids))


def bind(params: list[bytes | None], statement: str = "", portal: str = "", formats: tuple[int, ...] = (),
         result_formats: tuple[int, ...] = ()) -> bytes:
    body = cstr(portal) + cstr(statement) + struct.pack("!h", len(formats))
    body += b"".join(struct.pack("!h", f) for f in formats)
    body += struct.pack("!h", len(params))
    for value in params:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return msg("B", body)


def describe(kind: str = "P", name: str = "") -> bytes:
    return msg("D", kind.encode() + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return msg("E", cstr(portal) + struct.pack("!i", max_rows))


SYNC = msg("S", b"")
PARSE_COMPLETE = msg("1", b"")
BIND_COMPLETE = msg("2", b"")
NO_DATA = msg("n", b"")


def startup(user: str = "postgres", database: str = "test") -> bytes:
    body = struct.pack("!i", 196608) + cstr("user") + cstr(user) + cstr("database") + cstr(database) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


SSL_REQUEST = struct.pack("!ii", 8, 80877103)

# Packetbeat's TestPgsqlParser_simpleRequest
SIMPLE_REQUEST = h("510000001a53454c454354202a2046524f4d20466f6f6261723b00")
# TestPgsqlParser_dataResponse
DATA_RESPONSE = h(
    "5400000033000269640000008fc40001000000170004ffffffff000076616c75650000008fc4000200000019ffffffffffff0000"
    "44000000130002000000013100000004746f746f"
    "440000001500020000000133000000066d617274696e"
    "440000001300020000000134000000046a65616e"
    "430000000b53454c45435400"
    "5a0000000549")
# TestPgsqlParser_response
RESPONSE_4_ROWS = h(
    "54000000420003610000004009000100000413ffffffffffff0000620000004009000200000413ffffffffffff0000630000004009"
    "000300000413ffffffffffff0000"
    "440000001b0003000000036d6561000000036d6562000000036d6563"
    "440000001e0003000000046d656131000000046d656231000000046d656331"
    "440000001e0003000000046d656132000000046d656232000000046d656332"
    "440000001e0003000000046d656133000000046d656233000000046d656333"
    "430000000d53454c454354203400"
    "5a0000000549")
# TestPgsqlParser_threeResponses (SET, SET, SELECT in one segment)
THREE_RESPONSES = h(
    "5300000017446174655374796c650049534f2c204d445900430000000853455400430000000853455400540000005700036f696400"
    "000004eefffe0000001a0004ffffffff0000656e636f64696e6700000000000000000000130040ffffffff00006461746c61737473"
    "79736f696400000004ee00090000001a0004ffffffff0000440000002000030000000531313836350000000455544638000000053131"
    "383537430000000d53454c4543542031005a0000000549")
# TestPgsqlParser_errorResponse
ERROR_RESPONSE = h(
    "4500000088534552524f5200433235503032004d63757272656e74207472616e73616374696f6e2069732061626f727465642c2063"
    "6f6d6d616e64732069676e6f72656420756e74696c20656e64206f66207472616e73616374696f6e20626c6f636b0046706f737467"
    "7265732e63004c3932310052657865635f73696d706c655f71756572790000")
# Test_gap_in_response
GAP_REQUEST = h("510000001873656c656374202a2066726f6d20746573743b00")
GAP_RESPONSE = h(
    "5400000042000361000000410900"
    "0100000413ffffffffffff0000620000"
    "004009000200000413ffffffffffff00"
    "00630000004009000300000413ffffff"
    "ffffff0000440000001b000300000003"
    "6d6561000000036d6562000000036d65"
    "63440000001e0003000000046d656131"
    "000000046d656231000000046d656331"
    "440000001e0003000000046d65613200")
