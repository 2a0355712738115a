"""The one small error tree of stackd; foreign exceptions are translated at package boundaries."""

from __future__ import annotations


class Position:
    """A place in a source file: 1-based line and column, as editors show them.

    A plain immutable class (no dataclasses or typing import): the runtime and the shim import
    this module, and their start-up time is measured in milliseconds.
    """

    __slots__ = ("column", "file", "line")

    file: str
    line: int
    column: int

    def __init__(self, file: str, line: int, column: int) -> None:
        object.__setattr__(self, "file", file)
        object.__setattr__(self, "line", line)
        object.__setattr__(self, "column", column)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Position is immutable")

    def _key(self) -> tuple[str, int, int]:
        return (self.file, self.line, self.column)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Position) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Position({self.file!r}, {self.line}, {self.column})"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class StackdError(Exception):
    """Base of every error stackd reports to a user (the CLI prints it and exits 1)."""

    exit_code = 1


class SpecError(StackdError):
    """A stack file (or its environment) is wrong; names the file, line, column and key path."""

    def __init__(self, message: str, *, position: Position | None = None, path: str = "") -> None:
        self.message = message
        self.position = position
        self.path = path
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.position is not None:
            parts.append(str(self.position))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class UsageError(StackdError):
    """The command line itself is wrong (an unknown flag value, a missing argument)."""

    exit_code = 2


class EngineError(StackdError):
    """The container engine failed (images, containers, volumes)."""


class NotFoundError(EngineError):
    """An object (image, container, network, volume) does not exist."""


class ConflictError(EngineError):
    """An object is in the way (a name in use, a port taken, an image in use)."""


class ContainerStateError(EngineError):
    """A verb is invalid in the container's current state."""

    def __init__(self, current: str, verb: str, name: str = "") -> None:
        self.current = current
        self.verb = verb
        who = f"container {name} " if name else "container "
        super().__init__(f"cannot {verb} {who}in state {current!r}")


class RegistryError(EngineError):
    """A registry refused or failed a request (not found, unauthorized, bad content)."""


class RuntimeSpecError(StackdError):
    """An OCI runtime operation failed; names the container, the step and the errno."""


class NetError(StackdError):
    """Networking failed (bridge, veth, IPAM, ports, DNS)."""
