"""Benchmark the stack loader (issue 2, section 6).

In-process: `load()` of compose-go's full-example.yml and of a generated 1000-service file.
Wall time: `stackd config` against `docker-compose config` and `podman-compose config` on the
same files, when those are installed (peers that are absent are skipped). Medians; ratios printed.

    .venv/bin/python bench/spec_load.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
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
PODMAN_COMPOSE_VENV = Path("/tmp/podman-compose-venv/bin/podman-compose")


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


def wall(cmd: list[str], cwd: Path, runs: int) -> float | None:
    env = {**os.environ, "COMPOSE_PROJECT_NAME": "bench"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        times.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 0:
            print(f"  {' '.join(cmd)} failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
            return None
    return statistics.median(times)


def peers() -> dict[str, list[str]]:
    stackd = ROOT / ".venv" / "bin" / "stackd"
    found = {"stackd": [str(stackd) if stackd.exists() else "stackd", "config"]}
    docker_compose = shutil.which("docker-compose")
    if docker_compose:
        found["docker-compose"] = [docker_compose, "config"]
    podman_compose = shutil.which("podman-compose") or (str(PODMAN_COMPOSE_VENV) if PODMAN_COMPOSE_VENV.exists() else None)
    if podman_compose:
        found["podman-compose"] = [podman_compose, "config"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big_dir, small_dir = Path(tmp, "big"), Path(tmp, "small")
        for directory in (big_dir, small_dir):
            directory.mkdir()
            (directory / "conf").mkdir()
        big = generate(big_dir)
        generate(small_dir, 10)
        stats = in_process(args.runs, big)
        print("in-process load (median ms)")
        print(f"  import the spec pipeline       {stats['import']:8.1f}   (pydantic model classes included)")
        print(f"  full-example.yml, first load   {stats['full_first']:8.1f}   (target < 50)")
        print(f"  full-example.yml               {stats['full']:8.1f}   (target < 50)")
        print(f"  1000 services                  {stats['big']:8.1f}   (target < 1000)")
        cli_runs = max(5, args.runs // 2)
        for label, cwd in (("10 services", small_dir), ("1000 services", big_dir)):
            print(f"config wall time, {label} (median ms of {cli_runs})")
            results: dict[str, float] = {}
            for name, cmd in peers().items():
                ms = wall(cmd, cwd, cli_runs)
                if ms is not None:
                    results[name] = ms
                    print(f"  {name:16} {ms:8.1f}")
            base = results.get("stackd")
            for name, ms in results.items():
                if name != "stackd" and base:
                    print(f"  stackd / {name}: {base / ms:.2f}x   (target <= 0.5 vs docker-compose)")
            if len(results) == 1:
                print("  (no peer installed: docker-compose / podman-compose absent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
