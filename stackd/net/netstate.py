"""Read-only view of the network records (`<state_root>/net/state.json`) for cheap queries.

No kernel access and no imports beyond the standard library: the no-op `up` shortcut and other
quick checks read which networks exist without building a NetManager.
"""

from __future__ import annotations

import json
from pathlib import Path


def network_names(state_root: str | Path) -> set[str] | None:
    """Names of the recorded networks (empty when none were made); None if the file has a shape
    this reader does not know (callers then ask the NetManager)."""
    try:
        with open(Path(state_root) / "net" / "state.json") as f:
            raw = json.load(f)
        return {str(n["name"]) for n in raw.get("networks") or ()}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
