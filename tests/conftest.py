"""Test configuration shared by the whole suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Events must not depend on the machine's time zone (the seed users' TZ problem).
os.environ.setdefault("TZ", "UTC")
