"""The runtime's state directory: ROOT/ID/{state.json, exec.fifo, lock}; atomic writes, flock."""

from __future__ import annotations

import errno
import os

from stackd.engine.runtime.config import dumps, loads

DEFAULT_ROOT = "/run/stackd-runtime"


class StateError(Exception):
    """A state directory problem (exists, missing, bad id); the CLI reports it."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def check_id(container_id: str) -> None:
    """Container ids are one path component of safe characters (runc's rule)."""
    ok = container_id and container_id not in (".", "..") and all(
        c.isalnum() or c in "_+-." for c in container_id
    )
    if not ok or not container_id.isascii():
        raise StateError(f"invalid container id {container_id!r}: use letters, digits, '_', '+', '-' and '.'")


class StateDir:
    """One container's state directory."""

    def __init__(self, root: str, container_id: str) -> None:
        check_id(container_id)
        self.root = root
        self.id = container_id
        self.path = os.path.join(root, container_id)
        self.state_file = os.path.join(self.path, "state.json")
        self.fifo = os.path.join(self.path, "exec.fifo")
        self._lock_fd = -1

    def create(self) -> None:
        """Make the directory; fails if the container exists."""
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            raise StateError(f"container {self.id} already exists", errno.EEXIST) from None

    def exists(self) -> bool:
        return os.path.exists(self.state_file)

    def lock(self) -> StateDir:
        """Take the container's exclusive lock (released by `unlock` or process exit)."""
        if self._lock_fd < 0:
            try:
                fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                raise StateError(f"container {self.id} does not exist", errno.ENOENT) from None
            import fcntl  # here: `state` and `list` never lock

            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
        return self

    @property
    def lock_fd(self) -> int:
        return self._lock_fd

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> StateDir:
        return self.lock()

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def load(self) -> dict[str, object]:
        try:
            with open(self.state_file, "rb") as f:
                data = loads(f.read().decode())
        except FileNotFoundError:
            raise StateError(f"container {self.id} does not exist", errno.ENOENT) from None
        except ValueError as e:
            raise StateError(f"container {self.id}: corrupt {self.state_file}: {e}") from None
        assert isinstance(data, dict)
        return data

    def save(self, data: dict[str, object]) -> None:
        """Write state.json atomically (temp file, fsync-free rename: /run is tmpfs)."""
        tmp = f"{self.state_file}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, dumps(data).encode())
        finally:
            os.close(fd)
        os.rename(tmp, self.state_file)

    def remove(self) -> None:
        for name in os.listdir(self.path) if os.path.isdir(self.path) else ():
            try:
                os.unlink(os.path.join(self.path, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass


def list_ids(root: str) -> list[str]:
    """Ids of the containers under `root` (those with a state.json)."""
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.exists(os.path.join(root, n, "state.json"))]


def proc_start_time(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[19])
