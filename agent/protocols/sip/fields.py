"""A SIP message's event fields, as Packetbeat names and fills them.

Packetbeat quirks kept on purpose, because its golden files show them:
- `sip.contact.*` is filled from the To header (only when a Contact header
  exists at all);
- `sip.private.uri.*` parses the raw P-Associated-URI value, angle brackets
  included (scheme `<sip`, host `example.com>`);
- `related.user`/`related.hosts` are gathered in this order: request URI,
  P-Associated-URI, From, To, Contact, Authorization, SDP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agent.protocols.base import Transaction
from agent.protocols.iptext import is_ip
from agent.protocols.sip import sdp as sdp_lines
from agent.protocols.sip.parser import SipMessage
from agent.protocols.sip.uri import Uri, parse_name_addr, parse_uri
from agent.transport.types import ConnectionInfo

if TYPE_CHECKING:
    from agent.protocols.sip.plugin import SipConfig


_URI_PARTS = ("original", "scheme", "username", "host", "port")


def _uri_table(prefix: str, with_username: bool = True) -> str:
    """A URI's fields, as `_uri_fields` fills them."""
    parts = _URI_PARTS if with_username else tuple(part for part in _URI_PARTS if part != "username")
    return "\n".join(f"{prefix}.{part} keyword" for part in parts)


def _name_addr_table(prefix: str) -> str:
    """A name-addr header's display name and URI, as `_name_addr_fields` fills them (its tag apart)."""
    return f"{prefix}.display_info keyword\n{_uri_table(prefix + '.uri')}"


# Packetbeat's sip fields.yml types (numbers it declares as keyword stay keyword); pktbeat adds
# user_agent.original, via.original and sdp.body.original, which it emits as Packetbeat's golden files show.
# Besides these: event.*, related.*, user.name and network.application/iana_number (ECS).
FIELDS = f"""
sip.type keyword
sip.method keyword
sip.code keyword
sip.status keyword
sip.version keyword
{_uri_table("sip.uri")}
sip.accept keyword
sip.allow keyword
sip.call_id keyword
sip.content_length long
sip.content_type keyword
sip.max_forwards long
sip.supported keyword
sip.user_agent.original keyword +text
{_uri_table("sip.private.uri")}
sip.cseq.code keyword
sip.cseq.method keyword
sip.via.original keyword
{_name_addr_table("sip.to")}
sip.to.tag keyword
{_name_addr_table("sip.from")}
sip.from.tag keyword
{_name_addr_table("sip.contact")}
sip.contact.transport keyword
sip.contact.line keyword
sip.contact.expires keyword
sip.contact.q keyword
sip.auth.scheme keyword
sip.auth.realm keyword
{_uri_table("sip.auth.uri", with_username=False)}
sip.sdp.version keyword
sip.sdp.owner.username keyword
sip.sdp.owner.session_id keyword
sip.sdp.owner.version keyword
sip.sdp.owner.ip keyword
sip.sdp.session.name keyword
sip.sdp.connection.info keyword
sip.sdp.connection.address keyword
sip.sdp.body.original keyword noindex
"""

SDP_TYPE = "application/sdp"
EVENT_TYPE = ("info", "protocol")
_SKIP_USERNAMES = ("", " ", "-")


def build_transaction(config: SipConfig, conn: ConnectionInfo, msg: SipMessage, ts_ns: int,
                      notes: Iterable[str] = ()) -> Transaction:
    """The event of one message; `conn` runs from its sender (client) to its receiver (server)."""
    sip, event, related, user_name = message_fields(
        msg, parse_authorization=config.parse_authorization, parse_body=config.parse_body,
        keep_original=config.keep_original)
    fields: dict[str, Any] = {
        "sip": sip,
        "event": event,
        "network": {"application": "sip", "iana_number": "17", "transport": config.transport},
    }
    if related:
        fields["related"] = related
    if user_name:
        fields["user"] = {"name": user_name}
    txn = Transaction(type="sip", conn=conn, ts_ns=ts_ns, end_ns=ts_ns, fields=fields, event_type=EVENT_TYPE,
                      status="Error" if msg.start.code >= 400 else "OK")
    txn.notes.extend(notes)
    if msg.truncated:
        txn.notes.append(msg.truncated)
    return txn


