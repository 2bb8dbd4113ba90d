"""An Elasticsearch stand-in server for the output tests (see server.py)."""
