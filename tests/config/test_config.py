"""packetbeat.yml loading: dialect, validation, errors that name the key, and the test config command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.config.load import load
from agent.config.typed import ConfigError, parse_duration, parse_size
from tests.helpers.replay import PKTBEAT, ROOT


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "packetbeat.yml"
    path.write_text(text)
    return str(path)


def test_repository_config_is_valid() -> None:
    cfg = load(str(ROOT / "packetbeat.yml"))
    assert cfg.interfaces.device == ("any",)
    assert cfg.flows is not None and cfg.flows.period == 10.0
    assert [e.name for e in cfg.protocols][:3] == ["icmp", "dns", "http"]
    assert cfg.output.name == "file"


def test_dotted_and_nested_keys_are_the_same(tmp_path: Path) -> None:
    a = load(_write(tmp_path, "output.file.path: /tmp/a\noutput.file.filename: x\n"))
    b = load(_write(tmp_path, "output:\n  file:\n    path: /tmp/a\n    filename: x\n"))
    assert a.output == b.output
    assert a.output.config.filename == "x"


def test_env_expansion_with_default_and_yaml_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_PORTS", "[8080, 8081]")
    monkeypatch.delenv("PB_MISSING", raising=False)
    cfg = load(_write(tmp_path, "packetbeat.protocols:\n- type: icmp\n  transaction_timeout: ${PB_MISSING:3s}\n"
                                "name: ${PB_NAME:edge-1}\n"))
    assert cfg.protocols[0].config.transaction_timeout == 3.0
    assert cfg.name == "edge-1"


def test_missing_env_without_default_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PB_NOPE", raising=False)
    with pytest.raises(ConfigError, match="PB_NOPE"):
        load(_write(tmp_path, "name: ${PB_NOPE}\n"))


def test_overrides_with_E(tmp_path: Path) -> None:
    path = _write(tmp_path, "packetbeat.protocols:\n- type: icmp\n")
    cfg = load(path, ["packetbeat.protocols.0.transaction_timeout=2s", "tags=[a, b]", "output.file.path=/x"])
    assert cfg.protocols[0].config.transaction_timeout == 2.0
    assert cfg.tags == ("a", "b")
    assert cfg.output.config.path == "/x"


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(_write(tmp_path, "packetbeat.interfaces:\n  devcie: eth0\n"))
    assert err.value.key == "packetbeat.interfaces.devcie"
    assert "did you mean 'device'" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'flows'"):
        load(_write(tmp_path, "packetbeat.flow:\n  timeout: 30s\n"))


def test_unsupported_packetbeat_key_is_a_warning(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, "packetbeat.npcap.never_install: true\nmax_procs: 2\n"))
    assert any("packetbeat.npcap" in w for w in cfg.warnings)
    assert any("max_procs" in w for w in cfg.warnings)


def test_procs_on_by_default_and_monitored_entries(tmp_path: Path) -> None:
    assert load(None).procs.enabled
    cfg = load(_write(tmp_path, "packetbeat.procs:\n  enabled: true\n  max_proc_read_freq: 10ms\n  monitored:\n"
                                "  - process: mysqld\n    cmdline_grep: /usr/sbin/mysqld\n  - process: nginx\n"))
    assert [(m.process, m.cmdline_grep) for m in cfg.procs.monitored] == [("mysqld", "/usr/sbin/mysqld"),
                                                                           ("nginx", "")]
    assert any("packetbeat.procs.max_proc_read_freq" in w for w in cfg.warnings)
    assert not load(_write(tmp_path, "packetbeat.procs.enabled: false\n")).procs.enabled
    with pytest.raises(ConfigError, match="needs a process name"):
        load(_write(tmp_path, "packetbeat.procs.monitored:\n- cmdline_grep: java\n"))
    with pytest.raises(ConfigError, match="between 1 and 16777216, got 0"):
        load(_write(tmp_path, "packetbeat.procs.max_sockets: 0\n"))


def test_unknown_protocol_type_and_duplicate_port_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown protocol 'htpt'.*did you mean 'http'"):
        load(_write(tmp_path, "packetbeat.protocols:\n- type: htpt\n  ports: [80]\n"))


def _fake_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two TCP protocols and a UDP one that exist only for this test."""
    from agent.protocols import base, registry

    specs = {name: base.ProtocolSpec(name, base.ProtocolConfig, tcp=tcp, udp=udp)  # type: ignore[arg-type]
             for name, tcp, udp in (("faketcp1", object, None), ("faketcp2", object, None),
                                    ("fakeudp", None, object))}
    monkeypatch.setattr(registry, "PROTOCOLS", {**registry.PROTOCOLS, **{n: "x" for n in specs}})
    real = registry.spec
    monkeypatch.setattr(registry, "spec", lambda name: specs[name] if name in specs else real(name))


