"""Entrypoint/Cmd merging (Docker's table), env merging, working dir, image config parsing."""

from __future__ import annotations

import pytest

from stackd.engine.bundle import BundleError, merge_env, resolve_args, resolve_env
from stackd.engine.container_config import ContainerConfig, HealthcheckConfig, ImageConfig

EXEC_ENTRY = ("exec_entry", "p1_entry")
SHELL_ENTRY = ("/bin/sh", "-c", "exec_entry p1_entry")
EXEC_CMD = ("exec_cmd", "p1_cmd")
SHELL_CMD = ("/bin/sh", "-c", "exec_cmd p1_cmd")


def cfg(img_entry=None, img_cmd=None, **kw) -> ContainerConfig:
    return ContainerConfig(name="c", image="img", image_config=ImageConfig(entrypoint=img_entry, cmd=img_cmd), **kw)


# Docker's "Understand how CMD and ENTRYPOINT interact" table; shell forms are already
# expanded to /bin/sh -c in the image config, so every cell is a concatenation.
@pytest.mark.parametrize(("entry", "cmd", "expected"), [
    (None, EXEC_CMD, ["exec_cmd", "p1_cmd"]),
    (None, SHELL_CMD, ["/bin/sh", "-c", "exec_cmd p1_cmd"]),
    (SHELL_ENTRY, None, ["/bin/sh", "-c", "exec_entry p1_entry"]),
    (SHELL_ENTRY, EXEC_CMD, ["/bin/sh", "-c", "exec_entry p1_entry", "exec_cmd", "p1_cmd"]),
    (SHELL_ENTRY, SHELL_CMD, ["/bin/sh", "-c", "exec_entry p1_entry", "/bin/sh", "-c", "exec_cmd p1_cmd"]),
    (EXEC_ENTRY, None, ["exec_entry", "p1_entry"]),
    (EXEC_ENTRY, EXEC_CMD, ["exec_entry", "p1_entry", "exec_cmd", "p1_cmd"]),
    (EXEC_ENTRY, SHELL_CMD, ["exec_entry", "p1_entry", "/bin/sh", "-c", "exec_cmd p1_cmd"]),
])  # fmt: skip
def test_docker_entrypoint_cmd_table(entry, cmd, expected):
    assert resolve_args(cfg(entry, cmd)) == expected


def test_command_override_keeps_image_entrypoint():
    assert resolve_args(cfg(EXEC_ENTRY, EXEC_CMD, command=("x", "y"))) == ["exec_entry", "p1_entry", "x", "y"]


def test_entrypoint_override_drops_image_cmd():
    assert resolve_args(cfg(EXEC_ENTRY, EXEC_CMD, entrypoint=("/new",))) == ["/new"]
    assert resolve_args(cfg(EXEC_ENTRY, EXEC_CMD, entrypoint=("/new",), command=("a",))) == ["/new", "a"]


def test_empty_entrypoint_resets_entrypoint_and_cmd():
    assert resolve_args(cfg(EXEC_ENTRY, EXEC_CMD, entrypoint=(), command=("ls", "-l"))) == ["ls", "-l"]
    with pytest.raises(BundleError, match="no command specified"):
        resolve_args(cfg(EXEC_ENTRY, EXEC_CMD, entrypoint=()))


def test_empty_command_drops_image_cmd_only():
    assert resolve_args(cfg(EXEC_ENTRY, EXEC_CMD, command=())) == ["exec_entry", "p1_entry"]


def test_no_command_at_all_is_a_clear_error():
    with pytest.raises(BundleError, match=r"container c: no command specified \(image img"):
        resolve_args(cfg())


def test_env_order_and_overrides():
    c = ContainerConfig(name="c", image="i", tty=True,
                        image_config=ImageConfig(env=("PATH=/img/bin", "A=img", "B=img")),
                        env=("B=ctr", "C=ctr", "A"))
    env = resolve_env(c, "host1", home="/root")
    assert env == ["PATH=/img/bin", "HOSTNAME=host1", "TERM=xterm", "B=ctr", "C=ctr", "HOME=/root"]


def test_env_default_path_and_no_term_without_tty():
    env = resolve_env(ContainerConfig(name="c", image="i", env=("HOME=/h", "X=a=b")), "h")
    assert env[0].startswith("PATH=/usr/local/sbin:")
    assert "TERM=xterm" not in env and "X=a=b" in env and env.count("HOME=/h") == 1
    assert not any(e.startswith("HOME=/root") for e in env)


def test_merge_env_replaces_in_place():
    assert merge_env(["A=1", "B=2"], ["A=3", "C=4", "B"]) == ["A=3", "C=4"]


def test_image_config_from_oci_document():
    doc = {"architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": []}, "config": {
        "Entrypoint": ["/e"], "Cmd": None, "Env": ["A=1"], "User": "app", "WorkingDir": "/w",
        "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "Labels": {"k": "v"},
        "StopSignal": "SIGQUIT",
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000, "Retries": 5}}}
    ic = ImageConfig.from_oci(doc)
    assert ic.entrypoint == ("/e",) and ic.cmd is None and ic.user == "app" and ic.working_dir == "/w"
    assert ic.exposed_ports == ("80/tcp",) and ic.volumes == ("/data",) and ic.labels == {"k": "v"}
    assert ic.healthcheck == HealthcheckConfig(("CMD-SHELL", "true"), 2.0, 30.0, 5, 0.0, 5.0)
    c = ContainerConfig(name="c", image="i", image_config=ic)
    assert c.effective_stop_signal() == "SIGQUIT"
    assert c.effective_healthcheck() is not None
    assert ContainerConfig(name="c", image="i", image_config=ic,
                           healthcheck=HealthcheckConfig(("NONE",))).effective_healthcheck() is None
    assert ContainerConfig(name="c", image="i").effective_stop_signal() == "SIGTERM"
