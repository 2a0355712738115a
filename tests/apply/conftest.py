"""Apply tests share the planner's stackkit helpers (tests run with --import-mode=importlib)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "planner"))

