"""Wiring of the layers into a running agent (replay and live), below the CLI."""
