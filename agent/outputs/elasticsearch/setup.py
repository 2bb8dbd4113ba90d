"""Index management: the index template (mappings from agent.events.fields), the ILM policy, the data stream.

Packetbeat's defaults: the data stream and the template are both named
`packetbeat-<version>`, the template matches exactly that name with
`data_stream: {}` and priority 150, and the ILM policy `packetbeat` rolls
over at 30 days or 50 GB per primary shard.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from agent.config.load import AgentConfig
from agent.events import fields
from agent.outputs.elasticsearch.config import DEFAULT_INDEX, ElasticsearchOutputConfig
from agent.outputs.elasticsearch.fmtstr import FormatError, FormatString
from agent.publisher.types import OutputError
from agent.version import VERSION

Echo = Callable[[str], None]

DEFAULT_POLICY_NAME = "packetbeat"
DEFAULT_POLICY: dict[str, Any] = {
    "phases": {"hot": {"actions": {"rollover": {"max_age": "30d", "max_primary_shard_size": "50gb"}}}},
}
TEMPLATE_PRIORITY = 150


class SetupError(Exception):
    """A setup.* setting that cannot work, with what to change."""


def _es_config(cfg: AgentConfig) -> ElasticsearchOutputConfig:
    if cfg.output.name == "elasticsearch":
        config: ElasticsearchOutputConfig = cfg.output.config
        return config
    return ElasticsearchOutputConfig()


def index_name(cfg: AgentConfig) -> str:
    """The default index / data stream name, with the agent version filled in."""
    text = _es_config(cfg).resolved_index()
    try:
        fmt = FormatString(text)
    except FormatError as exc:
        raise SetupError(f"output.elasticsearch.index: {exc}") from None
    return (fmt.constant or text).lower()


def template_name_and_pattern(cfg: AgentConfig) -> tuple[str, str]:
    tcfg = cfg.setup.template
    es = _es_config(cfg)
    custom_index = bool(es.index) and es.index != DEFAULT_INDEX
    if custom_index and not (tcfg.name and tcfg.pattern):
        raise SetupError("setup.template.name and setup.template.pattern have to be set if "
                         "output.elasticsearch.index is modified")
    default = f"packetbeat-{VERSION}"
    return _render(tcfg.name or default), _render(tcfg.pattern or default)


def _render(text: str) -> str:
    return text.replace("%{[agent.version]}", VERSION).replace("%{[beat.version]}", VERSION).lower()


def policy_name(cfg: AgentConfig) -> str:
    return _render(cfg.setup.ilm.policy_name or DEFAULT_POLICY_NAME)


def ilm_policy(cfg: AgentConfig) -> dict[str, Any]:
    """The policy body: setup.ilm.policy_file when set, else Packetbeat's default."""
    path = cfg.setup.ilm.policy_file
    if not path:
        return {"policy": copy.deepcopy(DEFAULT_POLICY)}
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SetupError(f"setup.ilm.policy_file: cannot read {path}: {exc}") from None
    if not isinstance(body, dict) or "policy" not in body:
        raise SetupError(f"setup.ilm.policy_file: {path} must hold an object with a 'policy' key")
    return body


def index_template(cfg: AgentConfig) -> dict[str, Any]:
    """The composable index template pktbeat installs (also `pktbeat export template`)."""
    tcfg = cfg.setup.template
    if tcfg.json.get("enabled"):
        return _json_template(tcfg.json)
    if tcfg.fields:
        raise SetupError("setup.template.fields: custom fields.yml files are not supported; "
                         "use setup.template.append_fields")
    _, pattern = template_name_and_pattern(cfg)
    mappings = fields.mappings()
    _append_fields(mappings, tcfg.append_fields)
    index_settings: dict[str, Any] = {
        "refresh_interval": "5s",
        "mapping": {"total_fields": {"limit": 10000}},
        "max_docvalue_fields_search": 200,
        "query": {"default_field": fields.default_query_fields()},
    }
    if cfg.setup.ilm.enabled:
        index_settings["lifecycle"] = {"name": policy_name(cfg)}
    user = copy.deepcopy(tcfg.settings) if isinstance(tcfg.settings, dict) else {}
    source = user.pop("_source", None)
    _merge(index_settings, user.pop("index", {}) if isinstance(user.get("index"), dict) else {})
    _merge(index_settings, user)
    if isinstance(source, dict):
        mappings["_source"] = source
    return {
        "index_patterns": [pattern],
        "data_stream": {},
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": {"index": index_settings}, "mappings": mappings},
        "_meta": {"managed_by": "pktbeat", "beat": "packetbeat", "version": VERSION},
    }


def _json_template(spec: dict[str, Any]) -> dict[str, Any]:
    path = spec.get("path")
    if not path:
        raise SetupError("setup.template.json.path is required when setup.template.json.enabled is true")
    try:
        with open(path, encoding="utf-8") as handle:
            body = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SetupError(f"setup.template.json.path: cannot read {path}: {exc}") from None
    if not isinstance(body, dict):
        raise SetupError(f"setup.template.json.path: {path} must hold a JSON object")
    return body


