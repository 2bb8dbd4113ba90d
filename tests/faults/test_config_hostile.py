"""Hostile and broken configs (issue 15, item 7): one line naming the file and the key, exit 1, bounded cost.

Each case ran for a minute, reached gigabytes or printed a thousand-line
traceback before; the pktbeat under test here gets 1.5 GB of address space
and 60 s, so a regression fails instead of taking the machine down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.load import load
from agent.config.typed import ConfigError
from agent.config.yamlload import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_VALUES
from tests.helpers.cli import pktbeat
from tests.helpers.replay import CORPUS

BOMB = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
               for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def _config(tmp_path: Path, text: str | bytes, name: str = "packetbeat.yml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("name", "text", "key", "reason"), [
    ("bomb", BOMB, "f[", f"more than {MAX_VALUES} values"),
    ("bad-utf8", b"packetbeat.protocols:\n- type: http\n  ports: [80]\nname: \"edge-\xff\xfe\"\n", "name:",
     "not valid UTF-8 at line 4"),
    ("deep", "x: " + "[" * 5000 + "]" * 5000 + "\n", "x[0]", f"nested deeper than {MAX_DEPTH} levels"),
    ("deep-mapping", "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 80)), "a.k1.k2",
     f"nested deeper than {MAX_DEPTH} levels"),
    ("one-line-flow", "x: " + "[" * (MAX_CONFIG_BYTES - 10) + "\n", "x[0]", "nested deeper"),
    ("self-alias", "name: &a [1, *a]\n", "name[1]", "alias *a is used inside the value it names"),
    ("bad-date", "name: 2024-02-30\n", "", "invalid YAML value"),
    ("too-large", "name: x\n" + "#" * MAX_CONFIG_BYTES + "\n", "", f"larger than {MAX_CONFIG_BYTES} bytes"),
])
def test_hostile_config_file_is_one_line_exit_1(tmp_path: Path, name: str, text: str | bytes, key: str,
                                                 reason: str) -> None:
    path = _config(tmp_path, text)
    line = pktbeat(["test", "config", "-c", str(path)]).one_line_error(1, str(path), reason)
    assert line.startswith(f"pktbeat: config error: {path}: {key}"), line


def test_dev_null_is_an_empty_config_and_accepted() -> None:
    assert pktbeat(["test", "config", "-c", "/dev/null"]).code == 0


def test_dev_zero_is_refused_by_permissions_then_by_size() -> None:
    pktbeat(["test", "config", "-c", "/dev/zero"]).one_line_error(1, "/dev/zero", "writable by other users")
    pktbeat(["test", "config", "-c", "/dev/zero", "--strict.perms=false"]).one_line_error(
        1, "/dev/zero", f"larger than {MAX_CONFIG_BYTES} bytes")


@pytest.mark.parametrize(("setting", "needles"), [
    ("name=&a [*a]", ["-E: name[0]", "alias *a"]),
    ("fields=" + "[" * 200 + "]" * 200, ["-E: fields[0]", "nested deeper"]),
    ("fields." + ".".join(["k"] * 100) + "=1", ["-E: fields.k.k", "nested deeper"]),
    ("tags=" + BOMB.splitlines()[0].split(": ", 1)[1], []),  # one anchored list is fine: a tag list
])
def test_hostile_E_settings(tmp_path: Path, setting: str, needles: list[str]) -> None:
    path = _config(tmp_path, "packetbeat.protocols:\n- type: http\n  ports: [80]\n")
    outcome = pktbeat(["test", "config", "-c", str(path), "-E", setting])
    if not needles:
        assert outcome.code == 0, outcome.stderr
        return
    outcome.one_line_error(1, *needles)


@pytest.mark.parametrize(("setting", "key", "allowed"), [
    ("packetbeat.protocols.0.transaction_timeout=-10s", "packetbeat.protocols.http.transaction_timeout",
     "between 100ms and 24h, got -10s"),
    ("http.port=70000", "http.port", "between 1 and 65535, got 70000"),
    ("packetbeat.interfaces.buffer_size_mb=1000000", "packetbeat.interfaces.buffer_size_mb",
     "between 1 and 1024, got 1000000"),
    ("queue.disk.max_size=1KB", "queue.disk.max_size", "between 10MB and 16TiB, got 1KB"),
])
def test_out_of_range_values_give_the_range(tmp_path: Path, setting: str, key: str, allowed: str) -> None:
    path = _config(tmp_path, "packetbeat.protocols:\n- type: http\n  ports: [80]\n")
    pktbeat(["test", "config", "-c", str(path), "-E", setting]).one_line_error(1, f"{key}: must be {allowed}")


@pytest.mark.parametrize(("text", "key", "reason"), [
    ("packetbeat.interfaces.snaplen: 10", "packetbeat.interfaces.snaplen", "between 64 and 262144"),
    ("packetbeat.interfaces.workers: 64", "packetbeat.interfaces.workers", "between 0 and 16"),
    ("packetbeat.flows: {period: 0s}", "packetbeat.flows.period", "-1s or at least 1s"),
    ("packetbeat.flows: {max_flows: 0}", "packetbeat.flows.max_flows", "between 1 and 16777216"),
    ("packetbeat.shutdown_timeout: 2h", "packetbeat.shutdown_timeout", "between 0s and 1h"),
    ("packetbeat.tcp.max_half_open: 0", "packetbeat.tcp.max_half_open", "between 64 and 10000000"),
    ("packetbeat.tcp.max_buffered: 1KB", "packetbeat.tcp.max_buffered", "between 1MiB and 64GiB"),
    ("packetbeat.tcp.memory_budget: .inf", "packetbeat.tcp.memory_budget", "expected a size"),
    ("queue.mem.events: 0", "queue.mem.events", "between 1 and 1048576"),
    ("queue.disk: {max_size: 10MB, segment_size: 8MB}", "queue.disk", "at least twice segment_size"),
    ("queue.disk: {retry_interval: 1m, max_retry_interval: 10s}", "queue.disk", "not be less than retry_interval"),
    ("logging.files.keepfiles: 1", "logging.files.keepfiles", "between 2 and 1024"),
    ("output.redis: {hosts: [localhost], port: 0}", "output.redis.port", "between 1 and 65535"),
    ("packetbeat.protocols: [{type: mysql, ports: [3306], max_rows: -2}]", "packetbeat.protocols.mysql.max_rows",
     "between 0 and 2147483647"),
    ("packetbeat.protocols: [{type: http, ports: [80], transaction_timeout: 99999999999h}]",
     "packetbeat.protocols.http.transaction_timeout", "between 100ms and 24h"),
])
def test_every_number_has_a_range(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(str(_config(tmp_path, text + "\n")))
    assert err.value.key == key and reason in err.value.reason, str(err.value)


def test_numbers_inside_their_range_are_kept(tmp_path: Path) -> None:
    cfg = load(str(_config(tmp_path, "packetbeat.tcp: {max_half_open: 1000, max_buffered: 8MiB}\n"
                                     "queue.disk: {max_size: 10MB, segment_size: 1MB}\n"
                                     "packetbeat.protocols: [{type: mongodb, ports: [27017], max_docs: -1}]\n")))
    assert cfg.tcp.max_half_open == 1000 and cfg.tcp.max_buffered == 8 << 20
    assert cfg.queue.disk is not None and cfg.queue.disk.max_size == 10_000_000


# -- strict.perms -----------------------------------------------------------------------------------------------

@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="pktbeat-perms-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(("mode", "owner", "refused"), [
    (0o600, 0, None),
    (0o644, 0, None),
    (0o666, 0, "writable by other users (-rw-rw-rw-)"),
    (0o620, 0, "writable by other users (-rw--w----)"),
    (0o644, 65534, "owned by uid 65534, not by the user running pktbeat (uid 0) or root"),
])
def test_strict_perms_as_packetbeat(shared_dir: Path, mode: int, owner: int, refused: str | None) -> None:
    path = _config(shared_dir, "name: edge\n")
    path.chmod(mode)
    os.chown(path, owner, -1)
    outcome = pktbeat(["test", "config", "-c", str(path)])
    if refused is None:
        assert outcome.code == 0, outcome.stderr
        return
    outcome.one_line_error(1, str(path), refused, "--strict.perms=false")
    for args, env in ((["--strict.perms=false"], {}), (["-strict.perms=false"], {}),
                      ([], {"BEAT_STRICT_PERMS": "false"})):
        assert pktbeat(["test", "config", "-c", str(path), *args], env=env).code == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_root_owned_config_is_accepted_for_an_unprivileged_user(shared_dir: Path) -> None:
    path = _config(shared_dir, "name: edge\n")
    path.chmod(0o644)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    assert pktbeat(["test", "config", "-c", str(path)], prefix=nobody).code == 0
    os.chown(path, 12345, -1)
    pktbeat(["test", "config", "-c", str(path)], prefix=nobody).one_line_error(1, "(uid 65534) or root")


def test_bad_strict_perms_value_is_one_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "name: edge\n")
    pktbeat(["test", "config", "-c", str(path), "--strict.perms=maybe"]).one_line_error(1, "true or false")


# -- an output directory pktbeat may not write ----------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_unwritable_output_directory_is_an_output_error(shared_dir: Path) -> None:
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o500)
    home = shared_dir / "home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    path = _config(shared_dir, f"packetbeat.protocols: [{{type: http, ports: [80]}}]\npath.home: {home}\n"
                               f"output.file.path: {locked}\n")
    path.chmod(0o644)
    outcome = pktbeat(["run", "-e", "-c", str(path), "-I", str(CORPUS / "http_minitwit.pcap"), "-t"],
                      prefix=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    outcome.one_line_error(8, "output error: output.file", str(locked), "Permission denied")
    assert subprocess.run(["find", str(home), "-name", "*.ndjson"], capture_output=True, text=True).stdout == ""
