"""The agent's version, stamped on every event as agent.version."""

VERSION = "0.9.0"
# The ECS version Packetbeat stamps on its events.
ECS_VERSION = "8.0.0"
