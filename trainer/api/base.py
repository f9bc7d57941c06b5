"""The base of every API model (spec, sweep, schedule): camelCase in YAML, snake_case in Python, unknown fields
refused (a typo such as ``learningrate`` is an error naming the field, never silently ignored), defaults
validated too."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )
