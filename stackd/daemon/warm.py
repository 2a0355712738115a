"""Load all of stackd once, so every forked worker starts with nothing left to import.

Every module of the package is imported (with the third-party libraries they use: click,
pydantic, trio, networkx, httpx, pyroute2, yaml), the pydantic models are built, and the
collected objects are frozen out of the garbage collector's reach, so a worker's first
collections do not touch (and copy) the daemon's pages. Nothing here opens a file, a socket or a
thread that a worker would inherit.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
from collections.abc import Callable

import stackd

# Entry points that run code on import, and recording fakes that only tests use.
SKIP = ("__main__", ".fake", "_fake", "stackd.client")
# What stackd imports inside functions (to keep the embedded CLI fast), loaded here ahead of time.
LIBRARIES = ("pyroute2", "pyroute2.iproute", "pyroute2.netns", "pyroute2.netlink.rtnl.ifinfmsg",
             "httpx", "httpcore", "h11", "anyio", "asyncio", "logging", "multiprocessing", "pickle",
             "difflib", "pprint", "argparse", "sqlite3", "ctypes.util", "encodings.idna",
             "encodings.utf_8_sig", "encodings.unicode_escape")


def modules() -> list[str]:
    """The names of stackd's modules to preload."""
    names = []
    for info in pkgutil.walk_packages(stackd.__path__, "stackd."):
        if not any(info.name.endswith(s) or info.name == s for s in SKIP):
            names.append(info.name)
    return sorted(names)


def preload(warn: Callable[[str], None] | None = None) -> int:
    """Import every module (a failure is reported and skipped); returns how many loaded."""
    loaded = 0
    for name in (*LIBRARIES, *modules()):
        try:
            importlib.import_module(name)
            loaded += 1
        except Exception as exc:  # an optional dependency missing: that command pays the import
            if warn:
                warn(f"preloading {name}: {exc}")
    gc.collect()
    gc.freeze()
    return loaded
