"""DNS's event fields (with their index mapping): a decoded message as Packetbeat's fields and
request/response text, and the transaction that carries them.

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes, `__slots__` classes, no classes from uncompiled
modules in annotations it must check: the config reaches it as plain flags); an
edit is used natively only after set-up rebuilds (`scripts/accel.py build`).
"""

from __future__ import annotations

from typing import Any, Final

from agent.protocols.base import Transaction, prefixed
from agent.protocols.dns import names as N
from agent.protocols.dns.parser import DnsMessage, Edns, Question, Record
from agent.protocols.dns.rdata import ipv6_text
from agent.transport.types import ConnectionInfo

_DNS = """
dns.id keyword
dns.op_code keyword
dns.header_flags keyword
dns.response_code keyword
dns.type keyword
dns.resolved_ip ip
dns.question.name keyword
dns.question.type keyword
dns.question.class keyword
dns.question.registered_domain keyword
dns.question.subdomain keyword
dns.question.top_level_domain keyword
dns.question.etld_plus_one keyword
dns.flags.authoritative boolean
dns.flags.recursion_available boolean
dns.flags.recursion_desired boolean
dns.flags.authentic_data boolean
dns.flags.checking_disabled boolean
dns.flags.truncated_response boolean
dns.answers object
dns.answers_count long
dns.authorities object
dns.authorities_count long
dns.additionals object
dns.additionals_count long
dns.opt.version keyword
dns.opt.do boolean
dns.opt.ext_rcode keyword
dns.opt.udp_size long
"""

# One resource record in dns.answers / authorities / additionals.  Beyond name/type/class/ttl/data,
# Packetbeat adds per-type members (MX, SOA, SRV, DNSSEC) that its template leaves to dynamic mapping;
# they are mapped here as what Packetbeat emits: numbers as long, stringified numbers as keyword.
_RR = """
name keyword
type keyword
class keyword
ttl long
data keyword
preference long
rname keyword
serial long
refresh long
retry long
expire long
minimum long
priority long
weight long
port long
flags keyword
protocol keyword
algorithm keyword
key_tag keyword
digest_type keyword
type_covered keyword
labels keyword
original_ttl keyword
expiration keyword
inception keyword
signer_name keyword
type_bits keyword
hash keyword
iterations keyword
salt keyword
"""

# Besides these: method, query, resource, request, response and related.ip (common fields).
FIELDS = "\n".join([_DNS.strip(), *(prefixed(f"dns.{section}", _RR) for section in ("answers", "authorities",
                                                                                       "additionals"))])


class Seen:
    """One decoded message and when and how big it was on the wire."""

    __slots__ = ("msg", "size", "ts_ns")

    def __init__(self, msg: DnsMessage, ts_ns: int, size: int) -> None:
        self.msg = msg
        self.ts_ns = ts_ns
        self.size = size


class EventSettings:
    """What the event carries, from the protocol's config."""

    __slots__ = ("include_additionals", "include_authorities", "keep_null", "send_request", "send_response")

    def __init__(self, send_request: bool, send_response: bool, include_authorities: bool,
                 include_additionals: bool, keep_null: bool = True) -> None:
        self.send_request = send_request
        self.send_response = send_response
        self.include_authorities = include_authorities
        self.include_additionals = include_additionals
        # False: the event builder would strip null fields, so they are left out here and the builder's walk
        # for them is skipped (Transaction.may_hold_nulls).
        self.keep_null = keep_null


def transaction(conn: ConnectionInfo, settings: EventSettings, request: Seen | None, response: Seen | None,
                notes: list[str]) -> Transaction:
    """A query and its response (either may be missing) as Packetbeat publishes them."""
    first = request if request is not None else response
    assert first is not None
    txn = Transaction(type="dns", conn=conn, ts_ns=first.ts_ns, has_request=request is not None, notes=notes,
                      may_hold_nulls=settings.keep_null)
    fields: dict[str, Any] = {}
    shown = response if response is not None else first
    head = first.msg
    fields["method"] = N.opcode_name(head.opcode)
    if head.questions:
        fields["query"] = query_text(head.questions[0])
        fields["resource"] = head.questions[0].name
    dns, resolved = dns_fields(shown.msg, settings.include_authorities, settings.include_additionals,
                               settings.keep_null)
    dns["type"] = "answer" if response is not None else "query"
    fields["dns"] = dns
    if request is not None:
        txn.client_bytes = request.size
        if settings.send_request:
            fields["request"] = message_text(request.msg)
    if response is not None:
        txn.server_bytes = response.size
        txn.end_ns = response.ts_ns
        if settings.send_response:
            fields["response"] = message_text(response.msg)
    if resolved:
        fields["related"] = {"ip": list(resolved)}
    txn.status = "OK" if request is not None and response is not None and response.msg.rcode == 0 else "Error"
    txn.fields = fields
    return txn

_ADDRESS_TYPES: Final = (N.T_A, N.T_AAAA)


def query_text(q: Question) -> str:
    return f"class {N.class_name(q.qclass)}, type {N.type_name(q.qtype)}, {q.name}"


def dns_fields(msg: DnsMessage, include_authorities: bool, include_additionals: bool, keep_null: bool = True
               ) -> tuple[dict[str, Any], list[str]]:
    """The `dns.*` fields of a message, and the addresses its answers resolve to.

    A field without a value is None with `keep_null`, else left out (where the null walk would have removed
    it: the other keys keep their order).
    """
    edns = msg.edns
    flag_fields, names = _flags(msg.flags & _FLAG_BITS, edns is not None and edns.do)
    out: dict[str, Any] = {
        "id": msg.id,
        "op_code": N.opcode_name(msg.opcode),
        "flags": dict(flag_fields),
        "response_code": N.rcode_name(msg.rcode),
    }
    if names:
        out["header_flags"] = list(names)
    elif keep_null:
        out["header_flags"] = None
    if msg.questions:
        out["question"] = question_fields(msg.questions[0])
    if edns is not None:
        out["opt"] = opt_fields(edns)
    resolved: list[str] = []
    answers = msg.answers
    out["answers_count"] = len(answers)
    if answers:
        listed = records_fields(answers)
        if listed or keep_null:
            out["answers"] = listed or None
        resolved = [r.fields["data"] for r in answers if r.rtype in _ADDRESS_TYPES and r.fields is not None]
        if resolved:
            out["resolved_ip"] = resolved
    out["authorities_count"] = len(msg.authorities)
    if include_authorities and msg.authorities:
        listed = records_fields(msg.authorities)
        if listed or keep_null:
            out["authorities"] = listed or None
    out["additionals_count"] = len(msg.additionals) - (1 if edns is not None else 0)
    if include_additionals and msg.additionals:
        additionals = records_fields(msg.additionals)
        if additionals:
            out["additionals"] = additionals
    return out, resolved


_FLAG_BITS: Final = 0x07B0  # AA TC RD RA AD CD
_FLAG_NAMES: Final = (("authoritative", "AA", 0x0400), ("truncated_response", "TC", 0x0200),
               ("recursion_desired", "RD", 0x0100), ("recursion_available", "RA", 0x0080),
               ("authentic_data", "AD", 0x0020), ("checking_disabled", "CD", 0x0010))


# Per flag combination (the six bits of _FLAG_BITS and DO: at most 128 entries, so no limit is needed); a
# plain dict, as a compiled call through functools.lru_cache is a Python call.
_flag_fields: dict[int, tuple[dict[str, bool], tuple[str, ...]]] = {}


def _flags(bits: int, do: bool) -> tuple[dict[str, bool], tuple[str, ...]]:
    """`dns.flags` and `dns.header_flags` for a header's flag bits (within _FLAG_BITS) and the EDNS DO bit."""
    key = (bits & _FLAG_BITS) << 1 | (1 if do else 0)
    found = _flag_fields.get(key)
    if found is None:
        fields = {name: bool(bits & mask) for name, _, mask in _FLAG_NAMES}
        names = tuple(short for _, short, mask in _FLAG_NAMES if bits & mask) + (("DO",) if do else ())
        found = _flag_fields[key] = (fields, names)
    return found


def header_flags(msg: DnsMessage) -> list[str]:
    return list(_flags(msg.flags & _FLAG_BITS, msg.edns is not None and msg.edns.do)[1])


def records_fields(records: tuple[Record, ...]) -> list[dict[str, Any]]:
    types, classes = N.TYPES, N.CLASSES
    return [{**r.fields, "name": r.name, "type": types.get(r.rtype) or str(r.rtype),
             "class": classes.get(r.rclass) or str(r.rclass), "ttl": str(r.ttl)}
            for r in records if r.fields is not None]


# -- the question and its registered domain ----------------------------------------------

def question_fields(q: Question) -> dict[str, Any]:
    name = q.name
    return {"name": name, "type": N.type_name(q.qtype), "class": N.class_name(q.qclass), **_remembered_parts(name)}


class SuffixRules:
    """The public suffix list's rules, matched as publicsuffixlist matches them (its `publicsuffix` with
    unknown TLDs accepted), by compiled code: the library's interpreted lookup cost more than the whole
    rest of a DNS event for every name not seen before.  tests/protocols/dns check both agree."""

    __slots__ = ("exceptions", "max_labels", "rules", "wildcards")

    def __init__(self, lines: list[str]) -> None:
        rules: set[str] = set()
        max_labels = 0
        for line in lines:
            rule = line.lower().split(" ")[0].rstrip()
            if not rule or rule.startswith("//"):
                continue
            max_labels = max(max_labels, rule.count(".") + 1)
            rules.add(rule)
        self.rules = frozenset(rules)  # every rule as written: the library's exact match
        # "!x.y" and "*.x.y" by what follows the mark: a candidate is then looked up as it is, not concatenated.
        self.exceptions = frozenset(rule[1:] for rule in rules if rule.startswith("!"))
        self.wildcards = frozenset(rule[2:] for rule in rules if rule.startswith("*."))
        self.max_labels = max_labels

    def public_suffix(self, domain: str) -> str | None:
        """The longest public suffix of `domain` (lowercase), None when the name is malformed."""
        if domain.endswith("."):
            domain = domain[:-1]
        lowered = domain.lower()
        labels = lowered.split(".")
        if "" in labels:
            return None
        count = self._suffix_labels(lowered, labels)
        if not count or len(labels) < count:
            return None
        return ".".join(labels[-count:])

    def _suffix_labels(self, lowered: str, labels: list[str]) -> int:
        """How many of the last labels are public: the first rule met from the longest candidate down;
        exception before wildcard before exact, as the library checks them."""
        total = len(labels)
        if total == 1:
            return 1
        first = max(0, total - (self.max_labels + 1))
        start = sum(len(label) + 1 for label in labels[:first])  # where labels[first:] begins in `lowered`
        for skipped in range(first, total):
            candidate = lowered[start:]  # ".".join(labels[skipped:])
            start += len(labels[skipped]) + 1
            depth = total - skipped
            if candidate in self.exceptions:
                return depth - 1  # an exception: the wildcard's parent is the suffix
            if candidate in self.wildcards:
                return depth + 1 if skipped > 0 else depth
            if candidate in self.rules:
                return depth
        return 1  # an unknown TLD is a public suffix


_psl_rules: tuple[SuffixRules, list[str]] | None = None  # the list as published: ASCII and Unicode rules
_psl_with_punycode: SuffixRules | None = None  # the same plus each Unicode rule in punycode, built on first need


