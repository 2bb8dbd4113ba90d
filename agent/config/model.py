"""Typed config sections shared by the whole agent (protocol and output sections live with them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.capture.tunnel import GENEVE_PORTS, MAX_TUNNEL_PORTS, VXLAN_PORTS
from agent.config.typed import DAY, GIB, TIB, opt

CAPTURE_TYPES = ("ebpf", "pcap", "af_packet", "autodetect")
MAX_WORKERS = 16  # PB_MAX_WORKERS in the kernel program
MIB = 1024**2


def _capture_type(value: str) -> str | None:
    if value not in CAPTURE_TYPES:
        return f"must be one of {', '.join(CAPTURE_TYPES)}"
    return None


@dataclass(frozen=True)
class InterfacesConfig:
    """`packetbeat.interfaces`: where to capture.  Capture is always eBPF/TC here."""

    device: tuple[str, ...] = opt(("any",), doc="a name, a list of names, a devices index, or any")
    type: str = opt("ebpf", check=_capture_type)
    snaplen: int = opt(65535, bounds=(64, 262144))
    buffer_size_mb: int = opt(24, bounds=(1, 1024), doc="ring buffer per worker, rounded to a power of 2")
    with_vlans: bool = opt(False)
    bpf_filter: str = opt("")
    internal_networks: tuple[str, ...] = opt(())
    auto_promisc_mode: bool = opt(False)
    metrics_interval: float = opt(5.0, kind="duration", bounds=(1.0, DAY))
    poll_default_route: float = opt(0.0, kind="duration", bounds=(0.0, DAY))
    fanout_group: int | None = opt(None, bounds=(0, 65535))
    file: str = opt("")
    # pktbeat's own: decoding processes the kernel spreads flows over (0: one per CPU).
    workers: int = opt(0, bounds=(0, MAX_WORKERS))
    # pktbeat's own: interfaces never attached, even with device: any (glob patterns).
    ignore_devices: tuple[str, ...] = opt(())

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "npcap": "Windows only; ignored",
    }


@dataclass(frozen=True)
class FlowsConfig:
    """`packetbeat.flows`: present means enabled unless `enabled: false`."""

    enabled: bool = opt(True)
    timeout: float = opt(30.0, kind="duration", bounds=(1.0, DAY))
    period: float = opt(10.0, kind="duration", bounds=(-1.0, DAY),
                        check=lambda v: None if v == -1 or v >= 1 else "must be -1s or at least 1s")
    enable_delta_flow_reports: bool = opt(False)
    allow_mismatched_eth: bool = opt(False)
    keep_null: bool = opt(False)
    index: str = opt("")
    fields: dict[str, Any] = opt({})
    fields_under_root: bool = opt(False)
    tags: tuple[str, ...] = opt(())
    processors: list[Any] = opt([])
    # pktbeat's own: entries of the kernel's flow LRU map.
    max_flows: int = opt(65536, bounds=(1, 1 << 24))


def _tunnel_ports(ports: tuple[int, ...]) -> str | None:
    if len(ports) > MAX_TUNNEL_PORTS:
        return f"at most {MAX_TUNNEL_PORTS} ports"
    for port in ports:
        if not 0 < port < 65536:
            return f"port {port} is outside 1-65535"
    if len(set(ports)) != len(ports):
        return "a port is listed twice"
    return None


@dataclass(frozen=True)
class TunnelsConfig:
    """`packetbeat.tunnels` (pktbeat's own): looking inside GRE, ERSPAN, VXLAN, GENEVE, IP-in-IP and PPPoE."""

    enabled: bool = opt(True)
    vxlan_ports: tuple[int, ...] = opt(VXLAN_PORTS, check=_tunnel_ports, doc="UDP destination ports of VXLAN")
    geneve_ports: tuple[int, ...] = opt(GENEVE_PORTS, check=_tunnel_ports, doc="UDP destination ports of GENEVE")


@dataclass(frozen=True)
class MonitoredProcessConfig:
    """One `packetbeat.procs.monitored` entry: processes whose command line contains `cmdline_grep`
    (or, without it, `process`) are named `process` in events."""

    process: str = opt("")
    cmdline_grep: str = opt("")

    def __post_init__(self) -> None:
        if not self.process:
            raise ValueError("every monitored entry needs a process name")


@dataclass(frozen=True)
class ProcsConfig:
    """`packetbeat.procs`: process attribution.  On by default in pktbeat (off in Packetbeat)."""

    enabled: bool = opt(True)
    monitored: tuple[MonitoredProcessConfig, ...] = opt(())
    # pktbeat's own: sockets the kernel and each worker remember, processes each worker describes.
    max_sockets: int = opt(65536, bounds=(1, 1 << 24))
    max_processes: int = opt(4096, bounds=(1, 1 << 20))
    # pktbeat's own: where the running kernel's BTF is (a BTFHub file for kernels built without it).
    btf_file: str = opt("/sys/kernel/btf/vmlinux")

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "max_proc_read_freq": "not needed; the kernel reports each socket's process as it happens",
        "refresh_pids_freq": "not needed; the kernel reports each socket's process as it happens",
    }


