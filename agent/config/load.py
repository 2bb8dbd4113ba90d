"""Loading packetbeat.yml into one frozen `AgentConfig`, validated end to end.

Every key is checked: an unknown key is an error naming it (with the nearest
known key), a Packetbeat key pktbeat does not implement is a warning naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import yamlload
from agent.config.model import (
    FlowsConfig,
    HttpEndpointConfig,
    InterfacesConfig,
    LoggingConfig,
    PathConfig,
    ProcsConfig,
    QueueConfig,
    SetupConfig,
    TcpConfig,
    TlsPlaintextConfig,
    TunnelsConfig,
)
from agent.config.perms import check_config_file
from agent.config.typed import ConfigError, build, convert, opt, out_of_bounds, parse_duration, suggest
from agent.events.direction import parse_networks
from agent.events.timefmt import PRECISIONS
from agent.outputs import registry as output_registry
from agent.protocols import registry as protocol_registry
from agent.protocols.base import ProtocolConfig

log = logging.getLogger("pktbeat.config")

# Packetbeat/libbeat top-level keys pktbeat accepts but does not act on.
UNSUPPORTED_TOP: dict[str, str] = {
    "max_procs": "pktbeat sizes itself with packetbeat.interfaces.workers",
    "cloud": "Elastic Cloud ids are not supported; set output.elasticsearch.hosts",
    "monitoring": "X-Pack monitoring is not supported; use the http endpoint",
    "seccomp": "not applicable",
    "keystore": "the Beats keystore is not supported; use ${VAR} environment variables",
    "instrumentation": "APM instrumentation is not supported",
    "features": "not applicable",
    "migration": "not applicable",
    "monitoring_endpoint": "not applicable",
    "gc_percent": "not applicable",
}
UNSUPPORTED_PACKETBEAT: dict[str, str] = {
    "npcap": "Windows only",
    "overwrite_pipelines": "ingest pipelines are not uploaded by pktbeat",
}
KNOWN_PACKETBEAT = ("interfaces", "flows", "protocols", "procs", "ignore_outgoing", "shutdown_timeout", "tcp",
                    "tunnels", "tls_plaintext")
KNOWN_TOP = ("packetbeat", "name", "tags", "fields", "fields_under_root", "timestamp", "queue", "processors",
             "output", "path", "logging", "setup", "http")


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    config: ProtocolConfig


@dataclass(frozen=True)
class OutputEntry:
    name: str
    config: Any


@dataclass(frozen=True)
class AgentConfig:
    file: str | None
    interfaces: InterfacesConfig
    flows: FlowsConfig | None
    protocols: tuple[ProtocolEntry, ...]
    output: OutputEntry
    queue: QueueConfig
    logging: LoggingConfig
    path: PathConfig
    setup: SetupConfig
    http: HttpEndpointConfig
    tcp: TcpConfig = field(default_factory=TcpConfig)
    tunnels: TunnelsConfig = field(default_factory=TunnelsConfig)
    processors: list[Any] = field(default_factory=list)
    name: str = ""
    tags: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)
    fields_under_root: bool = False
    timestamp_digits: int = 3
    ignore_outgoing: bool = False
    shutdown_timeout: float = 0.0
    procs: ProcsConfig = field(default_factory=ProcsConfig)
    tls_plaintext: TlsPlaintextConfig = field(default_factory=TlsPlaintextConfig)
    # Server port -> protocol decoding TLS plaintext there (packetbeat.tls_plaintext.ports, checked)
    plaintext_ports: dict[int, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def protocol(self, name: str) -> ProtocolConfig | None:
        for entry in self.protocols:
            if entry.name == name:
                return entry.config
        return None


@dataclass(frozen=True)
class _General:
    name: str = opt("")
    tags: tuple[str, ...] = opt(())
    fields: dict[str, Any] = opt({})
    fields_under_root: bool = opt(False)
    processors: list[Any] = opt([])


def load(path: str | None, overrides: list[str] | None = None,
         extra: Mapping[str, Any] | None = None, *, strict_perms: bool = True) -> AgentConfig:
    """Read, merge and validate a config.  `path=None` means built-in defaults only.

    `strict_perms` refuses a file that another user could have written (perms.py).
    """
    if path and strict_perms:
        check_config_file(path)
    tree: dict[str, Any] = yamlload.read_file(path) if path else {}
    try:
        if extra:
            yamlload.merge(tree, yamlload.normalize(dict(extra)))
        yamlload.apply_overrides(tree, list(overrides or []))
        return from_tree(tree, path)
    except ConfigError as exc:
        raise exc.in_file(path) from None


def load_as_written(path: str | None, overrides: list[str] | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The merged settings with `${VAR}` references unexpanded and literal secrets redacted (export config)."""
    tree: dict[str, Any] = yamlload.read_file(path, expand=False) if path else {}
    try:
        if extra:
            yamlload.merge(tree, yamlload.normalize(dict(extra)))
        yamlload.apply_overrides(tree, list(overrides or []), expand=False)
    except ConfigError as exc:
        raise exc.in_file(path) from None
    from agent.config.secrets import redact  # only export config needs it

    redacted: dict[str, Any] = redact(tree)
    return redacted


