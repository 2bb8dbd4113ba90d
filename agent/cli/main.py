"""The `pktbeat` command: Packetbeat's flags over a typed config and an agent that owns signals.

This module only parses options and turns them into calls; everything it
starts lives in agent.runtime.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli.top import top as top_command
from agent.config.load import AgentConfig, load, load_as_written
from agent.config.perms import check_config_file, exposed_directory, strict_by_default
from agent.config.typed import ConfigError
from agent.runtime.exitcodes import Exit
from agent.version import VERSION

log = logging.getLogger("pktbeat")

# What pktbeat creates under path.data and path.logs (events, spool, state, logs) is its own: files 0600 in
# 0700 directories.  Stricter than Packetbeat's 0027: captured payloads are not for the group either.
UMASK = 0o077
# Packetbeat's -strict.perms flag; main() takes it from anywhere on the command line, as Beats does.
_options = {"strict_perms": True}


app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="pktbeat: Packetbeat-compatible network traffic analyzer with eBPF capture. "
                       "--strict.perms=false (anywhere) accepts a config that other users could write.")
test_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Check the config or the output.")
export_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Print config, template or ILM policy.")
app.add_typer(test_app, name="test")
app.add_typer(export_app, name="export")

ConfigOpt = Annotated[str | None, typer.Option("-c", "--c", "--config", help="Config file (default: ./packetbeat.yml)")]
SettingsOpt = Annotated[list[str] | None, typer.Option("-E", help="Override a setting: -E key=value (repeatable)")]
StderrOpt = Annotated[bool, typer.Option("-e", help="Log to stderr instead of files")]
DebugOpt = Annotated[list[str] | None, typer.Option("-d", help="Debug selectors, e.g. -d http,tcp or -d '*'")]
PathHome = Annotated[str | None, typer.Option("--path.home", help="Home path")]
PathData = Annotated[str | None, typer.Option("--path.data", help="Data path")]
PathLogs = Annotated[str | None, typer.Option("--path.logs", help="Logs path")]
PathConfig = Annotated[str | None, typer.Option("--path.config", help="Config path")]


PATH_ENV = "PKTBEAT_PATH_"  # PKTBEAT_PATH_HOME/CONFIG/DATA/LOGS: the installed layout (/usr/bin/pktbeat sets them)


def _config_file(path: str | None, path_config: str | None = None) -> str:
    """-c FILE (relative to path.config when one is given, as in Beats), else path.config/packetbeat.yml."""
    if path:
        return str(Path(path_config) / path) if path_config and not os.path.isabs(path) else path
    base = Path(path_config) if path_config else Path.cwd()
    return str(base / "packetbeat.yml")


def _locate(config: str | None, settings: list[str] | None, *, path_home: str | None = None,
            path_data: str | None = None, path_logs: str | None = None,
            path_config: str | None = None) -> tuple[str, list[str]]:
    """The config file and the settings over it, in order."""
    # Last wins: the file, the installed layout (as Packetbeat's wrapper passes --path.*), -E, --path.* flags.
    overrides = [f"path.{key}={os.environ[PATH_ENV + key.upper()]}" for key in ("home", "config", "data", "logs")
                 if os.environ.get(PATH_ENV + key.upper())]
    overrides += list(settings or [])
    for key, value in (("path.home", path_home), ("path.data", path_data), ("path.logs", path_logs),
                       ("path.config", path_config)):
        if value:
            overrides.append(f"{key}={value}")
    file = _config_file(config, path_config or os.environ.get(PATH_ENV + "CONFIG"))
    if not os.path.exists(file):
        raise ConfigError("", "config file not found; pass -c FILE", file)
    return file, overrides


def _load(config: str | None, settings: list[str] | None, *, path_home: str | None = None,
          path_data: str | None = None, path_logs: str | None = None,
          path_config: str | None = None, extra: dict[str, Any] | None = None) -> AgentConfig:
    file, overrides = _locate(config, settings, path_home=path_home, path_data=path_data, path_logs=path_logs,
                              path_config=path_config)
    return load(file, overrides, extra, strict_perms=_options["strict_perms"])


def _fail_config(exc: ConfigError) -> None:
    typer.echo(f"pktbeat: config error: {exc}", err=True)
    raise typer.Exit(Exit.CONFIG)


def _selectors(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or []:
        out.extend(s.strip() for s in value.split(",") if s.strip())
    return tuple(out)


@app.command()
def run(
    config: ConfigOpt = None,
    settings: SettingsOpt = None,
    to_stderr: StderrOpt = False,
    debug: DebugOpt = None,
    read_file: Annotated[list[str] | None, typer.Option("-I", help="Read packets from a pcap/pcapng file")] = None,
    topspeed: Annotated[bool, typer.Option("-t", help="With -I: full speed, keep packet timestamps")] = False,
    loops: Annotated[int, typer.Option("-l", help="With -I: replay the file N times")] = 1,
    workers: Annotated[int | None, typer.Option(
        "-w", "--workers", min=0,
        help="Decoding processes (packetbeat.interfaces.workers); 0: one per CPU")] = None,
    dump: Annotated[str | None, typer.Option("--dump", help="Write captured packets to this pcap file")] = None,
    interface: Annotated[list[str] | None, typer.Option("-i", "--interface", help="Capture on this interface")] = None,
    one_at_a_time: Annotated[bool, typer.Option("-O", help="With -I: wait for Enter before each packet")] = False,
    status: Annotated[bool | None, typer.Option("--status/--no-status", help="One-line live status")] = None,
    path_home: PathHome = None,
    path_data: PathData = None,
    path_logs: PathLogs = None,
    path_config: PathConfig = None,
) -> None:
    """Capture and decode traffic (live with eBPF, or from a file with -I)."""
    from agent import logs

    extra: dict[str, Any] = {}
    if interface:
        extra["packetbeat.interfaces.device"] = list(interface)
    if workers is not None:
        extra["packetbeat.interfaces.workers"] = workers
    try:
        cfg = _load(config, settings, path_home=path_home, path_data=path_data, path_logs=path_logs,
                    path_config=path_config, extra=extra)
    except ConfigError as exc:
        _fail_config(exc)
        return
    os.umask(UMASK)
    logs_where = logs.setup(cfg.logging, to_stderr, _selectors(debug), cfg.path.logs)
    logs.announce(cfg.output.name, cfg.output.config, logs_where)
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    for key, directory in (("path.data", cfg.path.data), ("path.logs", cfg.path.logs)):
        problem = exposed_directory(directory)
        if problem:
            log.warning("%s %s", key, problem)
    if read_file:
        from agent.runtime.replay import ReplayOptions
        from agent.runtime.replay_shards import replay_runner

        if one_at_a_time:
            log.warning("-O (one packet at a time) is not supported; replaying normally")
        try:
            runner = replay_runner(cfg, ReplayOptions(list(read_file), topspeed=topspeed, loops=loops))
        except Exception as exc:
            _startup_failure(exc)
            return
        _install_signals(runner.stop)
        raise typer.Exit(runner.run())
    try:
        from agent.runtime.live import LiveOptions, LiveRunner
    except ImportError as exc:
        typer.echo(f"pktbeat: live capture is not available in this build ({exc})", err=True)
        raise typer.Exit(Exit.NO_BPF) from None
    live = LiveRunner(cfg, LiveOptions(dump=dump, status=status))
    raise typer.Exit(live.run())


def _startup_failure(exc: Exception) -> None:
    from agent.publisher.types import OutputError

    if isinstance(exc, OutputError):
        typer.echo(f"pktbeat: output error: {exc}", err=True)
        raise typer.Exit(Exit.OUTPUT)
    if isinstance(exc, ConfigError):
        _fail_config(exc)
    raise exc


def _install_signals(stop: Any) -> None:
    """First SIGINT/SIGTERM stops gracefully; a second one exits at once."""
    state = {"count": 0}

    def handler(signum: int, _frame: Any) -> None:
        state["count"] += 1
        if state["count"] > 1:
            os._exit(Exit.INTERRUPTED)
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@app.command()
def devices() -> None:
    """List network interfaces: type, state, link layer, and whether pktbeat can attach."""
    try:
        from agent.capture.devices import list_devices
    except ImportError as exc:
        typer.echo(f"pktbeat: device listing is not available ({exc})", err=True)
        raise typer.Exit(Exit.NO_BPF) from None
    rows = list_devices()
    typer.echo(f"{'#':>3}  {'name':<16} {'type':<10} {'state':<8} {'link':<4} {'attach':<6} addresses")
    for i, dev in enumerate(rows):
        typer.echo(f"{i:>3}  {dev.name:<16} {dev.kind:<10} {dev.state:<8} {dev.link:<4} "
                   f"{'yes' if dev.attachable else 'no':<6} {', '.join(dev.addresses)}"
                   + (f"  ({dev.reason})" if dev.reason else ""))


@test_app.command("config")
def test_config(config: ConfigOpt = None, settings: SettingsOpt = None, path_config: PathConfig = None) -> None:
    """Exit 0 when the config is valid; otherwise 1, naming the file, key and reason."""
    try:
        cfg = _load(config, settings, path_config=path_config)
    except ConfigError as exc:
        _fail_config(exc)
        return
    for warning in cfg.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo("Config OK")


@test_app.command("output")
def test_output(config: ConfigOpt = None, settings: SettingsOpt = None, to_stderr: StderrOpt = False) -> None:
    """Check the configured output: connectivity, TLS, auth, version, write privilege."""
    try:
        cfg = _load(config, settings)
    except ConfigError as exc:
        _fail_config(exc)
        return
    from agent.outputs import registry

    module = registry.module(cfg.output.name)
    checker = getattr(module, "test_output", None)
    if checker is None:
        typer.echo(f"{cfg.output.name} output: nothing to check")
        return
    ok = checker(cfg.output.config, typer.echo)
    raise typer.Exit(Exit.OK if ok else Exit.OUTPUT)


@app.command()
def setup(
    config: ConfigOpt = None,
    settings: SettingsOpt = None,
    index_management: Annotated[bool, typer.Option("--index-management", help="Template, ILM policy, data stream")]
    = False,
    to_stderr: StderrOpt = False,
) -> None:
    """Install the index template, ILM policy and data stream in Elasticsearch."""
    try:
        cfg = _load(config, settings)
    except ConfigError as exc:
        _fail_config(exc)
        return
    if cfg.output.name != "elasticsearch":
        typer.echo("pktbeat setup needs output.elasticsearch", err=True)
        raise typer.Exit(Exit.CONFIG)
    from agent.outputs import registry

    module = registry.module("elasticsearch")
    ok = module.run_setup(cfg, typer.echo)
    raise typer.Exit(Exit.OK if ok else Exit.OUTPUT)


@export_app.command("config")
def export_config(config: ConfigOpt = None, settings: SettingsOpt = None) -> None:
    """Print the config as YAML: ${VAR} references unexpanded, literal secrets redacted."""
    import yaml

    try:
        file, overrides = _locate(config, settings)
        if _options["strict_perms"]:
            check_config_file(file)
        tree = load_as_written(file, overrides)
    except ConfigError as exc:
        _fail_config(exc)
        return
    typer.echo(yaml.safe_dump(tree, sort_keys=False, default_flow_style=False))


@export_app.command("template")
def export_template(config: ConfigOpt = None, settings: SettingsOpt = None) -> None:
    """Print the index template pktbeat installs."""
    import json

    from agent.outputs import registry

    try:
        cfg = _load(config, settings)
    except ConfigError as exc:
        _fail_config(exc)
        return
    module = registry.module("elasticsearch")
    typer.echo(json.dumps(module.index_template(cfg), indent=2))


app.command("top")(top_command)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"pktbeat version {VERSION} (Packetbeat-compatible; python {sys.version.split()[0]})")


def main() -> None:
    args = _take_strict_perms(sys.argv[1:])
    app(args=args, prog_name="pktbeat")


def _take_strict_perms(args: list[str]) -> list[str]:
    """Remove `--strict.perms[=true|false]` (or Go's single-dash spelling) from `args`, remembering it."""
    strict = strict_by_default()
    rest: list[str] = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if name not in ("--strict.perms", "-strict.perms"):
            rest.append(arg)
            continue
        choice = value.strip().lower() if sep else "true"
        if choice not in ("true", "false", "1", "0"):
            typer.echo(f"pktbeat: {name} takes true or false, got {value!r}", err=True)
            raise SystemExit(Exit.CONFIG)
        strict = choice in ("true", "1")
    _options["strict_perms"] = strict
    return rest


if __name__ == "__main__":
    main()
