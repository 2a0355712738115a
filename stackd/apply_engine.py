"""The engine calls the executor makes (`StackEngine`), and the errors they may raise.

The real engine is wired behind this Protocol by an adapter; `stackd.apply_fake` is the
in-memory implementation; tests/contract/test_stack_engine_contract.py checks both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from stackd.errors import EngineError

if TYPE_CHECKING:
    from stackd.planner.desired import ContainerSpec, NetworkSpec, VolumeSpec
    from stackd.planner.observed import ObservedState


class UnhealthyError(EngineError):
    """A container did not become healthy; carries the healthcheck's last output."""

    def __init__(self, name: str, output: str = "", reason: str = "unhealthy") -> None:
        self.name = name
        self.output = output
        text = f"container {name} is {reason}"
        if output.strip():
            text += f"; last healthcheck output: {output.strip()}"
        super().__init__(text)


class StackEngine(Protocol):
    """What `stackd.apply` needs from an engine; every method may block, so all are async.

    Errors are `stackd.errors.StackdError` subclasses (`NotFoundError`, `ConflictError`,
    `ContainerStateError`, `UnhealthyError`…); anything else is a bug.
    """

    async def pull(self, image: str) -> str:
        """Pull `image`; returns its digest (`sha256:…`)."""

    async def create_network(self, spec: NetworkSpec) -> str:
        """Create a network; returns its id. ConflictError if the name is taken."""

    async def create_volume(self, spec: VolumeSpec) -> str:
        """Create a named volume; returns its name. ConflictError if it exists."""

    async def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id. ConflictError if the name is taken."""

    async def start(self, container_id: str) -> None:
        """Start a created or exited container (a running one: no-op)."""

    async def stop(self, container_id: str, timeout: float = 10.0) -> None:
        """Stop: the stop signal, then SIGKILL after `timeout` seconds (a stopped one: no-op)."""

    async def remove(self, container_id: str) -> None:
        """Remove a container that is not running (ContainerStateError if it runs)."""

    async def rename(self, container_id: str, name: str) -> None:
        """Give a container a new name (ConflictError if taken)."""

    async def wait_healthy(self, container_id: str, timeout: float | None = None) -> None:
        """Return once healthy; UnhealthyError (with the last output) if it turns unhealthy,
        exits, has no healthcheck, or `timeout` seconds pass."""

    async def wait_exited(self, container_id: str) -> int:
        """Wait for the container to exit; returns its exit code."""

    async def observe(self, project: str) -> ObservedState:
        """One snapshot of the project's containers (with labels), networks and volumes."""
