"""The field registry and the template generated from it; every field pktbeat emits must be mapped (f)."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from agent.config.load import from_tree
from agent.events import fields
from agent.outputs.elasticsearch import index_template
from agent.protocols import registry as protocol_registry
from tests.helpers.corpus_configs import VERBOSE_PROTOCOLS
from tests.helpers.replay import CORPUS, PKTBEAT


def _lookup_mapping(template: dict, name: str) -> dict:
    node = {"properties": template["template"]["mappings"]["properties"]}
    for part in name.split("."):
        node = node["properties"][part]
    return node


def test_every_registry_field_is_in_the_template_with_its_type(tmp_path: Path) -> None:
    template = index_template(from_tree({"path": {"data": str(tmp_path)}}))
    assert template["index_patterns"] == ["packetbeat-0.9.0"]
    assert template["data_stream"] == {}
    for name, field in fields.registry().items():
        mapping = _lookup_mapping(template, name)
        if field.type == "object":
            assert mapping["type"] == "object", name
        elif field.type == "alias":
            assert mapping == {"type": "alias", "path": field.alias}
            assert fields.lookup(field.alias)[0] == "mapped", f"{name} aliases an unmapped field"
        else:
            assert mapping["type"] == field.type, name
            if field.type == "keyword":
                assert mapping["ignore_above"] == 1024


def test_types_that_dashboards_rely_on() -> None:
    registry = fields.registry()
    expected = {"@timestamp": "date", "source.ip": "ip", "destination.port": "long", "event.duration": "long",
                "network.bytes": "long", "related.ip": "ip", "http.response.status_code": "long",
                "dns.answers.ttl": "long", "tls.server.x509.not_after": "date", "flow.final": "boolean",
                "memcache.request.noreply": "boolean", "mysql.affected_rows": "long", "error.message":
                "match_only_text", "url.full": "wildcard", "params": "text", "request": "text"}
    assert {k: registry[k].type for k in expected} == expected
    assert registry["url.full"].text and registry["user_agent.original"].text


def test_object_fields_take_any_child_as_keyword() -> None:
    assert fields.lookup("http.request.headers.x-custom-thing") == ("dynamic", fields.registry()[
        "http.request.headers"])
    assert fields.lookup("fields.anything.nested")[0] == "dynamic"
    assert fields.unmapped(["notes", "no.such.field", "source.ip"]) == {
        "notes": "is an alias of error.message; Elasticsearch refuses documents that write to it",
        "no.such.field": "not in agent/events/fields.py nor in any protocol's fields.py"}
    template = fields.mappings()
    names = [next(iter(t)) for t in template["dynamic_templates"]]
    assert "http.request.headers" in names and names[-1] == "strings_as_keyword"


def test_flatten_keys_descends_into_lists_of_objects() -> None:
    event = {"dns": {"answers": [{"name": "a", "ttl": 1}, {"name": "b", "data": "x"}]}, "tags": ["t"],
             "http": {"request": {"headers": {}}}}
    assert sorted(set(fields.flatten_keys(event))) == ["dns.answers.data", "dns.answers.name", "dns.answers.ttl",
                                                       "http.request.headers", "tags"]


def every_protocol() -> list[dict]:
    """Every registered protocol: on the corpus's ports with every optional field on where the corpus has its
    traffic, otherwise on its default ports, so a protocol added to the registry is in this test."""
    configured = {entry["type"] for entry in VERBOSE_PROTOCOLS}
    return VERBOSE_PROTOCOLS + [{"type": name} for name in protocol_registry.available() if name not in configured]


def test_every_protocol_is_enabled_in_the_corpus_replay() -> None:
    assert {entry["type"] for entry in every_protocol()} == set(protocol_registry.available())


@pytest.mark.slow
def test_every_field_emitted_on_the_corpus_is_mapped(tmp_path: Path) -> None:
    """Replays every corpus pcap with every protocol enabled, every optional field on (and flows), through the
    CLI."""
    pcaps = sorted(CORPUS.glob("*.pcap"))
    assert len(pcaps) > 100
    config = {
        "packetbeat.interfaces.device": "any",
        "packetbeat.interfaces.internal_networks": ["private"],
        "packetbeat.protocols": every_protocol(),
        "packetbeat.flows": {"timeout": "10s", "period": "10s"},
        "output.file": {"path": str(tmp_path / "out"), "filename": "packetbeat", "rotate_every_kb": 1024 * 1024},
        "path.data": str(tmp_path / "data"),
        "path.logs": str(tmp_path / "logs"),
    }
    (tmp_path / "packetbeat.yml").write_text(yaml.safe_dump(config))
    args = [PKTBEAT, "run", "-e", "-t", "-c", str(tmp_path / "packetbeat.yml")]
    for pcap in pcaps:
        args += ["-I", str(pcap)]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    # A pcap some protocol cannot read yet is not this test's business; the events it wrote are.
    seen: dict[str, set[str]] = defaultdict(set)
    count = 0
    for path in sorted((tmp_path / "out").glob("*.ndjson")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            event.pop("@metadata", None)
            count += 1
            for key in fields.flatten_keys(event):
                seen[key].add(str(event.get("type")))
    assert count > 0, proc.stderr[-3000:]
    problems = fields.unmapped(seen)
    report = "\n".join(f"  {key}  ({problems[key]}; emitted by: {', '.join(sorted(seen[key]))})"
                       for key in sorted(problems))
    assert not problems, (f"{len(problems)} emitted field(s) not mapped by the template "
                          f"({count} events, {len(seen)} distinct keys):\n{report}")
