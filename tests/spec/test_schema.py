"""The generated schema (stackd.spec.schema_data) matches the models and validates as they do."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as ModelError
from pydantic_core import ValidationError

import stackd.spec.schema as schema
from stackd.errors import SpecError
from stackd.spec.load import load
from stackd.spec.models import Stack
from stackd.spec.options import LoadOptions
from stackd.spec.validate import _tree_path
from tests.spec.back.test_back_props import CORPUS_TREES, KEYS, _paths, documents


def test_generated_module_is_current() -> None:
    current = Path(schema.__file__).with_name("schema_data.py").read_text(encoding="utf-8")
    assert current == schema.generate(), "models changed: run `python -m stackd.spec.schema`"


def test_shapes_follow_the_models() -> None:
    assert list(schema.shapes()["Port"]) == ["name", "mode", "host_ip", "target", "published", "protocol", "app_protocol"]
    assert schema.shapes()["Service"]["deploy"] == ("model", "Deploy")
    assert schema.shapes()["Stack"]["services"] == ("map", "Service")


def _errors(exc: Exception, data: Any) -> set[tuple[str, tuple[Any, ...]]]:
    assert isinstance(exc, (ValidationError, ModelError))
    return {(e["type"].replace("model_type", "dict_type"), _tree_path(data, e["loc"])) for e in exc.errors(include_url=False)}


class _BothValidators:
    """Validates with the generated schema and with the pydantic models; they must agree."""

    def __init__(self) -> None:
        self.fast = schema.validator()

    def validate_python(self, data: Any) -> Any:
        fast_error = model_error = None
        try:
            self.fast.validate_python(data)
        except ValidationError as exc:
            fast_error = exc
        try:
            Stack.model_validate(data)
        except ModelError as exc:
            model_error = exc
        assert (fast_error is None) == (model_error is None), (data, fast_error, model_error)
        if fast_error is not None and model_error is not None:
            assert _errors(fast_error, data) == _errors(model_error, data)
            raise fast_error
        return data


@pytest.fixture(scope="module")
def both() -> _BothValidators:
    return _BothValidators()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_same_verdict_as_the_models(both: _BothValidators, data: st.DataObject) -> None:
    tree = copy.deepcopy(data.draw(st.sampled_from(CORPUS_TREES)))
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        parent[data.draw(st.sampled_from(KEYS))] = data.draw(documents)
    else:
        parent[path[-1]] = data.draw(documents)
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        mp.setattr(schema, "validator", lambda: both)
        Path(tmp, "stack.yaml").write_text(yaml.safe_dump(tree))
        try:
            project = load(LoadOptions(files=("stack.yaml",), environ={"HOME": "/root"}, working_dir=tmp))
        except SpecError:
            return
        assert isinstance(project.stack, Stack)
