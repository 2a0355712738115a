"""Benchmark the stack loader (issue 2, section 6).

In-process: `load()` of compose-go's full-example.yml and of a generated 1000-service file.
Wall time: `stackd config` against `docker-compose config` and `podman-compose config` on the
same files, when those are installed (peers that are absent are skipped). Medians; ratios printed.

    .venv/bin/python bench/spec_load.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
FULL_EXAMPLE_DIR = CORPUS / "compose-go-9dee8f4" / "loader"
AWESOME = CORPUS / "awesome-compose"
PODMAN_COMPOSE = (Path("/tmp/podman-compose-venv/bin/podman-compose"), Path("/tmp/anchors/pcvenv/bin/podman-compose"))


def generate(directory: Path, count: int = 1000) -> Path:
    """A stack of `count` services using ports, environment, volumes, depends_on, healthchecks."""
    lines = ["services:"]
    for i in range(count):
        lines += [
            f"  svc{i}:",
            f"    image: nginx:1.{i % 30}",
            "    ports:",
            f'      - "{10000 + i}:80"',
            "    environment:",
            f"      - N={i}",
            "    volumes:",
            f"      - data{i % 10}:/data",
            "      - ./conf:/etc/conf:ro",
            "    depends_on: [base]",
            "    labels: {app: demo}",
            "    healthcheck:",
            "      test: curl -f http://localhost",
            "      interval: 10s",
        ]
    lines += ["  base:", "    image: busybox", "volumes:"] + [f"  data{i}: {{}}" for i in range(10)]
    path = directory / "compose.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def in_process(runs: int, big: Path) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    import stackd.spec.canonical
    import stackd.spec.models
    import stackd.spec.resolve
    import stackd.spec.validate  # noqa: F401
    from stackd.spec.load import load
    from stackd.spec.options import LoadOptions

    import_ms = (time.perf_counter() - t0) * 1000
    env = {"HOME": "/root", "BAR": "this is a secret", "QUX": "qux_from_environment"}
    full = LoadOptions(files=(str(FULL_EXAMPLE_DIR / "full-example.yml"),), environ=env, working_dir=str(FULL_EXAMPLE_DIR))

    def timed(options: LoadOptions, **kw: bool) -> float:
        start = time.perf_counter()
        load(options, **kw)
        return (time.perf_counter() - start) * 1000

    first = timed(full, normalize=False, consistency=False)
    full_ms = statistics.median(timed(full, normalize=False, consistency=False) for _ in range(runs))
    big_options = LoadOptions(environ={}, working_dir=str(big.parent))
    big_ms = statistics.median(timed(big_options) for _ in range(max(3, runs // 4)))
    return {"import": import_ms, "full_first": first, "full": full_ms, "big": big_ms}


def wall(commands: dict[str, list[str]], cwd: Path, runs: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU (user+sys of the child) ms per command; commands run interleaved
    (one round runs each once, in rotating order), so a busy machine slows all of them alike.
    A command that fails on this input is dropped."""
    env = {**os.environ, "COMPOSE_PROJECT_NAME": "bench"}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(runs + 2):  # two warm-up rounds
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            if name not in walls:
                continue
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(commands[name], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            elapsed = (time.perf_counter() - start) * 1000
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                print(f"  {name} failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
                del walls[name], cpus[name]
                continue
            if round_ >= 2:
                walls[name].append(elapsed)
                cpus[name].append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in walls}


def peers() -> dict[str, list[str]]:
    stackd = ROOT / ".venv" / "bin" / "stackd"
    found = {"stackd": [str(stackd) if stackd.exists() else "stackd", "config"]}
    docker_compose = shutil.which("docker-compose")
    if docker_compose:
        found["docker-compose"] = [docker_compose, "config"]
    podman_compose = shutil.which("podman-compose") or next((str(p) for p in PODMAN_COMPOSE if p.exists()), None)
    if podman_compose:
        found["podman-compose"] = [podman_compose, "config"]
    return found


def cases(tmp: Path, big: Path) -> list[tuple[str, Path]]:
    """Generated image-only stacks and the awesome-compose files without `build:` (which every
    peer accepts), each copied to its own directory."""
    small = tmp / "small"
    small.mkdir()
    (small / "conf").mkdir()
    generate(small, 10)
    found = [("generated, 10 services", small), ("generated, 1000 services", big.parent)]
    for compose in sorted(AWESOME.glob("*/compose.yaml")):
        if "build:" in compose.read_text():
            continue
        target = tmp / "awesome" / compose.parent.name
        shutil.copytree(compose.parent, target)
        found.append((f"awesome-compose/{compose.parent.name}", target))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="only the generated 10-service file and three awesome-compose files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big_dir = Path(tmp, "big")
        big_dir.mkdir()
        (big_dir / "conf").mkdir()
        big = generate(big_dir)
        stats = in_process(args.runs, big)
        print("in-process load (median ms)")
        print(f"  import the spec pipeline       {stats['import']:8.1f}   (pydantic model classes included)")
        print(f"  full-example.yml, first load   {stats['full_first']:8.1f}   (target < 50)")
        print(f"  full-example.yml               {stats['full']:8.1f}   (target < 50)")
        print(f"  1000 services                  {stats['big']:8.1f}   (target < 1000)")
        commands = peers()
        if len(commands) == 1:
            print("no peer installed (docker-compose / podman-compose): no wall-time comparison")
            return 0
        todo = cases(Path(tmp), big)
        if args.quick:
            todo = todo[:1] + todo[2:5]
        cli_runs = max(5, args.runs // 2)
        ratios: dict[str, list[float]] = {}
        print(f"config wall time, median ms of {cli_runs} interleaved runs (CPU user+sys in brackets)")
        for label, cwd in todo:
            results = wall(commands, cwd, cli_runs if "1000" not in label else max(3, cli_runs // 4))
            line = "  ".join(f"{name} {ms:6.1f} [{cpu:5.1f}]" for name, (ms, cpu) in results.items())
            base = results.get("stackd")
            for name, (ms, _) in results.items():
                if name != "stackd" and base:
                    ratios.setdefault(name, []).append(base[0] / ms)
                    line += f"  /{name} {base[0] / ms:.2f}x"
            print(f"  {label:44} {line}")
        for name, values in ratios.items():
            print(f"stackd / {name}: median ratio {statistics.median(values):.2f}x, worst {max(values):.2f}x over {len(values)} files"
                  + ("   (target <= 0.5)" if name == "docker-compose" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
