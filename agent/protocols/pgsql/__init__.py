"""PostgreSQL: the frontend/backend protocol (parser.py), its sessions (plugin.py) and events (fields.py)."""
