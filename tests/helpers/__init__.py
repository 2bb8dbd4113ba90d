"""Shared test helpers: protocol session drivers, replay through the CLI, network namespaces."""
