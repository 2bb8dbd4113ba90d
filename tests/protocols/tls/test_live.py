"""nginx serving HTTPS in one namespace, curl in the other: TLS 1.2 and 1.3 handshakes as pktbeat reports them.

The certificate is made by `openssl` for the test; its subject, issuer and
fingerprints are checked against what openssl says about it.  Traffic is
captured with tcpdump on the client's veth and replayed through the CLI
(`capture_events` is the one place that would switch to live capture).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.live import capture_events as live_capture
from tests.helpers.netns import VethPair, veth_pair
from tests.helpers.nginx import nginx_conf

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("nginx", "curl", "openssl", "tcpdump")),
                       reason="needs nginx, curl, openssl and tcpdump"),
]

PORT = 8443
HOST = "tls.pktbeat.test"

NGINX_HTTP = """
    server {{
        listen {ip}:{port} ssl http2;
        server_name {host};
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{ return 200 "hello over tls\\n"; }}
    }}
"""


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def make_certificate(tmp: Path, ip: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-keyout", str(tmp / "key.pem"),
            "-out", str(tmp / "cert.pem"), "-subj", f"/C=US/O=pktbeat test/CN={HOST}",
            "-addext", f"subjectAltName=DNS:{HOST},IP:{ip}")


def openssl_fingerprint(cert: Path, digest: str) -> str:
    # "sha256 Fingerprint=AB:CD:..."
    return openssl("x509", "-noout", "-fingerprint", f"-{digest}", "-in", str(cert)).split("=", 1)[1].strip() \
        .replace(":", "")


def capture_events(pair: VethPair, iface: str, traffic: Callable[[], None], protocols: list[dict[str, Any]],
                   workdir: Path) -> list[dict[str, Any]]:
    """Run `traffic` while capturing on `iface` (namespace a); the events pktbeat makes of it."""
    return live_capture(pair, lambda _pair: traffic(), protocols, interface=iface)


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("nginx-tls")
    with veth_pair("tls") as pair:
        make_certificate(tmp, pair.b_ip)
        http = NGINX_HTTP.format(tmp=tmp, ip=pair.b_ip, port=PORT, host=HOST)
        (tmp / "nginx.conf").write_text(nginx_conf(tmp, http, main="worker_processes 1;", error_level="error"))
        pair.b.popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], log=tmp / "nginx.out")
        pair.b.wait_port(PORT, host=pair.b_ip)
        yield pair, tmp


def curl(pair: VethPair, tmp: Path, *tls_args: str) -> None:
    out = pair.a.run(["curl", "-sS", "--max-time", "10", "--cacert", str(tmp / "cert.pem"),
                      "--resolve", f"{HOST}:{PORT}:{pair.b_ip}", *tls_args, f"https://{HOST}:{PORT}/"])
    assert out.stdout == "hello over tls\n"


def test_curl_tls12_and_tls13_against_nginx(https_server: Any, tmp_path: Path) -> None:
    pair, tmp = https_server

    def traffic() -> None:
        curl(pair, tmp, "--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256")
        curl(pair, tmp, "--tlsv1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384")

    events = capture_events(pair, pair.a_if, traffic, [
        {"type": "tls", "ports": [PORT], "fingerprints": ["sha1", "sha256"], "include_ja4": True}], tmp_path)
    assert len(events) == 2, events
    by_version = {e["tls"]["version"]: e for e in events}
    assert set(by_version) == {"1.2", "1.3"}

    for event in events:
        tls = event["tls"]
        assert event["status"] == "OK" and tls["established"] is True
        assert (event["source"]["ip"], event["destination"]["ip"]) == (pair.a_ip, pair.b_ip)
        assert event["destination"]["port"] == PORT
        assert event["destination"]["domain"] == HOST and tls["client"]["server_name"] == HOST
        assert tls["version_protocol"] == "tls"
        assert event["event"]["duration"] > 0
        assert tls["client"]["ja4"].startswith(("t12d", "t13d"))
        assert "bytes" not in event["source"] and "bytes" not in event["destination"]

    tls12 = by_version["1.2"]["tls"]
    assert tls12["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert tls12["next_protocol"] == "h2"
    assert tls12["resumed"] is False
    server = tls12["server"]
    assert server["subject"] == server["issuer"] == f"CN={HOST},O=pktbeat test,C=US"
    assert server["hash"]["sha1"] == openssl_fingerprint(tmp / "cert.pem", "sha1")
    assert server["hash"]["sha256"] == openssl_fingerprint(tmp / "cert.pem", "sha256")
    serial = openssl("x509", "-noout", "-serial", "-in", str(tmp / "cert.pem")).split("=", 1)[1].strip()
    assert server["x509"]["serial_number"] == serial.lstrip("0")
    assert server["x509"]["alternative_names"] == [HOST, pair.b_ip]
    assert (server["x509"]["public_key_algorithm"], server["x509"]["public_key_size"]) == ("RSA", 2048)
    assert tls12["detailed"]["version"] == "TLS 1.2"

    tls13 = by_version["1.3"]["tls"]
    assert tls13["cipher"] == "TLS_AES_256_GCM_SHA384"
    assert tls13["detailed"]["version"] == "TLS 1.3"
    assert tls13["detailed"]["server_hello"]["extensions"]["supported_versions"] == "TLS 1.3"
    # TLS 1.3 encrypts the certificate and the ALPN answer (EncryptedExtensions): neither can be reported.
    assert "next_protocol" not in tls13
    assert tls13["resumed"] is False  # a full handshake, though the legacy session id is echoed
    assert tls13["detailed"]["client_hello"]["extensions"]["application_layer_protocol_negotiation"] == [
        "h2", "http/1.1"]
    assert "x509" not in tls13.get("server", {}) and "hash" not in tls13.get("server", {})


RESUMING_CLIENT = """
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
session = None
for attempt in range(2):
    with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sys.argv[4], session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            while tls.recv(4096):  # the ticket comes after the handshake: read to the end
                pass
            print(tls.session_reused)
            session = tls.session
"""


def test_tls13_resumption_from_a_session_ticket(https_server: Any, tmp_path: Path) -> None:
    pair, tmp = https_server
    reused: list[str] = []

    def traffic() -> None:
        out = pair.a.run(["python3", "-c", RESUMING_CLIENT, str(tmp / "cert.pem"), pair.b_ip, str(PORT), HOST])
        reused.extend(out.stdout.split())

    events = capture_events(pair, pair.a_if, traffic, [{"type": "tls", "ports": [PORT]}], tmp_path)
    assert reused == ["False", "True"]
    events.sort(key=lambda e: e["@timestamp"])
    assert [e["tls"]["version"] for e in events] == ["1.3", "1.3"]
    full, resumed = (e["tls"] for e in events)
    # Both ClientHellos echo a legacy session id; only the second ServerHello selects a pre_shared_key.
    assert full["resumed"] is False and "resumption_method" not in full["detailed"]
    assert resumed["resumed"] is True and resumed["detailed"]["resumption_method"] == "id"  # Packetbeat's name
    assert resumed["server"]["ja3s"] != full["server"]["ja3s"]  # pre_shared_key (41) among the extensions
