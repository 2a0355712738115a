"""The base of the stack models and the named field types they share (durations, byte sizes)."""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from stackd.spec.types import parse_byte_limit, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; the stack file says `10s`, `1m30s`, `500ms` or a bare number of seconds."""

ByteSize = Annotated[int, BeforeValidator(parse_byte_limit)]
"""Bytes; the stack file says `512m`, `1g`, `1.5gb` or a bare number (-1: unlimited)."""

StrMap = dict[str, str]
EnvMap = dict[str, str | None]


class Model(BaseModel):
    """Frozen, unknown keys forbidden; `x-` extensions kept in `extensions`."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    extensions: dict[str, Any] = Field(default_factory=dict, alias="#extensions")
