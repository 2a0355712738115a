"""The engine facade: images, snapshots and containers of one state root and run root, together.

The CLI (embedded mode), the daemon and the apply step build one `Engine` with injected roots.
Parts are created on first use, so a command pays only for what it touches; the container
manager runs live-restore (containers.restore) the first time it is used in a process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stackd.errors import NotFoundError

RUNTIME_ENV = "STACKD_RUNTIME"
DEFAULT_RUNTIME = "stackd-runtime"


def default_runtime(environ: dict[str, str] | None = None) -> str:
    """$STACKD_RUNTIME, else the default runtime: stackd-runtime (runc and crun are pluggable)."""
    env = os.environ if environ is None else environ
    return env.get(RUNTIME_ENV) or DEFAULT_RUNTIME


NET_TABLE_ENV = "STACKD_NET_TABLE"
NET_PREFIX_ENV = "STACKD_NET_LINK_PREFIX"
NET_POOLS_ENV = "STACKD_NET_POOLS"


def net_manager(state_root: Path, *, table: str | None = None, link_prefix: str | None = None,
                pools: Any = None, environ: Mapping[str, str] | None = None) -> Any:
    """A NetManager on the real kernel: table, link prefix and pools from the arguments, else
    $STACKD_NET_TABLE / $STACKD_NET_LINK_PREFIX / $STACKD_NET_POOLS (`base/len:size,…`), else
    the net layer's defaults (table `stackd`, prefix `sd`)."""
    from stackd.errors import UsageError
    from stackd.net import ipam
    from stackd.net.linux import LinuxKernel
    from stackd.net.manager import NetManager

    env = os.environ if environ is None else environ
    kw: dict[str, Any] = {}
    if table or env.get(NET_TABLE_ENV):
        kw["table"] = table or env[NET_TABLE_ENV]
    if link_prefix or env.get(NET_PREFIX_ENV):
        kw["link_prefix"] = link_prefix or env[NET_PREFIX_ENV]
    if isinstance(pools, str) or (pools is None and env.get(NET_POOLS_ENV)):
        try:
            kw["pools"] = ipam.parse_pools(pools if isinstance(pools, str) else env[NET_POOLS_ENV])
        except ValueError as exc:
            raise UsageError(f"{NET_POOLS_ENV}: {exc}") from None
    elif pools is not None:
        kw["pools"] = tuple(pools)
    return NetManager(Path(state_root), LinuxKernel(), **kw)


class Engine:
    """Images, snapshots, volumes, networks and containers under `state_root` and `run_root`.

    Networking: `net` is a ready NetManager, else one is built on first use from `net_table`,
    `net_link_prefix`, `net_pools` or the environment (see `net_manager`); tests always give a
    table and prefix of their own so they never touch a real stackd's nftables table.
    """

    def __init__(self, state_root: Path, run_root: Path, *, runtime: str | None = None,
                 cgroup_parent: str = "/stackd", registries: Any = None, auth: Any = None,
                 net: Any = None, restore: bool = True, net_table: str | None = None,
                 net_link_prefix: str | None = None, net_pools: Any = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.state_root = Path(state_root)
        self.run_root = Path(run_root)
        self.runtime = runtime or default_runtime()
        self.cgroup_parent = cgroup_parent
        self.registries = registries
        self.auth = auth
        self.net = net
        self._net_opts = {"table": net_table, "link_prefix": net_link_prefix, "pools": net_pools,
                          "environ": environ}
        self._restore = restore
        self._images: Any = None
        self._snapshots: Any = None
        self._containers: Any = None
        self._volumes: Any = None

    @property
    def networks(self) -> Any:
        """The NetManager (stackd.net.manager): create_network, ensure_network, attach, publish, …"""
        if self.net is None:
            self.net = net_manager(self.state_root, **self._net_opts)
        return self.net

    @property
    def volumes(self) -> Any:
        """The VolumeStore (stackd.engine.volumes): create, inspect, list, remove, prune."""
        if self._volumes is None:
            from stackd.engine.volumes import VolumeStore

            self._volumes = VolumeStore(self.state_root)
        return self._volumes

    def close(self) -> None:
        """Release the netlink socket (if networking was used)."""
        close = getattr(getattr(self.net, "kernel", None), "close", None)
        if close is not None:
            close()

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
                images=lambda: self.images, snapshots=lambda: self.snapshots, net=lambda: self.networks,
                volumes=lambda: self.volumes)
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
