"""examples/scale end to end: three replicas behind one DNS name, all reachable from the client; a
changed environment variable recreates exactly that service, and the client keeps its container."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.e2e.examples_kit import Example, example_stack, needs_root
from tests.e2e.images_fixture import DockerMirror, busybox_mirror  # noqa: F401  (session fixture)

pytestmark = needs_root


def replicas(ex: Example, *, fresh: bool = False) -> dict[str, str]:
    """The client's view: resolve `web`, ask every address; address → the replica's hostname.

    `fresh` asks from a new one-off client container (`run --rm`) instead of the running one.
    """
    how = ("run", "--rm", "-T", "--no-deps") if fresh else ("exec", "-T")
    for attempt in range(3):  # a replica just started may not listen yet (no healthcheck)
        out = ex.cli(*how, "client", "sh", "/client.sh", "once").stdout
        m = re.search(r"^web resolves to: (.*)$", out, re.M)
        assert m, out
        addrs = m.group(1).split()
        answers = dict(re.findall(r"from replica (\w+) at (\S+)", out))
        if sorted(answers.values()) == sorted(addrs) or attempt == 2:
            break
        time.sleep(1)
    assert sorted(answers.values()) == sorted(addrs), out  # every resolved address answered, once
    return {ip: host for host, ip in answers.items()}


def web_ids(ex: Example) -> set[str]:
    return {cid[:12] for name, cid in ex.ids().items() if "-web-" in name}


def test_scale_round_robin_and_recreate_only_the_changed_service(busybox_mirror: DockerMirror, tmp_path: Path) -> None:  # noqa: F811
    with example_stack("scale", busybox_mirror, tmp_path, MESSAGE="hello") as ex:
        ex.cli("up", "-d", "--wait", "--wait-timeout", "60")
        ids = ex.ids()
        assert sorted(ids) == sorted([f"{ex.project}-client-1"] + [f"{ex.project}-web-{n}" for n in (1, 2, 3)])

        seen = replicas(ex)
        assert len(seen) == 3 and set(seen.values()) == web_ids(ex)  # hostname = the container's short ID
        page = ex.cli("exec", "-T", "client", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 80").stdout
        assert "hello from replica" in page

        ex.vars["MESSAGE"] = "bonjour"
        plan = ex.cli("plan").stdout
        assert "Plan: 3 to recreate (environment.MESSAGE changed), 1 unchanged." in plan, plan
        actions = json.loads(ex.cli("plan", "--format", "json").stdout)["actions"]
        assert {a["service"] for a in actions} == {"web"}
        assert {a["reason"] for a in actions} == {"recreate: environment.MESSAGE changed"}

        ex.cli("up", "-d", "--wait", "--wait-timeout", "60")
        after = ex.ids()
        client = f"{ex.project}-client-1"
        assert after[client] == ids[client]  # untouched
        assert sorted(after) == sorted(ids) and all(after[n] != ids[n] for n in ids if n != client)
        assert "no changes" in ex.cli("plan").stdout

        # DNS now answers with the new replicas only, and they serve the new message, asked from
        # the client that stayed up (the bridge keeps its MAC, so its ARP entry stays valid) and
        # from a fresh one-off container.
        seen = replicas(ex)
        assert len(seen) == 3 and set(seen.values()) == web_ids(ex)
        assert replicas(ex, fresh=True) == seen
        out = ex.cli("exec", "-T", "client", "nslookup", f"{ex.project}-web-1").stdout
        assert "Address" in out.split("Name:", 1)[-1], out  # the recreated container's final name
        out = ex.cli("run", "--rm", "-T", "--no-deps", "client", "sh", "/client.sh", "once").stdout
        assert out.count("bonjour from replica") == 3 and "hello" not in out, out
        assert ex.ids() == after  # the one-off containers are gone

        ex.cli("down", "-v")
        assert ex.left_behind() == []
