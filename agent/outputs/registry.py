"""The output table: `output.<name>` -> the module implementing it.

Each module defines `CONFIG_CLASS` (a frozen dataclass built from the
`output.<name>` section) and `create(config, context) -> Output`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

OUTPUTS: dict[str, str] = {
    "file": "agent.outputs.file",
    "console": "agent.outputs.console",
    "elasticsearch": "agent.outputs.elasticsearch",
    "redis": "agent.outputs.redis",
    "discard": "agent.outputs.discard",
}

# Packetbeat outputs pktbeat does not have: configuring one is an error that says so.
NOT_SUPPORTED: dict[str, str] = {
    "logstash": "the Logstash (Lumberjack) output is not implemented; use elasticsearch, redis or file",
    "kafka": "the Kafka output is not implemented; use elasticsearch, redis or file",
}


def module(name: str) -> ModuleType:
    return importlib.import_module(OUTPUTS[name])
