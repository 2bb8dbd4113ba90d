"""Where the Elasticsearch tests write: the stand-in, or the real cluster at ES_URL.

With ES_URL set (the Vagrant VM sets it), every test that needs no fault
injection runs against that cluster; the others skip.  Each test writes to
its own data stream (`pktbeat-t-<random>`) with its own template, and removes
both afterwards, so a real cluster is left as it was.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import elasticsearch
import pytest

from agent.config.load import AgentConfig, from_tree
from agent.outputs.elasticsearch import client as es_client
from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig
from tests.es_standin.harness import StandinProcess, real_cluster_url


class Target:
    def __init__(self, url: str, standin: StandinProcess | None, credentials: dict[str, Any]) -> None:
        self.url = url
        self.standin = standin
        self.credentials = credentials
        self.name = f"pktbeat-t-{uuid.uuid4().hex[:10]}"

    @property
    def fault_injection(self) -> bool:
        return self.standin is not None

    def need_faults(self) -> StandinProcess:
        if self.standin is None:
            pytest.skip("fault injection needs the stand-in (ES_URL points at a real cluster)")
        return self.standin

    def output_settings(self, **extra: Any) -> dict[str, Any]:
        return {"hosts": [self.url], "index": self.name, **self.credentials, **extra}

    def agent_config(self, tmp: str, output: dict[str, Any] | None = None, **top: Any) -> AgentConfig:
        tree: dict[str, Any] = {
            "output": {"elasticsearch": self.output_settings(**(output or {}))},
            "setup": {"template": {"name": self.name, "pattern": self.name}, "ilm": {"policy_name": self.name}},
            "path": {"data": tmp, "logs": tmp},
        }
        tree.update(top)
        return from_tree(tree)

    def es_config(self, **extra: Any) -> ElasticsearchOutputConfig:
        from agent.config.typed import build

        return build(ElasticsearchOutputConfig, self.output_settings(**extra), "output.elasticsearch")

    def client(self) -> elasticsearch.Elasticsearch:
        es = es_client.build_client(self.es_config())
        es_client.negotiate(es, es_client.discover(es))
        return es

    def count(self, index: str | None = None, query: dict[str, Any] | None = None) -> int:
        es = self.client()
        try:
            target = index or self.name
            es.indices.refresh(index=target)
            body = {"query": query} if query else None
            return int(es.count(index=target, body=body)["count"])
        finally:
            es.close()

    def cleanup(self) -> None:
        if self.standin is not None:
            return
        es = self.client()
        try:
            for call in (lambda: es.indices.delete_data_stream(name=self.name),
                         lambda: es.indices.delete_index_template(name=self.name),
                         lambda: es.ilm.delete_lifecycle(name=self.name)):
                try:
                    call()
                except elasticsearch.ApiError:
                    pass
        finally:
            es.close()


def real_target() -> Target | None:
    url = real_cluster_url()
    if not url:
        return None
    parts = urlsplit(url)
    credentials: dict[str, Any] = {}
    if parts.username:
        credentials = {"username": parts.username, "password": parts.password or ""}
        url = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 9200}"))
    elif os.environ.get("ES_API_KEY"):
        credentials = {"api_key": os.environ["ES_API_KEY"]}
    elif os.environ.get("ES_USERNAME"):
        credentials = {"username": os.environ["ES_USERNAME"], "password": os.environ.get("ES_PASSWORD", "")}
    if url.startswith("https") and os.environ.get("ES_CA"):
        credentials["ssl"] = {"certificate_authorities": [os.environ["ES_CA"]]}
    return Target(url.rstrip("/"), None, credentials)


def standin_target(standin: StandinProcess) -> Iterator[Target]:
    standin.control("/reset", {})
    target = Target(standin.url, standin, {})
    yield target


def events_json(count: int, start: int = 0, **fields: Any) -> list[bytes]:
    out = []
    for i in range(start, start + count):
        doc = {"@timestamp": "2024-05-06T07:08:09.123Z", "type": "icmp", "event": {"sequence": i},
               "source": {"ip": "10.0.0.1", "port": 1000 + i % 1000}, "destination": {"ip": "10.0.0.2"}, **fields}
        out.append(json.dumps(doc).encode())
    return out
