"""The container status table: which verb is valid in which status, and where it leads.

Statuses (Docker's): created → running ⇄ paused, running → restarting → running, running →
exited, any → dead (the engine could not clean up). Two internal statuses mark work in
progress so a crashed engine's leftovers are found: `creating` (bundle not finished) and
`removing` (resources being released). A verb invalid in a status raises
`ContainerStateError(current, verb)`.
"""

from __future__ import annotations

from stackd.errors import ContainerStateError

CREATING, CREATED, RUNNING, PAUSED = "creating", "created", "running", "paused"
RESTARTING, EXITED, DEAD, REMOVING = "restarting", "exited", "dead", "removing"

STATUSES = (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD)  # what users see
INTERNAL = (CREATING, REMOVING)
LIVE = (RUNNING, PAUSED, RESTARTING)  # a shim owns the container

# verb → statuses it is valid in
VALID: dict[str, tuple[str, ...]] = {
    "start": (CREATED, EXITED),
    "stop": (CREATED, RUNNING, PAUSED, RESTARTING, EXITED),  # stopping a stopped one is a no-op
    "kill": (RUNNING, RESTARTING),
    "restart": (CREATED, RUNNING, PAUSED, RESTARTING, EXITED),
    "pause": (RUNNING,),
    "unpause": (PAUSED,),
    "exec": (RUNNING,),
    "attach": (RUNNING, RESTARTING, CREATED, EXITED),
    "top": (RUNNING, PAUSED),
    "stats": (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD),
    "remove": (CREATED, EXITED, DEAD),
    "remove -f": (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD, CREATING, REMOVING),
    "rename": (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD),
    "wait": (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD),
}

# (from, to) transitions the manager may record
TRANSITIONS: set[tuple[str, str]] = {
    (CREATING, CREATED), (CREATING, REMOVING),
    (CREATED, RUNNING), (EXITED, RUNNING), (CREATED, EXITED),
    (RUNNING, PAUSED), (PAUSED, RUNNING),
    (RUNNING, RESTARTING), (RESTARTING, RUNNING), (RESTARTING, EXITED),
    (RUNNING, EXITED), (PAUSED, EXITED),
    *((s, DEAD) for s in (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, CREATING)),
    *((s, REMOVING) for s in (CREATED, RUNNING, PAUSED, RESTARTING, EXITED, DEAD)),
}


def check(current: str, verb: str, name: str = "") -> None:
    """Raise ContainerStateError unless `verb` is valid in `current`."""
    if current not in VALID.get(verb, ()):
        raise ContainerStateError(current, verb, name)


def can_transition(old: str, new: str) -> bool:
    return old == new or (old, new) in TRANSITIONS


def is_running(status: str) -> bool:
    return status in LIVE
