"""AMQP 0-9-1 methods: their names, roles and the arguments Packetbeat publishes.

Each decoder reads a method frame's arguments into Packetbeat's `amqp.*`
fields and the text that follows the method name in `request`
(`queue.declare TestHeader`).  Field names, bit meanings and defaults follow
Packetbeat (`exchange-type` "direct" when empty, `basic.reject`'s bit
published as `multiple`); RabbitMQ's extensions Packetbeat knows
(exchange.bind/unbind, basic.nack) are here too, plus confirm.select.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.protocols.amqp.tables import FieldError, long_string, short_string, table

ARGUMENTS_NOTE = "Failed to parse additional arguments"

# Roles
REQUEST, RESPONSE, CONTENT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Decoded:
    fields: dict[str, Any]
    request: str = ""  # what follows the method name in `request`
    notes: tuple[str, ...] = ()


Decoder = Callable[[bytes, bool], Decoded]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    role: int
    decode: Decoder
    connection_info: bool = False  # hidden when hide_connection_information (the default)


def _bits(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise FieldError(f"bit field missing at {pos}")
    return data[pos]


def _u16(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise FieldError(f"short missing at {pos}")
    return int.from_bytes(data[pos:pos + 2], "big")


def _u32(data: bytes, pos: int) -> int:
    if pos + 4 > len(data):
        raise FieldError(f"long missing at {pos}")
    return int.from_bytes(data[pos:pos + 4], "big")


def _u64(data: bytes, pos: int) -> int:
    if pos + 8 > len(data):
        raise FieldError(f"long long missing at {pos}")
    return int.from_bytes(data[pos:pos + 8], "big")


def _optional(fields: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`fields` with `key` set to `value` unless it is empty: Packetbeat leaves out an empty table and the
    default exchange ("")."""
    if value:
        fields[key] = value
    return fields


def _arguments(fields: dict[str, Any], data: bytes, pos: int, parse: bool) -> tuple[str, ...]:
    """The optional arguments table at `pos`: a bad table is a note, not a bad frame."""
    if not parse or pos >= len(data):
        return ()
    try:
        arguments, _ = table(data, pos)
    except FieldError:
        return (ARGUMENTS_NOTE,)
    _optional(fields, "arguments", arguments)
    return ()


def _nothing(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({})


def _close(data: bytes, parse_arguments: bool) -> Decoded:
    code = _u16(data, 0)
    text, at = short_string(data, 2)
    return Decoded({"reply-code": code, "reply-text": text, "class-id": _u16(data, at),
                    "method-id": _u16(data, at + 2)})


def _connection_start(data: bytes, parse_arguments: bool) -> Decoded:
    if len(data) < 2:
        raise FieldError("connection.start version missing")
    properties, at = table(data, 2)
    mechanisms, at = long_string(data, at)
    locales, _ = long_string(data, at)
    fields: dict[str, Any] = {"version-major": data[0], "version-minor": data[1], "mechanisms": mechanisms,
                              "locales": locales}
    return Decoded(_optional(fields, "server-properties", properties))


def _connection_start_ok(data: bytes, parse_arguments: bool) -> Decoded:
    properties, at = table(data, 0)
    mechanism, at = short_string(data, at)
    _, at = long_string(data, at)  # the SASL response (credentials): never published
    locale, _ = short_string(data, at)
    fields: dict[str, Any] = {"mechanism": mechanism, "locale": locale}
    return Decoded(_optional(fields, "client-properties", properties))


def _connection_tune_ok(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"channel-max": _u16(data, 0), "frame-max": _u32(data, 2), "heartbeat": _u16(data, 6)})


def _connection_open(data: bytes, parse_arguments: bool) -> Decoded:
    host, _ = short_string(data, 0)
    return Decoded({"virtual-host": host})


def _channel_flow_ok(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"active": bool(_bits(data, 0) & 1)})


