"""MySQL and MariaDB: the protocol (parser.py, replies.py), its sessions (plugin.py) and events (fields.py)."""