def from_tree(tree: dict[str, Any], path: str | None = None) -> AgentConfig:
    warnings: list[str] = []
    warn = warnings.append
    for key in tree:
        if key in UNSUPPORTED_TOP:
            warn(f"{key}: {UNSUPPORTED_TOP[key]}")
        elif key not in KNOWN_TOP:
            raise ConfigError(key, "unknown setting" + suggest(key, KNOWN_TOP))
    pb = tree.get("packetbeat") or {}
    if not isinstance(pb, dict):
        raise ConfigError("packetbeat", "expected a mapping")
    for key in pb:
        if key in UNSUPPORTED_PACKETBEAT:
            warn(f"packetbeat.{key}: {UNSUPPORTED_PACKETBEAT[key]}")
        elif key not in KNOWN_PACKETBEAT:
            raise ConfigError(f"packetbeat.{key}", "unknown setting" + suggest(key, KNOWN_PACKETBEAT))

    interfaces = _interfaces(pb.get("interfaces"), warn)
    flows = None
    if "flows" in pb:
        flows = build(FlowsConfig, pb.get("flows") or {}, "packetbeat.flows")
        if not flows.enabled:
            flows = None
    protocols = _protocols(pb.get("protocols"), warn)
    procs = build(ProcsConfig, pb.get("procs"), "packetbeat.procs", warn=warn, unsupported=ProcsConfig.UNSUPPORTED)
    tunnels = _tunnels(pb.get("tunnels"))
    tls_plaintext = build(TlsPlaintextConfig, pb.get("tls_plaintext"), "packetbeat.tls_plaintext")
    plaintext_ports = _plaintext_ports(tls_plaintext, protocols, warn)
    general = build(_General, {k: tree[k] for k in ("name", "tags", "fields", "fields_under_root", "processors")
                               if k in tree}, "")
    precision = "millisecond"
    if "timestamp" in tree:
        ts = tree["timestamp"]
        if not isinstance(ts, dict) or set(ts) - {"precision"}:
            raise ConfigError("timestamp", "only timestamp.precision is a setting")
        precision = str(ts.get("precision", precision))
        if precision not in PRECISIONS:
            raise ConfigError("timestamp.precision", f"must be one of {', '.join(PRECISIONS)}")
    queue = build(QueueConfig, tree.get("queue"), "queue")
    logging_cfg = build(LoggingConfig, tree.get("logging"), "logging")
    paths = build(PathConfig, tree.get("path"), "path").resolved(path)
    setup = build(SetupConfig, tree.get("setup"), "setup", warn=warn, unsupported=SetupConfig.UNSUPPORTED)
    http = build(HttpEndpointConfig, tree.get("http"), "http")
    tcp = build(TcpConfig, pb.get("tcp"), "packetbeat.tcp")
    output = _output(tree.get("output"), paths)
    ignore_outgoing = bool(convert(pb.get("ignore_outgoing", False), bool, "", "packetbeat.ignore_outgoing"))
    shutdown_timeout = parse_duration(pb.get("shutdown_timeout", 0), "packetbeat.shutdown_timeout")
    problem = out_of_bounds(shutdown_timeout, "duration", (0.0, 3600.0))
    if problem:
        raise ConfigError("packetbeat.shutdown_timeout", problem)
    from agent.processors import build_processors

    build_processors(general.processors, "processors")  # validated now, built again by the agent
    for entry in protocols:
        build_processors(entry.config.processors, f"packetbeat.protocols.{entry.name}.processors")
    if flows is not None:
        build_processors(flows.processors, "packetbeat.flows.processors")
    return AgentConfig(
        file=path, interfaces=interfaces, flows=flows, protocols=tuple(protocols), output=output, queue=queue,
        logging=logging_cfg, path=paths, setup=setup, http=http, tcp=tcp, tunnels=tunnels,
        processors=general.processors,
        name=general.name, tags=general.tags, fields=general.fields, fields_under_root=general.fields_under_root,
        timestamp_digits=PRECISIONS[precision], ignore_outgoing=ignore_outgoing,
        shutdown_timeout=shutdown_timeout, procs=procs, tls_plaintext=tls_plaintext,
        plaintext_ports=plaintext_ports, warnings=tuple(warnings), raw=tree,
    )


