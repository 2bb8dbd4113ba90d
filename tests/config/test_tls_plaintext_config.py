"""packetbeat.tls_plaintext: off by default; which protocol decodes which TLS port, checked like any setting."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config.load import from_tree
from agent.config.typed import ConfigError
from agent.runtime import wiring

PROTOCOLS = [{"type": "http", "ports": [80]}, {"type": "tls", "ports": [443, 6380]}, {"type": "redis", "ports": [6379]},
             {"type": "pgsql", "ports": [5432]}, {"type": "dns", "ports": [53]}]


def _load(section: dict[str, Any]) -> Any:
    return from_tree({"packetbeat": {"protocols": PROTOCOLS, "tls_plaintext": section}})


def test_off_by_default_with_https_ports_for_http() -> None:
    config = from_tree({"packetbeat": {"protocols": PROTOCOLS}})
    assert config.tls_plaintext.enabled is False
    assert config.plaintext_ports == {443: "http", 8443: "http"}


def test_ports_map_and_the_kernel_ports() -> None:
    config = _load({"enabled": True, "ports": {"http": [443], "redis": 6380}, "libraries": ["/opt/lib/libssl.so.3"],
                    "rescan_interval": "1m"})
    assert config.plaintext_ports == {443: "http", 6380: "redis"}
    assert config.tls_plaintext.rescan_interval == 60.0
    # The protocols' own TCP ports too (TLS started inside the protocol, or DNS over TCP/TLS on 53).
    assert wiring.plaintext_server_ports(config) == (53, 80, 443, 5432, 6379, 6380)
    assert _load({"enabled": True, "ports": {"dns": [853]}}).plaintext_ports == {853: "dns"}  # DNS over TLS
    assert not config.warnings


@pytest.mark.parametrize(("section", "message"), [
    ({"ports": {"htp": [443]}}, "unknown protocol"),
    ({"ports": {"tls": [443]}}, "not a protocol over TCP"),
    ({"ports": {"http": [443], "redis": [443]}}, "already decoded by http"),
    ({"ports": {"http": [0]}}, "is not a port"),
    ({"ports": [443]}, "expected a mapping"),
    ({"libraries": ["libssl.so.3"]}, "not an absolute path"),
    ({"rescan_interval": "100ms"}, "at least 1s"),
    ({"max_connections": 0}, "between 1 and 1048576"),
    ({"rescan_interval": "25h"}, "between 0s and 24h"),
    ({"enable": True}, "unknown setting"),
])
def test_mistakes_are_one_line_naming_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _load(section)
    assert "packetbeat.tls_plaintext" in str(caught.value) and "\n" not in str(caught.value)


def test_a_port_without_the_wire_tls_decoder_is_a_warning() -> None:
    config = _load({"enabled": True, "ports": {"http": [443, 9443]}})
    assert any("9443" in w and "tls.* handshake fields" in w for w in config.warnings), config.warnings
