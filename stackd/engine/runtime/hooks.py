"""Run OCI hooks: the container state on stdin, the hook's args and env, an optional timeout."""

from __future__ import annotations

import os


class HookError(Exception):
    """A hook failed, timed out or could not start."""


def run_hook(hook: dict[str, object], state_json: str, kind: str) -> None:
    """Run one hook to completion; raise HookError when it fails."""
    path = str(hook["path"])
    args = [str(a) for a in hook.get("args") or [path]]  # type: ignore[attr-defined]
    env = [str(e) for e in hook.get("env") or []]  # type: ignore[attr-defined]
    envd = dict(e.split("=", 1) for e in env if "=" in e)
    timeout = hook.get("timeout")
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(path, args, envd, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_CLOSE, w)])
    except OSError as e:
        os.close(r)
        os.close(w)
        raise HookError(f"{kind} hook {path}: cannot start: {e.strerror} (errno {e.errno})") from None
    os.close(r)
    try:
        os.write(w, state_json.encode())
    except BrokenPipeError:
        pass
    finally:
        os.close(w)
    if timeout:
        import select

        pfd = os.pidfd_open(pid)
        try:
            p = select.poll()
            p.register(pfd, select.POLLIN)
            if not p.poll(int(timeout) * 1000):  # type: ignore[call-overload]
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise HookError(f"{kind} hook {path}: timed out after {timeout}s")
        finally:
            os.close(pfd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise HookError(f"{kind} hook {path}: exited with status {code}")


def run_hooks(cfg: dict[str, object], kind: str, state_json: str) -> None:
    """Run all hooks of one kind in order."""
    hooks: dict[str, list[dict[str, object]]] = cfg.get("hooks") or {}  # type: ignore[assignment]
    for hook in hooks.get(kind) or []:
        run_hook(hook, state_json, kind)


def has_hooks(cfg: dict[str, object], *kinds: str) -> bool:
    hooks: dict[str, list[object]] = cfg.get("hooks") or {}  # type: ignore[assignment]
    return any(hooks.get(k) for k in kinds)
