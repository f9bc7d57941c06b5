"""``spec.tracking``: experiment tracking of a run (torch-free, re-exported by ``trainer.api.spec``).

Apart from the spec model because only ``trainer.tracking`` (the MLflow client, an optional extra) and the
operator's builders (the credentials Secret as env) read it."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from trainer.api.base import ApiModel as _Model
from trainer.api.patterns import DNS_LABEL_PATTERN, MLFLOW_URI_PATTERN


class MlflowCredentialsRef(_Model):
    """A Secret in the run's namespace with the MLflow server's username and password (basic auth)."""

    # The operator maps the two keys to MLFLOW_TRACKING_USERNAME/PASSWORD in the trainer's environment (where the
    # MLflow client reads them): the values never pass through the spec, the status or a log line.

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=253)
    username_key: str = Field(default="MLFLOW_TRACKING_USERNAME", min_length=1)
    password_key: str = Field(default="MLFLOW_TRACKING_PASSWORD", min_length=1)


class MlflowSpec(_Model):
    """An MLflow tracking server for the run's params, metrics and artefacts; training never waits for it."""

    uri: str = Field(
        description="Tracking server, e.g. http://mlflow.mlflow:5000; no user:password@ (use credentialsSecret).",
        json_schema_extra={"pattern": MLFLOW_URI_PATTERN},
    )
    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Experiment name (created if missing); empty: $MLFLOW_EXPERIMENT_NAME, else crypto-price-predictor.",
    )
    credentials_secret: MlflowCredentialsRef | None = None
    deadline_seconds: int = Field(
        default=600,
        ge=1,
        le=86400,
        description="How long an unreachable server is retried before tracking gives up; training goes on.",
    )

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, v: str) -> str:
        if re.match(r"^https?://[^/@\s]*@", v):
            raise ValueError(
                "credentials do not belong in the URI (it is logged and stored in the spec): give "
                "credentialsSecret, or set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
            )
        if not re.match(MLFLOW_URI_PATTERN, v):
            raise ValueError(
                f"'{v}' is not an http(s) URL of an MLflow tracking server, e.g. http://mlflow:5000"
            )
        return v


class TrackingSpec(_Model):
    """Experiment tracking of the run (rank 0 only), beside the checkpoints and the status."""

    mlflow: MlflowSpec | None = None