def _public_suffix_list(punycode: bool) -> SuffixRules:
    """The list bundled with publicsuffixlist (no network), loaded on first use.

    Names on the wire are punycode, so Unicode rules must also be matched in
    that form; but IDNA-encoding the ~500 Unicode rules costs more than the
    rest of a short replay's DNS work.  A name with no `xn--` label can only
    match ASCII rules, so the encoded list is built only when such a name
    shows up.
    """
    global _psl_rules, _psl_with_punycode
    if _psl_rules is None:
        from publicsuffixlist import PSLFILE

        with open(PSLFILE, "rb") as handle:
            lines = handle.read().decode("utf-8", "surrogateescape").splitlines()
        _psl_rules = (SuffixRules(lines), lines)
    if not punycode:
        return _psl_rules[0]
    if _psl_with_punycode is None:
        lines = _psl_rules[1]
        extra = []
        for line in lines:
            if line.isascii():
                continue
            rule = line.split(" ")[0].rstrip().lower()
            if not rule or rule.startswith("//"):
                continue
            encoded = rule.lstrip("!").encode("idna").decode("ascii")
            extra.append("!" + encoded if rule.startswith("!") else encoded)
        _psl_with_punycode = SuffixRules(lines + extra)
    return _psl_with_punycode


def _public_suffix(domain: str) -> str | None:
    return _public_suffix_list("xn--" in domain.lower()).public_suffix(domain)


DOMAIN_PARTS_CACHE_LIMIT: Final = 8192  # names whose split is remembered; the whole cache is dropped when full
_domain_parts_cache: dict[str, dict[str, str]] = {}


def domain_parts(name: str) -> dict[str, str]:
    """etld_plus_one, registered_domain, top_level_domain and subdomain, as Packetbeat derives them.

    The public suffix is matched case-insensitively (so a 0x20-randomised
    name gets the same split), and the parts keep the name's own case.
    Matching a name against the public suffix list costs more than the rest
    of a DNS event, and a resolver sees the same names again and again, so
    splits are remembered (a copy is returned: callers may change it).
    """
    return dict(_remembered_parts(name))


def _remembered_parts(name: str) -> dict[str, str]:
    """domain_parts' split as remembered: not to be changed."""
    cached = _domain_parts_cache.get(name)
    if cached is None:
        if len(_domain_parts_cache) >= DOMAIN_PARTS_CACHE_LIMIT:
            _domain_parts_cache.clear()
        cached = _domain_parts_cache[name] = _split_domain(name)
    return cached


def _split_domain(name: str) -> dict[str, str]:
    etld1 = _etld_plus_one(name)
    if etld1 is not None:
        out = {"etld_plus_one": etld1, "registered_domain": etld1}
        dot = etld1.find(".")
        if dot >= 0:
            out["top_level_domain"] = etld1[dot + 1:]
        sub = name[:-len(etld1)].rstrip(".")
        if sub:
            out["subdomain"] = sub
        return out
    if name.count(".") == 1:
        # A name that is itself a public suffix ("co.uk"), or the root.
        out = {}
        tld = name.split(".")[1]
        if tld:
            out["top_level_domain"] = tld
        out["registered_domain"] = name
        return out
    return {}


def _etld_plus_one(name: str) -> str | None:
    if not name or name[0] == "." or name[-1] == "." or ".." in name:
        return None
    suffix = _public_suffix(name)
    if not suffix:
        return None
    labels = name.split(".")
    suffix_labels = suffix.count(".") + 1
    if len(labels) <= suffix_labels:
        return None
    return ".".join(labels[-suffix_labels - 1:])


# -- EDNS ---------------------------------------------------------------------------

def opt_fields(edns: Edns) -> dict[str, Any]:
    out: dict[str, Any] = {
        "do": edns.do,
        "version": str(edns.version),
        "udp_size": edns.udp_size,
        "ext_rcode": N.rcode_name(edns.ext_rcode),
    }
    for code, data in edns.options:
        rendered = _option(code, data)
        if rendered is not None:
            out[rendered[0]] = rendered[1]
    return out