def _library_paths(paths: tuple[str, ...]) -> str | None:
    for path in paths:
        if not str(path).startswith("/"):
            return f"{path!r} is not an absolute path"
    return None


@dataclass(frozen=True)
class TlsPlaintextConfig:
    """`packetbeat.tls_plaintext` (pktbeat's own): HTTPS and other TLS traffic in plaintext, from OpenSSL uprobes.

    `ports` says which protocol decodes the plaintext of a TLS connection by its
    server port ({protocol: [ports]}); a port no entry lists is decoded by the
    protocol whose own `ports` hold it (TLS started inside the protocol, as
    PostgreSQL and MySQL do).
    """

    enabled: bool = opt(False)
    ports: dict[str, Any] = opt({"http": [443, 8443]}, doc="protocol -> server ports of TLS connections it decodes")
    libraries: tuple[str, ...] = opt((), check=_library_paths,
                                     doc="more library files to probe besides every libssl.so.3")
    max_connections: int = opt(16384, bounds=(1, 1 << 20), doc="TLS connections the kernel and each worker follow")
    rescan_interval: float = opt(30.0, kind="duration", bounds=(0.0, DAY),
                                 check=lambda v: None if v == 0 or v >= 1 else "must be 0 or at least 1s",
                                 doc="how often every process's maps are searched for libraries (0: at start only)")


@dataclass(frozen=True)
class FlushConfig:
    min_events: int = opt(1600, bounds=(0, 1 << 20))
    timeout: float = opt(10.0, kind="duration", bounds=(0.0, 3600.0))


@dataclass(frozen=True)
class MemQueueConfig:
    events: int = opt(3200, bounds=(1, 1 << 20))
    flush: FlushConfig = field(default_factory=FlushConfig)


@dataclass(frozen=True)
class DiskQueueConfig:
    path: str = opt("")
    # Packetbeat's minimums: a queue of at least 10MB, segments of at least 1MB.
    max_size: int = opt(10 * GIB, kind="size", bounds=(10 * 1000**2, 16 * TIB))
    segment_size: int | None = opt(None, kind="size", bounds=(1000**2, 4 * GIB))
    read_ahead: int = opt(512, bounds=(1, 1 << 16))
    write_ahead: int = opt(2048, bounds=(1, 1 << 16))
    retry_interval: float = opt(1.0, kind="duration", bounds=(0.001, 3600.0))
    max_retry_interval: float = opt(30.0, kind="duration", bounds=(0.001, DAY))

    def __post_init__(self) -> None:
        if self.segment_size is not None and self.max_size < 2 * self.segment_size:
            raise ValueError("max_size must be at least twice segment_size")
        if self.max_retry_interval < self.retry_interval:
            raise ValueError("max_retry_interval must not be less than retry_interval")


@dataclass(frozen=True)
class QueueConfig:
    mem: MemQueueConfig = field(default_factory=MemQueueConfig)
    disk: DiskQueueConfig | None = opt(None)


