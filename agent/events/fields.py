"""The one field registry: every field pktbeat emits, with its Elasticsearch type.

The index template's mappings are generated from this table, and a test
replays the corpus to check that every key pktbeat emits is mapped here.
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

_X509 = """
alternative_names keyword
issuer.common_name keyword
issuer.country keyword
issuer.distinguished_name keyword
issuer.locality keyword
issuer.organization keyword
issuer.organizational_unit keyword
issuer.province keyword
issuer.state_or_province keyword
not_after date
not_before date
public_key_algorithm keyword
public_key_curve keyword
public_key_exponent long noindex
public_key_size long
serial_number keyword
signature_algorithm keyword
subject.common_name keyword
subject.country keyword
subject.distinguished_name keyword
subject.locality keyword
subject.organization keyword
subject.organizational_unit keyword
subject.province keyword
subject.state_or_province keyword
version keyword
version_number keyword
"""

_TLS_SIDE = """
certificate keyword
certificate_chain keyword
hash.md5 keyword
hash.sha1 keyword
hash.sha256 keyword
issuer keyword
not_after date
not_before date
subject keyword
"""

_TLS = """
tls.cipher keyword
tls.curve keyword
tls.established boolean
tls.next_protocol keyword
tls.resumed boolean
tls.version keyword
tls.version_protocol keyword
tls.client.ja3 keyword
tls.client.server_name keyword
tls.client.supported_ciphers keyword
tls.server.ja3s keyword
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

_HTTP = """
http.version keyword
http.request.method keyword
http.request.bytes long
http.request.body.bytes long
http.request.body.content wildcard +text
http.request.mime_type keyword
http.request.referrer keyword
http.request.id keyword
http.request.headers object dynamic=keyword
http.request.params alias=url.query
http.response.status_code long
http.response.status_phrase keyword
http.response.bytes long
http.response.body.bytes long
http.response.body.content wildcard +text
http.response.mime_type keyword
http.response.headers object dynamic=keyword
http.response.code alias=http.response.status_code
http.response.phrase alias=http.response.status_phrase
"""

_DNS = """
dns.id keyword
dns.op_code keyword
dns.header_flags keyword
dns.response_code keyword
dns.type keyword
dns.resolved_ip ip
dns.question.name keyword
dns.question.type keyword
dns.question.class keyword
dns.question.registered_domain keyword
dns.question.subdomain keyword
dns.question.top_level_domain keyword
dns.question.etld_plus_one keyword
dns.flags.authoritative boolean
dns.flags.recursion_available boolean
dns.flags.recursion_desired boolean
dns.flags.authentic_data boolean
dns.flags.checking_disabled boolean
dns.flags.truncated_response boolean
dns.answers object
dns.answers_count long
dns.authorities object
dns.authorities_count long
dns.additionals object
dns.additionals_count long
dns.opt.version keyword
dns.opt.do boolean
dns.opt.ext_rcode keyword
dns.opt.udp_size long
"""

# One resource record in dns.answers / authorities / additionals.  Beyond name/type/class/ttl/data,
# Packetbeat adds per-type members (MX, SOA, SRV, DNSSEC) that its template leaves to dynamic mapping;
# they are mapped here as what Packetbeat emits: numbers as long, stringified numbers as keyword.
_DNS_RR = """
name keyword
type keyword
class keyword
ttl long
data keyword
preference long
rname keyword
serial long
refresh long
retry long
expire long
minimum long
priority long
weight long
port long
flags keyword
protocol keyword
algorithm keyword
key_tag keyword
digest_type keyword
type_covered keyword
labels keyword
original_ttl keyword
expiration keyword
inception keyword
signer_name keyword
type_bits keyword
hash keyword
iterations keyword
salt keyword
"""

_TLS_DETAILED = """
tls.detailed.version keyword
tls.detailed.resumption_method keyword
tls.detailed.client_certificate_requested boolean
tls.detailed.ocsp_response keyword
tls.detailed.alert_types keyword
tls.detailed.client_hello.version keyword
tls.detailed.client_hello.random keyword
tls.detailed.client_hello.session_id keyword
tls.detailed.client_hello.supported_compression_methods keyword
tls.detailed.client_hello.extensions.server_name_indication keyword
tls.detailed.client_hello.extensions.application_layer_protocol_negotiation keyword
tls.detailed.client_hello.extensions.session_ticket keyword
tls.detailed.client_hello.extensions.supported_versions keyword
tls.detailed.client_hello.extensions.supported_groups keyword
tls.detailed.client_hello.extensions.signature_algorithms keyword
tls.detailed.client_hello.extensions.ec_points_formats keyword
tls.detailed.client_hello.extensions.status_request.type keyword
tls.detailed.client_hello.extensions.status_request.responder_id_list_length short
tls.detailed.client_hello.extensions.status_request.request_extensions short
tls.detailed.client_hello.extensions._unparsed_ keyword
tls.detailed.server_hello.version keyword
tls.detailed.server_hello.random keyword
tls.detailed.server_hello.selected_compression_method keyword
tls.detailed.server_hello.session_id keyword
tls.detailed.server_hello.extensions.application_layer_protocol_negotiation keyword
tls.detailed.server_hello.extensions.session_ticket keyword
tls.detailed.server_hello.extensions.supported_versions keyword
tls.detailed.server_hello.extensions.ec_points_formats keyword
tls.detailed.server_hello.extensions.status_request.response boolean
tls.detailed.server_hello.extensions._unparsed_ keyword
tls.detailed.server_certificate_chain object
tls.detailed.client_certificate_chain object
"""