def _codes(data: bytes, table: dict[int, str]) -> str:
    return "".join([" " + (table.get(b) or str(b)) for b in data])


def _option(code: int, data: bytes) -> tuple[str, str] | None:
    """(key, text) of one EDNS0 option as Packetbeat names it; None when it is not shown or malformed."""
    size = len(data)
    if code == 1:  # LLQ
        if size < 18:
            return None
        version, opcode, error = int.from_bytes(data[0:2]), int.from_bytes(data[2:4]), int.from_bytes(data[4:6])
        ident, lease = int.from_bytes(data[6:14]), int.from_bytes(data[14:18])
        return "llq", f"{version} {opcode} {error} {ident} {lease}"
    if code == 2:  # update lease
        if size not in (4, 8):
            return None
        key_lease = int.from_bytes(data[4:8]) if size == 8 else 0
        return "ul", f"{int.from_bytes(data[0:4])} {key_lease}"
    if code == 3:
        return "nsid", data.hex()
    if code == 5:
        return "dau", _codes(data, N.ALGORITHMS)
    if code == 6:
        return "dhu", _codes(data, N.HASHES)
    if code == 7:
        return "n3u", _codes(data, N.HASHES)
    if code == 8:
        text = _subnet(data)
        return None if text is None else ("subnet", text)
    if code == 9:  # EXPIRE: Packetbeat files it under "local"
        if size == 0:
            return "local", ""
        if size < 4:
            return None
        return "local", str(int.from_bytes(data[0:4]))
    if code == 10:
        return "cookie", data.hex()
    if code in (11, 12, 15, 0x4F51):  # keepalive, padding, extended error, ESU: not reported
        return None
    return "local", f"{code}:0x{data.hex()}"


def _subnet(data: bytes) -> str | None:
    if len(data) < 4:
        return None
    family = int.from_bytes(data[0:2])
    source, scope = data[2], data[3]
    if family == 0:
        if source:
            return None
        address = "0.0.0.0"
    elif family == 1:
        if source > 32 or scope > 32:
            return None
        address = ".".join(str(b) for b in data[4:8].ljust(4, b"\0"))
    elif family == 2:
        if source > 128 or scope > 128:
            return None
        text = ipv6_text(data[4:20].ljust(16, b"\0"))
        address = text if "." in text else f"[{text}]"
    else:
        return None
    return f"{address}/{source}/{scope}"


# -- request/response text (send_request / send_response) ---------------------------------

def message_text(msg: DnsMessage) -> str:
    """The message as Packetbeat's one-line text: header, then each section's records."""
    flags = " ".join(f.lower() for f in header_flags(msg) if f != "DO")
    parts = [f"ID {msg.id}; QR {'response' if msg.response else 'query'}; OPCODE {N.opcode_name(msg.opcode)}; "
             f"FLAGS {flags}; RCODE {N.rcode_name(msg.rcode)}"]
    if msg.questions:
        parts.append("QUESTION " + "; ".join([query_text(q) for q in msg.questions]))
    for title, records in (("ANSWER", msg.answers), ("AUTHORITY", msg.authorities),
                           ("ADDITIONAL", msg.additionals)):
        if records:
            parts.append(title + " " + "; ".join([_record_text(r) for r in records]))
    return "; ".join(parts)


def _record_text(r: Record) -> str:
    # Packetbeat prints the string-valued fields in key order, then the data;
    # its numeric fields (MX preference, SOA serial...) do not appear.
    if not r.fields:
        return ""
    head = "".join([f"{key} {value}, " for key, value in sorted(r.fields.items())
                    if key != "data" and isinstance(value, str)])
    data = r.fields.get("data")
    if data is None:
        return head[:-2] if head.endswith(", ") else head
    return head + str(data)
