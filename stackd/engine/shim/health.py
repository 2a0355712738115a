"""Healthcheck scheduling and status (pure logic; the clock and the probe runner are injected).

Docker's semantics: status ``starting`` until the first success; ``healthy`` on exit 0;
``unhealthy`` after ``retries`` consecutive failures (failures during ``start_period`` before
the first success do not count); probes run every ``interval`` after the previous one ended,
every ``start_interval`` while still starting inside the start period; a probe exceeding
``timeout`` is a failure with exit code -1. The last 5 results are kept with output truncated
to 4096 bytes, as ``docker inspect`` shows them under ``State.Health``.
"""

from __future__ import annotations

from stackd.engine.shim.logs import format_time

TYPE_CHECKING = False  # typing would cost the shim RSS; mypy honours this name
if TYPE_CHECKING:
    from collections.abc import Callable

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
DEFAULTS = {
    "interval": 30.0,
    "timeout": 30.0,
    "retries": 3,
    "start_period": 0.0,
    "start_interval": 5.0,
}


class HealthConfig:
    """A healthcheck: ``test`` (Docker's form) and its timings in seconds."""

    __slots__ = ("interval", "retries", "start_interval", "start_period", "test", "timeout")

    def __init__(
        self,
        test: list[str] | str,
        *,
        interval: float = 30.0,
        timeout: float = 30.0,
        retries: int = 3,
        start_period: float = 0.0,
        start_interval: float = 5.0,
    ) -> None:
        self.test = ["CMD-SHELL", test] if isinstance(test, str) else list(test)
        self.interval = interval or DEFAULTS["interval"]
        self.timeout = timeout or DEFAULTS["timeout"]
        self.retries = int(retries or DEFAULTS["retries"])
        self.start_period = start_period
        self.start_interval = start_interval or DEFAULTS["start_interval"]

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> HealthConfig:
        """From ``{"test": [...], "interval": s, ...}`` (seconds; missing keys take defaults)."""
        test = d.get("test")
        if not isinstance(test, list | str):
            raise ValueError("healthcheck test must be a list or a string")
        kw: dict[str, float] = {}
        for k in ("interval", "timeout", "start_period", "start_interval"):
            v = d.get(k)
            if isinstance(v, int | float):
                kw[k] = float(v)
        retries = d.get("retries")
        return cls(test, retries=retries if isinstance(retries, int) else 3, **kw)

    def to_dict(self) -> dict[str, object]:
        return {
            "test": self.test,
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "start_period": self.start_period,
            "start_interval": self.start_interval,
        }

    def argv(self) -> list[str] | None:
        """The command to exec in the container, or None when the check is disabled (NONE)."""
        if not self.test or self.test[0] == "NONE":
            return None
        kind, rest = self.test[0], self.test[1:]
        if kind == "CMD":
            return rest or None
        if kind == "CMD-SHELL":
            return ["/bin/sh", "-c", " ".join(rest)] if rest else None
        raise ValueError(f"healthcheck test must start with CMD, CMD-SHELL or NONE, not {kind!r}")


class HealthMonitor:
    """One container's health state; the caller runs probes when ``due`` says so."""

    def __init__(self, config: HealthConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self.status = STARTING
        self.failing_streak = 0
        self.log: list[dict[str, object]] = []
        self._started_at = clock()
        self.next_at: float | None = None
        self.probing = False

    def container_started(self) -> None:
        """The container (re)started: back to ``starting``, first probe one interval from now."""
        now = self._clock()
        self._started_at = now
        self.status = STARTING
        self.failing_streak = 0
        self.probing = False
        self.next_at = now + self._interval(now)

    def container_stopped(self) -> None:
        """No more probes until the next start."""
        self.next_at = None
        self.probing = False

    def _interval(self, now: float) -> float:
        c = self.config
        if self.status == STARTING and now - self._started_at < c.start_period:
            return c.start_interval
        return c.interval

    def due(self) -> bool:
        """Whether a probe should start now."""
        return not self.probing and self.next_at is not None and self._clock() >= self.next_at

    def probe_started(self) -> float:
        """A probe starts now; returns its deadline (start + timeout)."""
        self.probing = True
        return self._clock() + self.config.timeout

    def probe_finished(self, exit_code: int, output: bytes, start: float, end: float) -> None:
        """Record a probe's result (exit_code -1 for a timeout) and schedule the next one."""
        self.probing = False
        text = output[:MAX_OUTPUT].decode("utf-8", "replace")
        self.log.append(
            {
                "Start": format_time(start),
                "End": format_time(end),
                "ExitCode": exit_code,
                "Output": text,
            }
        )
        del self.log[:-MAX_LOG_ENTRIES]
        if exit_code == 0:
            self.failing_streak = 0
            self.status = HEALTHY
        elif not (self.status == STARTING and start - self._started_at < self.config.start_period):
            self.failing_streak += 1
            if self.failing_streak >= self.config.retries:
                self.status = UNHEALTHY
        if self.next_at is not None:
            now = self._clock()
            self.next_at = now + self._interval(now)

    def timed_out_output(self) -> bytes:
        """The output Docker records for a probe that exceeded its timeout."""
        return f"Health check exceeded timeout ({self.config.timeout:g}s)".encode()

    def to_dict(self) -> dict[str, object]:
        """``State.Health`` as docker inspect shows it."""
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": list(self.log)}
