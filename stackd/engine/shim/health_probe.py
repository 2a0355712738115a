"""The shim's healthcheck runs: exec the probe through the runtime, read its output, time it out.

`HealthMonitor` (health.py) decides when a probe is due and what its result means; this module
runs the probes for a `Shim` (server.py) on its event loop and timers.
"""

from __future__ import annotations

import os
import select
import time

from stackd.engine.shim import host
from stackd.engine.shim.proc import pipe, set_nonblocking, spawn, waitpid_blocking

TYPE_CHECKING = False
if TYPE_CHECKING:
    from stackd.engine.shim.server import Shim

IN = select.EPOLLIN
RUNNING = "running"  # the shim status of a running container (server.RUNNING)


class HealthProber:
    """The probe in flight (at most one) of one shim's healthcheck."""

    def __init__(self, shim: Shim) -> None:
        self.shim = shim
        self.probe: dict[str, object] | None = None

    def schedule(self) -> None:
        h = self.shim.health
        if h is None or h.next_at is None:
            return
        self.shim.timers.add(max(0.0, h.next_at - time.time()), self.run)

    def run(self) -> None:
        h = self.shim.health
        if h is None or self.shim.status != RUNNING or not h.due():
            return
        argv = h.config.argv()
        if not argv:
            return
        r, w = pipe()
        pid_file = os.path.join(self.shim.dir, "health.pid")
        start = time.time()
        deadline = h.probe_started() - start
        runtime_pid = spawn(
            self.shim.runtime.exec_argv(self.shim.id, argv, pid_file=pid_file), stdout=w, stderr=w
        )
        os.close(w)
        set_nonblocking(r)
        rc = waitpid_blocking(runtime_pid)
        pid = host.read_pid(pid_file) if rc == 0 else 0
        probe: dict[str, object] = {
            "pid": pid,
            "fd": r,
            "out": bytearray(),
            "start": start,
            "timed_out": False,
        }
        self.probe = probe
        if not pid:  # the exec itself failed: a failed probe
            probe["out"] = bytearray(self.shim.runtime.error_text().encode())
            self.done(rc or 1)
            return
        self.shim.children[pid] = "health"
        self.shim.register(r, IN, self.on_output)
        probe["timer"] = self.shim.timers.add(deadline, self.timeout)

    def on_output(self, fd: int, _events: int) -> None:
        probe = self.probe
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk or probe is None:
            self.shim.unregister(fd)
            os.close(fd)
            if probe is not None:
                probe["fd"] = -1
            return
        out = probe["out"]
        assert isinstance(out, bytearray)
        if len(out) < 8192:
            out += chunk

    def timeout(self) -> None:
        probe = self.probe
        if probe is None:
            return
        probe["timed_out"] = True
        try:
            os.kill(int(probe["pid"]), 9)  # type: ignore[call-overload]
        except ProcessLookupError:
            pass

    def done(self, code: int) -> None:
        probe, self.probe = self.probe, None
        h = self.shim.health
        if probe is None or h is None:
            return
        if "timer" in probe:
            self.shim.timers.cancel(probe["timer"])  # type: ignore[arg-type]
        fd = probe["fd"]
        out = probe["out"]
        assert isinstance(fd, int) and isinstance(out, bytearray)
        if fd >= 0:
            try:
                while chunk := os.read(fd, 65536):
                    out += chunk
            except BlockingIOError:
                pass
            self.shim.unregister(fd)
            os.close(fd)
        if probe["timed_out"]:
            code, out = -1, bytearray(h.timed_out_output())
        h.probe_finished(code, bytes(out), float(probe["start"]), time.time())  # type: ignore[arg-type]
        if self.shim.status == RUNNING:
            self.schedule()
        else:
            h.container_stopped()
        self.shim.save()