def _plaintext_ports(config: TlsPlaintextConfig, protocols: list[ProtocolEntry], warn: Any) -> dict[int, str]:
    """packetbeat.tls_plaintext.ports as server port -> protocol; a port claimed twice is refused."""
    key = "packetbeat.tls_plaintext.ports"
    if not isinstance(config.ports, dict):
        raise ConfigError(key, "expected a mapping of protocol to ports, such as {http: [443]}")
    enabled = {entry.name: entry for entry in protocols}
    wire_tls = set(enabled["tls"].config.ports) if "tls" in enabled else set()
    out: dict[int, str] = {}
    for name, raw_ports in config.ports.items():
        where = f"{key}.{name}"
        if name not in protocol_registry.PROTOCOLS:
            raise ConfigError(where, "unknown protocol" + suggest(str(name), tuple(protocol_registry.PROTOCOLS)))
        if name == "tls" or protocol_registry.spec(name).tcp is None:
            raise ConfigError(where, "not a protocol over TCP that TLS can carry")
        ports = raw_ports if isinstance(raw_ports, list) else [raw_ports]
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(where, f"{port!r} is not a port (1-65535)")
            if port in out:
                raise ConfigError(where, f"port {port} is already decoded by {out[port]}")
            out[port] = name
        if config.enabled and name not in enabled:
            warn(f"{where}: the {name} protocol is not enabled: these ports are not decoded")
        missing = sorted(set(ports) - wire_tls)
        if config.enabled and name in enabled and missing:
            warn(f"{where}: port(s) {', '.join(map(str, missing))} are not TLS ports (packetbeat.protocols "
                 "tls.ports): their events will lack the tls.* handshake fields")
    return {port: name for port, name in out.items() if name in enabled}


def _tunnels(raw: Any) -> TunnelsConfig:
    tunnels = build(TunnelsConfig, raw, "packetbeat.tunnels")
    both = set(tunnels.vxlan_ports) & set(tunnels.geneve_ports)
    if both:
        raise ConfigError("packetbeat.tunnels", f"port {min(both)} is both a VXLAN and a GENEVE port")
    return tunnels


def _interfaces(raw: Any, warn: Any) -> InterfacesConfig:
    if raw is None:
        return InterfacesConfig()
    sections = raw if isinstance(raw, list) else [raw]
    devices: list[str] = []
    merged: dict[str, Any] = {}
    for i, section in enumerate(sections):
        where = f"packetbeat.interfaces[{i}]" if isinstance(raw, list) else "packetbeat.interfaces"
        if not isinstance(section, dict):
            raise ConfigError(where, "expected a mapping")
        section = dict(section)
        device = section.pop("device", None)
        if device is not None:
            for name in device if isinstance(device, list) else [device]:
                name = str(name)
                if name in devices:
                    raise ConfigError(f"{where}.device", f"device '{name}' is listed twice")
                devices.append(name)
        for key, value in section.items():
            if key in merged and merged[key] != value:
                warn(f"{where}.{key}: differs between interface sections; the first value is used")
                continue
            merged.setdefault(key, value)
    config = build(InterfacesConfig, merged, "packetbeat.interfaces", warn=warn,
                   unsupported=InterfacesConfig.UNSUPPORTED)
    try:
        parse_networks(config.internal_networks)
    except ValueError as exc:
        raise ConfigError("packetbeat.interfaces.internal_networks", str(exc)) from None
    if config.bpf_filter:
        warn("packetbeat.interfaces.bpf_filter: ignored; the kernel filter is derived from the protocol ports")
    if config.type in ("pcap", "af_packet"):
        pass  # Packetbeat sniffer types: pktbeat always captures with eBPF at TC
    if config.fanout_group is not None:
        warn("packetbeat.interfaces.fanout_group: not needed; the kernel spreads flows over workers")
    return InterfacesConfig(**{**config.__dict__, "device": tuple(devices) or ("any",)})


