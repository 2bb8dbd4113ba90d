"""Event ids: they name the transaction (agent, settings, loop, connection, time, order), not the event bytes."""

from __future__ import annotations

import socket

from agent.config.load import load
from agent.events.builder import AgentIdentity, EventBuilder
from agent.events.direction import DirectionClassifier, parse_networks
from agent.protocols.base import Transaction
from agent.runtime.wiring import event_settings_digest
from agent.transport.types import ConnectionInfo, Endpoint, ip_bytes


def _builder(identity: AgentIdentity | None = None, namespace: bytes = b"") -> EventBuilder:
    return EventBuilder(identity or AgentIdentity("agent", "id-1", "ephemeral-1", "host-1"),
                        DirectionClassifier(frozenset({socket.inet_aton("10.9.9.9")}), parse_networks([])),
                        id_namespace=namespace)


def _txn(client_port: int = 40000, ts_ns: int = 1_000_000_000, **fields: object) -> Transaction:
    conn = ConnectionInfo(Endpoint(ip_bytes("10.0.0.1"), client_port), Endpoint(ip_bytes("10.0.0.2"), 80), 4,
                          "tcp", 1)
    return Transaction("http", conn, ts_ns=ts_ns, end_ns=ts_ns + 1000, fields=dict(fields))


def _id(builder: EventBuilder, txn: Transaction) -> str:
    built = builder.encode_transaction(txn)
    assert built is not None
    return built[1].event_id


def test_the_same_transaction_gets_the_same_id_in_another_run_and_another_ephemeral_id() -> None:
    first = _id(_builder(), _txn(method="GET"))
    again = _id(_builder(AgentIdentity("agent", "id-1", "ephemeral-2", "host-1")), _txn(method="GET"))
    assert first == again and len(first) == 20


def test_identical_looking_transactions_of_one_connection_get_different_ids() -> None:
    builder = _builder()
    ids = [_id(builder, _txn(method="GET")) for _ in range(3)]  # pipelined: one request time
    assert len(set(ids)) == 3


def test_connection_time_agent_loop_and_settings_each_change_the_id() -> None:
    base = _id(_builder(), _txn())
    assert _id(_builder(), _txn(client_port=40001)) != base
    assert _id(_builder(), _txn(ts_ns=2_000_000_000)) != base
    assert _id(_builder(AgentIdentity("agent", "id-2", "ephemeral-1", "host-2")), _txn()) != base
    assert _id(_builder(namespace=b"other settings"), _txn()) != base
    looped = _builder()
    looped.new_run((1).to_bytes(8, "little"))
    assert _id(looped, _txn()) != base


def test_event_shaping_settings_change_the_digest_and_capture_settings_do_not() -> None:
    plain = event_settings_digest(load(None, extra={"packetbeat.protocols": [{"type": "http", "ports": [80]}]}))
    sending = event_settings_digest(load(None, extra={
        "packetbeat.protocols": [{"type": "http", "ports": [80], "send_response": True}]}))
    workers = event_settings_digest(load(None, extra={
        "packetbeat.protocols": [{"type": "http", "ports": [80]}], "packetbeat.interfaces.workers": 2,
        "output.file.path": "/tmp/elsewhere"}))
    assert plain != sending
    assert plain == workers
