"""The worked example of docs/adding-a-protocol.md really works (so the document cannot rot)."""

from __future__ import annotations

import importlib

import pytest

from agent.protocols import registry
from agent.protocols.base import ProtocolSpec
from tests.helpers.sessions import C2S, S2C, Step, assert_same_three_ways, run_stream


@pytest.fixture
def whois(monkeypatch: pytest.MonkeyPatch) -> ProtocolSpec:
    # The one table line the document tells you to add.
    monkeypatch.setitem(registry.PROTOCOLS, "whois", "docs.examples.whois.plugin")
    registry.spec.cache_clear()
    spec = registry.spec("whois")
    yield spec
    registry.spec.cache_clear()


def test_the_table_line_is_all_it_takes(whois: ProtocolSpec) -> None:
    assert whois is importlib.import_module("docs.examples.whois.plugin").SPEC
    assert "whois" in registry.available()


def test_query_and_answer_fed_three_ways(whois: ProtocolSpec) -> None:
    steps = [Step(C2S, b"example.com\r\n", 1_000), Step(S2C, b"Domain Name: EXAMPLE.COM\r\nRegistrar: X\r\n", 2_000),
             Step(S2C, b"", 3_000, fin=True)]
    [txn] = assert_same_three_ways("whois", steps, options={"send_response": True}, server_port=43)
    assert txn.fields["whois"] == {"query": "example.com", "answer_lines": 2}
    assert txn.fields["response"] == "Domain Name: EXAMPLE.COM\nRegistrar: X"
    assert (txn.client_bytes, txn.ts_ns, txn.end_ns, txn.status) == (13, 1_000, 3_000, "OK")


def test_lost_answer_bytes_and_unanswered_query(whois: ProtocolSpec) -> None:
    [lossy] = run_stream("whois", [Step(C2S, b"a.test\r\n", 1), Step(S2C, b"x", 2), Step(S2C, gap=100, ts_ns=3),
                                   Step(S2C, b"", 4, fin=True)], server_port=43)
    assert lossy.notes == ["Packet loss while capturing the response"] and lossy.server_bytes == 101
    [unanswered] = run_stream("whois", [Step(C2S, b"b.test\r\n", 1)], server_port=43)
    assert unanswered.status == "Error" and unanswered.notes == ["Unmatched request"]


def test_an_endless_query_line_is_a_parse_error_not_a_leak(whois: ProtocolSpec) -> None:
    txns = run_stream("whois", [Step(C2S, b"x" * 5000, 1), Step(C2S, b"ok.test\r\n", 2), Step(S2C, b"", 3, fin=True)],
                      server_port=43)
    assert [t.fields["query"] for t in txns] == ["ok.test"]


def test_its_fields_reach_the_index_template(whois: ProtocolSpec) -> None:
    """The template is assembled from the registry: the table line brings the protocol's fields.py along."""
    from agent.events import fields

    fields.registry.cache_clear()
    try:
        properties = fields.mappings()["properties"]
        assert properties["whois"]["properties"]["query"]["type"] == "keyword"
        assert properties["whois"]["properties"]["answer_lines"]["type"] == "long"
        assert fields.unmapped(["whois.query", "whois.answer_lines"]) == {}
    finally:
        fields.registry.cache_clear()


def test_the_session_needs_no_downcast_and_inherits_the_defaults(whois: ProtocolSpec) -> None:
    from agent.protocols.stream import SessionBase
    from docs.examples.whois.plugin import WhoisSession

    assert issubclass(WhoisSession, SessionBase)
    assert "recover" not in WhoisSession.__dict__ and "expire" not in WhoisSession.__dict__
