"""The one place a Transaction becomes a published event, with Packetbeat's common fields.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

Protocols fill `Transaction.fields` with their own fields; everything every
event shares (event.*, source/destination/client/server, network.*,
related.*, agent.*, tags, fields) is added here, then processors run, then
the event is encoded once as JSON for whatever output is configured.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import socket
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from agent.events.community_id import community_id
from agent.events.direction import DirectionClassifier
from agent.events.timefmt import format_ns
from agent.events.tunnel import outer_ips, tunnel_fields
from agent.processors import Processor, run_chain
from agent.procs.annotate import Finder, annotate
from agent.protocols.base import Transaction
from agent.publisher.types import EncodedEvent
from agent.transport.types import ConnectionInfo, ip_text
from agent.version import ECS_VERSION, VERSION

_PROTO_NUMBER: Final = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}
CONN_CACHE_LIMIT: Final = 65536  # connections whose shared event facts and newest request time are remembered
_ID_PORTS: Final = struct.Struct("<HH")
_ID_EXTRA: Final = struct.Struct("<qI")  # request time (ns), sequence among the connection's events of that time
_URLSAFE_B64: Final = bytes.maketrans(b"+/", b"-_")


class _Connection:
    """What every event of a connection shares (cached per connection by EventBuilder._endpoints), and the
    time of its newest request with how many of its events had that very time (_sequence_of)."""

    def __init__(self, client_ip: str, server_ip: str, community_id: str | None, direction: str, network_type: str,
                 related_ips: tuple[str, ...], id_key: bytes) -> None:
        self.client_ip = client_ip
        self.server_ip = server_ip
        self.community_id = community_id
        self.direction = direction
        self.network_type = network_type
        self.related_ips = related_ips
        self.id_key = id_key  # the connection in an event id: both ends, transport, ICMP exchange, tunnel
        self.id_hasher: Any = None  # SHA-256 of the id namespace and id_key, from the second event (_id_hasher)
        self.events = 0
        self.last_ts_ns = -1
        self.same_ts = 0


_DEFAULT_EVENT_TYPE: Final = ("connection", "protocol")


@dataclass(frozen=True)
class AgentIdentity:
    name: str
    id: str
    ephemeral_id: str
    hostname: str = field(default_factory=socket.gethostname)

    @classmethod
    def create(cls, name: str = "", agent_id: str | None = None) -> AgentIdentity:
        host = socket.gethostname()
        return cls(name or host, agent_id or str(uuid.uuid4()), str(uuid.uuid4()), host)

    def fields(self) -> dict[str, Any]:
        return {"type": "packetbeat", "name": self.name, "version": VERSION, "id": self.id,
                "ephemeral_id": self.ephemeral_id}


@dataclass(frozen=True)
class EventSettings:
    """Per-protocol (or flows) additions: Packetbeat's common block."""

    tags: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)
    fields_under_root: bool = False
    keep_null: bool = False
    index: str = ""
    processors: tuple[Processor, ...] = ()


