"""HTTP/2 captures from real servers through the CLI, checked against tshark's HTTP/2 dissection.

tests/protocols/http/pcaps/h2c-nginx.pcap: nginx `listen ... http2` (cleartext),
curl `--http2-prior-knowledge` (GET, 404, POST, HEAD) and nghttp (three
streams on one connection).  grpc.pcap: grpcio server and client (unary,
server streaming, NOT_FOUND, UNIMPLEMENTED; the server's SETTINGS come
before the client's preface).  Both made by `capture_h2.py`.

For every stream tshark shows, pktbeat publishes one event with the same
method, path, authority, status and grpc-status.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.replay import replay
from tests.protocols.http.h2_lab import GRPC_PORT, GRPC_SERVICE, NGINX_PORT, tshark_streams

PCAPS = Path(__file__).parent / "pcaps"
CASES = [("h2c-nginx.pcap", NGINX_PORT), ("grpc.pcap", GRPC_PORT)]


def pktbeat_streams(pcap: Path, port: int) -> list[dict[str, Any]]:
    events, _ = replay(pcap, [{"type": "http", "ports": [port], "send_headers": ["grpc-status"]}])
    out = []
    for event in events:
        assert event["type"] == "http" and event["http"]["version"] == "2", event
        url = event["url"]
        entry = {"method": event["method"], "path": url["path"],
                 "authority": f"{url['domain']}:{url.get('port', 80)}",
                 "status": str(event["http"]["response"]["status_code"])}
        grpc = event.get("rpc", {}).get("grpc")
        if grpc is not None:
            entry["grpc_status"] = str(grpc["status_code"])
        out.append(entry)
    return out


def _key(entry: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(entry.get(k, "")) for k in ("method", "path", "authority", "status", "grpc_status"))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
@pytest.mark.parametrize(("name", "port"), CASES)
def test_events_match_tshark(name: str, port: int) -> None:
    pcap = PCAPS / name
    theirs = tshark_streams(pcap, port)
    ours = pktbeat_streams(pcap, port)
    assert len(theirs) == len(ours) >= 4
    assert sorted(map(_key, ours)) == sorted(map(_key, theirs))


def test_grpc_events() -> None:
    events, _ = replay(PCAPS / "grpc.pcap", [{"type": "http", "ports": [GRPC_PORT]}])
    by_method = {e["rpc"]["method"]: e for e in events}
    assert set(by_method) == {"Say", "Count", "Fail", "Missing"}
    for event in events:
        assert event["rpc"]["system"] == "grpc" and event["rpc"]["service"] == GRPC_SERVICE
        assert event["network"]["protocol"] == "http"
    assert by_method["Say"]["status"] == "OK"
    assert by_method["Count"]["http"]["response"]["body"]["bytes"] == 4 * (5 + len(b"message 0"))
    fail = by_method["Fail"]
    assert fail["rpc"]["grpc"]["status_code"] == 5 and fail["status"] == "Error"
    assert fail["error"]["message"] == "no such thing: x42 (100% missing)"
    assert by_method["Missing"]["rpc"]["grpc"]["status_code"] == 12


def test_nginx_events() -> None:
    events, _ = replay(PCAPS / "h2c-nginx.pcap", [{"type": "http", "ports": [NGINX_PORT]}])
    by_query = {e["query"]: e for e in events}
    big = by_query["GET /big.txt"]
    assert big["http"]["response"]["body"]["bytes"] == 65536
    assert big["http"]["response"]["bytes"] > 65536  # DATA frame headers too
    assert by_query["HEAD /two.html"]["http"]["response"]["status_code"] == 200
    assert by_query["POST /post"]["url"]["query"] == "name=pktbeat&x=1"
    assert by_query["GET /missing"]["status"] == "Error"
    # three streams on one connection: one TCP connection, three events
    nghttp = [e for e in events if e["user_agent"]["original"].startswith("nghttp2")]
    assert len(nghttp) == 3 and len({e["source"]["port"] for e in nghttp}) == 1
