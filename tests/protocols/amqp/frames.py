"""AMQP 0-9-1 frames as bytes, for the amqp tests."""

from __future__ import annotations

import struct

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def method(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def header(channel: int, body_size: int, flags: int = 0, props: bytes = b"", class_id: int = 60) -> bytes:
    return frame(2, channel, struct.pack(">HHQH", class_id, 0, body_size, flags) + props)


def body(channel: int, data: bytes) -> bytes:
    return frame(3, channel, data)


def shortstr(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def longstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">I", len(raw)) + raw


def table(entries: bytes) -> bytes:
    return struct.pack(">I", len(entries)) + entries


def queue_declare(channel: int, queue: str, bits: int = 0, arguments: bytes = b"\x00\x00\x00\x00") -> bytes:
    return method(channel, 50, 10, b"\x00\x00" + shortstr(queue) + bytes([bits]) + arguments)


def queue_declare_ok(channel: int, queue: str, messages: int = 0, consumers: int = 0) -> bytes:
    return method(channel, 50, 11, shortstr(queue) + struct.pack(">II", messages, consumers))


def publish(channel: int, exchange: str, routing_key: str, data: bytes, content_type: str = "text/plain") -> bytes:
    return (method(channel, 60, 40, b"\x00\x00" + shortstr(exchange) + shortstr(routing_key) + b"\x00")
            + header(channel, len(data), 0x8000, shortstr(content_type)) + (body(channel, data) if data else b""))


def close(channel: int, code: int, text: str, class_id: int = 0, method_id: int = 0) -> bytes:
    class_ = 10 if channel == 0 else 20
    return method(channel, class_, 50 if channel == 0 else 40,
                  struct.pack(">H", code) + shortstr(text) + struct.pack(">HH", class_id, method_id))


def close_ok(channel: int) -> bytes:
    return method(channel, 10, 51) if channel == 0 else method(channel, 20, 41)