def _exchange_declare(data: bytes, parse_arguments: bool) -> Decoded:
    exchange, at = short_string(data, 2)
    kind, at = short_string(data, at)
    bits = _bits(data, at)
    fields: dict[str, Any] = {"exchange": exchange, "exchange-type": kind or "direct", "passive": bool(bits & 1),
                              "durable": bool(bits & 2), "no-wait": bool(bits & 16)}
    return Decoded(fields, exchange, _arguments(fields, data, at + 1, parse_arguments))


def _exchange_delete(data: bytes, parse_arguments: bool) -> Decoded:
    exchange, at = short_string(data, 2)
    bits = _bits(data, at)
    return Decoded({"exchange": exchange, "if-unused": bool(bits & 1), "no-wait": bool(bits & 2)}, exchange)


def _exchange_bind(data: bytes, parse_arguments: bool) -> Decoded:
    destination, at = short_string(data, 2)
    source, at = short_string(data, at)
    routing_key, at = short_string(data, at)
    bits = _bits(data, at)
    fields: dict[str, Any] = {"destination": destination, "source": source, "routing-key": routing_key,
                              "no-wait": bool(bits & 1)}
    return Decoded(fields, f"{source} {destination}", _arguments(fields, data, at + 1, parse_arguments))


def _queue_declare(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    bits = _bits(data, at)
    fields: dict[str, Any] = {"queue": queue, "passive": bool(bits & 1), "durable": bool(bits & 2),
                              "exclusive": bool(bits & 4), "auto-delete": bool(bits & 8),
                              "no-wait": bool(bits & 16)}
    return Decoded(fields, queue, _arguments(fields, data, at + 1, parse_arguments))


def _queue_declare_ok(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 0)
    return Decoded({"queue": queue, "message-count": _u32(data, at), "consumer-count": _u32(data, at + 4)})


def _queue_bind(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    exchange, at = short_string(data, at)
    routing_key, at = short_string(data, at)
    bits = _bits(data, at)
    fields: dict[str, Any] = {"queue": queue, "routing-key": routing_key, "no-wait": bool(bits & 1)}
    _optional(fields, "exchange", exchange)
    return Decoded(fields, f"{queue} {exchange}", _arguments(fields, data, at + 1, parse_arguments))


def _queue_unbind(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    exchange, at = short_string(data, at)
    routing_key, at = short_string(data, at)
    fields: dict[str, Any] = {"queue": queue, "routing-key": routing_key}
    _optional(fields, "exchange", exchange)
    return Decoded(fields, f"{queue} {exchange}", _arguments(fields, data, at, parse_arguments))


def _queue_purge(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    return Decoded({"queue": queue, "no-wait": bool(_bits(data, at) & 1)}, queue)


def _message_count(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"message-count": _u32(data, 0)})


def _queue_delete(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    bits = _bits(data, at)
    return Decoded({"queue": queue, "if-unused": bool(bits & 1), "if-empty": bool(bits & 2),
                    "no-wait": bool(bits & 4)}, queue)


def _basic_qos(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"prefetch-size": _u32(data, 0), "prefetch-count": _u16(data, 4),
                    "global": bool(_bits(data, 6) & 1)})


def _basic_consume(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    tag, at = short_string(data, at)
    bits = _bits(data, at)
    fields: dict[str, Any] = {"queue": queue, "consumer-tag": tag, "no-local": bool(bits & 1),
                              "no-ack": bool(bits & 2), "exclusive": bool(bits & 4), "no-wait": bool(bits & 8)}
    return Decoded(fields, queue, _arguments(fields, data, at + 1, parse_arguments))


def _consumer_tag(data: bytes, parse_arguments: bool) -> Decoded:
    tag, _ = short_string(data, 0)
    return Decoded({"consumer-tag": tag})


def _basic_cancel(data: bytes, parse_arguments: bool) -> Decoded:
    tag, at = short_string(data, 0)
    return Decoded({"consumer-tag": tag, "no-wait": bool(_bits(data, at) & 1)}, tag)


def _basic_publish(data: bytes, parse_arguments: bool) -> Decoded:
    exchange, at = short_string(data, 2)
    routing_key, at = short_string(data, at)
    bits = _bits(data, at)
    fields: dict[str, Any] = {"routing-key": routing_key, "mandatory": bool(bits & 1), "immediate": bool(bits & 2)}
    return Decoded(_optional(fields, "exchange", exchange))


def _basic_return(data: bytes, parse_arguments: bool) -> Decoded:
    code = _u16(data, 0)
    text, at = short_string(data, 2)
    exchange, at = short_string(data, at)
    routing_key, _ = short_string(data, at)
    return Decoded({"exchange": exchange, "routing-key": routing_key, "reply-code": code, "reply-text": text})


def _basic_deliver(data: bytes, parse_arguments: bool) -> Decoded:
    tag, at = short_string(data, 0)
    delivery_tag = _u64(data, at)
    bits = _bits(data, at + 8)
    exchange, at = short_string(data, at + 9)
    routing_key, _ = short_string(data, at)
    fields: dict[str, Any] = {"consumer-tag": tag, "delivery-tag": delivery_tag, "redelivered": bool(bits & 1),
                              "routing-key": routing_key}
    return Decoded(_optional(fields, "exchange", exchange))


def _basic_get(data: bytes, parse_arguments: bool) -> Decoded:
    queue, at = short_string(data, 2)
    return Decoded({"queue": queue, "no-ack": bool(_bits(data, at) & 1)}, queue)


def _basic_get_ok(data: bytes, parse_arguments: bool) -> Decoded:
    delivery_tag = _u64(data, 0)
    bits = _bits(data, 8)
    exchange, at = short_string(data, 9)
    routing_key, at = short_string(data, at)
    fields: dict[str, Any] = {"delivery-tag": delivery_tag, "redelivered": bool(bits & 1),
                              "routing-key": routing_key, "message-count": _u32(data, at)}
    return Decoded(_optional(fields, "exchange", exchange))


def _basic_ack(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"delivery-tag": _u64(data, 0), "multiple": bool(_bits(data, 8) & 1)})


def _basic_reject(data: bytes, parse_arguments: bool) -> Decoded:
    tag = _u64(data, 0)
    return Decoded({"delivery-tag": tag, "multiple": bool(_bits(data, 8) & 1)}, str(tag))


def _basic_nack(data: bytes, parse_arguments: bool) -> Decoded:
    bits = _bits(data, 8)
    return Decoded({"delivery-tag": _u64(data, 0), "multiple": bool(bits & 1), "requeue": bool(bits & 2)})


def _basic_recover(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"requeue": bool(_bits(data, 0) & 1)})


def _no_wait(data: bytes, parse_arguments: bool) -> Decoded:
    return Decoded({"no-wait": bool(_bits(data, 0) & 1)})


METHODS: dict[tuple[int, int], MethodSpec] = {
    (10, 10): MethodSpec("connection.start", REQUEST, _connection_start, True),
    (10, 11): MethodSpec("connection.start-ok", RESPONSE, _connection_start_ok, True),
    (10, 20): MethodSpec("connection.secure", REQUEST, _nothing, True),
    (10, 21): MethodSpec("connection.secure-ok", RESPONSE, _nothing, True),
    (10, 30): MethodSpec("connection.tune", REQUEST, _nothing, True),
    (10, 31): MethodSpec("connection.tune-ok", RESPONSE, _connection_tune_ok, True),
    (10, 40): MethodSpec("connection.open", REQUEST, _connection_open, True),
    (10, 41): MethodSpec("connection.open-ok", RESPONSE, _nothing, True),
    (10, 50): MethodSpec("connection.close", REQUEST, _close),
    (10, 51): MethodSpec("connection.close-ok", RESPONSE, _nothing),
    (20, 10): MethodSpec("channel.open", REQUEST, _nothing, True),
    (20, 11): MethodSpec("channel.open-ok", RESPONSE, _nothing, True),
    (20, 20): MethodSpec("channel.flow", REQUEST, _nothing, True),
    (20, 21): MethodSpec("channel.flow-ok", RESPONSE, _channel_flow_ok, True),
    (20, 40): MethodSpec("channel.close", REQUEST, _close),
    (20, 41): MethodSpec("channel.close-ok", RESPONSE, _nothing),
    (40, 10): MethodSpec("exchange.declare", REQUEST, _exchange_declare),
    (40, 11): MethodSpec("exchange.declare-ok", RESPONSE, _nothing),
    (40, 20): MethodSpec("exchange.delete", REQUEST, _exchange_delete),
    (40, 21): MethodSpec("exchange.delete-ok", RESPONSE, _nothing),
    (40, 30): MethodSpec("exchange.bind", REQUEST, _exchange_bind),
    (40, 31): MethodSpec("exchange.bind-ok", RESPONSE, _nothing),
    (40, 40): MethodSpec("exchange.unbind", REQUEST, _exchange_bind),
    (40, 51): MethodSpec("exchange.unbind-ok", RESPONSE, _nothing),
    (50, 10): MethodSpec("queue.declare", REQUEST, _queue_declare),
    (50, 11): MethodSpec("queue.declare-ok", RESPONSE, _queue_declare_ok),
    (50, 20): MethodSpec("queue.bind", REQUEST, _queue_bind),
    (50, 21): MethodSpec("queue.bind-ok", RESPONSE, _nothing),
    (50, 30): MethodSpec("queue.purge", REQUEST, _queue_purge),
    (50, 31): MethodSpec("queue.purge-ok", RESPONSE, _message_count),
    (50, 40): MethodSpec("queue.delete", REQUEST, _queue_delete),
    (50, 41): MethodSpec("queue.delete-ok", RESPONSE, _message_count),
    (50, 50): MethodSpec("queue.unbind", REQUEST, _queue_unbind),
    (50, 51): MethodSpec("queue.unbind-ok", RESPONSE, _nothing),
    (60, 10): MethodSpec("basic.qos", REQUEST, _basic_qos, True),
    (60, 11): MethodSpec("basic.qos-ok", RESPONSE, _nothing, True),
    (60, 20): MethodSpec("basic.consume", REQUEST, _basic_consume),
    (60, 21): MethodSpec("basic.consume-ok", RESPONSE, _consumer_tag),
    (60, 30): MethodSpec("basic.cancel", REQUEST, _basic_cancel),
    (60, 31): MethodSpec("basic.cancel-ok", RESPONSE, _consumer_tag),
    (60, 40): MethodSpec("basic.publish", CONTENT, _basic_publish),
    (60, 50): MethodSpec("basic.return", CONTENT, _basic_return),
    (60, 60): MethodSpec("basic.deliver", CONTENT, _basic_deliver),
    (60, 70): MethodSpec("basic.get", REQUEST, _basic_get),
    (60, 71): MethodSpec("basic.get-ok", CONTENT, _basic_get_ok),
    (60, 72): MethodSpec("basic.get-empty", RESPONSE, _nothing),
    (60, 80): MethodSpec("basic.ack", REQUEST, _basic_ack),
    (60, 90): MethodSpec("basic.reject", REQUEST, _basic_reject),
    (60, 110): MethodSpec("basic.recover", REQUEST, _basic_recover),
    (60, 111): MethodSpec("basic.recover-ok", RESPONSE, _nothing),
    (60, 120): MethodSpec("basic.nack", REQUEST, _basic_nack),
    (85, 10): MethodSpec("confirm.select", REQUEST, _no_wait),
    (85, 11): MethodSpec("confirm.select-ok", RESPONSE, _nothing),
    (90, 10): MethodSpec("tx.select", REQUEST, _nothing),
    (90, 11): MethodSpec("tx.select-ok", RESPONSE, _nothing),
    (90, 20): MethodSpec("tx.commit", REQUEST, _nothing),
    (90, 21): MethodSpec("tx.commit-ok", RESPONSE, _nothing),
    (90, 30): MethodSpec("tx.rollback", REQUEST, _nothing),
    (90, 31): MethodSpec("tx.rollback-ok", RESPONSE, _nothing),
}
