"""Flows: bidirectional per-connection counters, reported periodically and when they end."""
