"""The engine facade: images, snapshots and containers of one state root and run root, together.

The CLI (embedded mode), the daemon and the apply step build one `Engine` with injected roots.
Parts are created on first use, so a command pays only for what it touches; the container
manager runs live-restore (containers.restore) the first time it is used in a process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stackd.errors import NotFoundError

RUNTIME_ENV = "STACKD_RUNTIME"
DEFAULT_RUNTIME = "runc"


def default_runtime(environ: dict[str, str] | None = None) -> str:
    """$STACKD_RUNTIME, else the default runtime (runc; stackd-runtime once it passes the suite)."""
    env = os.environ if environ is None else environ
    return env.get(RUNTIME_ENV) or DEFAULT_RUNTIME


class Engine:
    """Images, snapshots and containers under `state_root` and `run_root`."""

    def __init__(self, state_root: Path, run_root: Path, *, runtime: str | None = None,
                 cgroup_parent: str = "/stackd", registries: Any = None, auth: Any = None,
                 net: Any = None, restore: bool = True) -> None:
        self.state_root = Path(state_root)
        self.run_root = Path(run_root)
        self.runtime = runtime or default_runtime()
        self.cgroup_parent = cgroup_parent
        self.registries = registries
        self.auth = auth
        self.net = net
        self._restore = restore
        self._images: Any = None
        self._snapshots: Any = None
        self._containers: Any = None

    @property
    def images(self) -> Any:
        if self._images is None:
            import stackd.engine.containers_store  # noqa: F401  (its migration, before the Store opens)
            from stackd.engine.images import ImageStore

            self._images = ImageStore(self.state_root)
        return self._images

    @property
    def snapshots(self) -> Any:
        if self._snapshots is None:
            from stackd.engine.snapshots import Snapshotter

            self._snapshots = Snapshotter(self.state_root / "snapshots")
        return self._snapshots

    @property
    def containers(self) -> Any:
        if self._containers is None:
            from stackd.engine.containers import ContainerManager

            self._containers = ContainerManager(
                self.state_root, self.run_root, runtime=self.runtime, cgroup_parent=self.cgroup_parent,
                images=self.images, snapshots=self.snapshots, net=self.net)
            if self._restore:
                from stackd.engine.containers_restore import restore

                restore(self._containers)
        return self._containers

    def pull(self, ref: str, *, platform: str | None = None, progress: Any = None) -> Any:
        """Pull `ref` (blocking; runs trio inside); returns the ImageRecord."""
        import trio

        from stackd.engine.pull import Puller
        from stackd.engine.registry_config import load

        if self.registries is None:
            self.registries = load()
        if self.auth is None:
            from stackd.engine.auth import AuthConfig

            self.auth = AuthConfig.default()
        puller = Puller(self.state_root, registries=self.registries, auth=self.auth, progress=progress,
                        images=self.images)
        return trio.run(puller.pull, ref, platform)

    def ensure_image(self, ref: str, *, pull: str = "missing", progress: Any = None) -> Any:
        """The image `ref`, pulled first when `pull` is "always" or it is "missing" and absent."""
        if pull != "always":
            try:
                return self.images.resolve(ref)
            except NotFoundError:
                if pull == "never":
                    raise
        return self.pull(ref, progress=progress)