_ICMP = """
icmp.version keyword
icmp.request.message keyword
icmp.request.type long
icmp.request.code long
icmp.response.message keyword
icmp.response.type long
icmp.response.code long
"""

_MYSQL_PGSQL_REDIS = """
mysql.affected_rows long
mysql.insert_id keyword
mysql.num_fields keyword
mysql.num_rows keyword
mysql.query keyword
mysql.error_code long
mysql.error_message keyword
pgsql.error_code long
pgsql.error_message keyword
pgsql.error_severity keyword
pgsql.num_fields keyword
pgsql.num_rows keyword
redis.return_value keyword
redis.error keyword
"""

_MONGODB = """
mongodb.error keyword
mongodb.opcodeName keyword
mongodb.fullCollectionName keyword
mongodb.numberToSkip long
mongodb.numberToReturn long
mongodb.numberReturned long
mongodb.startingFrom keyword
mongodb.query keyword
mongodb.returnFieldsSelector keyword
mongodb.selector keyword
mongodb.update keyword
mongodb.cursorId keyword
"""

_MEMCACHE = """
memcache.protocol_type keyword
memcache.request.line keyword
memcache.request.command keyword
memcache.request.type keyword
memcache.request.opcode keyword
memcache.request.opcode_value long
memcache.request.opaque long
memcache.request.vbucket long
memcache.request.keys keyword
memcache.request.count_values long
memcache.request.values keyword
memcache.request.bytes long
memcache.request.delta long
memcache.request.initial long
memcache.request.verbosity long
memcache.request.raw_args keyword
memcache.request.source_class long
memcache.request.dest_class long
memcache.request.automove keyword
memcache.request.flags long
memcache.request.exptime long
memcache.request.sleep_us long
memcache.request.noreply boolean
memcache.request.quiet boolean
memcache.request.cas_unique long
memcache.response.command keyword
memcache.response.type keyword
memcache.response.error_msg keyword
memcache.response.opcode keyword
memcache.response.opcode_value long
memcache.response.opaque long
memcache.response.status keyword
memcache.response.status_code long
memcache.response.keys keyword
memcache.response.count_values long
memcache.response.values keyword
memcache.response.bytes long
memcache.response.flags long
memcache.response.value long
memcache.response.cas_unique long
memcache.response.version keyword
memcache.response.stats object
memcache.response.stats.name keyword
memcache.response.stats.value keyword
"""

_ENDPOINTS = ("source", "destination", "client", "server")


def _prefixed(prefix: str, table: str) -> str:
    return "\n".join(f"{prefix}.{line}" for line in table.strip().splitlines())


def _tables() -> Iterator[tuple[str, str]]:
    yield "ecs", _BASE
    yield "ecs", _HOST
    yield "ecs", _EVENT
    for side in _ENDPOINTS:
        yield "ecs", _prefixed(side, _ENDPOINT)
    for side in ("client", "server"):
        yield "packetbeat", _prefixed(side, _ENDPOINT_PROCESS)
    for where in ("process", "source.process", "destination.process"):
        yield "ecs", _prefixed(where, _PROCESS)
    yield "ecs", "container.id keyword"
    yield "ecs", _NETWORK
    yield "ecs", _URL_USER
    yield "ecs", _TLS
    for side in ("client", "server"):
        yield "ecs", _prefixed(f"tls.{side}", _TLS_SIDE)
        yield "ecs", _prefixed(f"tls.{side}.x509", _X509)
    yield "packetbeat", _PACKETBEAT_COMMON
    yield "pktbeat", _PKTBEAT_TUNNEL
    yield "pktbeat", _PKTBEAT_PAYLOAD
    yield "http", _HTTP
    yield "dns", _DNS
    for section in ("answers", "authorities", "additionals"):
        yield "dns", _prefixed(f"dns.{section}", _DNS_RR)
    yield "tls", _TLS_DETAILED
    for chain in ("server_certificate_chain", "client_certificate_chain"):
        yield "tls", _prefixed(f"tls.detailed.{chain}", _X509)
    yield "icmp", _ICMP
    yield "sql", _MYSQL_PGSQL_REDIS
    yield "mongodb", _MONGODB
    yield "memcache", _MEMCACHE


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
            problems[key] = "not in agent/events/fields.py"
        elif state == "alias":
            assert field is not None
            problems[key] = f"is an alias of {field.alias}; Elasticsearch refuses documents that write to it"
    return problems
