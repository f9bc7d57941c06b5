"""Operator settings, read once from ``TRAINOP_*`` environment variables (pydantic-settings).

Why a model: the Helm chart sets exactly these variables, and a typo or a bad value
(``TRAINOP_METRICS_PORT=abc``) must stop the operator at start-up with the variable's name, not half-way
through a reconcile. The trainer defaults and profiles (``TRAINOP_TRAINER_DEFAULTS``/``_PROFILES``, what the
chart's ``toJson`` renders) are checked with the spec's own models and label rules, so a bad profile stops it
too, naming the variable and the key (``cpu.nodeSelector``), instead of failing every run that names it.
Nothing here is a secret (the S3 credentials stay in a Secret that only the trainer pods read), so the
settings are logged at start."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trainer.api.spec import (
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    QUANTITY_PATTERN,
    QUEUE_NAME_PATTERN,
    S3_ENDPOINT_PATTERN,
    S3_URI_RE,
    Resources,
    Toleration,
    image_problem,
    node_selector_problems,
)

DEFAULT_IMAGE = "ghcr.io/crypto-price-predictor/trainer:0.1.0"
DEFAULT_STALL_TIMEOUT = "15m"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0 seconds (the format of ``spec.stallTimeout``); raises ValueError."""
    if not re.match(DURATION_PATTERN, text):
        raise ValueError(f"'{text}' is not a duration such as 90s, 15m, 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


class TrainerDefaults(BaseModel):
    """One layer of cluster-wide pod fields: ``TRAINOP_TRAINER_DEFAULTS`` or one profile of
    ``TRAINOP_TRAINER_PROFILES`` (camelCase keys, as in a TrainingRun spec, checked by the spec's own models and
    rules). A key that is present sets its field for the runs that leave it out, an empty value too
    (``nodeSelector: {}`` clears the defaults' selector for a profile's runs); ``null`` is the same as absent.
    Only pod fields: what a run trains (``training.device`` included) stays the run's own."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    image: str | None = Field(default=None, max_length=1024)
    resources: Resources | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    priority_class_name: str | None = None
    service_account_name: str | None = None
    stall_timeout: str | None = Field(default=None, pattern=DURATION_PATTERN)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        problem = None if v is None else image_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        problems = node_selector_problems(v or {})
        if problems:
            raise ValueError("; ".join(problems))
        return v

    def given(self) -> dict[str, Any]:
        """The fields this layer sets (snake_case name -> value)."""
        return {
            name: getattr(self, name) for name in self.model_fields_set if getattr(self, name) is not None
        }


def _profile_name(name: str) -> str:
    if len(name) > 63 or not re.match(DNS_LABEL_PATTERN, name):
        raise ValueError(
            f"'{name}' is not a profile name (spec.profile): at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, e.g. a100"
        )
    return name


ProfileName = Annotated[str, AfterValidator(_profile_name)]


def _json_object(v: Any) -> Any:
    """A JSON environment variable as an object ("" or unset: {}); a clear error instead of a decode trace."""
    if not isinstance(v, str):
        return v
    if not v.strip():
        return {}
    try:
        value = json.loads(v)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, not {type(value).__name__}")
    return value


class Settings(BaseSettings):
    """``TRAINOP_<FIELD>`` in upper case, e.g. ``TRAINOP_METRICS_PORT=8080``."""

    model_config = SettingsConfigDict(env_prefix="TRAINOP_", extra="ignore")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated namespaces to watch; empty: all namespaces."
    )
    default_image: str = Field(default=DEFAULT_IMAGE, min_length=1)
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    metrics_host: str = Field(default="0.0.0.0", description="Bind address of /metrics and /healthz.")
    stall_timeout: str = Field(
        default=DEFAULT_STALL_TIMEOUT,
        description="Used when a run, its profile and TRAINOP_TRAINER_DEFAULTS have no stallTimeout.",
    )
    trainer_defaults: Annotated[TrainerDefaults, NoDecode] = Field(
        default_factory=TrainerDefaults,
        description="JSON object: pod fields of every run whose spec (and profile) leaves them out "
        "(trainop.profiles). Its image/stallTimeout and TRAINOP_DEFAULT_IMAGE/TRAINOP_STALL_TIMEOUT are one "
        "setting: give either.",
    )
    trainer_profiles: Annotated[dict[ProfileName, TrainerDefaults], NoDecode] = Field(
        default_factory=dict,
        description="JSON object: profile name -> pod fields, selected by spec.profile, over the defaults.",
    )
    status_throttle_seconds: float = Field(default=10.0, ge=0.0, description="Trainer status patch interval.")
    s3_endpoint: str | None = Field(default=None, description="AWS_ENDPOINT_URL for runs without s3Endpoint.")
    s3_secret_name: str | None = Field(default=None, description="Secret with S3 keys for runs without one.")
    checkpoint_prefix: str | None = Field(
        default=None,
        description="s3://bucket/prefix; a run without checkpoint.uri writes to <prefix>/<ns>/<name>.",
    )
    checkpoint_volume_size: str = Field(
        default="10Gi",
        pattern=QUANTITY_PATTERN,
        description="Without checkpoint_prefix: the size of the PersistentVolumeClaim created for each run.",
    )
    checkpoint_volume_storage_class: str | None = Field(
        default=None,
        pattern=QUEUE_NAME_PATTERN,  # an object name: a lower-case DNS subdomain
        description="Its storageClassName; empty: the field is left out (the cluster's default class).",
    )
    checkpoint_volume_access_mode: Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"] = Field(
        default="ReadWriteOnce",
        description="Its access mode; multi-pod runs (workers > 1, parallel walk-forward folds) need "
        "ReadWriteMany.",
    )
    timer_interval_seconds: float = Field(
        default=30.0, gt=0.0, description="Interval of the stall sweep over all runs."
    )
    rendezvous_port: int = Field(
        default=29500,
        ge=1,
        le=65535,
        description="Multi-worker runs: TCP port of worker 0's rendezvous (torchrun --master-port), on the "
        "run's headless Service.",
    )
    rendezvous_timeout_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="Multi-worker runs: how long workers wait for each other at start (torchrun --rdzv-conf "
        "timeout, and TRAINER_RENDEZVOUS_TIMEOUT_SECONDS in the pod) before they give up with exit code 5.",
    )
    peering: str | None = Field(default=None, description="kopf peering name; empty: standalone.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON lines unless stderr is a terminal."
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [n.strip() for n in v.split(",") if n.strip()]
        return v

    @field_validator("trainer_defaults", "trainer_profiles", mode="before")
    @classmethod
    def _decode(cls, v: Any) -> Any:
        return _json_object(v)

    @model_validator(mode="after")
    def _one_default_image_and_stall_timeout(self) -> Settings:
        """Fold TRAINOP_DEFAULT_IMAGE/TRAINOP_STALL_TIMEOUT into the defaults layer (and back): after this,
        ``default_image == trainer_defaults.image or DEFAULT_IMAGE`` and likewise for the stall timeout."""
        layer = self.trainer_defaults
        for field, var, key, builtin in (
            ("default_image", "TRAINOP_DEFAULT_IMAGE", "image", DEFAULT_IMAGE),
            ("stall_timeout", "TRAINOP_STALL_TIMEOUT", "stall_timeout", DEFAULT_STALL_TIMEOUT),
        ):
            flat, nested = getattr(self, field), getattr(layer, key)
            if field in self.model_fields_set and nested is not None and nested != flat:
                raise ValueError(
                    f"{var} ({flat!r}) and TRAINOP_TRAINER_DEFAULTS {to_camel(key)} ({nested!r}) differ; "
                    "set one of them"
                )
            if nested is None and field in self.model_fields_set:
                layer = layer.model_copy(update={key: flat})
            setattr(self, field, getattr(layer, key) or builtin)
        self.trainer_defaults = layer
        return self

    @field_validator("stall_timeout")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("checkpoint_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if not v:
            return None
        v = v.rstrip("/")
        if not S3_URI_RE.match(v):  # a path would be each pod's own filesystem, lost with the pod
            raise ValueError(
                f"'{v}' is not an S3 URI such as s3://bucket/prefix (checkpoints must outlive pods)"
            )
        return v

    @field_validator(
        "s3_endpoint", "s3_secret_name", "peering", "checkpoint_volume_storage_class", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        # Every Job gets it as AWS_ENDPOINT_URL: a bad one would fail every run in its pod instead of here.
        if v is not None and not re.match(S3_ENDPOINT_PATTERN, v):
            raise ValueError(f"'{v}' is not an endpoint URL such as http://minio.minio:9000")
        return v

    def describe(self) -> str:
        """One line for the start-up log."""
        return " ".join(f"{k}={v!r}" for k, v in self.model_dump().items())
