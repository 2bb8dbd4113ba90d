"""Packetbeat's `output.elasticsearch`, index management (`pktbeat setup`) and `pktbeat test output`.

The CLI and the output registry use this package's module-level names:
`CONFIG_CLASS`, `create`, `run_setup`, `test_output`, `index_template`.
"""

from __future__ import annotations

from typing import Any

from agent.config.load import AgentConfig
from agent.outputs.elasticsearch.check import test_output
from agent.outputs.elasticsearch.config import ElasticsearchOutputConfig
from agent.outputs.elasticsearch.output import ElasticsearchOutput, create
from agent.outputs.elasticsearch.setup import SetupError, run_setup
from agent.outputs.elasticsearch.setup import index_template as _index_template

CONFIG_CLASS = ElasticsearchOutputConfig


def index_template(cfg: AgentConfig) -> dict[str, Any]:
    """The template body; a setting that cannot work is reported as {"error": ...} for `export template`."""
    try:
        return _index_template(cfg)
    except SetupError as exc:
        return {"error": str(exc)}


__all__ = ["CONFIG_CLASS", "ElasticsearchOutput", "create", "index_template", "run_setup", "test_output"]
