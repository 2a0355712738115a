"""Loader details: merge rules (ipam.config, logging, the pattern index), paths made absolute,
the user's own text in short-volume errors, variables from every file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stackd.errors import SpecError
from stackd.spec import merge as merge_mod
from stackd.spec.load import load
from stackd.spec.options import LoadOptions
from stackd.spec.resolve import resolve, variables


def _load(tmp: Path, *texts: str) -> Any:
    files = []
    for i, text in enumerate(texts):
        (tmp / f"f{i}.yaml").write_text(text)
        files.append(f"f{i}.yaml")
    return load(LoadOptions(files=tuple(files), environ={"HOME": "/home/u"}, working_dir=str(tmp))).tree


def test_ipam_config_merges_by_subnet(tmp_path: Path) -> None:
    base = "services: {a: {image: x}}\nnetworks:\n  n:\n    ipam:\n      config:\n        - {subnet: 10.1.0.0/16, gateway: 10.1.0.1}\n        - {subnet: 10.2.0.0/16}\n"
    over = "networks:\n  n:\n    ipam:\n      config:\n        - {subnet: 10.1.0.0/16, gateway: 10.1.0.254}\n        - {subnet: 10.3.0.0/16}\n"
    config = _load(tmp_path, base, over)["networks"]["n"]["ipam"]["config"]
    assert [dict(c) for c in config] == [
        {"subnet": "10.1.0.0/16", "gateway": "10.1.0.254"}, {"subnet": "10.2.0.0/16"}, {"subnet": "10.3.0.0/16"},
    ]


def test_logging_merges_options_unless_the_driver_changes(tmp_path: Path) -> None:
    base = "services:\n  a:\n    image: x\n    logging: {driver: json-file, options: {max-size: 1m, max-file: '3'}}\n"
    same = "services:\n  a:\n    logging: {options: {max-size: 5m}}\n"
    assert _load(tmp_path, base, same)["services"]["a"]["logging"] == {"driver": "json-file", "options": {"max-size": "5m", "max-file": "3"}}
    other = "services:\n  a:\n    logging: {driver: syslog, options: {tag: web}}\n"
    assert _load(tmp_path, base, other)["services"]["a"]["logging"] == {"driver": "syslog", "options": {"tag": "web"}}


def test_pattern_index_matches_like_the_tables() -> None:
    match = merge_mod._match
    assert match(merge_mod._UNIQUE, ("services", "web", "networks", "front", "aliases")) is merge_mod._kv_key
    assert match(merge_mod._MERGERS, ("services", "web", "ulimits", "nofile")) is merge_mod._replace
    assert match(merge_mod._MERGERS, ("networks", "n", "ipam", "config")) is merge_mod._ipam_config
    assert match(merge_mod._MERGERS, ("services", "web", "image")) is None
    assert match(merge_mod._MERGERS, ("services", "web")) is None
    # a service called like a key of the pattern still matches through the wildcard
    assert match(merge_mod._MERGERS, ("services", "services", "command")) is merge_mod._replace


def test_short_volume_error_quotes_what_the_user_wrote(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        _load(tmp_path, "services:\n  a:\n    image: x\n    volumes: ['~/data:/data:rx']\n")
    assert err.value.message.startswith('"~/data:/data:rx": unknown volume mode "rx"')


def test_more_paths_made_absolute(tmp_path: Path) -> None:
    text = (
        "services:\n  a:\n    image: x\n    build:\n      context: .\n"
        "      additional_contexts: {base: ./base, img: 'docker-image://alpine', svc: 'service:b'}\n"
        "    develop:\n      watch: [{path: ./src, action: sync, target: /app}]\n  b:\n    image: y\n"
        "volumes:\n  data:\n    driver_opts: {type: none, o: bind, device: ./data}\n"
        "  nfs:\n    driver_opts: {type: nfs, o: 'addr=1', device: ':/x'}\n"
    )
    tree = _load(tmp_path, text)
    build = tree["services"]["a"]["build"]
    assert build["additional_contexts"] == {"base": f"{tmp_path}/base", "img": "docker-image://alpine", "svc": "service:b"}
    assert tree["services"]["a"]["develop"]["watch"][0]["path"] == f"{tmp_path}/src"
    assert tree["volumes"]["data"]["driver_opts"]["device"] == f"{tmp_path}/data"
    assert tree["volumes"]["nfs"]["driver_opts"]["device"] == ":/x"


def test_variables_come_from_every_file_before_the_merge(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("services:\n  a:\n    image: ${IMG:-busybox}\n    command: ${CMD?need it}\n")
    (tmp_path / "b.yaml").write_text("services:\n  a:\n    image: ${OTHER}\n    command: !reset null\n")
    options = LoadOptions(files=("a.yaml", "b.yaml"), environ={}, working_dir=str(tmp_path))
    found = {v.name: (v.required, v.default) for v in variables(options)}
    assert found == {"IMG": (False, "busybox"), "CMD": (True, None), "OTHER": (False, None)}
    # the merged tree alone no longer has IMG or CMD
    assert "IMG" not in str(resolve(LoadOptions(files=("a.yaml", "b.yaml"), environ={}, working_dir=str(tmp_path), interpolate=False)).tree)


def test_reset_in_an_extending_service_also_resets_earlier_files(tmp_path: Path) -> None:
    first = "services:\n  web:\n    image: nginx\n    ports: ['80:80']\n    environment: {A: '1', B: '2'}\n    command: [a]\n"
    second = (
        "services:\n  web:\n    extends: base\n    ports: !reset []\n    environment:\n      A: !reset null\n"
        "    command: !override [b]\n  base:\n    image: busybox\n    command: [c]\n"
    )
    web = _load(tmp_path, first, second)["services"]["web"]
    assert "ports" not in web
    assert web["environment"] == {"B": "2"}
    assert web["command"] == ["b"]
    assert web["image"] == "busybox"


def test_reset_of_one_mapping_entry_across_files(tmp_path: Path) -> None:
    first = "services:\n  web:\n    image: nginx\n    environment: {A: '1', B: '2'}\n    labels: [x=1, y=2]\n"
    second = "services:\n  web:\n    environment:\n      A: !reset null\n    labels:\n      y: !reset null\n"
    web = _load(tmp_path, first, second)["services"]["web"]
    assert web["environment"] == {"B": "2"}
    assert web["labels"] == {"x": "1"}


def test_network_mode_service_and_volumes_from_imply_depends_on(tmp_path: Path) -> None:
    """compose-go adds depends_on for `network_mode: service:X` (restart: true) and volumes_from."""
    (tmp_path / "compose.yaml").write_text(
        "services:\n  a:\n    image: busybox\n    network_mode: service:b\n    volumes_from: [c]\n"
        "  b:\n    image: busybox\n  c:\n    image: busybox\n"
    )
    project = load(LoadOptions(files=(str(tmp_path / "compose.yaml"),), working_dir=str(tmp_path)))
    depends = project.tree["services"]["a"]["depends_on"]
    assert dict(depends["b"]) == {"condition": "service_started", "restart": True, "required": True}
    assert dict(depends["c"]) == {"condition": "service_started", "required": True}
