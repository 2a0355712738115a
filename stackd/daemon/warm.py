"""Load all of stackd once, so every forked worker starts with nothing left to import.

Every module of the package is imported (with the third-party libraries they use: click,
pydantic, trio, networkx, httpx, pyroute2, yaml), the pydantic models' validators are built, the
modules' `warm_up()` functions fill their first-use caches, and the collected objects are frozen
out of the garbage collector's reach, so a worker's first collections do not touch (and copy)
the daemon's pages. Nothing here opens a file, a socket or a
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
    _build_models(warn)
    _warm_up(warn)
    gc.collect()
    gc.freeze()
    return loaded


def _warm_up(warn: Callable[[str], None] | None) -> None:
    """Call every stackd module's `warm_up()`: first-use caches a worker would otherwise fill (they
    open no file, socket or thread)."""
    import sys

    for name, module in sorted(sys.modules.items()):
        fn = getattr(module, "warm_up", None) if name.startswith("stackd.") else None
        if callable(fn):
            try:
                fn()
            except Exception as exc:
                if warn:
                    warn(f"warming up {name}: {exc}")


def _build_models(warn: Callable[[str], None] | None) -> None:
    """Build the validators of stackd's pydantic models now (they are deferred to first use, which
    would cost every `up` ~0.1 s)."""
    import sys

    from pydantic import BaseModel

    for name, module in list(sys.modules.items()):
        if not name.startswith("stackd."):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == name:
                try:
                    obj.model_rebuild()
                except Exception as exc:  # a model only some path completes: it builds on first use
                    if warn:
                        warn(f"building {name}.{obj.__name__}: {exc}")