@dataclass(frozen=True)
class LogFilesConfig:
    path: str = opt("")
    name: str = opt("pktbeat")
    rotateeverybytes: int = opt(10 * 1024 * 1024, kind="size", bounds=(1024, TIB))
    keepfiles: int = opt(7, bounds=(2, 1024))
    permissions: str = opt("0600", kind="mode")
    interval: float = opt(0.0, kind="duration", bounds=(0.0, 366 * DAY))
    rotateonstartup: bool = opt(True)


@dataclass(frozen=True)
class LogMetricsConfig:
    enabled: bool = opt(True)
    period: float = opt(30.0, kind="duration", bounds=(1.0, DAY))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = opt("info", check=lambda v: None if v in ("debug", "info", "warning", "warn", "error", "critical")
                     else "must be debug, info, warning or error")
    selectors: tuple[str, ...] = opt(())
    to_stderr: bool = opt(False)
    to_files: bool = opt(True)
    to_syslog: bool = opt(False)
    json: bool = opt(False)
    files: LogFilesConfig = field(default_factory=LogFilesConfig)
    metrics: LogMetricsConfig = field(default_factory=LogMetricsConfig)


@dataclass(frozen=True)
class PathConfig:
    home: str = opt("")
    config: str = opt("")
    data: str = opt("")
    logs: str = opt("")

    def resolved(self, config_file: str | None) -> PathConfig:
        home = self.home or os.getcwd()
        cfg = self.config or (os.path.dirname(os.path.abspath(config_file)) if config_file else home)
        data = self.data or os.path.join(home, "data")
        logs = self.logs or os.path.join(home, "logs")
        return PathConfig(home, cfg, data, logs)


@dataclass(frozen=True)
class TemplateConfig:
    enabled: bool = opt(True)
    name: str = opt("")
    pattern: str = opt("")
    overwrite: bool = opt(False)
    settings: dict[str, Any] = opt({})
    fields: str = opt("")
    append_fields: list[Any] = opt([])
    json: dict[str, Any] = opt({})


@dataclass(frozen=True)
class IlmConfig:
    enabled: bool = opt(True)
    policy_name: str = opt("")
    policy_file: str = opt("")
    check_exists: bool = opt(True)
    overwrite: bool = opt(False)


@dataclass(frozen=True)
class SetupConfig:
    template: TemplateConfig = field(default_factory=TemplateConfig)
    ilm: IlmConfig = field(default_factory=IlmConfig)

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "dashboards": "Kibana dashboards are not loaded by pktbeat",
        "kibana": "Kibana dashboards are not loaded by pktbeat",
        "dsl": "data stream lifecycle (serverless) is not supported; ILM is used",
    }


@dataclass(frozen=True)
class HttpEndpointConfig:
    """The monitoring endpoint (`http.*`), serving /stats as JSON."""

    enabled: bool = opt(False)
    host: str = opt("localhost")
    port: int = opt(5066, bounds=(1, 65535))


@dataclass(frozen=True)
class TcpConfig:
    """`packetbeat.tcp`, pktbeat's own: the bounds of each worker's TCP state (see agent/transport)."""

    max_connections: int = opt(100_000, bounds=(64, 10_000_000), doc="connections that carried payload")
    max_half_open: int = opt(20_000, bounds=(64, 10_000_000), doc="connections without payload yet (SYN floods)")
    max_buffered: int = opt(32 * MIB, kind="size", bounds=(MIB, 64 * GIB),
                            doc="bytes held for unfinished messages in reordering buffers and parsers")
    memory_budget: int = opt(96 * MIB, kind="size", bounds=(16 * MIB, TIB),
                             doc="estimated TCP state of a worker; the state idle longest is shed first")
    reorder_segments: int = opt(32, bounds=(1, 4096), doc="segments held per direction behind a hole")
    reorder_bytes: int = opt(512 * 1024, kind="size", bounds=(16 * 1024, 64 * MIB),
                             doc="bytes held per direction behind a hole")