class EventBuilder:
    def __init__(
        self,
        identity: AgentIdentity,
        direction: DirectionClassifier,
        *,
        tags: tuple[str, ...] = (),
        fields: dict[str, Any] | None = None,
        fields_under_root: bool = False,
        processors: tuple[Processor, ...] = (),
        timestamp_digits: int = 3,
        ignore_outgoing: bool = False,
        protocol_settings: dict[str, EventSettings] | None = None,
        id_namespace: bytes = b"",
    ) -> None:
        self.identity = identity
        self.direction = direction
        self.tags = tags
        self.fields = fields or {}
        self.fields_under_root = fields_under_root
        self.processors = list(processors)
        self.digits = timestamp_digits
        self.ignore_outgoing = ignore_outgoing
        self.settings = protocol_settings or {}
        self._agent = identity.fields()
        self._ephemeral = identity.ephemeral_id.encode()
        self.id_salt = b""  # mixed into event ids: keeps the loops of `-l N` apart
        # A transaction's id starts from the agent and what shapes its events (see encode_transaction).
        self._id_namespace = b"\0".join((identity.id.encode(), identity.name.encode(), identity.hostname.encode(),
                                          id_namespace))
        self._txn_id_base = hashlib.sha256(self._id_namespace)
        self._default_settings = EventSettings()
        self.dropped_outgoing = 0
        self._conn_cache: dict[tuple[object, ...], _Connection] = {}
        self.dropped_by_processors = 0
        self.processes: Finder | None = None  # process attribution (live capture with packetbeat.procs)

    def new_run(self, salt: bytes) -> None:
        """A new loop of `-l N`: ids mixed with `salt`, connections numbered afresh."""
        self.id_salt = salt
        self._txn_id_base = hashlib.sha256(self._id_namespace + b"\0" + salt)
        self._conn_cache.clear()  # their id hashers started from the old base, their request times are the old loop's

    # -- transactions -----------------------------------------------------------

    def encode_transaction(self, txn: Transaction) -> tuple[dict[str, Any], EncodedEvent] | None:
        """The event for `txn` and its encoding (None when it is dropped).

        Its id names the transaction rather than hashing the event's bytes: the agent (its id, name and
        host) and what shapes events (`id_namespace`), the loop of `-l N`, the connection, the request's
        time and its sequence among the connection's events of that time (_sequence_of).  All of it
        comes from the packets and the settings, so a replay or a retry gives the same ids, and two
        agents seeing one connection give different ones.
        """
        facts = self._endpoints(txn.conn, txn.icmp, _connection_key(txn))
        event = self._transaction_event(txn, facts)
        if event is None:
            return None
        data = self._serialize(event)
        event_id = _event_id(self._id_hasher(facts, txn.type.encode() + self._sequence_of(txn.ts_ns, facts)))
        return event, EncodedEvent(data, event_id, self.index_for(event["type"]), str(event["type"]))

    def _id_hasher(self, facts: _Connection, tail: bytes) -> Any:
        """SHA-256 over the namespace, the connection (`id_key`) and `tail`.  From a connection's second
        event on, the hash of the first two is kept and copied: most UDP exchanges have one event only."""
        if facts.id_hasher is not None:
            hasher = facts.id_hasher.copy()
            hasher.update(tail)
            return hasher
        hasher = self._txn_id_base.copy()
        if facts.events:
            facts.id_hasher = hasher
            hasher.update(facts.id_key)
            hasher = hasher.copy()
            hasher.update(tail)
        else:
            hasher.update(facts.id_key + tail)
        facts.events += 1
        return hasher

    @staticmethod
    def _sequence_of(ts_ns: int, facts: _Connection) -> bytes:
        """What tells apart two transactions whose events would be identical byte for byte (pipelined
        requests in one segment answered in one segment): the request's nanosecond time, and how many
        earlier events of the same connection had that very time.  Both come from the packets alone, so
        ids are the same on every run and whatever the number of workers (a connection's packets all
        reach one worker, in order)."""
        if facts.last_ts_ns == ts_ns:
            facts.same_ts += 1
        else:
            facts.last_ts_ns = ts_ns
            facts.same_ts = 0
        return _ID_EXTRA.pack(ts_ns, facts.same_ts)

    def _endpoints(self, conn: ConnectionInfo, icmp: tuple[int, int] | None, key: tuple[object, ...]) -> _Connection:
        """What every event of a connection shares: texts, community id, direction (cached by `key`)."""
        facts = self._conn_cache.get(key)
        if facts is None:
            if len(self._conn_cache) >= CONN_CACHE_LIMIT:
                self._conn_cache.clear()
            client_ip = ip_text(conn.client.ip)
            server_ip = ip_text(conn.server.ip)
            proto_number = _PROTO_NUMBER.get(conn.transport, 0)
            cid = None
            if proto_number in (1, 58):
                icmp_type, icmp_code = icmp if icmp is not None else (0, 0)
                cid = community_id(conn.client.ip, conn.server.ip, proto_number, icmp_type=icmp_type,
                                   icmp_code=icmp_code)
            elif proto_number:
                cid = community_id(conn.client.ip, conn.server.ip, proto_number, conn.client.port,
                                   conn.server.port)
            related: tuple[str, ...] = (client_ip,) if client_ip == server_ip else (client_ip, server_ip)
            if conn.tunnel is not None:
                related += tuple(ip for ip in outer_ips(conn.tunnel) if ip not in related)
            # Both addresses have the family's length, so the concatenation cannot be read two ways.
            id_key = conn.client.ip + conn.server.ip + _ID_PORTS.pack(conn.client.port, conn.server.port) + \
                conn.transport.encode()
            if icmp is not None or conn.tunnel is not None:
                id_key += repr((icmp, conn.tunnel)).encode()
            facts = self._conn_cache[key] = _Connection(
                client_ip, server_ip, cid, self.direction(conn.client.ip, conn.server.ip),
                "ipv4" if conn.family == 4 else "ipv6", related, id_key)
        return facts

    def transaction_event(self, txn: Transaction) -> dict[str, Any] | None:
        """The event for `txn`, or None when ignore_outgoing or a processor drops it."""
        return self._transaction_event(txn, self._endpoints(txn.conn, txn.icmp, _connection_key(txn)))

    def _transaction_event(self, txn: Transaction, facts: _Connection) -> dict[str, Any] | None:
        conn = txn.conn
        timestamp = format_ns(txn.ts_ns, self.digits)
        event_section = self._event_section(txn, timestamp)
        source: dict[str, Any] = {"ip": facts.client_ip}
        destination: dict[str, Any] = {"ip": facts.server_ip}
        total = _endpoint_fields(txn, source, destination)
        network: dict[str, Any] = {
            "type": facts.network_type,
            "transport": conn.transport,
            "protocol": txn.protocol_override or txn.type,
        }
        if total:
            network["bytes"] = total
        if facts.community_id is not None:
            network["community_id"] = facts.community_id
        direction = facts.direction
        network["direction"] = direction
        if self.ignore_outgoing and direction == "egress":
            self.dropped_outgoing += 1
            return None
        event: dict[str, Any] = {
            "@timestamp": timestamp,
            "type": txn.type,
            "status": txn.status,
            "event": event_section,
            "source": source,
            "destination": destination,
            "client": dict(destination if txn.client_is_destination else source),
            "server": dict(source if txn.client_is_destination else destination),
            "network": network,
        }
        finder = self.processes
        if finder is not None:
            l4proto = _PROTO_NUMBER.get(conn.transport, 0)
            if l4proto in (6, 17):
                annotate(event, finder, l4proto, conn.client.ip, conn.client.port, conn.server.ip, conn.server.port)
        if conn.tunnel is not None:
            event["pktbeat"] = {"tunnel": tunnel_fields(conn.tunnel)}
        proto_fields = txn.fields
        extra_related = proto_fields.pop("related", None) if proto_fields else None
        settings = self.settings.get(txn.type, self._default_settings)
        if proto_fields:
            if txn.may_hold_nulls and not settings.keep_null:
                _strip_nulls(proto_fields)
            _merge(event, proto_fields)  # a protocol's `source`/`network`... add to the common ones
        event["related"] = _related(facts.related_ips, extra_related) if extra_related else \
            {"ip": list(facts.related_ips)}
        if txn.notes:
            event["error"] = {"message": txn.notes[0] if len(txn.notes) == 1 else list(txn.notes)}
        return self.finish(event, settings, nulls_stripped=True)

    def _event_section(self, txn: Transaction, timestamp: str) -> dict[str, Any]:
        """ECS `event.*` of a transaction: its kind, type, and its start, end and duration when known."""
        section: dict[str, Any] = {
            "kind": "event",
            "category": ["network"],
            "type": list(txn.event_type or _DEFAULT_EVENT_TYPE),
            "dataset": txn.type,
        }
        if txn.has_request:
            section["start"] = timestamp
        if txn.end_ns is not None:
            section["end"] = format_ns(txn.end_ns, self.digits)
            if txn.has_request and txn.end_ns >= txn.ts_ns:
                section["duration"] = txn.end_ns - txn.ts_ns
        return section

    # -- shared by transactions and flows ------------------------------------

    def finish(self, event: dict[str, Any], settings: EventSettings, nulls_stripped: bool = False
               ) -> dict[str, Any] | None:
        """Add agent/ecs/host/tags/fields, strip nulls, run processors (protocol's, then global).

        `nulls_stripped`: the caller already removed None values from what it built itself
        (the common fields never hold None), so only the user's `fields` need the walk.
        """
        # Shared by every event unless a processor may change it in place.
        event["agent"] = dict(self._agent) if settings.processors or self.processors else self._agent
        event["ecs"] = {"version": ECS_VERSION}
        host = event.get("host")
        if isinstance(host, dict):
            host.setdefault("name", self.identity.name)
        else:
            event["host"] = {"name": self.identity.name}
        if self.tags or settings.tags:
            tags = list(self.tags)
            for tag in settings.tags:
                if tag not in tags:
                    tags.append(tag)
            event["tags"] = tags
        if self.fields:
            _add_fields(event, self.fields, self.fields_under_root)
        if settings.fields:
            _add_fields(event, settings.fields, settings.fields_under_root)
        if not settings.keep_null:
            self._strip_nulls(event, settings, nulls_stripped)
        if settings.processors:
            result = run_chain(list(settings.processors), event)
            if result is None:
                self.dropped_by_processors += 1
                return None
            event = result
        if self.processors:
            result = run_chain(self.processors, event)
            if result is None:
                self.dropped_by_processors += 1
                return None
            event = result
        return event

    def _strip_nulls(self, event: dict[str, Any], settings: EventSettings, nulls_stripped: bool) -> None:
        """Remove None values where they may still be: everywhere, or only in what the user's `fields` added."""
        if not nulls_stripped:
            _strip_nulls(event)
        elif self.fields or settings.fields:
            if self.fields_under_root or settings.fields_under_root:
                _strip_nulls(event)
            elif isinstance(event.get("fields"), dict):
                _strip_nulls(event["fields"])

    @staticmethod
    def _serialize(event: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(event, default=_json_default)
        except TypeError:  # non-string keys or a value orjson cannot take: the slow, lenient path
            return json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode(
                "utf-8", "replace")

    def encode(self, event: dict[str, Any], index: str | None = None) -> EncodedEvent:
        """An event that is not a transaction's (a flow's), its id the hash of its bytes."""
        data = self._serialize(event)
        # The id must come out the same when a crashed run is replayed again, so the per-run
        # ephemeral id stays out of it; `id_salt` keeps the loops of `-l N` apart.
        hasher = hashlib.sha256(self.id_salt)
        ephemeral = self._ephemeral
        at = data.find(ephemeral)
        if at < 0:
            hasher.update(data)
        else:  # hashed around each occurrence: no copy of the event
            view = memoryview(data)
            start = 0
            while at >= 0:
                hasher.update(view[start:at])
                start = at + len(ephemeral)
                at = data.find(ephemeral, start)
            hasher.update(view[start:])
        return EncodedEvent(data, _event_id(hasher), index or None, str(event.get("type", "")))

    def index_for(self, event_type: str) -> str | None:
        settings = self.settings.get(event_type)
        return settings.index if settings and settings.index else None


def _connection_key(txn: Transaction) -> tuple[object, ...]:
    """A connection (and ICMP exchange) as plain values: hashing the endpoint dataclasses would run Python
    code per event."""
    conn = txn.conn
    client, server = conn.client, conn.server
    return client.ip, client.port, server.ip, server.port, conn.transport, txn.icmp, conn.tunnel


def _event_id(hasher: Any) -> str:
    """20 URL-safe characters: 120 bits of the hash."""
    return binascii.b2a_base64(hasher.digest()[:15], newline=False).translate(_URLSAFE_B64).decode()


def _related(ips: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    """related.*: the connection's addresses, plus what the protocol found (users, hosts, hashes)."""
    related: dict[str, Any] = {"ip": list(ips)}
    for key, values in extra.items():
        bucket = related.setdefault(key, [])
        for value in values:
            if value and value not in bucket:
                bucket.append(value)
    return {k: v for k, v in related.items() if v}


def _endpoint_fields(txn: Transaction, source: dict[str, Any], destination: dict[str, Any]) -> int:
    """Ports, bytes and the server's domain of a transaction's two ends; returns the bytes of both."""
    conn = txn.conn
    if conn.client.port:
        source["port"] = conn.client.port
    if conn.server.port:
        destination["port"] = conn.server.port
    total = 0
    if txn.client_bytes:
        source["bytes"] = txn.client_bytes
        total += txn.client_bytes
    if txn.server_bytes:
        destination["bytes"] = txn.server_bytes
        total += txn.server_bytes
    if txn.domain:
        destination["domain"] = txn.domain
    return total


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        else:
            base[key] = value


def _add_fields(event: dict[str, Any], fields: dict[str, Any], under_root: bool) -> None:
    if not fields:
        return
    if under_root:
        for key, value in fields.items():
            event[key] = value
    else:
        target = event.setdefault("fields", {})
        _merge(target, dict(fields))


def _strip_nulls(value: dict[str, Any]) -> None:
    """Remove None values at any depth (Packetbeat's keep_null: false), without recursion."""
    stack = [value]
    while stack:
        node = stack.pop()
        nulls = None
        for key, item in node.items():
            if item is None:
                if nulls is None:
                    nulls = [key]
                else:
                    nulls.append(key)
            elif type(item) is dict:
                stack.append(item)
        if nulls is not None:
            for key in nulls:
                del node[key]


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
