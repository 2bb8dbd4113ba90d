"""Building the layers from an AgentConfig: protocol bindings, event builder, output pipeline."""

from __future__ import annotations

import gc
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent import metrics
from agent.capture.tunnel import TunnelSettings
from agent.config.load import AgentConfig
from agent.events.builder import AgentIdentity, EventBuilder, EventSettings
from agent.events.direction import DirectionClassifier, local_addresses, parse_networks
from agent.outputs import registry as output_registry
from agent.processors import build_processors
from agent.protocols import registry as protocol_registry
from agent.protocols.base import ProtocolConfig, SessionContext, Transaction
from agent.publisher.factory import create_pipeline
from agent.publisher.pipeline import Pipeline
from agent.publisher.types import Output, OutputError
from agent.transport.dispatcher import Dispatcher
from agent.transport.session import DatagramBinding, HandOvers, StreamBinding, StreamSession
from agent.transport.tcp import TcpLimits
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.procs.table import ProcessTable

log = logging.getLogger("pktbeat")

Emit = Callable[[Transaction], None]

# Young objects allowed before a collection.  Parsed messages, transactions and events are freed
# by reference counting; at the default (700) the collector ran every few events and cost ~6%
# of replay time while finding nothing.  A collection's work is the young objects still alive
# (queued events, open connections), not those allocated: 50,000 rather than 5,000 cut 2-4k
# instructions per transaction (callgrind).  Cycles are still collected, just less often.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Call once the agent is set up: start-up objects stop being re-scanned, collections get rarer."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def tunnel_settings(config: AgentConfig) -> TunnelSettings:
    """What replay decapsulates (`packetbeat.tunnels`); live capture passes the same to the kernel."""
    tunnels = config.tunnels
    return TunnelSettings(tunnels.enabled, tunnels.vxlan_ports, tunnels.geneve_ports)


def agent_identity(config: AgentConfig) -> AgentIdentity:
    """The agent's name and persistent id (kept in path.data/meta.json, as Beats do)."""
    meta = Path(config.path.data) / "meta.json"
    agent_id = None
    try:
        agent_id = json.loads(meta.read_text())["uuid"]
    except (OSError, ValueError, KeyError, TypeError):
        try:
            meta.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            agent_id = str(uuid.uuid4())
            tmp = meta.with_name(f".meta.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # path.data is private
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"uuid": agent_id}))
            os.replace(tmp, meta)
        except OSError as exc:
            log.warning("cannot persist the agent id in %s: %s", meta, exc.strerror)
    return AgentIdentity.create(config.name, agent_id)


def event_builder(config: AgentConfig, identity: AgentIdentity) -> EventBuilder:
    settings: dict[str, EventSettings] = {}
    for entry in config.protocols:
        pc = entry.config
        settings[entry.name] = _settings(pc.tags, pc.fields, pc.fields_under_root, pc.keep_null, pc.index,
                                         pc.processors, f"packetbeat.protocols.{entry.name}.processors")
    if config.flows is not None:
        fc = config.flows
        settings["flow"] = _settings(fc.tags, fc.fields, fc.fields_under_root, fc.keep_null, fc.index,
                                     fc.processors, "packetbeat.flows.processors")
    direction = DirectionClassifier(local_addresses(), parse_networks(config.interfaces.internal_networks))
    return EventBuilder(
        identity, direction, tags=config.tags, fields=config.fields, fields_under_root=config.fields_under_root,
        processors=tuple(build_processors(config.processors, "processors")),
        timestamp_digits=config.timestamp_digits, ignore_outgoing=config.ignore_outgoing,
        protocol_settings=settings, id_namespace=event_settings_digest(config),
    )


# The settings that change what events hold: a run with other ones gets other event ids, so its events are
# stored beside the first run's instead of being refused as its duplicates.  Capture, output, queue and
# logging settings (and the worker count) do not change events, so they leave the ids alone.
_EVENT_SHAPING_KEYS = ("name", "tags", "fields", "fields_under_root", "processors", "timestamp")
_EVENT_SHAPING_PACKETBEAT_KEYS = ("protocols", "flows", "tunnels", "tcp", "ignore_outgoing", "procs")


def event_settings_digest(config: AgentConfig) -> bytes:
    tree = config.raw
    packetbeat = _mapping(tree.get("packetbeat"))
    interfaces = _mapping(packetbeat.get("interfaces"))
    shaping = {
        "top": {k: tree[k] for k in _EVENT_SHAPING_KEYS if k in tree},
        "packetbeat": {k: packetbeat[k] for k in _EVENT_SHAPING_PACKETBEAT_KEYS if k in packetbeat},
        "internal_networks": interfaces.get("internal_networks"),
    }
    return json.dumps(shaping, sort_keys=True, default=str).encode()


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _settings(tags: tuple[str, ...], fields: dict[str, object], under_root: bool, keep_null: bool, index: str,
              processors: list[object], where: str) -> EventSettings:
    return EventSettings(tags=tags, fields=dict(fields), fields_under_root=under_root, keep_null=keep_null,
                         index=index, processors=tuple(build_processors(processors, where)))


def process_table(config: AgentConfig, prefix: str = "procs") -> ProcessTable:
    """The bounded socket and process tables of packetbeat.procs (one per worker, one for flows)."""
    from agent.procs.table import PROCS_COUNTERS, Monitored, ProcessTable

    procs = config.procs
    monitored = tuple(Monitored(m.process, m.cmdline_grep) for m in procs.monitored)
    return ProcessTable(procs.max_sockets, procs.max_processes, monitored,
                        counters=metrics.register(prefix, PROCS_COUNTERS))


