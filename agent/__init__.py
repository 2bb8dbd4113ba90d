"""pktbeat: a Packetbeat-compatible network traffic analyzer with eBPF capture."""

from agent.version import VERSION as __version__

__all__ = ["__version__"]