def _append_fields(mappings: dict[str, Any], extra: list[Any]) -> None:
    for i, item in enumerate(extra or []):
        if not isinstance(item, dict) or "name" not in item or "type" not in item:
            raise SetupError(f"setup.template.append_fields[{i}]: needs a name and a type")
        node = mappings["properties"]
        parts = str(item["name"]).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {"properties": {}}).setdefault("properties", {})
        mapping: dict[str, Any] = {"type": str(item["type"])}
        if item["type"] == "keyword":
            mapping["ignore_above"] = 1024
        node[parts[-1]] = mapping


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if "." in key:  # "mapping.total_fields.limit": 20000
            head, rest = key.split(".", 1)
            target = base.setdefault(head, {})
            if isinstance(target, dict):
                _merge(target, {rest: value})
                continue
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# -- applying it to a cluster ------------------------------------------------------------------------

def install(client: Elasticsearch, cfg: AgentConfig, echo: Echo, *, serverless: bool = False) -> bool:
    """Template, ILM policy and data stream; each step says what it did.  False on any failure."""
    ok = True
    try:
        name, _ = template_name_and_pattern(cfg)
        body = index_template(cfg) if cfg.setup.template.enabled else None
        stream = index_name(cfg)
        policy = ilm_policy(cfg) if cfg.setup.ilm.enabled and not serverless else None
    except SetupError as exc:
        echo(f"setup: {exc}")
        return False
    try:
        if policy is not None:
            ok &= _install_policy(client, cfg, policy, echo)
        elif cfg.setup.ilm.enabled:
            echo("ILM: skipped (serverless projects manage the lifecycle)")
        if body is not None:
            ok &= _install_template(client, cfg, name, body, echo)
        else:
            echo("Index template: disabled (setup.template.enabled: false)")
        if ok:
            ok &= _create_data_stream(client, stream, echo)
    except (ApiError, TransportError) as exc:
        echo(f"setup failed: {_api_text(exc)}")
        return False
    if ok:
        echo("Index setup finished.")
    return ok


def _install_policy(client: Elasticsearch, cfg: AgentConfig, policy: dict[str, Any], echo: Echo) -> bool:
    name = policy_name(cfg)
    if cfg.setup.ilm.check_exists and not cfg.setup.ilm.overwrite:
        try:
            client.ilm.get_lifecycle(name=name)
            echo(f"ILM policy {name} exists already; not overwritten (setup.ilm.overwrite: false)")
            return True
        except ApiError as exc:
            if exc.meta.status != 404:
                raise
    client.ilm.put_lifecycle(name=name, policy=policy["policy"])
    echo(f"ILM policy {name} installed")
    return True


def _install_template(client: Elasticsearch, cfg: AgentConfig, name: str, body: dict[str, Any],
                      echo: Echo) -> bool:
    if not cfg.setup.template.overwrite and client.indices.exists_index_template(name=name):
        echo(f"Index template {name} exists already; not overwritten (setup.template.overwrite: false)")
        return True
    client.indices.put_index_template(name=name, body=body)
    count = sum(1 for _ in _leaves(body.get("template", {}).get("mappings", {}).get("properties", {})))
    echo(f"Index template {name} installed ({count} mapped fields, pattern {body.get('index_patterns')})")
    return True


def _leaves(props: dict[str, Any]) -> Any:
    for value in props.values():
        if isinstance(value, dict) and "properties" in value:
            yield from _leaves(value["properties"])
        else:
            yield value


def _create_data_stream(client: Elasticsearch, name: str, echo: Echo) -> bool:
    if "%{" in name or "*" in name:
        echo(f"Data stream: not created ({name!r} depends on each event); it is created on the first write")
        return True
    try:
        client.indices.create_data_stream(name=name)
        echo(f"Data stream {name} created")
        return True
    except ApiError as exc:
        if exc.meta.status == 400 and "resource_already_exists_exception" in _api_text(exc):
            echo(f"Data stream {name} exists already")
            return True
        echo(f"Data stream {name}: {_api_text(exc)}")
        return False


def _api_text(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('type')}: {error.get('reason')}"
    return str(exc)


def run_setup(cfg: AgentConfig, echo: Echo) -> bool:
    """`pktbeat setup [--index-management]` against output.elasticsearch."""
    from agent.outputs.elasticsearch.output import ElasticsearchOutput

    try:
        output = ElasticsearchOutput(_es_config(cfg))
    except OutputError as exc:
        echo(f"setup: {exc}")
        return False
    try:
        try:
            info = output.connect()
        except (TransportError, OSError, OutputError) as exc:
            echo(f"setup: cannot reach Elasticsearch at {', '.join(output.urls)}: {exc}")
            return False
        echo(f"Connected to Elasticsearch {info.version} at {', '.join(output.urls)}")
        return install(output.client, cfg, echo, serverless=info.serverless)
    finally:
        output.close()
