"""TBinary messages as bytes, for the thrift tests (literal hex from Packetbeat's Go tests, plus builders)."""

from __future__ import annotations

import struct

# From Packetbeat's thrift_test.go
PING_CALL = bytes.fromhex("800100010000000470696e670000000000")
PING_REPLY = bytes.fromhex("800100020000000470696e670000000000")
ADD_CALL_FRAMED = bytes.fromhex("0000001e800100010000000361646400000000080001000000010800020000000100")
ADD_REPLY_FRAMED = bytes.fromhex("000000178001000200000003616464000000000800000000000200")
ZIP_CALL_FRAMED = bytes.fromhex("0000001080010001000000037a69700000000000")
CALCULATE_CALL = bytes.fromhex("800100010000000963616c63756c61746500000000080001000000010c0002080001000000010800"
                               "0200000000080003000000040000")
CALCULATE_EXCEPTION = bytes.fromhex("800100020000000963616c63756c617465000000000c0001080001000000040b0002000000124"
                                    "3616e6e6f742064697669646520627920300000")
ECHO_STRING_CALL_FRAMED = bytes.fromhex("00000024800100010000000b6563686f5f737472696e67000000000b00010000000568656c"
                                        "6c6f00")
ECHO_STRING_REPLY_FRAMED = bytes.fromhex("00000024800100020000000b6563686f5f737472696e67000000000b0000000000056865"
                                         "6c6c6f00")

T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64, T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = (2, 3, 4, 6, 8, 10, 11,
                                                                                         12, 13, 14, 15)


def message(method: str, body: bytes, mtype: int = 1, seqid: int = 0, strict: bool = True) -> bytes:
    """A TBinary message: header, then the argument/result struct `body` (its STOP included)."""
    name = method.encode()
    if strict:
        return struct.pack(">Ii", 0x80010000 | mtype, len(name)) + name + struct.pack(">i", seqid) + body
    return struct.pack(">I", len(name)) + name + bytes([mtype]) + struct.pack(">i", seqid) + body


def framed(msg: bytes) -> bytes:
    return struct.pack(">I", len(msg)) + msg


def field(ftype: int, fid: int, payload: bytes) -> bytes:
    return struct.pack(">bh", ftype, fid) + payload


def struct_(*fields: bytes) -> bytes:
    return b"".join(fields) + b"\x00"


def i32(value: int) -> bytes:
    return struct.pack(">i", value)


def string(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">i", len(raw)) + raw


def list_(etype: int, items: list[bytes]) -> bytes:
    return struct.pack(">bi", etype, len(items)) + b"".join(items)
