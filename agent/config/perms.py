"""Who may have written the config: Packetbeat's `strict.perms` rule.

A config decides what is captured and where it is sent, so a config that
another user could have written is refused, as Packetbeat refuses it: the
file must be owned by the user running pktbeat or by root, and neither its
group nor other users may write it.  `--strict.perms=false` (or
BEAT_STRICT_PERMS=false, as for Beats) turns the check off.
"""

from __future__ import annotations

import os
import stat

from agent.config.typed import ConfigError

DISABLE_ENV = "BEAT_STRICT_PERMS"


def strict_by_default() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() != "false"


def check_config_file(path: str) -> None:
    """Raise ConfigError when `path` could have been written by another user."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError("", f"cannot read config file: {exc.strerror or exc}", path) from None
    if stat.S_ISCHR(info.st_mode) and os.path.realpath(path) == os.devnull:
        return  # -c /dev/null (defaults only): writable by all, but nobody can make it say anything
    euid = os.geteuid()
    if info.st_uid not in (0, euid):
        raise ConfigError("", f"config file is owned by uid {info.st_uid}, not by the user running pktbeat "
                              f"(uid {euid}) or root: chown it, or run with --strict.perms=false", path)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError("", f"config file is writable by other users ({stat.filemode(info.st_mode)}): "
                              f"chmod go-w {os.path.abspath(path)}, or run with --strict.perms=false", path)


def exposed_directory(path: str) -> str | None:
    """Why a directory pktbeat writes captured data or logs to is open to other users, or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # not there yet: pktbeat creates it private
    if stat.S_ISDIR(mode) and mode & stat.S_IRWXO:
        return (f"{path} is open to other users ({stat.filemode(mode)}) and holds captured data or logs: "
                f"chmod o-rwx {path}")
    return None
