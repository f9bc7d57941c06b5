"""What a tracked training logs to MLflow and under which identity: pure functions of the spec, the
environment and the run's numbers (``trainer.tracking`` sends them).

Why apart: these are the decisions -- which params (the resolved spec, flattened to dotted keys, URLs
redacted), which tags (the TrainingRun's namespace/name/uid, the checkpoint URI), which key finds the MLflow run
again after a preemption (the TrainingRun's uid in a cluster, the checkpoint URI locally), which errors are worth
retrying -- and they are tested as plain functions, without a server or a thread. No mlflow import here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.api.errors import ConfigError
from trainer.storage import redact_url

if TYPE_CHECKING:
    from trainer.api.spec import TrainingRunSpec
    from trainer.api.status import EpochStats

RUN_KEY_TAG = "trainer.run-key"
DEFAULT_EXPERIMENT = "crypto-price-predictor"
MAX_PARAM_LENGTH = 6000  # MLflow's limit of a param value
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#\s@]+@")


@dataclass(frozen=True)
class Plan:
    """What one training logs and under which identity (``plan_of``)."""

    uri: str
    experiment: str
    key: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    new_run: bool = False
    deadline_s: float = 600.0


def redact(text: str) -> str:
    """``text`` (an error message, a param) with every URL's ``user:password@`` replaced by ``***@``; a lone
    URI goes through ``redact_url`` as everywhere else."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested document as MLflow params: dotted keys, lists as JSON, strings redacted, None left out."""
    out: dict[str, str] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif value is not None:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            out[name] = redact(text)[:MAX_PARAM_LENGTH]
    return out


def run_key(environ: Mapping[str, str], checkpoint_uri: str) -> str:
    """The MLflow run's identity: the TrainingRun's uid in a cluster, else the checkpoint URI (a digest if it
    holds a quote, which the search filter could not hold)."""
    uid = environ.get("TRAININGRUN_UID")
    key = f"uid:{uid}" if uid else f"checkpoint:{checkpoint_uri}"
    return key if "'" not in key else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def tags_of(environ: Mapping[str, str], checkpoint_uri: str, symbol: str) -> dict[str, str]:
    tags = {"checkpoint.uri": checkpoint_uri, "symbol": symbol}
    for part in ("namespace", "name", "uid"):
        value = environ.get(f"TRAININGRUN_{part.upper()}")
        if value:
            tags[f"trainingrun.{part}"] = value
    return tags


def epoch_metrics(stats: EpochStats) -> dict[str, float]:
    return {
        "train_loss": stats.train_loss,
        "val_loss": stats.val_loss,
        "val_mase": stats.val_mase,
        "samples_per_second": stats.samples_per_second,
    }


def split_final(final: Mapping[str, float | int | str]) -> tuple[dict[str, float], dict[str, str]]:
    """``status.metrics`` as MLflow metrics (the finite numbers) and tags (the decisions: median, band)."""
    metrics = {k: float(v) for k, v in final.items() if not isinstance(v, str) and math.isfinite(v)}
    return metrics, {k: v for k, v in final.items() if isinstance(v, str)}


def plan_of(
    spec: TrainingRunSpec, run_name: str, checkpoint_uri: str, *, new_run: bool, environ: Mapping[str, str]
) -> Plan | None:
    """The plan of a run whose spec asks for tracking, else None."""
    cfg = spec.tracking.mlflow if spec.tracking else None
    if cfg is None:
        return None
    if "://" not in checkpoint_uri:
        checkpoint_uri = os.path.abspath(checkpoint_uri)
    checkpoint_uri = redact_url(checkpoint_uri)
    return Plan(
        uri=cfg.uri,
        experiment=cfg.experiment or environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT,
        key=run_key(environ, checkpoint_uri),
        run_name=run_name,
        params=flatten(spec.model_dump(by_alias=True, mode="json")),
        tags=tags_of(environ, checkpoint_uri, spec.symbol),
        new_run=new_run,
        deadline_s=float(cfg.deadline_seconds),
    )


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: no connection, a timeout, or the server's 5xx/408/429; not a refusal (other 4xx)."""
    status = getattr(exc, "get_http_status_code", None)
    if callable(status):
        code = status()
        return isinstance(code, int) and (code >= 500 or code in (408, 429))
    return isinstance(exc, OSError)  # requests' errors are OSErrors


def oneline(exc: BaseException) -> str:
    return redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]


def check(spec: TrainingRunSpec) -> None:
    """Fail fast (exit 2), on every rank, when the spec asks for tracking and the client is not installed."""
    if spec.tracking and spec.tracking.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "spec.tracking.mlflow: the MLflow client is not installed; pip install "
            "'crypto-price-predictor[tracking]' (mlflow-skinny), or drop spec.tracking / --mlflow-uri"
        )
