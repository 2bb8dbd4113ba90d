"""`pktbeat test output`: a step-by-step report per host, in the shape of Packetbeat's.

Steps: parse the URL, resolve the name, open a TCP connection, TLS handshake
(protocol, cipher, certificate verification), `GET /` (product header and
version), the compatibility header pktbeat will send, authentication (who
the cluster says we are), and the privilege to write events into the
configured index or data stream.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from agent.outputs.elasticsearch import client as es_client
from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig
from agent.outputs.elasticsearch.fmtstr import FormatString
from agent.publisher.types import OutputError

Echo = Callable[[str], None]
WRITE_PRIVILEGES = ("create_doc", "auto_configure")


def test_output(config: ElasticsearchOutputConfig, echo: Echo) -> bool:
    try:
        urls = es_client.host_urls(config)
    except OutputError as exc:
        echo(f"elasticsearch: parse url... ERROR {exc}")
        return False
    ok = True
    for url in urls:
        ok &= _check_host(dataclasses.replace(config, hosts=(url,), protocol="", path=""), url, echo)
    return ok


def _check_host(config: ElasticsearchOutputConfig, url: str, echo: Echo) -> bool:
    echo(f"elasticsearch: {url}...")
    echo("  parse url... OK")
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 9200
    echo("  connection...")
    echo("    parse host... OK")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        echo(f"    dns lookup... ERROR {exc.strerror}")
        return False
    addresses = sorted({str(info[4][0]) for info in infos})
    echo("    dns lookup... OK")
    echo(f"    addresses: {', '.join(addresses)}")
    try:
        with socket.create_connection((host, port), timeout=min(config.timeout, 10.0)) as sock:
            echo("    dial up... OK")
            if parts.scheme == "https":
                if not _check_tls(config, sock, host, echo):
                    return False
            else:
                echo("  TLS... WARN secure connection disabled")
    except OSError as exc:
        echo(f"    dial up... ERROR {exc.strerror or exc}")
        return False
    client = None
    try:
        client = es_client.build_client(config, timeout=min(config.timeout, 30.0))
        return _check_server(client, config, echo)
    except OutputError as exc:
        echo(f"  talk to server... ERROR {exc}")
        return False
    finally:
        if client is not None:
            client.close()


def _check_tls(config: ElasticsearchOutputConfig, sock: socket.socket, host: str, echo: Echo) -> bool:
    echo("  TLS...")
    try:
        ctx = es_client.ssl_context(config)
    except OutputError as exc:
        echo(f"    security... ERROR {exc}")
        return False
    if ctx is None:
        echo("    security... ERROR ssl.enabled is false for an https host")
        return False
    if ctx.verify_mode == ssl.CERT_NONE:
        echo("    security: WARN server's certificate chain verification is disabled")
    elif not ctx.check_hostname:
        echo("    security: server's certificate chain is verified; the host name is not")
    else:
        echo("    security: server's certificate chain verification is enabled")
    try:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            echo("    handshake... OK")
            echo(f"    TLS version: {tls.version()}")
            cipher = tls.cipher()
            if cipher:
                echo(f"    cipher: {cipher[0]}")
    except ssl.SSLCertVerificationError as exc:
        echo(f"    handshake... ERROR certificate verification failed: {exc.verify_message}")
        return False
    except (ssl.SSLError, OSError) as exc:
        echo(f"    handshake... ERROR {exc}")
        return False
    return True


def _check_server(client: Elasticsearch, config: ElasticsearchOutputConfig, echo: Echo) -> bool:
    try:
        info = es_client.discover(client)
    except OutputError as exc:
        if "(401)" in str(exc):
            echo("  talk to server... OK")
            echo("  authentication... ERROR 401: wrong username/password or api_key")
        else:
            echo(f"  talk to server... ERROR {exc}")
        return False
    except (TransportError, OSError) as exc:
        echo(f"  talk to server... ERROR {exc}")
        return False
    echo("  talk to server... OK")
    echo(f"  version: {info.version}")
    try:
        es_client.negotiate(client, info)
    except OutputError as exc:
        echo(f"  compatibility... ERROR {exc}")
        return False
    compat = es_client.compat_for(info.major)
    header = f"compatible-with={compat or es_client.CLIENT_MAJOR}" if (compat or 8) >= 8 else "application/json"
    echo(f"  compatibility header: {header}")
    who = _check_auth(client, config, echo)
    if who is False:
        return False
    return _check_write(client, config, echo, security=who is not None)


def _check_auth(client: Elasticsearch, config: ElasticsearchOutputConfig, echo: Echo) -> str | bool | None:
    """The authenticated user name; None when security is off; False when authentication failed."""
    try:
        body = client.security.authenticate().body
    except ApiError as exc:
        status = exc.meta.status
        text = _error_type(exc)
        if status == 401:
            echo("  authentication... ERROR 401: wrong username/password or api_key")
            return False
        if "security" in text and status in (400, 500):
            note = " (credentials are configured but not checked)" if config.username or config.api_key else ""
            echo(f"  authentication... WARN security is disabled on the cluster{note}")
            return None
        echo(f"  authentication... ERROR {status} {text}")
        return False
    except TransportError as exc:
        echo(f"  authentication... ERROR {exc}")
        return False
    user = str(body.get("username", "?"))
    kind = "api key" if body.get("authentication_type") == "api_key" else "user"
    echo(f"  authentication... OK ({kind} {user})")
    return user


def _check_write(client: Elasticsearch, config: ElasticsearchOutputConfig, echo: Echo, security: bool) -> bool:
    fmt = FormatString(config.resolved_index())
    target = (fmt.constant or config.resolved_index()).lower()
    if not security:
        echo(f"  write privilege on {target}... OK (security disabled)")
        return True
    names = [target if "%{" not in target else target.split("%{", 1)[0] + "*"]
    try:
        body: dict[str, Any] = client.security.has_privileges(
            index=[{"names": names, "privileges": list(WRITE_PRIVILEGES)}]).body
    except (ApiError, TransportError) as exc:
        echo(f"  write privilege on {target}... ERROR {exc}")
        return False
    granted = body.get("index", {}).get(names[0], {})
    missing = [p for p in WRITE_PRIVILEGES if not granted.get(p)]
    if "create_doc" in missing:
        echo(f"  write privilege on {target}... ERROR missing index privilege(s): {', '.join(missing)}")
        return False
    if missing:
        echo(f"  write privilege on {target}... OK (without {', '.join(missing)}: run pktbeat setup first)")
        return True
    echo(f"  write privilege on {target}... OK")
    return True


def _error_type(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return f"{body['error'].get('type', '')}: {body['error'].get('reason', '')}"
    return str(exc)