class _Related:
    """related.* values in insertion order, without duplicates or empties."""

    __slots__ = ("hosts", "ips", "users")

    def __init__(self) -> None:
        self.users: list[str] = []
        self.hosts: list[str] = []
        self.ips: list[str] = []

    @staticmethod
    def _add(bucket: list[str], value: str) -> None:
        if value and value not in bucket:
            bucket.append(value)

    def user(self, value: str) -> None:
        self._add(self.users, value)

    def host(self, value: str) -> None:
        self._add(self.hosts, value)

    def ip(self, value: str) -> None:
        self._add(self.ips, value)

    def fields(self) -> dict[str, list[str]]:
        out = {}
        if self.users:
            out["user"] = self.users
        if self.hosts:
            out["hosts"] = self.hosts
        if self.ips:
            out["ip"] = self.ips
        return out


def _uri_fields(uri: Uri, related: _Related, with_username: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"original": uri.original}
    if uri.scheme:
        out["scheme"] = uri.scheme
    if with_username and uri.username not in _SKIP_USERNAMES:
        out["username"] = uri.username
        related.user(uri.username)
    if uri.host:
        out["host"] = uri.host
    if uri.port:
        out["port"] = uri.port
    related.host(uri.host)
    return out


def _name_addr_fields(value: str, related: _Related
                      ) -> tuple[dict[str, Any], Mapping[str, str], Mapping[str, str]]:
    """(the {display_info, tag, uri} object, header params, URI params)."""
    addr = parse_name_addr(value)
    uri = parse_uri(addr.uri)
    out: dict[str, Any] = {}
    if addr.display:
        out["display_info"] = addr.display
    if addr.params.get("tag"):
        out["tag"] = addr.params["tag"]
    if addr.uri:
        out["uri"] = _uri_fields(uri, related)
    return out, addr.params, uri.params


def _int(text: str | None) -> int:
    if text is None:
        return 0
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else 0


def _list(value: str) -> list[str]:
    return [item.strip(" ").lower() for item in value.split(",") if item.strip(" ")]


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def message_fields(msg: SipMessage, *, parse_authorization: bool, parse_body: bool,
                   keep_original: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]], str]:
    """(the `sip` object, the `event` additions, related.*, user.name)."""
    start = msg.start
    related = _Related()
    sip: dict[str, Any] = {"version": start.version}
    if start.is_request:
        sip["type"] = "request"
        sip["method"] = start.method.upper()
        sip["uri"] = _uri_fields(parse_uri(start.uri), related)
    else:
        sip["type"] = "response"
        sip["code"] = start.code
        if start.phrase:
            sip["status"] = start.phrase
    _headers(msg, sip, related)
    user_name = ""
    if parse_authorization:
        user_name = _authorization(msg, sip, related)
    if parse_body:
        _body(msg, sip, related)

    cseq = sip.get("cseq", {})
    event: dict[str, Any] = {"category": ["network"]}
    if msg.has_header("authorization"):
        event["category"] = ["network", "authentication"]
    method = start.method if start.is_request else cseq.get("method", "")
    if method:
        event["action"] = f"sip-{method.lower()}"
    if cseq.get("code"):
        event["sequence"] = cseq["code"]
    if not start.is_request:
        if start.code >= 300:
            event["outcome"] = "failure"
        elif start.code >= 200:
            event["outcome"] = "success"
        if start.phrase:
            event["reason"] = start.phrase
    if keep_original:
        event["original"] = msg.raw.decode("utf-8", "replace")
    return sip, event, related.fields(), user_name


