"""The one field registry: every field pktbeat emits, with its Elasticsearch type.

The common fields (ECS and Packetbeat's own) are declared here; each
protocol declares its own fields beside its code (`fields.py` of its
package, handed over as `ProtocolSpec.fields`), and the registry is
assembled from the protocol registry, so a protocol cannot be added
without its mappings.  The index template's mappings are generated from it,
and a test replays the corpus with every protocol enabled to check that
every key pktbeat emits is mapped.
Names and types follow ECS and Packetbeat's fields.yml; where Packetbeat
leaves a field to dynamic mapping (its `array` type) pktbeat maps it
explicitly (keyword, or an object with typed properties) so a dashboard never
depends on the first document's guess.

Each table line is `name type [modifiers]`:
  - `type` is an Elasticsearch field type, or `object` (children declared by
    their own lines, or, with `dynamic=keyword`, any child is a keyword), or
    `alias=<path>` (a read-only alias; events must never carry it).
  - `+text` adds a `.text` multi-field (match_only_text), as ECS does.
  - `noindex` maps the field without indexing it (event.original).
Keywords get `ignore_above: 1024` as in Beats templates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from agent.protocols import registry as protocol_registry
from agent.protocols.base import prefixed


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str
    group: str
    text: bool = False  # a .text multi-field
    dynamic: str = ""  # object whose unknown children are mapped as this type
    alias: str = ""  # alias target (type == "alias")
    index: bool = True


# -- ECS (the subset pktbeat, its processors and Packetbeat's ingest pipelines fill) --------------

_BASE = """
@timestamp date
message match_only_text
tags keyword
labels object dynamic=keyword
fields object dynamic=keyword
agent.build.original keyword
agent.ephemeral_id keyword
agent.id keyword
agent.name keyword
agent.type keyword
agent.version keyword
ecs.version keyword
"""

_HOST = """
host.architecture keyword
host.containerized boolean
host.domain keyword
host.hostname keyword
host.id keyword
host.ip ip
host.mac keyword
host.name keyword
host.type keyword
host.os.codename keyword
host.os.family keyword
host.os.full keyword +text
host.os.kernel keyword
host.os.name keyword +text
host.os.platform keyword
host.os.type keyword
host.os.version keyword
"""

_EVENT = """
event.action keyword
event.agent_id_status keyword
event.category keyword
event.code keyword
event.created date
event.dataset keyword
event.duration long
event.end date
event.hash keyword
event.id keyword
event.ingested date
event.kind keyword
event.module keyword
event.original keyword noindex
event.outcome keyword
event.provider keyword
event.reason keyword
event.reference keyword
event.sequence long
event.severity long
event.start date
event.timezone keyword
event.type keyword
event.url keyword
"""

# source, destination, client and server share these (ECS endpoint fields, with geo/as from the
# ingest pipelines' geoip processors).
_ENDPOINT = """
address keyword
bytes long
domain keyword
ip ip
mac keyword
packets long
port long
registered_domain keyword
subdomain keyword
top_level_domain keyword
nat.ip ip
nat.port long
as.number long
as.organization.name keyword +text
geo.city_name keyword
geo.continent_code keyword
geo.continent_name keyword
geo.country_iso_code keyword
geo.country_name keyword
geo.location geo_point
geo.name keyword
geo.postal_code keyword
geo.region_iso_code keyword
geo.region_name keyword
geo.timezone keyword
"""

# Process attribution (packetbeat.procs): the process of each local endpoint, as Packetbeat names them
# (process, source.process, destination.process), with ECS's process.user and parent.pid.
_PROCESS = """
pid long
ppid long
parent.pid long
name keyword +text
executable keyword +text
args keyword
args_count long
working_directory keyword +text
start date
user.id keyword
user.name keyword +text
"""

# Packetbeat 6's process enrichment (server.process.* / client.process.*): mapped for older dashboards.
_ENDPOINT_PROCESS = """
process.name keyword
process.args keyword
process.executable keyword
process.working_directory keyword
process.start date
"""

_NETWORK = """
network.application keyword
network.bytes long
network.community_id keyword
network.direction keyword
network.forwarded_ip ip
network.iana_number keyword
network.name keyword
network.packets long
network.protocol keyword
network.transport keyword
network.type keyword
network.vlan.id keyword
network.vlan.name keyword
related.hash keyword
related.hosts keyword
related.ip ip
related.user keyword
error.code keyword
error.id keyword
error.message match_only_text
error.stack_trace wildcard
error.type keyword
"""

_URL_USER = """
url.domain keyword
url.extension keyword
url.fragment keyword
url.full wildcard +text
url.original wildcard +text
url.password keyword
url.path wildcard
url.port long
url.query keyword
url.registered_domain keyword
url.scheme keyword
url.subdomain keyword
url.top_level_domain keyword
url.username keyword
user_agent.original keyword +text
user_agent.name keyword
user_agent.version keyword
user_agent.device.name keyword
user.domain keyword
user.email keyword
user.full_name keyword +text
user.id keyword
user.name keyword +text
user.roles keyword
"""


# -- Packetbeat's own (fields.common.yml and the protocols' fields.yml) --------------------------------

_PACKETBEAT_COMMON = """
type keyword
status keyword
method keyword
resource keyword
path keyword
query keyword
params text
request text
response text
notes alias=error.message
bytes_in alias=source.bytes
bytes_out alias=destination.bytes
flow.final boolean
flow.id keyword
flow.vlan long
"""

# pktbeat's own, under its name as ECS advises for fields it does not define (agent/events/tunnel.py).
_PKTBEAT_TUNNEL = """
pktbeat.tunnel.type keyword
pktbeat.tunnel.id long
pktbeat.tunnel.depth long
pktbeat.tunnel.source.ip ip
pktbeat.tunnel.destination.ip ip
"""

# The payload of the event came from a TLS library (agent/runtime/plaintext.py), not from the wire.
_PKTBEAT_PAYLOAD = """
pktbeat.payload.source keyword
"""


_ENDPOINTS = ("source", "destination", "client", "server")


def _tables() -> Iterator[tuple[str, str]]:
    yield "ecs", _BASE
    yield "ecs", _HOST
    yield "ecs", _EVENT
    for side in _ENDPOINTS:
        yield "ecs", prefixed(side, _ENDPOINT)
    for side in ("client", "server"):
        yield "packetbeat", prefixed(side, _ENDPOINT_PROCESS)
    for where in ("process", "source.process", "destination.process"):
        yield "ecs", prefixed(where, _PROCESS)
    yield "ecs", "container.id keyword"
    yield "ecs", _NETWORK
    yield "ecs", _URL_USER
    yield "packetbeat", _PACKETBEAT_COMMON
    yield "pktbeat", _PKTBEAT_TUNNEL
    yield "pktbeat", _PKTBEAT_PAYLOAD
    for name in protocol_registry.available():
        table = protocol_registry.spec(name).fields
        if table.strip():
            yield name, table


def _parse(group: str, line: str) -> Field:
    parts = line.split()
    name, kind, mods = parts[0], parts[1], parts[2:]
    alias = ""
    if kind.startswith("alias="):
        alias, kind = kind[len("alias="):], "alias"
    dynamic = ""
    for mod in mods:
        if mod.startswith("dynamic="):
            dynamic = mod[len("dynamic="):]
    return Field(name, kind, group, text="+text" in mods, dynamic=dynamic, alias=alias,
                 index="noindex" not in mods)


@cache
def registry() -> dict[str, Field]:
    """Every field by dotted name; a name listed twice is a bug in the tables."""
    out: dict[str, Field] = {}
    for group, table in _tables():
        for line in table.strip().splitlines():
            field = _parse(group, line)
            if field.name in out:
                raise ValueError(f"field {field.name} is declared twice")
            out[field.name] = field
    return out


# -- mappings ---------------------------------------------------------------------------------------------

def _leaf_mapping(field: Field) -> dict[str, Any]:
    if field.type == "alias":
        return {"type": "alias", "path": field.alias}
    mapping: dict[str, Any] = {"type": field.type}
    if field.type == "keyword":
        mapping["ignore_above"] = 1024
    if not field.index:
        mapping["index"] = False
        mapping["doc_values"] = False
    if field.text:
        mapping["fields"] = {"text": {"type": "match_only_text"}}
    return mapping


def mappings() -> dict[str, Any]:
    """The `mappings` block of the index template: typed properties and dynamic templates."""
    properties: dict[str, Any] = {}
    dynamic_templates: list[dict[str, Any]] = []
    for field in sorted(registry().values(), key=lambda f: f.name):
        node = properties
        parts = field.name.split(".")
        for part in parts[:-1]:
            holder = node.setdefault(part, {"properties": {}})
            if holder.get("type", "object") != "object":
                raise ValueError(f"{field.name}: a parent is declared as {holder['type']}")
            node = holder.setdefault("properties", {})
        leaf = parts[-1]
        if field.type == "object":
            entry = node.setdefault(leaf, {})
            entry["type"] = "object"
            if field.dynamic:
                dynamic_templates.append({field.name: {
                    "path_match": f"{field.name}.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": field.dynamic, "ignore_above": 1024} if field.dynamic == "keyword"
                    else {"type": field.dynamic},
                }})
        else:
            node[leaf] = _leaf_mapping(field)
    # Anything else a processor adds: strings become keywords, as Beats templates do.
    dynamic_templates.append({"strings_as_keyword": {
        "match_mapping_type": "string",
        "mapping": {"type": "keyword", "ignore_above": 1024},
    }})
    return {
        "_meta": {"beat": "packetbeat", "generated_by": "pktbeat"},
        "date_detection": False,
        "dynamic_templates": dynamic_templates,
        "properties": properties,
    }


def default_query_fields() -> list[str]:
    """Keyword and text fields searched when a query names none (index.query.default_field)."""
    return sorted(f.name for f in registry().values()
                  if f.type in ("keyword", "text", "match_only_text", "wildcard") and f.index)


# -- checking emitted keys -------------------------------------------------------------------------------

def flatten_keys(event: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted keys of an event; lists of objects contribute their members' keys (no index)."""
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten_keys(value, name + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                yield from flatten_keys(item, name + ".")
        else:
            yield name


def lookup(key: str) -> tuple[str, Field | None]:
    """How `key` is mapped: ("mapped"|"dynamic"|"alias"|"unmapped", the field that decides)."""
    fields = registry()
    field = fields.get(key)
    if field is not None:
        if field.type == "alias":
            return "alias", field
        return "mapped", field
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = fields.get(".".join(parts[:cut]))
        if parent is not None and parent.type == "object" and parent.dynamic:
            return "dynamic", parent
    return "unmapped", None


def unmapped(keys: Iterable[str]) -> dict[str, str]:
    """Keys that the template would not map as declared: key -> why."""
    problems: dict[str, str] = {}
    for key in keys:
        state, field = lookup(key)
        if state == "unmapped":
            problems[key] = "not in agent/events/fields.py nor in any protocol's fields.py"
        elif state == "alias":
            assert field is not None
            problems[key] = f"is an alias of {field.alias}; Elasticsearch refuses documents that write to it"
    return problems