def make_output(config: AgentConfig) -> Output:
    module = output_registry.module(config.output.name)
    try:
        output: Output = module.create(config.output.config, config)
    except OSError as exc:  # e.g. an output directory pktbeat may not write: an output error, exit 8
        where = f" {exc.filename}" if exc.filename else ""
        raise OutputError(f"output.{config.output.name}: cannot use{where}: {exc.strerror or exc}") from None
    return output


def make_pipeline(config: AgentConfig, output: Output, live: bool = False) -> Pipeline:
    """Replay blocks when the queue is full; live capture never waits (spool, then counted drops)."""
    return create_pipeline(config, output, live=live)


def dispatcher(config: AgentConfig, emit: Emit) -> Dispatcher:
    """Port maps from the enabled protocols (the kernel's port map is derived from the same)."""
    tcp_ports: dict[int, StreamBinding] = {}
    stream_protocols: dict[str, StreamBinding] = {}  # what a connection can be handed over to, by name
    udp_ports: dict[int, DatagramBinding] = {}
    icmp: DatagramBinding | None = None
    hand_overs = HandOvers()
    for entry in config.protocols:
        spec = protocol_registry.spec(entry.name)
        pc = entry.config
        counters = metrics.register(entry.name, spec.counters)
        if spec.tcp is not None:
            binding = StreamBinding(entry.name, int(pc.transaction_timeout * 1e9),
                                    _session_factory(entry.name, pc, spec.tcp, emit, counters, hand_overs))
            stream_protocols[entry.name] = binding
            for port in protocol_ports(pc, "tcp"):
                tcp_ports[port] = binding
        if spec.udp is not None:
            ports = protocol_ports(pc, "udp")
            if ports:
                handler = spec.udp(pc, emit, counters)
                for port in ports:
                    udp_ports[port] = DatagramBinding(entry.name, handler)
        if spec.icmp is not None:
            icmp = DatagramBinding(entry.name, spec.icmp(pc, emit, counters))
    decapsulate = None
    if config.tunnels.enabled:
        from agent.capture.decode import LINKTYPE_RAW, FrameDecoder

        decapsulate = FrameDecoder(LINKTYPE_RAW, tunnels=tunnel_settings(config)).reassembled
    return Dispatcher(tcp_ports, udp_ports, icmp, tcp_limits=tcp_limits(config), decapsulate=decapsulate,
                      hand_overs=hand_overs, stream_protocols=stream_protocols)


def tcp_limits(config: AgentConfig) -> TcpLimits:
    t = config.tcp
    return TcpLimits(max_connections=t.max_connections, max_half_open=t.max_half_open, max_buffered=t.max_buffered,
                     memory_budget=t.memory_budget, reorder_segments=t.reorder_segments,
                     reorder_bytes=t.reorder_bytes)


def plaintext_bindings(config: AgentConfig, emit: Emit) -> dict[int, StreamBinding]:
    """Server port -> protocol for TLS plaintext: packetbeat.tls_plaintext.ports, then each protocol's own ports
    (TLS started inside the protocol: PostgreSQL, MySQL, or a server that only speaks TLS on its port)."""
    by_name: dict[str, StreamBinding] = {}
    out: dict[int, StreamBinding] = {}
    for entry in config.protocols:
        spec = protocol_registry.spec(entry.name)
        if spec.tcp is None or entry.name == "tls":
            continue
        pc = entry.config
        binding = StreamBinding(entry.name, int(pc.transaction_timeout * 1e9),
                                _session_factory(entry.name, pc, spec.tcp, emit,
                                                 metrics.register(entry.name, spec.counters)))
        by_name[entry.name] = binding
        for port in protocol_ports(pc, "tcp"):
            out[port] = binding
    for port, name in config.plaintext_ports.items():
        if name in by_name:
            out[port] = by_name[name]
    return out


def plaintext_server_ports(config: AgentConfig) -> tuple[int, ...]:
    """The ports the kernel sends TLS plaintext for (the same as `plaintext_bindings`)."""
    ports = set(config.plaintext_ports)
    for entry in config.protocols:
        if entry.name != "tls" and protocol_registry.spec(entry.name).tcp is not None:
            ports.update(protocol_ports(entry.config, "tcp"))
    return tuple(sorted(ports))


def protocol_ports(pc: ProtocolConfig, transport: str) -> tuple[int, ...]:
    narrowed = getattr(pc, "ports_for", None)
    if callable(narrowed):
        return tuple(narrowed(transport))
    return pc.ports


def _session_factory(name: str, pc: ProtocolConfig, factory: Callable[[SessionContext], StreamSession], emit: Emit,
                     counters: metrics.Counters,
                     hand_overs: HandOvers | None = None) -> Callable[[ConnectionInfo], StreamSession]:
    def new_session(conn: ConnectionInfo) -> StreamSession:
        return factory(SessionContext(name, pc, conn, emit, counters, hand_overs))

    return new_session


def kernel_port_map(config: AgentConfig) -> dict[tuple[int, int], int]:
    """(ip protocol, port) -> protocol index, for the BPF port map; ICMP is matched separately."""
    names = list(protocol_registry.PROTOCOLS)
    out: dict[tuple[int, int], int] = {}
    for entry in config.protocols:
        spec = protocol_registry.spec(entry.name)
        index = names.index(entry.name) + 1
        if spec.tcp is not None:
            for port in protocol_ports(entry.config, "tcp"):
                out[(6, port)] = index
        if spec.udp is not None:
            for port in protocol_ports(entry.config, "udp"):
                out[(17, port)] = index
    return out


def icmp_enabled(config: AgentConfig) -> bool:
    return any(protocol_registry.spec(e.name).icmp is not None for e in config.protocols)
