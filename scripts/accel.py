"""Build or check the native (mypyc) modules: `.venv/bin/python scripts/accel.py build|check`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.accel import main

sys.exit(main(sys.argv[1:]))
