"""Logging set-up: Packetbeat's -e (stderr), -d selectors, files under path.logs."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from agent.config.model import LoggingConfig

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


class _SelectorFilter(logging.Filter):
    """With -d selectors, debug records pass only for the selected loggers (pktbeat.<selector>)."""

    def __init__(self, selectors: tuple[str, ...]) -> None:
        super().__init__()
        self.selectors = selectors

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG or "*" in self.selectors:
            return True
        name = record.name.removeprefix("pktbeat.")
        return any(name == s or name.startswith(s + ".") for s in self.selectors)


def setup(config: LoggingConfig, to_stderr: bool, selectors: tuple[str, ...], logs_path: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = _LEVELS.get(config.level, logging.INFO)
    all_selectors = tuple(selectors) + tuple(config.selectors)
    if all_selectors:
        level = logging.DEBUG
    fmt = logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-5s [%(name)s] %(message)s", "%Y-%m-%dT%H:%M:%S")
    handlers: list[logging.Handler] = []
    if to_stderr or config.to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    elif config.to_files:
        directory = config.files.path or logs_path
        try:
            os.makedirs(directory, exist_ok=True)
            handlers.append(logging.handlers.RotatingFileHandler(
                os.path.join(directory, config.files.name), maxBytes=config.files.rotateeverybytes,
                backupCount=config.files.keepfiles))
        except OSError:
            handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(fmt)
        if all_selectors:
            handler.addFilter(_SelectorFilter(all_selectors))
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