def _protocols(raw: Any, warn: Any) -> list[ProtocolEntry]:
    if raw is None:
        return []
    items: list[tuple[str, dict[str, Any]]] = []
    if isinstance(raw, dict):  # the legacy map form, keyed by protocol
        for name, options in raw.items():
            items.append((f"packetbeat.protocols.{name}", {"type": name, **(options or {})}))
    elif isinstance(raw, list):
        for i, options in enumerate(raw):
            if not isinstance(options, dict):
                raise ConfigError(f"packetbeat.protocols[{i}]", "expected a mapping with a type")
            items.append((f"packetbeat.protocols[{i}]", dict(options)))
    else:
        raise ConfigError("packetbeat.protocols", "expected a list of {type: ...} mappings")
    entries: list[ProtocolEntry] = []
    seen: set[str] = set()
    claimed: dict[tuple[str, int], str] = {}
    for where, options in items:
        name = options.pop("type", None)
        if not name:
            raise ConfigError(where, "every protocol needs a type")
        name = str(name)
        if name in protocol_registry.NOT_YET_SUPPORTED:
            warn(f"{where}: protocol '{name}' is not decoded by pktbeat yet; its traffic is ignored")
            continue
        if name not in protocol_registry.PROTOCOLS:
            known = list(protocol_registry.PROTOCOLS) + sorted(protocol_registry.NOT_YET_SUPPORTED)
            raise ConfigError(f"{where}.type", f"unknown protocol '{name}'" + suggest(name, known))
        if name in seen:
            raise ConfigError(f"{where}.type", f"protocol '{name}' is configured twice")
        seen.add(name)
        try:
            spec = protocol_registry.spec(name)
        except ModuleNotFoundError:
            warn(f"{where}: protocol '{name}' is not available in this build; its traffic is ignored")
            continue
        where = f"packetbeat.protocols.{name}"
        config = build(spec.config_class, options, where, warn=warn, unsupported=spec.config_class.UNSUPPORTED)
        if not config.enabled:
            continue
        for transport in ("tcp", "udp"):
            if transport not in spec.transports:
                continue
            for port in _transport_ports(config, transport):
                owner = claimed.get((transport, port))
                if owner is not None:
                    raise ConfigError(f"{where}.ports",
                                      f"{transport} port {port} is already claimed by protocol '{owner}'")
                claimed[(transport, port)] = name
        entries.append(ProtocolEntry(name, config))
    return entries


def _transport_ports(config: ProtocolConfig, transport: str) -> tuple[int, ...]:
    """The ports a protocol listens on for one transport (a protocol may narrow it)."""
    narrowed = getattr(config, "ports_for", None)
    if callable(narrowed):
        return tuple(narrowed(transport))
    return config.ports


def _output(raw: Any, paths: PathConfig) -> OutputEntry:
    if raw is None or raw == {}:
        module = output_registry.module("file")
        return OutputEntry("file", build(module.CONFIG_CLASS, {"path": paths.data}, "output.file"))
    if not isinstance(raw, dict):
        raise ConfigError("output", "expected a mapping with one output")
    enabled: list[tuple[str, dict[str, Any]]] = []
    for name, section in raw.items():
        if name in output_registry.NOT_SUPPORTED:
            if isinstance(section, dict) and section.get("enabled", True) is False:
                continue
            raise ConfigError(f"output.{name}", output_registry.NOT_SUPPORTED[name])
        if name not in output_registry.OUTPUTS:
            raise ConfigError(f"output.{name}", "unknown output" + suggest(name, output_registry.OUTPUTS))
        section = dict(section or {})
        if section.pop("enabled", True) in (False, "false"):
            continue
        enabled.append((name, section))
    if not enabled:
        raise ConfigError("output", "no output is enabled")
    if len(enabled) > 1:
        names = ", ".join(n for n, _ in enabled)
        raise ConfigError("output", f"only one output can be enabled, found {names}")
    name, section = enabled[0]
    try:
        module = output_registry.module(name)
    except ModuleNotFoundError:
        raise ConfigError(f"output.{name}", "this output is not available in this build") from None
    if name == "file":
        section.setdefault("path", paths.data)
    config = build(module.CONFIG_CLASS, section, f"output.{name}",
                   unsupported=getattr(module.CONFIG_CLASS, "UNSUPPORTED", None),
                   warn=lambda m: log.warning("%s", m))
    return OutputEntry(name, config)
