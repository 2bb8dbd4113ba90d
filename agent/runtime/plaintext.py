"""TLS plaintext in a worker: the kernel's plaintext records to protocol sessions, and the fields their events get.

The records go, in the ring's order with the packets, to
`agent.transport.plaintext.PlaintextStreams`, whose sessions are the same
protocols as on the wire, chosen by server port (`packetbeat.tls_plaintext.ports`,
then the protocols' own ports).  Their transactions come back here before the
event builder, and get:

- the connection's `tls.*` handshake fields, from the `tls` transaction the
  wire TLS decoder published for the same connection (same client and server
  endpoints; the kernel steers a connection's packets and plaintext to the same
  worker).  Each worker keeps the last handshake of up to MAX_HANDSHAKES
  connections; the handshake is published before any application data flows,
  so it is known when the first request's transaction is made.  Packetbeat's
  `tls.detailed` section (certificate chains) stays on the `tls` event;
- `pktbeat.payload.source: tls_library`: the payload came from the TLS
  library, not from the wire;
- for HTTP, `url.scheme` https (and `url.full` with it).

The wire's `tls` event itself is published as usual.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agent import metrics
from agent.capture.tlsrecord import TlsRecordError, decode_plaintext_record
from agent.protocols.base import Transaction
from agent.protocols.http.h2event import set_scheme
from agent.transport.plaintext import ConnKey, PlaintextLimits, PlaintextStreams
from agent.transport.session import StreamBinding

PAYLOAD_SOURCE = "tls_library"  # pktbeat.payload.source of events decoded from TLS plaintext
MAX_HANDSHAKES = 4096  # handshakes a worker keeps (least recently published forgotten first)
JOIN_COUNTERS = ("bad_records", "handshakes_kept", "handshakes_forgotten", "with_handshake", "without_handshake")

Emit = Callable[[Transaction], None]


def _key(txn: Transaction) -> ConnKey:
    conn = txn.conn
    return (conn.client.ip, conn.client.port, conn.server.ip, conn.server.port)


class TlsPlaintext:
    """One worker's plaintext streams and the handshakes of its connections."""

    def __init__(self, emit: Emit, bindings_for: Callable[[Emit], dict[int, StreamBinding]],
                 max_connections: int) -> None:
        self._emit = emit
        self.counters = metrics.register("tls_plaintext.join", JOIN_COUNTERS)
        self.streams = PlaintextStreams(bindings_for(self._plaintext_transaction), PlaintextLimits(max_connections))
        self.max_handshakes = min(max_connections, MAX_HANDSHAKES)
        self._handshakes: OrderedDict[ConnKey, tuple[dict[str, Any], str | None]] = OrderedDict()

    # -- records in ----------------------------------------------------------------------------

    def record(self, raw: bytes, ts_offset: int) -> None:
        try:
            rec = decode_plaintext_record(raw, ts_offset=ts_offset)
        except TlsRecordError:
            self.counters["bad_records"] += 1
            return
        self.streams.record(rec)

    def expire(self, now_ns: int) -> None:
        self.streams.expire(now_ns)

    def close_all(self, now_ns: int) -> None:
        self.streams.close_all(now_ns)

    # -- transactions out ------------------------------------------------------------------------

    def wire_transaction(self, txn: Transaction) -> None:
        """Every transaction of the wire: a TLS handshake is remembered for the connection's plaintext."""
        if txn.type == "tls":
            fields = txn.fields.get("tls")
            if isinstance(fields, dict):
                summary = {k: v for k, v in fields.items() if k != "detailed"}
                key = _key(txn)
                self._handshakes[key] = (copy.deepcopy(summary), txn.domain)
                self._handshakes.move_to_end(key)
                self.counters["handshakes_kept"] += 1
                if len(self._handshakes) > self.max_handshakes:
                    self._handshakes.popitem(last=False)
                    self.counters["handshakes_forgotten"] += 1
        self._emit(txn)

    def _plaintext_transaction(self, txn: Transaction) -> None:
        handshake = self._handshakes.get(_key(txn))
        fields = txn.fields
        if handshake is not None:
            summary, domain = handshake
            fields["tls"] = copy.deepcopy(summary)
            if txn.domain is None:
                txn.domain = domain
            self.counters["with_handshake"] += 1
        else:
            self.counters["without_handshake"] += 1
        if txn.type == "http":
            url = fields.get("url")
            if isinstance(url, dict) and url.get("scheme") == "http":
                set_scheme(fields, "https")  # HTTP/1.x over TLS (HTTP/2's :scheme already says so)
        pktbeat = fields.setdefault("pktbeat", {})
        if isinstance(pktbeat, dict):
            pktbeat["payload"] = {"source": PAYLOAD_SOURCE}
        self._emit(txn)
