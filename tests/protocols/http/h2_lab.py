"""HTTP/2 servers and clients in namespaces: nginx (`listen ... http2`, cleartext) with curl, and gRPC with grpcio.

nginx runs in namespace b; from a, curl `--http2-prior-knowledge` sends a GET,
a 404, a POST and a HEAD, and nghttp sends three streams at once on one
connection (the HPACK dynamic table is reused between them).

The gRPC server (grpcio, generic handlers: no generated code) runs in b and
the client in a: a unary call, a server-streaming call, a call that ends in
an error status (NOT_FOUND with a message) and a call to a method the server
does not have (UNIMPLEMENTED).

`tshark_streams(pcap, port)` is tshark's HTTP/2 dissection of a capture:
per stream, its method, path, authority, status and grpc-status.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers.netns import VethPair
from tests.helpers.nginx import nginx_conf

NGINX_PORT = 8080
GRPC_PORT = 50051
GRPC_SERVICE = "pktbeat.test.Echo"

NGINX_HTTP = """
    types {{ text/html html; text/plain txt; }}
    server {{
        listen {ip}:{port} http2;
        root {tmp}/www;
        location = /post {{ return 200 "posted\\n"; }}
    }}
"""


@contextlib.contextmanager
def nginx_h2c(pair: VethPair, tmp: Path) -> Iterator[str]:
    """nginx speaking cleartext HTTP/2 (prior knowledge) on b; yields its base URL."""
    tmp.chmod(0o755)  # nginx's worker runs as nobody
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_text("<html><body>index</body></html>\n")
    (www / "two.html").write_text("<html><body>two</body></html>\n")
    (www / "big.txt").write_text("0123456789abcdef" * 4096)  # 64 KiB: flow control, several DATA frames
    http = NGINX_HTTP.format(tmp=tmp, ip=pair.b_ip, port=NGINX_PORT)
    (tmp / "nginx.conf").write_text(nginx_conf(tmp, http, main="worker_processes 1;"))
    pair.b.popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], log=tmp / "nginx.out")
    pair.b.wait_port(NGINX_PORT, host=pair.b_ip)
    yield f"http://{pair.b_ip}:{NGINX_PORT}"


def curl_h2c(pair: VethPair, base: str) -> None:
    """The requests the tests expect: curl, one connection each, then nghttp, several streams on one connection.

    curl 7.88 fails the second transfer of a prior-knowledge h2c connection ("Error in the HTTP2 framing
    layer"), so connection reuse and concurrent streams come from nghttp (nghttp2-client).
    """
    run = pair.a.run
    curl = ["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge", "-o", "/dev/null"]
    run([*curl, f"{base}/index.html"])
    run([*curl, f"{base}/missing"])
    # nginx answers `return` without reading the body and resets the stream (NO_ERROR) if the body is late:
    # curl 7.88 then exits 92 although it has the whole response.  The exchange on the wire is what counts.
    run([*curl, "-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded", "-d", "name=pktbeat&x=1",
         f"{base}/post"], check=False)
    run([*curl, "-I", f"{base}/two.html"])
    # one connection: priority frames, then three streams at once; the header table is reused between them
    run(["nghttp", "-n", "-t", "10", f"{base}/big.txt", f"{base}/two.html", f"{base}/index.html"])


GRPC_SERVER = r"""
import sys, time
from concurrent import futures
import grpc

def say(request, context):
    return request[::-1]

def count(request, context):
    for i in range(int(request or b"3")):
        yield b"message %d" % i

def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode() + " (100% missing)")

handler = grpc.method_handlers_generic_handler("@SERVICE@", {
    "Say": grpc.unary_unary_rpc_method_handler(say),
    "Count": grpc.unary_stream_rpc_method_handler(count),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(sys.argv[1])
server.start()
server.wait_for_termination()
"""

GRPC_CLIENT = r"""
import sys
import grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    say = channel.unary_unary("/@SERVICE@/Say")
    assert say(b"hello grpc") == b"cprg olleh"
    count = channel.unary_stream("/@SERVICE@/Count")
    assert list(count(b"4")) == [b"message %d" % i for i in range(4)]
    try:
        channel.unary_unary("/@SERVICE@/Fail")(b"x42")
        raise SystemExit("Fail did not fail")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        print("details:", err.details())
    try:
        channel.unary_unary("/@SERVICE@/Missing")(b"")
        raise SystemExit("Missing did not fail")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err
print("ok")
"""


@contextlib.contextmanager
def grpc_server(pair: VethPair, tmp: Path) -> Iterator[str]:
    """A grpcio server on b; yields the target the client dials."""
    script = tmp / "grpc_server.py"
    script.write_text(GRPC_SERVER.replace("@SERVICE@", GRPC_SERVICE))
    pair.b.popen([sys.executable, str(script), f"{pair.b_ip}:{GRPC_PORT}"], log=tmp / "grpc_server.log",
                 env=_grpc_env())
    pair.b.wait_port(GRPC_PORT, host=pair.b_ip, timeout=30)
    yield f"{pair.b_ip}:{GRPC_PORT}"


def grpc_client(pair: VethPair, tmp: Path, target: str) -> None:
    script = tmp / "grpc_client.py"
    script.write_text(GRPC_CLIENT.replace("@SERVICE@", GRPC_SERVICE))
    out = pair.a.run(["env", *(f"{k}={v}" for k, v in _grpc_env().items()), sys.executable, str(script), target],
                     timeout=60)
    assert out.stdout.strip().endswith("ok"), out.stdout


def _grpc_env() -> dict[str, str]:
    # No proxies from the environment; one polling thread is plenty for a test.
    return {"no_grpc_proxy": "*", "GRPC_ENABLE_FORK_SUPPORT": "0", "GRPC_POLL_STRATEGY": "poll"}


def tshark_streams(pcap: Path, port: int) -> list[dict[str, Any]]:
    """tshark's HTTP/2 reading of `pcap`: per (TCP stream, HTTP/2 stream), the fields pktbeat reports."""
    proc = subprocess.run(["tshark", "-r", str(pcap), "-d", f"tcp.port=={port},http2", "-Y", "http2.type == 1",
                           "-T", "json", "--no-duplicate-keys"], capture_output=True, text=True, timeout=120,
                          check=True)
    keys = {":method": "method", ":path": "path", ":authority": "authority", ":status": "status",
            "grpc-status": "grpc_status"}
    streams: dict[tuple[int, int], dict[str, Any]] = {}
    for packet in json.loads(proc.stdout or "[]"):
        layers = packet["_source"]["layers"]
        tcp_stream = int(layers["tcp"]["tcp.stream"])
        for frame in _as_list(layers.get("http2")):
            inner = frame.get("http2.stream", {})
            if inner.get("http2.type") != "1":
                continue
            stream_id = int(inner["http2.streamid"])
            entry = streams.setdefault((tcp_stream, stream_id), {"tcp_stream": tcp_stream, "stream": stream_id})
            for header in _as_list(inner.get("http2.header")):
                key = keys.get(header.get("http2.header.name", ""))
                if key is not None and key not in entry:
                    entry[key] = header.get("http2.header.value", "")
    return sorted(streams.values(), key=lambda e: (e["tcp_stream"], e["stream"]))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
