"""What an ICMP request and its response become in the event: Packetbeat's `icmp.*` fields, and their table."""

from __future__ import annotations

from typing import Any

from agent.protocols.icmp.parser import IcmpMessage

FIELDS = """
icmp.version keyword
icmp.request.message keyword
icmp.request.type long
icmp.request.code long
icmp.response.message keyword
icmp.response.type long
icmp.response.code long
"""


def message_fields(msg: IcmpMessage) -> dict[str, Any]:
    """`icmp.request` or `icmp.response`: the message's name, type and code."""
    return {"message": msg.name, "type": msg.type, "code": msg.code}
