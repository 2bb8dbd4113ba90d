"""Keeping secrets out of `pktbeat export config`.

The config is printed as written, `${VAR}` references unexpanded (as
Packetbeat prints it), so a secret kept in the environment never appears.
A secret written literally is replaced by REDACTED: the value of any key that
names a credential (password, passphrase, api_key, token, secret,
authorization, ...; `key` and `key_passphrase` in ssl sections), the default
of a `${VAR:default}` under such a key, and the password of a URL
(`https://user:pass@host`) anywhere.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

# Keys whose value is a credential, wherever they appear (compared lower-case, '-' as '_').
SECRET_KEYS = frozenset({
    "password", "passwd", "pass", "passphrase", "key_passphrase", "api_key", "apikey", "token", "access_token",
    "bearer_token", "secret", "client_secret", "secret_key", "secret_access_key", "session_token",
    "authorization", "proxy_authorization", "credentials", "cookie", "private_key",
})
# Words that make any key a credential (sasl.password, oauth2.client.secret, service_token, ...).
SECRET_WORDS = ("password", "passphrase", "secret", "token", "api_key", "apikey")
# Sections in which `key` is a private key (or the path of one).
SSL_SECTIONS = frozenset({"ssl", "tls"})

_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<password>[^@/\s]+)@")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)(:[?-]?[^}]*)?\}")


def is_secret_key(key: str, parent: str = "") -> bool:
    name = key.lower().replace("-", "_")
    if name in SECRET_KEYS or any(word in name for word in SECRET_WORDS):
        return True
    return name == "key" and parent.lower() in SSL_SECTIONS


def redact(tree: Any, parent: str = "") -> Any:
    """A copy of `tree` with every literal secret replaced by REDACTED."""
    if isinstance(tree, dict):
        return {k: _secret_value(v) if is_secret_key(str(k), parent) else redact(v, str(k))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v, parent) for v in tree]
    if isinstance(tree, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", tree)
    return tree


def _secret_value(value: Any) -> Any:
    """A credential's value: `${VAR}` references stay (their defaults do not), literals go."""
    if isinstance(value, list):
        return [_secret_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _secret_value(v) for k, v in value.items()}
    if isinstance(value, str) and _REFERENCE.fullmatch(value):
        name, default = _REFERENCE.fullmatch(value).groups()  # type: ignore[union-attr]
        if default and default[1:2] != "?" and len(default) > 1:
            return f"${{{name}:{REDACTED}}}"
        return value
    if value in (None, ""):
        return value
    return REDACTED
