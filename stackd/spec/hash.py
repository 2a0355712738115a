"""The config hash of a service: what decides whether its containers must be recreated.

sha256 over a JSON text (sorted keys, no spaces) of the service's canonical config, without the
keys that do not change a container, plus the content of the configs and secrets it mounts
(file content, or the inline/environment content). env_file and label_file contents are
already folded into `environment` and `labels` by the canonical stage, so they count too.

Left out (changing them must not recreate a container):
`build`, `depends_on`, `profiles`, `pull_policy`, `scale`, `deploy.replicas`,
`deploy.update_config`, `deploy.rollback_config`, `deploy.placement`, `deploy.endpoint_mode`,
`develop`, `env_file` and `label_file` (the paths; their content counts), and `x-` extensions.
Callers add facts found later (the image digest) through `extra`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from stackd.errors import SpecError
from stackd.spec.source import Node

IGNORED_KEYS = frozenset(
    {"build", "depends_on", "profiles", "pull_policy", "scale", "develop", "env_file", "label_file"}
)
IGNORED_DEPLOY_KEYS = frozenset({"replicas", "update_config", "rollback_config", "placement", "endpoint_mode"})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not str(k).startswith(("x-", "X-"))}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def hashed_view(tree: Mapping[str, Any], service: str, environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The data the hash of `service` is computed over (for tests and `--hash` debugging)."""
    config = tree["services"][service]
    view = {k: _strip(v) for k, v in config.items() if k not in IGNORED_KEYS and not k.startswith(("x-", "X-"))}
    if isinstance(view.get("deploy"), dict):
        deploy = {k: v for k, v in view["deploy"].items() if k not in IGNORED_DEPLOY_KEYS}
        if deploy:
            view["deploy"] = deploy
        else:
            del view["deploy"]
    files: dict[str, str] = {}
    for kind in ("configs", "secrets"):
        for ref in config.get(kind) or ():
            source = ref.get("source") if isinstance(ref, dict) else None
            definition = (tree.get(kind) or {}).get(source)
            if isinstance(definition, dict):
                files[f"{kind}/{source}"] = _content_digest(definition, kind, str(source), environment or {})
    if files:
        view["#files"] = files
    return view


def _content_digest(definition: Mapping[str, Any], kind: str, name: str, environment: Mapping[str, str]) -> str:
    if definition.get("external"):
        return "external:" + str(definition.get("name") or name)
    if definition.get("content") is not None:
        return hashlib.sha256(str(definition["content"]).encode()).hexdigest()
    if definition.get("environment") is not None:
        value = environment.get(str(definition["environment"]), "")
        return hashlib.sha256(value.encode()).hexdigest()
    path = definition.get("file")
    if not isinstance(path, str):
        return ""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError as exc:
        position = definition.position_of("file") if isinstance(definition, Node) else None
        raise SpecError(f"cannot read {path}: {exc.strerror}", position=position, path=f"{kind}.{name}.file") from None


def config_hash(
    tree: Mapping[str, Any],
    service: str,
    extra: Mapping[str, str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> str:
    """sha256 hex digest of the service's config (stable across runs, dict orders, versions).

    `environment` resolves secrets/configs declared with `environment: VAR` (their content)."""
    view = hashed_view(tree, service, environment)
    if extra:
        view["#extra"] = dict(extra)
    text = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
