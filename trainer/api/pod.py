"""The pod fields of a TrainingRun spec: resources, tolerations, the S3 credentials Secret (torch-free,
re-exported by ``trainer.api.spec``).

Apart from the spec model because they mirror Kubernetes types (corev1.ResourceRequirements, Toleration) that
the operator's settings (``trainop.settings``: cluster-wide defaults and profiles) validate with the same rules."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from trainer.api.base import ApiModel as _Model
from trainer.api.patterns import DNS_LABEL_PATTERN, QUANTITY_PATTERN


class SecretRef(_Model):
    """A Secret in the run's namespace holding S3 credentials."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=253)
    access_key_id_key: str = Field(default="AWS_ACCESS_KEY_ID", min_length=1)
    secret_access_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", min_length=1)


def _one_gpu() -> dict[str, int | str]:
    return {"nvidia.com/gpu": 1}


class Resources(_Model):
    """corev1.ResourceRequirements, e.g. ``limits: {nvidia.com/gpu: 1, memory: 8Gi}``."""

    requests: dict[str, int | str] = Field(default_factory=dict)
    limits: dict[str, int | str] = Field(default_factory=_one_gpu)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[str, int | str]) -> dict[str, int | str]:
        for name, q in v.items():
            if isinstance(q, int):
                if q < 0:
                    raise ValueError(f"{name}: a quantity must not be negative")
            elif not re.match(QUANTITY_PATTERN, q):
                raise ValueError(f"{name}: '{q}' is not a Kubernetes quantity such as 500m, 2, 8Gi")
        return v


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None
