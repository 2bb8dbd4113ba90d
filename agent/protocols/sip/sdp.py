"""The session-level SDP lines Packetbeat reports (RFC 4566): v=, o=, s= and the first c=.

A malformed line is skipped, never the message: a body is only ever
decoration on the SIP event.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Sdp:
    version: str = ""
    owner_username: str = ""
    owner_session_id: str = ""
    owner_version: str = ""
    owner_ip: str = ""
    session_name: str = ""
    connection_info: str = ""
    connection_address: str = ""

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.version:
            out["version"] = self.version
        owner = {k: v for k, v in (("username", self.owner_username), ("session_id", self.owner_session_id),
                                   ("version", self.owner_version), ("ip", self.owner_ip)) if v}
        if owner:
            out["owner"] = owner
        if self.session_name:
            out["session"] = {"name": self.session_name}
        connection = {k: v for k, v in (("info", self.connection_info), ("address", self.connection_address))
                      if v}
        if connection:
            out["connection"] = connection
        return out


def _owner(sdp: Sdp, value: str) -> None:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>."""
    if value.startswith('"'):
        closing = value.find('"', 1)
        if closing < 0:
            return
        username = value[1:closing]
        parts = value[closing + 1:].lstrip(" ").split(" ", 2)
        if len(parts) != 3:
            return
    else:
        parts = value.split(" ", 3)
        if len(parts) != 4:
            return
        username = parts[0]
        parts = parts[1:]
    if username != "-":
        sdp.owner_username = username
    sdp.owner_session_id = parts[0]
    sdp.owner_version = parts[1]
    sdp.owner_ip = parts[2].rsplit(" ", 1)[-1]


def parse(body: str) -> Sdp:
    sdp = Sdp()
    in_media = False
    for line in body.split("\n"):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        key = key.strip().lower()
        if key == "v":
            sdp.version = value
        elif key == "o":
            _owner(sdp, value)
        elif key == "s":
            if value != "-":
                sdp.session_name = value
        elif key == "c":
            if not in_media:  # media-level c= lines describe one stream, not the session
                sdp.connection_info = value
                sdp.connection_address = value.rsplit(" ", 1)[-1]
        elif key == "m":
            in_media = True
    return sdp


