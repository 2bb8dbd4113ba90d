"""pktbeat: a Packetbeat-compatible network traffic analyzer with eBPF capture."""

from agent import accel as _accel
from agent.version import VERSION as __version__

_accel.install()  # native builds of the per-packet modules, when set-up made them from these sources

__all__ = ["__version__"]
