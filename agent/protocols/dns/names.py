"""Mnemonics for DNS codes, as Packetbeat prints them (the miekg/dns tables it uses).

Compiled by mypyc (agent/accel.py MODULES): keep it to annotated code that mypyc
accepts (no dynamic attributes or monkey-patching, `__slots__` classes, subclasses
only in compiled modules, no star imports); an edit is used natively only after
set-up rebuilds (`scripts/accel.py build`), and until then every compiled module
runs as pure Python.

An unknown code prints as its number ("65280"), except an unknown response
code, which prints as "Unknown <n>".
"""

from __future__ import annotations

from typing import Final

TYPES: dict[int, str] = {
    0: "None", 1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR", 10: "NULL",
    12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB", 19: "X25", 20: "ISDN",
    21: "RT", 23: "NSAP-PTR", 24: "SIG", 25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT",
    31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX", 37: "CERT", 39: "DNAME", 41: "OPT",
    42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 57: "RKEY", 58: "TALINK",
    59: "CDS", 60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID", 105: "L32", 106: "L64", 107: "LP",
    108: "EUI48", 109: "EUI64", 128: "NXNAME", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR", 253: "MAILB",
    254: "MAILA", 255: "ANY", 256: "URI", 257: "CAA", 258: "AVC", 260: "AMTRELAY", 261: "RESINFO", 32768: "TA",
    32769: "DLV", 65535: "Reserved",
}

CLASSES: dict[int, str] = {1: "IN", 2: "CS", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}

OPCODES: dict[int, str] = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}

RCODES: dict[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 11: "DSOTYPENI", 16: "BADSIG", 17: "BADKEY",
    18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
}

ALGORITHMS: dict[int, str] = {
    1: "RSAMD5", 2: "DH", 3: "DSA", 5: "RSASHA1", 6: "DSA-NSEC3-SHA1", 7: "RSASHA1-NSEC3-SHA1", 8: "RSASHA256",
    10: "RSASHA512", 12: "ECC-GOST", 13: "ECDSAP256SHA256", 14: "ECDSAP384SHA384", 15: "ED25519", 16: "ED448",
    252: "INDIRECT", 253: "PRIVATEDNS", 254: "PRIVATEOID",
}

HASHES: dict[int, str] = {1: "SHA1", 2: "SHA256", 3: "GOST94", 4: "SHA384", 5: "SHA512"}

# Well-known RR type numbers used by the decoder.
T_A: Final = 1
T_NS: Final = 2
T_CNAME: Final = 5
T_SOA: Final = 6
T_PTR: Final = 12
T_MX: Final = 15
T_TXT: Final = 16
T_AAAA: Final = 28
T_SRV: Final = 33
T_OPT: Final = 41
T_DS: Final = 43
T_RRSIG: Final = 46
T_NSEC: Final = 47
T_DNSKEY: Final = 48
T_NSEC3: Final = 50
T_NSEC3PARAM: Final = 51


def type_name(code: int) -> str:
    return TYPES.get(code) or str(code)


def class_name(code: int) -> str:
    return CLASSES.get(code) or str(code)


def opcode_name(code: int) -> str:
    return OPCODES.get(code) or str(code)


def rcode_name(code: int) -> str:
    name = RCODES.get(code)
    return name if name is not None else f"Unknown {code}"


def algorithm_name(code: int) -> str:
    return ALGORITHMS.get(code) or str(code)


def hash_name(code: int) -> str:
    return HASHES.get(code) or str(code)
