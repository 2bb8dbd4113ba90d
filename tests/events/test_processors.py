"""Libbeat-style processors and conditions on event dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agent.config.typed import ConfigError
from agent.config.yamlload import normalize
from agent.processors import build_processors, run_chain

EVENT: dict[str, Any] = {
    "@timestamp": "2024-01-01T00:00:00.000Z",
    "type": "http",
    "status": "OK",
    "http": {"response": {"status_code": 404}, "request": {"method": "GET"}},
    "source": {"ip": "10.1.2.3", "port": 5555},
    "tags": ["a"],
    "url": {"path": "/index.html"},
}


def run(config: list[dict[str, Any]], event: dict[str, Any] | None = None) -> dict[str, Any] | None:
    return run_chain(build_processors(config, "processors"), copy.deepcopy(event or EVENT))


def test_drop_event_with_nested_and_dotted_conditions() -> None:
    assert run([{"drop_event": {"when": {"equals": {"http.response.status_code": 404}}}}]) is None
    assert run([{"drop_event": {"when": {"equals": {"http": {"response": {"status_code": 200}}}}}}]) is not None
    # The conformance harness renders "not.equals.type: flow" as one dotted key.
    assert run([{"drop_event": {"when": {"not.equals.type": "flow"}}}]) is None
    assert run([{"drop_event": {"when": {"not.equals.type": "http"}}}]) is not None


def test_range_and_boolean_combinations() -> None:
    assert run([{"drop_event": {"when": {"range.http.response.status_code.lt": 300}}}]) is not None
    assert run([{"drop_event": {"when": {"range": {"http.response.status_code": {"gte": 400, "lt": 500}}}}}]) is None
    assert run([{"drop_event": {"when": {"or": [{"equals.type": "dns"}, {"equals.status": "OK"}]}}}]) is None
    assert run([{"drop_event": {"when": {"and": [{"equals.type": "http"}, {"equals.status": "Error"}]}}}]) \
        is not None


def test_contains_regexp_network_has_fields() -> None:
    assert run([{"drop_event": {"when": {"contains": {"url.path": "index"}}}}]) is None
    assert run([{"drop_event": {"when": {"regexp": {"url.path": r"\.html$"}}}}]) is None
    assert run([{"drop_event": {"when": {"network": {"source.ip": "private"}}}}]) is None
    assert run([{"drop_event": {"when": {"network": {"source.ip": ["192.168.0.0/16"]}}}}]) is not None
    assert run([{"drop_event": {"when": {"has_fields": ["http.request.method", "url.path"]}}}]) is None
    assert run([{"drop_event": {"when": {"has_fields": ["http.request.body"]}}}]) is not None


def test_drop_and_include_fields() -> None:
    out = run([{"drop_fields": {"fields": ["http.request", "source.port", "no.such.field"]}}])
    assert out is not None
    assert "request" not in out["http"] and out["source"] == {"ip": "10.1.2.3"}
    out = run([{"include_fields": {"fields": ["http.response.status_code"]}}])
    assert out == {"@timestamp": EVENT["@timestamp"], "type": "http", "http": {"response": {"status_code": 404}}}


def test_include_then_drop_on_status_no_longer_matches() -> None:
    # After include_fields removed `status`, a later equals.status condition cannot match.
    out = run([{"include_fields": {"fields": ["http"]}},
               {"drop_event": {"when": {"equals": {"status": "OK"}}}}])
    assert out is not None and "status" not in out


def test_add_fields_tags_labels_rename() -> None:
    out = run([{"add_fields": {"target": "project", "fields": {"name": "x", "id": 7}}},
               {"add_tags": {"tags": ["b", "a"]}},
               {"add_labels": {"labels": {"env": "prod", "team": {"name": "net"}}}},
               {"rename": {"fields": [{"from": "url.path", "to": "url.original"}]}}])
    assert out is not None
    assert out["project"] == {"name": "x", "id": 7}
    assert out["tags"] == ["a", "b"]
    assert out["labels"] == {"env": "prod", "team_name": "net"}
    assert out["url"] == {"original": "/index.html"}


def test_protected_fields_survive_drop_fields() -> None:
    out = run([{"drop_fields": {"fields": ["@timestamp", "type"]}}])
    assert out is not None and out["type"] == "http" and "@timestamp" in out


def test_when_written_as_dotted_key_inside_a_processor() -> None:
    raw = normalize({"processors": [{"add_host_metadata": {"when.not.contains.tags": "forwarded"}}]})
    chain = build_processors(raw["processors"], "processors")
    out = run_chain(chain, copy.deepcopy(EVENT))
    assert out is not None and "hostname" in out["host"]
    forwarded = {**copy.deepcopy(EVENT), "tags": ["forwarded"]}
    out = run_chain(chain, forwarded)
    assert out is not None and "host" not in out


def test_detect_mime_type() -> None:
    event = {**copy.deepcopy(EVENT), "http": {"request": {"body": {"content": '{"a": 1}'}}}}
    out = run([{"detect_mime_type": {"field": "http.request.body.content", "target": "http.request.mime_type"}}],
              event)
    assert out is not None and out["http"]["request"]["mime_type"] == "application/json"


@pytest.mark.parametrize("bad", [
    [{"drop_fields": {"fieldz": ["a"]}}],
    [{"drop_event": {"when": {"range": {"a": {"less": 3}}}}}],
    [{"drop_event": {"when": {"regexp": {"a": "("}}}}],
    [{"drop_event": {"when": {"network": {"a": "not-a-network"}}}}],
    ["drop_event"],
    [{"add_fields": {"fields": "x"}}],
])
def test_bad_processor_config_is_a_config_error(bad: list[Any]) -> None:
    with pytest.raises(ConfigError):
        build_processors(bad, "processors")
