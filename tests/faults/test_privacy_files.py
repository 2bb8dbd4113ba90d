"""Captured data and secrets stay private (issue 15, item 6; acceptance d).

After a replay and a live run with the file output, a disk queue and file
logging, `find path.data path.logs -perm /o+r` finds nothing, even from a
shell whose umask is 022: every file there is 0600 and every directory 0700.
`export config` prints `${VAR}` references as written and never a secret.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.secrets import REDACTED, redact
from tests.helpers.cli import pktbeat
from tests.helpers.live import live_agent, live_available
from tests.helpers.netns import veth_pair
from tests.helpers.replay import CORPUS, write_config

SECRETS = ("s3cr3t-from-env", "hunter2", "literal-api-key", "Bearer abc.def", "pem-passphrase", "url-password",
           "default-secret", "sasl-pass", "override-secret")


def _exposed(*directories: Path) -> list[str]:
    """What `find DIR... -perm /o+r` lists: files and directories other users may read."""
    proc = subprocess.run(["find", *map(str, directories), "-perm", "/o+r"], capture_output=True, text=True,
                          check=True)
    return proc.stdout.splitlines()


def _not_private(*directories: Path) -> list[str]:
    """Files that are not 0600 and directories that are not 0700 (meta.json, state, spool, events, logs)."""
    proc = subprocess.run(["find", *map(str, directories), "(", "-type", "f", "!", "-perm", "600", ")", "-o",
                           "(", "-type", "d", "!", "-perm", "700", ")"], capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def _private_settings(directory: Path) -> dict[str, Any]:
    data = directory / "data"
    return {"path.data": str(data), "path.logs": str(directory / "logs"),
            "output.file": {"path": str(data / "events"), "filename": "packetbeat"},
            "queue.disk": {"max_size": "10MB"}, "logging.level": "debug"}


def test_export_config_prints_references_and_never_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "packetbeat.yml"
    path.write_text("""
output.elasticsearch:
  hosts: ["https://elastic:url-password@es.example:9200", "https://es2.example:9200"]
  username: elastic
  password: ${ES_PWD}
  api_key: literal-api-key
  headers:
    Authorization: Bearer abc.def
  ssl:
    certificate: /etc/pki/client.crt
    key: /etc/pki/client.key
    key_passphrase: pem-passphrase
output.redis.enabled: false
output.redis.password: ${REDIS_PWD:default-secret}
output.redis.sasl.password: sasl-pass
name: ${HOSTNAME:edge-1}
tags: [web]
secret_hunter: hunter2
""")
    path.chmod(0o600)
    override = "output.elasticsearch.proxy_password=override-secret"
    outcome = pktbeat(["export", "config", "-c", str(path), "-E", override],
                      env={"ES_PWD": "s3cr3t-from-env", "REDIS_PWD": "s3cr3t-from-env"})
    assert outcome.code == 0, outcome.stderr
    for secret in SECRETS:
        assert secret not in outcome.stdout, secret
    printed = yaml.safe_load(outcome.stdout)
    es = printed["output"]["elasticsearch"]
    assert es["password"] == "${ES_PWD}" and es["username"] == "elastic"
    assert es["hosts"] == [f"https://elastic:{REDACTED}@es.example:9200", "https://es2.example:9200"]
    assert es["api_key"] == es["headers"]["Authorization"] == es["ssl"]["key"] == REDACTED
    assert es["ssl"]["certificate"] == "/etc/pki/client.crt"
    assert printed["output"]["redis"]["password"] == f"${{REDIS_PWD:{REDACTED}}}"
    assert printed["name"] == "${HOSTNAME:edge-1}" and printed["tags"] == ["web"]


def test_redaction_keeps_what_is_not_a_secret() -> None:
    tree = {"output": {"elasticsearch": {"hosts": ["http://localhost:9200"], "password": "",
                                         "ssl": {"verification_mode": "none"}, "index": "pb-%{+yyyy}"}},
            "processors": [{"add_fields": {"fields": {"api_token": "tok", "team": "blue"}}}],
            "setup": {"template": {"settings": {"index.number_of_shards": 1}}}}
    out = redact(tree)
    assert out["output"]["elasticsearch"] == tree["output"]["elasticsearch"]
    assert out["processors"][0]["add_fields"]["fields"] == {"api_token": REDACTED, "team": "blue"}
    assert out["setup"] == tree["setup"]


def test_replay_leaves_nothing_readable_by_other_users(tmp_path: Path) -> None:
    settings = _private_settings(tmp_path)
    config = write_config(tmp_path, [{"type": "http", "ports": [80]}], settings)
    config.chmod(0o600)
    outcome = pktbeat(["run", "-c", str(config), "-I", str(CORPUS / "http_minitwit.pcap"), "-t"], umask=0o022)
    assert outcome.code == 0, outcome.stderr
    data, logs = Path(settings["path.data"]), Path(settings["path.logs"])
    assert list((data / "events").glob("packetbeat-*.ndjson")), "no events written"
    assert (data / "diskqueue").is_dir() and _log_bytes(logs) > 0
    assert _exposed(data, logs) == []
    assert (data / "meta.json").is_file() and _not_private(data, logs) == []


def _log_bytes(logs: Path) -> int:
    return sum(f.stat().st_size for f in logs.glob("pktbeat*"))


@pytest.mark.skipif(live_available() is not None, reason=str(live_available()))
def test_live_capture_leaves_nothing_readable_by_other_users() -> None:
    with veth_pair("pbpv") as pair:
        pair.b.popen(["python3", "-m", "http.server", "-b", pair.b_ip, "80"], cwd="/")
        with live_agent(pair.a, [pair.a_if], [{"type": "http", "ports": [80]}], log_to_files=True,
                        settings={"queue.disk": {"max_size": "10MB"}, "logging.level": "debug"}) as agent:
            directory = agent.directory
            deadline = time.monotonic() + 10
            while pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}/"], check=False).returncode:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
            for _ in range(3):
                pair.a.run(["curl", "-s", "-o", "/dev/null", f"http://{pair.b_ip}/"])
            time.sleep(0.5)
            assert agent.stop() == 0, agent.log()[-3000:]
            data, logs = directory / "data", directory / "logs"
            assert agent.events("http"), agent.log()[-3000:]
            assert (data / "diskqueue").is_dir() and _log_bytes(logs) > 0
            assert _exposed(data, logs) == []
            assert (data / "meta.json").is_file() and _not_private(data, logs) == []


def test_a_data_directory_open_to_others_is_warned_about(tmp_path: Path) -> None:
    settings = _private_settings(tmp_path)
    data = Path(settings["path.data"])
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # made by someone else, before pktbeat
    config = write_config(tmp_path, [{"type": "http", "ports": [80]}], settings)
    config.chmod(0o600)
    outcome = pktbeat(["run", "-e", "-c", str(config), "-I", str(CORPUS / "http_minitwit.pcap"), "-t"])
    assert outcome.code == 0, outcome.stderr
    assert f"path.data {data} is open to other users (drwxr-xr-x)" in outcome.stderr
    assert "path.logs" not in outcome.stderr  # created by pktbeat: private
