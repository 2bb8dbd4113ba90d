"""Helpers shared by the SQL protocols (MySQL, PostgreSQL): statement text, row rendering, statement caches."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config.typed import non_negative, opt
from agent.protocols.base import ProtocolConfig


@dataclass(frozen=True)
class SqlConfig(ProtocolConfig):
    """Packetbeat's options common to mysql and pgsql: how much of a result goes into `response`."""

    max_rows: int = opt(10, check=non_negative)
    max_row_length: int = opt(1024, check=non_negative)
