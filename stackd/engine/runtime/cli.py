"""`stackd-runtime`: runc's command line over `api` (a tiny hand-written parser: start-up is the budget)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"
# command → {flag: (takes a value, aliases)}
_CREATE = {"bundle": (True, ("b",)), "pid-file": (True, ()), "console-socket": (True, ()), "no-pivot": (False, ()),
           "no-new-keyring": (False, ()), "preserve-fds": (True, ())}
FLAGS: dict[str, dict[str, tuple[bool, tuple[str, ...]]]] = {
    "create": _CREATE,
    "run": {**_CREATE, "detach": (False, ("d",)), "keep": (False, ())},
    "start": {}, "state": {}, "pause": {}, "resume": {}, "features": {},
    "kill": {"all": (False, ("a",))},
    "delete": {"force": (False, ("f",))},
    "exec": {"tty": (False, ("t",)), "console-socket": (True, ()), "detach": (False, ("d",)),
             "pid-file": (True, ()), "process": (True, ("p",)), "env": (True, ("e",)), "cwd": (True, ()),
             "user": (True, ("u",)), "no-new-privs": (False, ()), "preserve-fds": (True, ())},
    "ps": {"format": (True, ("f",))},
    "list": {"format": (True, ("f",)), "quiet": (False, ("q",))},
    "spec": {"bundle": (True, ("b",)), "rootless": (False, ())},
}
GLOBAL = {"root": (True, ()), "log": (True, ()), "log-format": (True, ()), "debug": (False, ()),
          "systemd-cgroup": (False, ()), "rootless": (True, ()), "help": (False, ("h",)),
          "version": (False, ("v",))}
SIGNALS = {"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
           "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
           "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24,
           "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31}
USAGE = """usage: stackd-runtime [--root DIR] [--log FILE] [--log-format text|json] [--debug] COMMAND [OPTIONS] ID