def _header_values(msg: SipMessage) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(the list headers: allow, supported, via; every other header's one value that counts)."""
    lists: dict[str, list[str]] = {"allow": [], "supported": [], "via": []}
    values: dict[str, str] = {}
    for name, value in msg.headers:
        if name in ("allow", "supported"):
            lists[name] += _list(value)
        elif name == "via":
            if value not in lists["via"]:
                lists["via"].append(value)
        elif name in ("p-associated-uri", "accept", "authorization"):
            values.setdefault(name, value)  # the first one counts
        else:
            values[name] = value  # the last one counts
    return lists, values


def _headers(msg: SipMessage, sip: dict[str, Any], related: _Related) -> None:
    lists, values = _header_values(msg)
    if lists["allow"]:
        sip["allow"] = lists["allow"]
    if "call-id" in values:
        sip["call_id"] = values["call-id"]
    length = _int(values.get("content-length"))
    if length:
        sip["content_length"] = length
    if values.get("content-type"):
        sip["content_type"] = values["content-type"].lower()
    forwards = _int(values.get("max-forwards"))
    if forwards:
        sip["max_forwards"] = forwards
    if lists["supported"]:
        sip["supported"] = lists["supported"]
    if values.get("user-agent"):
        sip["user_agent"] = {"original": values["user-agent"]}
    if lists["via"]:
        sip["via"] = {"original": lists["via"]}
    private = values.get("p-associated-uri")
    if private:
        sip["private"] = {"uri": _uri_fields(parse_uri(private), related)}
    if values.get("accept"):
        sip["accept"] = values["accept"].lower()
    cseq = values.get("cseq", "").split()
    if len(cseq) == 2:
        code = _int(cseq[0])
        sip["cseq"] = {"code": code, "method": cseq[1].upper()} if code else {"method": cseq[1].upper()}
    for name in ("from", "to"):
        if values.get(name):
            sip[name] = _name_addr_fields(values[name], related)[0]
    if values.get("contact") and values.get("to"):
        sip["contact"] = _contact(values["to"], related)


def _contact(to: str, related: _Related) -> dict[str, Any]:
    """Packetbeat fills contact.* from the To header (see the module doc)."""
    contact, params, uri_params = _name_addr_fields(to, related)
    contact.pop("tag", None)  # contact has no tag field
    expires = _int(params.get("expires"))
    if expires:
        contact["expires"] = expires
    q = params.get("q", "")
    try:
        if float(q):
            contact["q"] = float(q)
    except ValueError:
        pass
    if uri_params.get("line"):
        contact["line"] = uri_params["line"]
    if uri_params.get("transport"):
        contact["transport"] = uri_params["transport"].lower()
    return contact


def _authorization(msg: SipMessage, sip: dict[str, Any], related: _Related) -> str:
    """sip.auth.* from the first Authorization header; returns the user name it names."""
    value = msg.header("authorization")
    if not value:
        return ""
    value = value.strip()
    scheme, sep, rest = value.partition(" ")
    if not sep:
        return ""
    auth: dict[str, Any] = {"scheme": scheme}
    user_name = ""
    for param in rest.split(","):
        key, sep, val = param.partition("=")
        if not sep:
            continue
        val = val.strip("'\" \t")
        key = key.strip().lower()
        if key == "realm":
            if val:
                auth["realm"] = val
        elif key == "username":
            if val and val != "-":
                user_name = val
                related.user(val)
        elif key == "uri":
            uri = parse_uri(val)
            auth["uri"] = _uri_fields(uri, _Related(), with_username=False)
    sip["auth"] = auth
    return user_name


def _body(msg: SipMessage, sip: dict[str, Any], related: _Related) -> None:
    if not msg.body or _media_type(msg.header("content-type") or "") != SDP_TYPE:
        return
    if msg.has_header("content-encoding"):
        return  # compressed bodies are not decoded
    text = msg.body.decode("utf-8", "replace")
    parsed = sdp_lines.parse(text)
    sdp = parsed.fields()
    sdp["body"] = {"original": text}
    sip["sdp"] = sdp
    related.user(parsed.owner_username)
    if parsed.owner_ip and is_ip(parsed.owner_ip):
        related.ip(parsed.owner_ip)
    related.host(parsed.connection_address)
