"""Oracle TNS (Transparent Network Substrate) and the TTC calls it carries."""