commands: create start run state kill delete exec pause resume ps list spec features
"""


class Usage(Exception):
    """A wrong command line (exit 2)."""


def parse(argv: list[str], flags: dict[str, tuple[bool, tuple[str, ...]]]) -> tuple[dict[str, object], list[str]]:
    """Flags (-x, --x, -x=v, --x v; repeated values collect) up to the first positional."""
    names = {}
    for name, (_, aliases) in flags.items():
        names[name] = name
        for a in aliases:
            names[a] = name
    opts: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return opts, argv[i + 1 :]
        if not arg.startswith("-") or arg == "-":
            break
        key, eq, value = arg.lstrip("-").partition("=")
        val: str | None = value
        found = names.get(key)
        if found is None:
            raise Usage(f"unknown flag {arg}")
        name = found
        if flags[name][0]:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise Usage(f"flag {arg} needs a value")
                val = argv[i]
            prev = opts.get(name)
            opts[name] = [*prev, val] if isinstance(prev, list) else ([prev, val] if prev is not None else val)
        else:
            opts[name] = value.lower() not in ("false", "0") if eq else True
        i += 1
    return opts, argv[i:]


def _one(opts: dict[str, object], key: str) -> str | None:
    v = opts.get(key)
    return v[-1] if isinstance(v, list) else v  # type: ignore[return-value]


def _all(opts: dict[str, object], key: str) -> list[str]:
    v = opts.get(key)
    return [] if v is None else (v if isinstance(v, list) else [v])  # type: ignore[list-item]


def _id(pos: list[str], command: str) -> str:
    if not pos:
        raise Usage(f"{command}: a container id is required")
    return pos[0]


def signal_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise Usage(f"unknown signal {text!r}")
    return SIGNALS[name]


def _print_json(obj: object, indent: bool = True) -> None:
    from stackd.engine.runtime.config import dumps, dumps_indent

    sys.stdout.write((dumps_indent(obj) if indent else dumps(obj)) + "\n")


def dispatch(command: str, opts: dict[str, object], pos: list[str], root: str,
             warn: Callable[[str], None]) -> int:
    from stackd.engine.runtime import api

    if command in ("spec", "features"):
        from stackd.engine.runtime import config

        if command == "features":
            _print_json(config.features())
            return 0
        path = os.path.join(_one(opts, "bundle") or ".", "config.json")
        if os.path.exists(path):
            raise Usage(f"File {path} exists. Remove it first")
        import json

        with open(path, "w") as f:
            json.dump(config.default_spec(), f, indent="\t")
            f.write("\n")
        return 0
    if command == "list":
        states = api.list_states(root)
        if _one(opts, "format") == "json":
            _print_json(states, indent=False)
        elif opts.get("quiet"):
            sys.stdout.write("".join(f"{s['id']}\n" for s in states))
        else:
            rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
            rows += [(str(s["id"]), str(s["pid"]), str(s["status"]), str(s["bundle"]), str(s["created"]), "root")
                     for s in states]
            widths = [max(len(r[i]) for r in rows) for i in range(6)]
            for r in rows:
                sys.stdout.write("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        return 0
    cid = _id(pos, command)
    rest = pos[1:]
    if command in ("create", "run"):
        kw: dict[str, object] = {
            "pid_file": _one(opts, "pid-file"), "console_socket": _one(opts, "console-socket"),
            "no_pivot": bool(opts.get("no-pivot")), "preserve_fds": int(_one(opts, "preserve-fds") or 0),
        }
        bundle = _one(opts, "bundle") or "."
        if command == "create":
            api.create(root, cid, bundle, warn=warn, **kw)  # type: ignore[arg-type]
            return 0
        return api.run(root, cid, bundle, detach=bool(opts.get("detach")), keep=bool(opts.get("keep")), warn=warn,
                       **kw)  # type: ignore[arg-type]
    if command == "start":
        api.start(root, cid, warn)
    elif command == "state":
        _print_json(api.state(root, cid))
    elif command == "kill":
        api.kill(root, cid, signal_number(rest[0]) if rest else 15, bool(opts.get("all")))
    elif command == "delete":
        api.delete(root, cid, bool(opts.get("force")), warn)
    elif command == "pause":
        api.pause(root, cid)
    elif command == "resume":
        api.resume(root, cid)
    elif command == "ps":
        pids = api.pids(root, cid)
        if _one(opts, "format") == "json":
            _print_json(pids, indent=False)
            return 0
        import subprocess

        out = subprocess.run(["ps", *(rest or ["-ef"])], capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        col = lines[0].split().index("PID")
        sys.stdout.write("\n".join([lines[0]] + [ln for ln in lines[1:] if int(ln.split()[col]) in pids]) + "\n")
    elif command == "exec":
        from stackd.engine.runtime import api_exec, config

        if opts.get("process"):
            with open(str(_one(opts, "process"))) as f:
                proc = config.loads(f.read())
            assert isinstance(proc, dict)
        else:
            if not rest:
                raise Usage("exec: a command is required")
            from stackd.engine.runtime.container import Container

            c = Container(root, cid)
            base = config.load(str(c.data["bundle"]), lambda m: None).get("process") or {}
            proc = api_exec.exec_spec(base, rest, env=_all(opts, "env"), cwd=_one(opts, "cwd"),  # type: ignore[arg-type]
                                 user=_one(opts, "user"), tty=bool(opts.get("tty")),
                                 no_new_privs=True if opts.get("no-new-privs") else None)
        return api_exec.exec_process(root, cid, proc, detach=bool(opts.get("detach")), pid_file=_one(opts, "pid-file"),
                                console_socket=_one(opts, "console-socket"),
                                preserve_fds=int(_one(opts, "preserve-fds") or 0), warn=warn)
    return 0


class Log:
    """Where messages go: stderr, plus --log (text or JSON lines)."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path, self.fmt, self.debug = path, fmt, debug
        if debug:
            os.environ["STACKD_RUNTIME_DEBUG"] = "1"

    def write(self, level: str, msg: str) -> None:
        if level != "debug" or self.debug:
            os.write(2, f"stackd-runtime: {'' if level == 'error' else level + ': '}{msg}\n".encode())
        if self.path:
            import time

            if self.fmt == "json":
                from stackd.engine.runtime.config import dumps

                line = dumps({"level": level, "msg": msg, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            else:
                line = f'time="{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}" level={level} msg="{msg}"'
            with open(self.path, "a") as f:
                f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (a foreground run/exec returns the container's).

    As the process's entry (no `argv`) it never returns: with the garbage collector off (short
    process; and no collections dirtying copy-on-write pages in the forked children) it exits
    through os._exit after flushing, skipping the interpreter's teardown.
    """
    if argv is not None:
        return _main(argv)
    import gc

    gc.disable()
    code = _main(sys.argv[1:])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _main(argv: list[str]) -> int:
    log = Log(None, "text", False)
    command, cid = "", ""
    try:
        gopts, rest = parse(argv, GLOBAL)
        log = Log(_one(gopts, "log"), _one(gopts, "log-format") or "text", bool(gopts.get("debug")))
        if gopts.get("version"):
            sys.stdout.write(f"stackd-runtime version {VERSION}\nspec: {SPEC_VERSION}\n")
            return 0
        if gopts.get("help") or not rest:
            sys.stdout.write(USAGE)
            return 0 if gopts.get("help") else 2
        command = rest[0]
        if command not in FLAGS:
            raise Usage(f"unknown command {command!r}")
        if command in ("create", "run", "exec"):  # first: overlap the cgroup grace period with the rest (cgroups_warm)
            from stackd.engine.runtime import cgroups_warm

            cgroups_warm.start()
        opts, pos = parse(rest[1:], FLAGS[command])
        cid = pos[0] if pos and command not in ("list", "spec", "features") else ""
        root = _one(gopts, "root") or "/run/stackd-runtime"
        code = dispatch(command, opts, pos, root, lambda m: log.write("warning", m))
        sys.stdout.flush()
        return code
    except Usage as e:
        log.write("error", str(e))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from stackd.engine.runtime.api import translate
        from stackd.errors import StackdError

        if not isinstance(e, (StackdError, OSError)) and not _internal_known(e):
            import traceback

            traceback.print_exc()  # a bug, not a user error
            return 70
        log.write("error", str(translate(cid or "-", command or "runtime", e)))
        return 1


def _internal_known(e: BaseException) -> bool:
    from stackd.engine.runtime.config import ConfigError
    from stackd.engine.runtime.hooks import HookError
    from stackd.engine.runtime.namespaces import ChildError
    from stackd.engine.runtime.state import StateError

    return isinstance(e, (ConfigError, HookError, ChildError, StateError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
