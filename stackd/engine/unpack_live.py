"""Unpack layers while they download: the blob's bytes also go down a pipe to an unpack worker.

The worker unpacks into a temporary snapshot (`Snapshotter.claim`) that is committed only after the
blob's digest (checked by the content store) and the layer's diff ID (checked by the worker) both
verified; anything else kills the worker and drops the temporary tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import trio

from stackd.engine import registry as reg


@dataclass(frozen=True, slots=True)
class LayerPlan:
    chain: str
    diff_id: str
    parent: str | None


class LiveUnpack:
    """Unpacks a layer from the bytes as they download (a worker reading a pipe), into a temporary
    snapshot committed only after the blob's digest and the layer's diff ID both verified."""

    def __init__(self, claim: Any, proc: Any) -> None:
        self.claim = claim
        self.proc = proc
        self.pipe: trio.lowlevel.FdStream | None = trio.lowlevel.FdStream(proc.take_stdin())
        self.fed = 0
        self.live = True  # false once the stream diverged from the blob: unpack after download

    @classmethod
    def start(cls, snap: Any, plan: LayerPlan, d: reg.Descriptor) -> LiveUnpack | None:
        claim = snap.claim(plan.chain, plan.diff_id, plan.parent, wait=False)
        if claim is None:
            return None  # unpacked, or being unpacked by another process
        try:
            proc = snap.start_unpack(None, d.media_type, claim, what=f"layer {d.digest}")
        except BaseException:
            claim.release()
            raise
        return cls(claim, proc)

    async def feed(self, chunk: bytes, offset: int) -> None:
        """Pass on `chunk`, which the blob now holds up to `offset`; give up if they diverge."""
        if not self.live or self.pipe is None:
            return
        if self.fed + len(chunk) != offset:  # the download restarted from scratch
            self.abort()
            return
        try:
            await self.pipe.send_all(chunk)
            self.fed = offset
        except trio.BrokenResourceError:  # the worker stopped early; finish() reports why
            await self._close_pipe()

    async def _close_pipe(self) -> None:
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            await pipe.aclose()

    async def finish(self) -> None:
        """End the stream, wait for the worker, verify and commit the snapshot."""
        await self._close_pipe()
        stats = await trio.to_thread.run_sync(self.proc.wait)
        self.claim.commit(stats)

    def abort(self) -> None:
        """Stop the worker and drop the temporary snapshot (no-op after a commit)."""
        self.live = False
        if self.pipe is not None:
            pipe, self.pipe = self.pipe, None
            pipe.close()
        self.proc.kill()
        self.claim.release()


def start_server() -> Any:
    """A warm unpack worker parent (None if it cannot start: workers are then exec'd per layer)."""
    if os.geteuid() != 0:
        return None
    from stackd.engine.unpack_server import UnpackServer

    try:
        return UnpackServer()
    except OSError:
        return None
