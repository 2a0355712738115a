"""Restart policy decisions with Docker's backoff (pure logic, injected clock).

Policies: ``no``, ``always``, ``unless-stopped``, ``on-failure[:max]``. After each exit the
delay before the next start is 100 ms, doubling per restart up to 1 minute, and it goes back to
100 ms when the container had been running for at least 10 s (as dockerd's restartmanager).
A container stopped by the user (stop or kill) is not restarted by any policy.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing/collections would cost the shim RSS; mypy honours this name
if TYPE_CHECKING:
    from collections.abc import Callable

POLICIES = ("no", "always", "unless-stopped", "on-failure")
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
RESET_AFTER = 10.0


class PolicyError(ValueError):
    """A restart policy string is invalid."""


class RestartPolicy:
    """A parsed policy: ``name`` and, for on-failure, ``max_retries`` (0 = unlimited)."""

    __slots__ = ("max_retries", "name")

    def __init__(self, name: str = "no", max_retries: int = 0) -> None:
        if name not in POLICIES:
            raise PolicyError(
                f"invalid restart policy {name!r}: expected one of {', '.join(POLICIES)}"
            )
        if max_retries < 0:
            raise PolicyError(
                f"invalid restart policy: maximum retry count {max_retries} is negative"
            )
        if max_retries and name != "on-failure":
            raise PolicyError(
                f"invalid restart policy: maximum retry count only applies to on-failure, not {name}"
            )
        self.name = name
        self.max_retries = max_retries

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        """Parse ``no``, ``always``, ``unless-stopped``, ``on-failure`` or ``on-failure:N``."""
        name, sep, count = (text or "no").partition(":")
        if not sep:
            return cls(name)
        if not count.isdigit():
            raise PolicyError(
                f"invalid restart policy {text!r}: maximum retry count must be a number"
            )
        return cls(name, int(count))

    def __str__(self) -> str:
        return f"{self.name}:{self.max_retries}" if self.max_retries else self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RestartPolicy) and (self.name, self.max_retries) == (
            other.name,
            other.max_retries,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.max_retries))


class RestartManager:
    """Tracks one container's runs and decides whether, and after which delay, to restart it."""

    def __init__(
        self, policy: RestartPolicy, clock: Callable[[], float], restart_count: int = 0
    ) -> None:
        self.policy = policy
        self._clock = clock
        self.restart_count = restart_count
        self._timeout = 0.0
        self._started_at: float | None = None
        self.manually_stopped = False

    def started(self) -> None:
        """The container (re)started now."""
        self._started_at = self._clock()

    def stopped_by_user(self) -> None:
        """A stop/kill came from the user: no restart after the coming exit."""
        self.manually_stopped = True

    def reset_user_stop(self) -> None:
        """An explicit start clears a previous user stop."""
        self.manually_stopped = False

    def should_restart(self, exit_code: int) -> bool:
        """Whether the policy restarts after an exit with ``exit_code`` (no side effects)."""
        if self.manually_stopped:
            return False
        name = self.policy.name
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure" and exit_code != 0:
            return self.policy.max_retries == 0 or self.restart_count < self.policy.max_retries
        return False

    def exited(self, exit_code: int) -> float | None:
        """Record an exit; return the delay in seconds before restarting, or None for no restart."""
        now = self._clock()
        ran = now - self._started_at if self._started_at is not None else 0.0
        self._started_at = None
        if ran >= RESET_AFTER:
            self._timeout = 0.0
        if not self.should_restart(exit_code):
            return None
        self._timeout = BACKOFF_START if self._timeout == 0 else min(self._timeout * 2, BACKOFF_MAX)
        self.restart_count += 1
        return self._timeout
