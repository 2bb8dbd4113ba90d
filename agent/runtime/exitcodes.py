"""pktbeat's exit codes: one table for the CLI, live capture and replay.

Preflight failures have distinct codes so that scripts and service managers can
tell "no BPF" from "not enough privileges" from "no kernel headers".  The README
lists them; tests check that the two agree.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    CONFIG = 1  # the config file or a -E setting is invalid
    INPUT = 2  # an input file could not be read, or a capture worker failed
    PUBLISH_TIMEOUT = 3  # events not delivered: not acknowledged in time, or (replay) refused or dropped
    NO_BPF = 4  # the kernel cannot load the eBPF program
    NO_PRIVILEGES = 5  # a capability is missing
    NO_HEADERS = 6  # BCC finds no kernel headers
    NO_INTERFACE = 7  # no interface could be attached
    OUTPUT = 8  # the output could not be created or reached
    INTERRUPTED = 130  # a second SIGINT/SIGTERM forced the exit