def test_a_port_claimed_twice_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_specs(monkeypatch)
    text = "packetbeat.protocols:\n- type: faketcp1\n  ports: [8080]\n- type: faketcp2\n  ports: [81, 8080]\n"
    with pytest.raises(ConfigError, match="tcp port 8080 is already claimed by protocol 'faketcp1'") as err:
        load(_write(tmp_path, text))
    assert err.value.key == "packetbeat.protocols.faketcp2.ports"
    # The same port on another transport is fine (Packetbeat keeps separate TCP and UDP maps).
    ok = "packetbeat.protocols:\n- type: faketcp1\n  ports: [53]\n- type: fakeudp\n  ports: [53]\n"
    assert [e.name for e in load(_write(tmp_path, ok)).protocols] == ["faketcp1", "fakeudp"]


def test_bad_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(_write(tmp_path, "packetbeat.flows:\n  timeout: soon\n"))
    assert err.value.key == "packetbeat.flows.timeout"
    with pytest.raises(ConfigError, match=r"timestamp\.precision"):
        load(_write(tmp_path, "timestamp.precision: picosecond\n"))
    with pytest.raises(ConfigError, match="only one output"):
        load(_write(tmp_path, "output.file.path: /a\noutput.console.pretty: true\n"))
    with pytest.raises(ConfigError, match="Kafka output is not implemented"):
        load(_write(tmp_path, "output.kafka.hosts: [a]\n"))


@pytest.mark.parametrize(("written", "mode"), [("0600", "0600"), ("'0640'", "0640"), ("0o600", "0600"),
                                             ("'600'", "0600"), ("0", "0000")])
def test_file_modes_quoted_or_not(tmp_path: Path, written: str, mode: str) -> None:
    """An unquoted 0600 is YAML's integer 384; Beats takes it as the mode 0600, and so do we."""
    config = load(_write(tmp_path, f"output.file.permissions: {written}\nlogging.files.permissions: {written}\n"))
    assert config.output.config.permissions == config.logging.files.permissions == mode


@pytest.mark.parametrize("written", ["0800", "1000", "rw-------", "'0o1777'", "true", "[1]"])
def test_bad_file_modes_name_the_key(tmp_path: Path, written: str) -> None:
    with pytest.raises(ConfigError, match="octal file mode from 0000 to 0777") as err:
        load(_write(tmp_path, f"output.file.permissions: {written}\n"))
    assert err.value.key == "output.file.permissions"


def test_processor_conditions_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown condition 'equal'"):
        load(_write(tmp_path, "processors:\n- drop_event:\n    when.equal.type: flow\n"))
    with pytest.raises(ConfigError, match=r"processors\[0\]\.drop_fieldz: unknown processor.*'drop_fields'"):
        load(_write(tmp_path, "processors:\n- drop_fieldz:\n    fields: [a]\n"))


def test_interfaces_list_form_and_duplicates(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, "packetbeat.interfaces:\n- device: eth0\n- device: wg0\n"))
    assert cfg.interfaces.device == ("eth0", "wg0")
    with pytest.raises(ConfigError, match="listed twice"):
        load(_write(tmp_path, "packetbeat.interfaces:\n- device: eth0\n- device: eth0\n"))


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        load(_write(tmp_path, "a: 1\n  b: [\n"))


def test_durations_and_sizes() -> None:
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("400ms") == 0.4
    assert parse_duration("-1s") == -1.0
    assert parse_duration(5) == 5.0
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("1GB") == 10**9
    with pytest.raises(ConfigError):
        parse_duration("10 parsecs")


@pytest.mark.parametrize(("text", "code", "needle"), [
    ("packetbeat.protocols:\n- type: icmp\n", 0, "Config OK"),
    ("packetbeat.interfaces.snaplen: -5\n", 1, "packetbeat.interfaces.snaplen"),
    ("bogus_key: 1\n", 1, "bogus_key"),
])
def test_test_config_command(tmp_path: Path, text: str, code: int, needle: str) -> None:
    path = _write(tmp_path, text)
    proc = subprocess.run([PKTBEAT, "test", "config", "-c", path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code
    assert needle in proc.stdout + proc.stderr
    if code:
        assert path in proc.stderr  # the file is named


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    proc = subprocess.run([PKTBEAT, "test", "config", "-c", str(tmp_path / "nope.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "not found" in proc.stderr
