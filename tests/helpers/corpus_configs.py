"""Protocol configs for replaying the whole corpus: Packetbeat's test config, and one with every optional
field turned on.  The corpus event snapshots (bench/corpus_events.py) and the template test use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IDL_DIR = Path(__file__).resolve().parents[1] / "protocols" / "thrift" / "idl"

PACKETBEAT_PROTOCOLS: list[dict[str, Any]] = [
    {"type": "icmp", "enabled": True},
    {"type": "dhcpv4", "ports": [67, 68]},
    {"type": "dns", "ports": [53]},
    {"type": "amqp", "ports": [5672]},
    {"type": "cassandra", "ports": [9042]},
    {"type": "http", "ports": [80]},
    {"type": "memcache", "ports": [11211]},
    {"type": "mysql", "ports": [3306]},
    {"type": "pgsql", "ports": [5432]},
    {"type": "redis", "ports": [6379]},
    {"type": "nfs", "ports": [2049]},
    {"type": "thrift", "ports": [9090], "transport_type": "socket"},
    {"type": "tls", "ports": [443]},
    {"type": "mongodb", "ports": [27017]},
    {"type": "sip", "ports": [5060]},
]

BOTH = {"send_request": True, "send_response": True}
VERBOSE_PROTOCOLS: list[dict[str, Any]] = [
    {"type": "icmp", "enabled": True, **BOTH},
    {"type": "dhcpv4", "ports": [67, 68], **BOTH},
    {"type": "dns", "ports": [53], "include_authorities": True, "include_additionals": True, **BOTH},
    {"type": "amqp", "ports": [5672], "hide_connection_information": False, **BOTH},
    {"type": "cassandra", "ports": [9042], "compressor": "snappy", **BOTH},
    {"type": "http", "ports": [80, 5000, 8000, 8002, 8080, 8888, 9200], "send_all_headers": True,
     "split_cookie": True, "include_body_for": ["text", "json", "x-www-form-urlencoded", "binary", "xml"],
     "hide_keywords": ["pass", "password"], "real_ip_header": "X-Forwarded-For", **BOTH},
    {"type": "memcache", "ports": [11211], "maxvalues": -1, "parseunknown": True, **BOTH},
    {"type": "mysql", "ports": [3306, 3307, 13001], "max_rows": 2000, **BOTH},
    {"type": "pgsql", "ports": [5432], "max_rows": 2000, **BOTH},
    {"type": "redis", "ports": [6379, 6380], **BOTH},
    {"type": "nfs", "ports": [2049, 12049], **BOTH},
    {"type": "thrift", "ports": [9090], "transport_type": "socket", **BOTH,
     "idl_files": [str(IDL_DIR / name) for name in ("ThriftTest.thrift", "tutorial.thrift", "shared.thrift")]},
    {"type": "tls", "ports": [443], "include_raw_certificates": True, "include_ja4": True, "include_curve": True,
     "fingerprints": ["md5", "sha1", "sha256"], **BOTH},
    {"type": "mongodb", "ports": [27017, 9991], "max_docs": 0, **BOTH},
    {"type": "sip", "ports": [5060], **BOTH},
]
