"""publisher layer."""
