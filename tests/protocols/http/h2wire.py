"""HTTP/2 byte streams for the tests, written by python-hyper's `h2` (a real client and server, sans-IO).

    conv = Conversation()
    sid = conv.request("GET", "/index.html", authority="example.com")
    conv.respond(sid, 200, body=b"hello", headers=[("content-type", "text/html")])
    conv.steps   # [(Direction, bytes), ...] in the order they were sent

The bytes are exactly what the peers put on the wire (preface, SETTINGS and
their ACKs, HPACK with a dynamic table that grows as the conversation goes).
"""

from __future__ import annotations

from collections.abc import Sequence

from h2.config import H2Configuration
from h2.connection import H2Connection

from agent.transport.types import Direction

C2S = Direction.TO_SERVER
S2C = Direction.TO_CLIENT

Headers = Sequence[tuple[str, str]]


class Conversation:
    def __init__(self, preface: bool = True, table_size: int | None = None) -> None:
        self.client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.steps: list[tuple[Direction, bytes]] = []
        if table_size is not None:
            self.client.local_settings.header_table_size = table_size
        self.client.initiate_connection()
        self._flush_client()
        self.server.initiate_connection()
        self._flush_server()
        self._flush_client()
        if not preface:
            self.steps = self.steps[1:]

    # -- the peers ----------------------------------------------------------------

    def _flush_client(self) -> None:
        data = self.client.data_to_send()
        if data:
            self.steps.append((C2S, data))
            self.server.receive_data(data)
            self._flush_server()

    def _flush_server(self) -> None:
        data = self.server.data_to_send()
        if data:
            self.steps.append((S2C, data))
            self.client.receive_data(data)
            back = self.client.data_to_send()
            if back:
                self.steps.append((C2S, back))
                self.server.receive_data(back)
                self._flush_server()

    # -- what the tests say -----------------------------------------------------------

    def request(self, method: str, path: str, authority: str = "example.com", headers: Headers = (),
                body: bytes = b"", end: bool = True, scheme: str = "http", trailers: Headers = ()) -> int:
        sid = self.client.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path), *headers]
        self.client.send_headers(sid, fields, end_stream=end and not body and not trailers)
        self._flush_client()
        if body:
            self.send_data(C2S, sid, body, end=end and not trailers)
        if trailers:
            self.client.send_headers(sid, list(trailers), end_stream=True)
            self._flush_client()
        return sid

    def respond(self, sid: int, status: int, body: bytes = b"", headers: Headers = (), trailers: Headers = (),
                end: bool = True, informational: int = 0) -> None:
        if informational:
            self.server.send_headers(sid, [(":status", str(informational))])
        fields = [(":status", str(status)), *headers]
        self.server.send_headers(sid, fields, end_stream=end and not body and not trailers)
        self._flush_server()
        if body:
            self.send_data(S2C, sid, body, end=end and not trailers)
        if trailers:
            self.server.send_headers(sid, list(trailers), end_stream=True)
            self._flush_server()

    def send_data(self, direction: Direction, sid: int, body: bytes, end: bool = True, pad: int = 0) -> None:
        peer = self.client if direction == C2S else self.server
        size = peer.max_outbound_frame_size
        for at in range(0, len(body), size):
            chunk = body[at:at + size]
            last = at + size >= len(body)
            peer.send_data(sid, chunk, end_stream=end and last, pad_length=pad or None)
            self._flush(direction)

    def reset(self, direction: Direction, sid: int, code: int = 8) -> None:
        peer = self.client if direction == C2S else self.server
        peer.reset_stream(sid, code)
        self._flush(direction)

    def push(self, sid: int, path: str, status: int = 200, body: bytes = b"") -> int:
        promised = self.server.get_next_available_stream_id()
        self.server.push_stream(sid, promised, [(":method", "GET"), (":scheme", "http"),
                                                (":authority", "example.com"), (":path", path)])
        self._flush_server()
        self.respond(promised, status, body)
        return promised

    def _flush(self, direction: Direction) -> None:
        if direction == C2S:
            self._flush_client()
        else:
            self._flush_server()

    def client_bytes(self) -> bytes:
        return b"".join(data for d, data in self.steps if d == C2S)

    def server_bytes(self) -> bytes:
        return b"".join(data for d, data in self.steps if d == S2C)


def upgrade_conversation(body: bytes = b"upgraded body") -> list[tuple[Direction, bytes]]:
    """GET with Upgrade: h2c, 101, then the answer on stream 1 as HTTP/2, and one more request on stream 3."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    server = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
    settings = client.initiate_upgrade_connection()
    request = (b"GET /up HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\nUser-Agent: h2wire\r\n\r\n")
    steps: list[tuple[Direction, bytes]] = [(C2S, request)]
    server.initiate_upgrade_connection(settings)
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    server.send_headers(1, [(":status", "200"), ("content-type", "text/plain")])
    server.send_data(1, body, end_stream=True)
    steps.append((S2C, switching + server.data_to_send()))
    client.receive_data(steps[-1][1][len(switching):])
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "example.com"),
                              (":path", "/after")], end_stream=True)
    steps.append((C2S, client.data_to_send()))
    server.receive_data(steps[-1][1])
    server.send_headers(sid, [(":status", "204")], end_stream=True)
    steps.append((S2C, server.data_to_send()))
    return steps
