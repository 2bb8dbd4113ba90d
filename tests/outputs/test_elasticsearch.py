"""The Elasticsearch output against the stand-in (8.15 and 9.x), or against the cluster at ES_URL.

Tests that inject faults skip when ES_URL is set; everything else runs
unchanged against a real cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import elasticsearch
import pytest

from agent.events import fields
from agent.outputs.elasticsearch import run_setup
from agent.outputs.elasticsearch import test_output as check_output
from agent.outputs.elasticsearch.output import ElasticsearchOutput
from agent.publisher.pipeline import Pipeline
from agent.publisher.types import EncodedEvent, Outcome
from tests.es_standin.harness import StandinProcess
from tests.outputs.es_target import Target, events_json, real_target, standin_target

VERSIONS = ("8.15.3", "9.1.2")


@pytest.fixture(scope="module")
def standins() -> Iterator[dict[str, StandinProcess]]:
    if real_target() is not None:
        yield {}
        return
    procs = {v: StandinProcess(v) for v in VERSIONS}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.fixture(params=VERSIONS)
def target(request: pytest.FixtureRequest, standins: dict[str, StandinProcess]) -> Iterator[Target]:
    real = real_target()
    if real is not None:
        if request.param != VERSIONS[0]:
            pytest.skip("one run against the real cluster is enough")
        yield real
        real.cleanup()
        return
    yield from standin_target(standins[request.param])


@pytest.fixture
def target8(standins: dict[str, StandinProcess]) -> Iterator[Target]:
    real = real_target()
    if real is not None:
        yield real
        real.cleanup()
        return
    yield from standin_target(standins[VERSIONS[0]])


def encoded(datas: list[bytes], index: str | None = None) -> list[EncodedEvent]:
    return [EncodedEvent(d, hashlib.blake2b(d, digest_size=15).hexdigest(), index, "icmp") for d in datas]


def setup_target(target: Target, tmp_path: Path) -> list[str]:
    lines: list[str] = []
    assert run_setup(target.agent_config(str(tmp_path)), lines.append), "\n".join(lines)
    return lines


# -- setup and the template ---------------------------------------------------------------------------

def test_setup_installs_policy_template_and_data_stream(target: Target, tmp_path: Path) -> None:
    lines = setup_target(target, tmp_path)
    assert any("ILM policy" in line and "installed" in line for line in lines)
    assert any(line.startswith(f"Index template {target.name} installed") for line in lines)
    assert f"Data stream {target.name} created" in lines
    es = target.client()
    try:
        template = es.indices.get_index_template(name=target.name)["index_templates"][0]["index_template"]
        assert template["index_patterns"] == [target.name]
        assert "data_stream" in template
        settings = template["template"]["settings"]["index"]
        assert settings["lifecycle"]["name"] == target.name
        mapped = _mapped_paths(template["template"]["mappings"]["properties"])
        for name, field in fields.registry().items():
            if field.type != "object":
                assert name in mapped, f"{name} missing from the installed template"
        policy = es.ilm.get_lifecycle(name=target.name)[target.name]["policy"]
        assert policy["phases"]["hot"]["actions"]["rollover"]["max_age"] == "30d"
        stream = es.indices.get_data_stream(name=target.name)["data_streams"][0]
        assert stream["name"] == target.name
    finally:
        es.close()
    again: list[str] = []
    assert run_setup(target.agent_config(str(tmp_path)), again.append)
    assert any("exists already" in line for line in again)


def _mapped_paths(props: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, spec in props.items():
        assert isinstance(spec, dict)
        out.add(prefix + name)
        if "properties" in spec:
            out |= _mapped_paths(spec["properties"], prefix + name + ".")
    return out


def test_custom_index_without_template_name_is_refused(target8: Target, tmp_path: Path) -> None:
    from agent.config.load import from_tree

    cfg = from_tree({"output": {"elasticsearch": {"hosts": [target8.url], "index": "custom-%{[agent.version]}"}},
                     "path": {"data": str(tmp_path)}})
    lines: list[str] = []
    assert not run_setup(cfg, lines.append)
    assert any("setup.template.name and setup.template.pattern have to be set" in line for line in lines)


# -- delivery against 8.x and 9.x (acceptance d) -----------------------------------------------------------

def test_delivers_to_8x_and_9x_with_the_right_compatibility_header(target: Target, tmp_path: Path) -> None:
    setup_target(target, tmp_path)
    out = ElasticsearchOutput(target.es_config())
    try:
        batch = encoded(events_json(250))
        assert out.publish(batch) == [Outcome.ACKED] * 250
        assert out.server is not None
    finally:
        out.close()
    assert target.count() == 250
    assert target.count(query={"term": {"event.sequence": 17}}) == 1
    if target.standin is not None:
        stats = target.standin.stats()
        assert stats.get("media_type_refused", 0) == 0
        assert stats["item_201"] == 250


def test_the_8x_standin_refuses_a_plain_9x_client_as_elasticsearch_does(standins: dict[str, StandinProcess]) -> None:
    if not standins:
        pytest.skip("checks the stand-in itself")
    es = elasticsearch.Elasticsearch(standins["8.15.3"].url)
    with pytest.raises(elasticsearch.BadRequestError) as info:
        es.info()
    assert info.value.error == "media_type_header_exception"
    assert "Accept version must be either version 8 or 7, but found 9" in json.dumps(info.value.body)
    es9 = elasticsearch.Elasticsearch(standins["9.1.2"].url)
    assert es9.info()["version"]["number"] == "9.1.2"


def test_duplicate_create_counts_as_delivered(target: Target, tmp_path: Path) -> None:
    setup_target(target, tmp_path)
    out = ElasticsearchOutput(target.es_config())
    batch = encoded(events_json(40))
    try:
        assert out.publish(batch) == [Outcome.ACKED] * 40
        assert out.publish(batch) == [Outcome.ACKED] * 40
        assert out.counters["duplicates"] == 40
    finally:
        out.close()
    assert target.count() == 40


# -- per-item failures ----------------------------------------------------------------------------------------

def test_mapping_errors_are_dropped_counted_and_sampled(target: Target, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    setup_target(target, tmp_path)
    caplog.set_level(logging.WARNING, "pktbeat.output.elasticsearch")
    good = events_json(20)
    bad = [json.dumps({"@timestamp": "2024-05-06T07:08:09Z", "type": "icmp", "source": {"port": "not-a-port"},
                       "n": i}).encode() for i in range(5)]
    out = ElasticsearchOutput(target.es_config())
    try:
        outcomes = out.publish(encoded(good + bad))
    finally:
        out.close()
    assert outcomes == [Outcome.ACKED] * 20 + [Outcome.DROPPED] * 5
    assert out.counters["dropped"] == 5
    samples = [r.getMessage() for r in caplog.records if "refused (400)" in r.getMessage()]
    assert len(samples) == 1  # one sample per interval, not one line per event
    assert "source.port" in samples[0]
    assert target.count() == 20


def test_injected_item_failures(target: Target, tmp_path: Path) -> None:
    standin = target.need_faults()
    setup_target(target, tmp_path)
    standin.item_faults(mapping_error_every=10)
    out = ElasticsearchOutput(target.es_config())
    try:
        outcomes = out.publish(encoded(events_json(100)))
    finally:
        out.close()
    assert outcomes.count(Outcome.DROPPED) == 10
    assert outcomes.count(Outcome.ACKED) == 90


def test_item_429s_are_retried_until_stored(target: Target, tmp_path: Path) -> None:
    standin = target.need_faults()
    setup_target(target, tmp_path)
    standin.item_faults(item_429_every=3)
    out = ElasticsearchOutput(target.es_config())
    pipe = Pipeline(out, max_events=500, flush_min_events=90, flush_timeout=0.05, backoff_init=0.02,
                    backoff_max=0.05)
    for e in encoded(events_json(90)):
        pipe.publish(e)
    pipe.close(time.monotonic() + 30)
    assert target.count() == 90
    assert standin.stats()["item_429"] >= 30
    assert pipe.counters["dropped"] == 0


def test_a_poison_event_is_dropped_after_max_retries(target: Target, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    standin = target.need_faults()
    setup_target(target, tmp_path)
    standin.item_faults(reject_field="poison", reject_value=True, reject_status=503)
    caplog.set_level(logging.WARNING, "pktbeat.output.elasticsearch")
    out = ElasticsearchOutput(target.es_config(max_retries=2))
    pipe = Pipeline(out, max_events=100, flush_min_events=11, flush_timeout=0.05, backoff_init=0.01,
                    backoff_max=0.02)
    datas = [*events_json(10), json.dumps({"@timestamp": "2024-05-06T07:08:09Z", "poison": True}).encode()]
    for e in encoded(datas):
        pipe.publish(e)
    pipe.close(time.monotonic() + 30)
    assert out.counters["poison_dropped"] == 1
    assert standin.stats()["item_503"] == 3  # first try + max_retries
    assert any("max_retries" in r.getMessage() for r in caplog.records)
    assert target.count() == 10


def test_an_outage_is_retried_without_limit_then_delivered(target: Target, tmp_path: Path) -> None:
    standin = target.need_faults()
    setup_target(target, tmp_path)
    out = ElasticsearchOutput(target.es_config(max_retries=0, timeout="1s"))
    standin.faults(("refuse", 1.0), ("429", 1.0), ("503", 1.0))
    standin.wait_phase("refuse")
    pipe = Pipeline(out, max_events=1000, flush_min_events=50, flush_timeout=0.05, backoff_init=0.05,
                    backoff_max=0.2)
    for e in encoded(events_json(300)):
        pipe.publish(e)
    pipe.close(time.monotonic() + 60)
    stats = standin.stats()
    assert stats.get("status_429", 0) > 0 and stats.get("status_503", 0) > 0
    assert out.counters["connect_errors"] > 0
    assert target.count() == 300
    assert pipe.counters["dropped"] == 0


def test_slow_responses_time_out_and_are_resent_without_duplicates(target: Target, tmp_path: Path) -> None:
    standin = target.need_faults()
    setup_target(target, tmp_path)
    standin.control("/faults", {"phases": [{"kind": "slow", "seconds": 2.5, "delay": 1.5}]})
    out = ElasticsearchOutput(target.es_config(timeout="0.5s"))
    pipe = Pipeline(out, max_events=100, flush_min_events=20, flush_timeout=0.05, backoff_init=0.2,
                    backoff_max=0.5)
    for e in encoded(events_json(20)):
        pipe.publish(e)
    pipe.close(time.monotonic() + 30)
    assert out.counters["request_errors"] >= 1  # the timed-out attempt
    assert target.count() == 20  # the late write and the resend are one document


def test_failover_and_load_balancing_over_hosts(tmp_path: Path) -> None:
    if real_target() is not None:
        pytest.skip("needs two stand-ins")
    first, second = StandinProcess("8.15.3"), StandinProcess("8.15.3")
    try:
        dead = StandinProcess("8.15.3")
        dead_url = dead.url
        dead.stop()
        target = Target(first.url, first, {})
        config = target.es_config(hosts=[dead_url, first.url, second.url], bulk_max_size=10)
        out = ElasticsearchOutput(config)
        try:
            for start in range(0, 200, 20):
                assert out.publish(encoded(events_json(20, start))) == [Outcome.ACKED] * 20
        finally:
            out.close()
        a, b = first.stats()["documents"], second.stats()["documents"]
        assert a + b == 200 and a > 0 and b > 0  # both nodes took bulks; the dead one none
        second.stop()
        out = ElasticsearchOutput(config)
        try:
            assert out.publish(encoded(events_json(20, 500))) == [Outcome.ACKED] * 20
        finally:
            out.close()
        assert first.stats()["documents"] > a
    finally:
        first.stop()
        second.stop()


def test_per_protocol_index_with_format_strings(target8: Target) -> None:
    out = ElasticsearchOutput(target8.es_config())
    name = f"{target8.name}-%{{[type]}}-%{{+yyyy.MM}}"
    try:
        assert out.publish(encoded(events_json(3), index=name)) == [Outcome.ACKED] * 3
    finally:
        out.close()
    concrete = f"{target8.name}-icmp-2024.05"
    assert target8.count(index=concrete) == 3
    if target8.standin is None:
        es = target8.client()
        es.indices.delete(index=concrete)
        es.close()


def test_writing_into_an_alias_field_is_refused(target: Target, tmp_path: Path) -> None:
    setup_target(target, tmp_path)
    out = ElasticsearchOutput(target.es_config())
    doc = json.dumps({"@timestamp": "2024-05-06T07:08:09Z", "type": "http", "notes": "x"}).encode()
    try:
        assert out.publish(encoded([doc])) == [Outcome.DROPPED]
    finally:
        out.close()


# -- auth, TLS, `test output` -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=pktbeat test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt",
        "-days", "2", "-subj", "/CN=someone else")
    return {name: str(d / name) for name in ("ca.crt", "server.crt", "server.key", "other.crt")}


def test_tls_verification_modes(tls_files: dict[str, str]) -> None:
    if real_target() is not None:
        pytest.skip("uses a stand-in with its own certificates")
    standin = StandinProcess("9.1.2", tls=(tls_files["server.crt"], tls_files["server.key"]))
    try:
        target = Target(standin.url, standin, {})
        trusted = ElasticsearchOutput(target.es_config(ssl={"certificate_authorities": [tls_files["ca.crt"]]}))
        wrong = ElasticsearchOutput(target.es_config(ssl={"certificate_authorities": [tls_files["other.crt"]]}))
        unverified = ElasticsearchOutput(target.es_config(ssl={"verification_mode": "none"}))
        try:
            assert trusted.publish(encoded(events_json(2))) == [Outcome.ACKED] * 2
            assert wrong.publish(encoded(events_json(2, 10))) == [Outcome.RETRY] * 2
            assert unverified.publish(encoded(events_json(2, 20))) == [Outcome.ACKED] * 2
        finally:
            for out in (trusted, wrong, unverified):
                out.close()
        lines: list[str] = []
        assert check_output(target.es_config(ssl={"certificate_authorities": [tls_files["ca.crt"]]}), lines.append)
        assert "    handshake... OK" in lines
        assert any(line.startswith("    TLS version: TLSv1.") for line in lines)
        lines = []
        assert not check_output(target.es_config(ssl={"certificate_authorities": [tls_files["other.crt"]]}),
                               lines.append)
        assert any("certificate verification failed" in line for line in lines)
    finally:
        standin.stop()


def test_basic_auth_api_key_and_write_privilege(tmp_path: Path) -> None:
    if real_target() is not None:
        pytest.skip("uses a stand-in with its own users")
    standin = StandinProcess("8.15.3", users=["writer:s3cret", "reader:pw:read_only"], api_keys=["kid:kval"])
    try:
        target = Target(standin.url, standin, {})
        good = ElasticsearchOutput(target.es_config(username="writer", password="s3cret"))
        key = ElasticsearchOutput(target.es_config(api_key="kid:kval"))
        bad = ElasticsearchOutput(target.es_config(username="writer", password="wrong"))
        try:
            assert good.publish(encoded(events_json(3))) == [Outcome.ACKED] * 3
            assert key.publish(encoded(events_json(3, 10))) == [Outcome.ACKED] * 3
            assert bad.publish(encoded(events_json(3, 20))) == [Outcome.RETRY] * 3
        finally:
            for out in (good, key, bad):
                out.close()
        lines: list[str] = []
        assert check_output(target.es_config(username="writer", password="s3cret"), lines.append)
        assert "  authentication... OK (user writer)" in lines
        assert any(line.startswith("  write privilege on") and line.endswith("OK") for line in lines)
        lines = []
        assert not check_output(target.es_config(username="reader", password="pw"), lines.append)
        assert any("missing index privilege(s): create_doc" in line for line in lines)
        lines = []
        assert not check_output(target.es_config(username="writer", password="wrong"), lines.append)
        assert any("authentication... ERROR 401" in line for line in lines)
    finally:
        standin.stop()


def test_test_output_report(target: Target) -> None:
    lines: list[str] = []
    assert check_output(target.es_config(), lines.append), "\n".join(lines)
    assert lines[0] == f"elasticsearch: {target.url}..."
    assert "  talk to server... OK" in lines
    if target.standin is not None:
        major = int(target.standin.version.split(".")[0])
        assert f"  version: {target.standin.version}" in lines
        assert f"  compatibility header: compatible-with={major}" in lines
        assert any(line.endswith("OK (security disabled)") for line in lines)


def test_test_output_unreachable_host() -> None:
    dead = StandinProcess("8.15.3")
    url = dead.url
    dead.stop()
    from agent.config.typed import build
    from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig

    lines: list[str] = []
    assert not check_output(build(ElasticsearchOutputConfig, {"hosts": [url]}, "output.elasticsearch"), lines.append)
    assert any(line.startswith("    dial up... ERROR") for line in lines)
