"""The one model of a TrainingRun's ``.spec``.

Why it lives here, torch-free: the trainer (``python -m trainer run sol-run.yaml``), the operator (which
validates every TrainingRun before it creates a Job) and the CRD's openAPIV3Schema (generated from this model
by ``trainop.crd``) must agree on every field, bound and default. Importing this module must not import torch so
that the operator image stays small.

YAML uses camelCase (``learningRate``); Python uses snake_case. Unknown fields are errors (``extra="forbid"``), so
a typo such as ``learningrate`` is refused with the field's name instead of being silently ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from trainer.api.base import ApiModel
from trainer.api.patterns import (
    CLUSTER_CHECKPOINT_PATTERN,
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    GPU_RESOURCE,
    IMAGE_PATTERN,
    LABEL_VALUE_PATTERN,
    MLFLOW_URI_PATTERN,
    QUANTITY_PATTERN,
    QUEUE_NAME_PATTERN,
    S3_ENDPOINT_PATTERN,
    S3_URI_RE,
    SYMBOL_PATTERN,
    image_problem,
    label_key_problem,
    label_value_problem,
    node_selector_problems,
    split_pvc_uri,
)
from trainer.api.pod import Resources, SecretRef, Toleration
from trainer.api.promotion import PromotionSpec
from trainer.api.tracking import MlflowCredentialsRef, MlflowSpec, TrackingSpec
from trainer.api.walk_forward import MAX_FOLDS, WalkForwardSpec

# The spec's own models, and what other modules import from here (the parts live in patterns, pod, promotion,
# tracking and walk_forward).
__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CLUSTER_CHECKPOINT_PATTERN",
    "DNS_LABEL_PATTERN",
    "DURATION_PATTERN",
    "GPU_RESOURCE",
    "IMAGE_PATTERN",
    "KIND",
    "LABEL_VALUE_PATTERN",
    "MAX_FOLDS",
    "MLFLOW_URI_PATTERN",
    "PLURAL",
    "QUANTITY_PATTERN",
    "QUEUE_NAME_PATTERN",
    "S3_ENDPOINT_PATTERN",
    "S3_URI_RE",
    "SYMBOL_PATTERN",
    "CheckpointSpec",
    "DataSpec",
    "MlflowCredentialsRef",
    "MlflowSpec",
    "ModelSpec",
    "PromotionSpec",
    "Resources",
    "SecretRef",
    "Toleration",
    "TrackingSpec",
    "TrainingRunSpec",
    "TrainingSpec",
    "WalkForwardSpec",
    "image_problem",
    "label_key_problem",
    "label_value_problem",
    "node_selector_problems",
]

API_GROUP = "cryptopredictor.dev"
API_VERSION = "v1alpha1"
KIND = "TrainingRun"
PLURAL = "trainingruns"

_Model = ApiModel  # the name the other API modules (sweep, schedule) import


class DataSpec(_Model):
    """Where the candles come from and how they are windowed."""

    uri: str | None = Field(
        default=None,
        description=(
            "CSV or Parquet of daily OHLCV candles: a local path or s3://bucket/key. '{symbol}' is replaced by "
            "each symbol. Empty: the dataset bundled with the trainer."
        ),
    )
    start: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="First date used.")
    end: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="Last date used.")
    input_window: int = Field(default=60, ge=8, le=512, description="Days the encoder sees.")
    horizon: int = Field(default=7, ge=1, le=60, description="Days forecast at once.")
    validation_fraction: float = Field(
        default=0.2, gt=0.0, lt=0.5, description="Last share of the training period, by time, for validation."
    )


class ModelSpec(_Model):
    """Architecture. Changing any of these makes old checkpoints incompatible."""

    hidden_size: int = Field(default=32, ge=4, le=512)
    attention_heads: int = Field(default=4, ge=1, le=16)
    lstm_layers: int = Field(default=1, ge=1, le=4)
    dropout: float = Field(default=0.1, ge=0.0, lt=0.9)
    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9], min_length=3, max_length=9)

    @field_validator("quantiles")
    @classmethod
    def _quantiles_sorted(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < q < 1.0 for q in v):
            raise ValueError("every quantile must lie strictly between 0 and 1")
        if sorted(set(v)) != v:
            raise ValueError("quantiles must be strictly increasing, e.g. [0.1, 0.5, 0.9]")
        if 0.5 not in v:
            raise ValueError("quantiles must include the median 0.5")
        return v

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelSpec:
        if self.hidden_size % self.attention_heads:
            raise ValueError(
                f"hiddenSize ({self.hidden_size}) must be divisible by attentionHeads ({self.attention_heads})"
            )
        return self


class TrainingSpec(_Model):
    """Optimisation. Changing these keeps checkpoints compatible (more epochs extends a run)."""

    epochs: int = Field(default=100, ge=1, le=10000)
    batch_size: int = Field(default=64, ge=1, le=8192)
    learning_rate: float = Field(default=3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=1e-4, ge=0.0, le=1.0)
    grad_clip: float = Field(default=1.0, gt=0.0, le=100.0)
    warmup_epochs: int = Field(default=3, ge=0, le=1000)
    early_stopping_patience: int = Field(default=10, ge=1, le=10000)
    median_shrinkage: float = Field(
        default=5.0,
        ge=0.0,
        le=100.0,
        description="Ridge penalty on the median forecast (scaled units): pulls it towards the martingale prior.",
    )
    symbol_dropout: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="Share of training windows whose symbol is replaced by the learned 'any symbol' embedding, "
        "which scores symbols the model never trained on.",
    )
    ema_decay: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Per-step decay of the weight average that is validated and kept; 0: off.",
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class CheckpointSpec(_Model):
    """Where checkpoints go. Credentials never live here: the boto3 chain or ``s3CredentialsSecret`` supply them."""

    uri: str | None = Field(
        default=None,
        description=(
            "s3://bucket/prefix or pvc://CLAIM/path (an existing PersistentVolumeClaim the operator mounts; "
            "locally also a directory). Empty locally: runs/<name>; in a cluster: the operator's "
            "prefix/<namespace>/<name>, or without one a PersistentVolumeClaim the operator creates for the "
            "run (pvc://<name>-checkpoints/<name>). A pod's own filesystem is refused: it is lost with the pod."
        ),
        json_schema_extra={"pattern": CLUSTER_CHECKPOINT_PATTERN},
    )
    s3_endpoint: str | None = Field(
        default=None,
        pattern=S3_ENDPOINT_PATTERN,
        description="S3-compatible endpoint (MinIO, SeaweedFS, Ceph). Empty: AWS or AWS_ENDPOINT_URL.",
    )
    keep_last: int = Field(default=3, ge=1, le=1000, description="Epoch checkpoints kept besides best.pt.")
    every_epochs: int = Field(default=1, ge=1, le=1000, description="Write a checkpoint every N epochs.")
    resume: str = Field(
        default="auto", description="'auto' (latest good checkpoint), 'never', or a checkpoint URI."
    )
    grace_period_seconds: int = Field(
        default=25, ge=1, le=3600, description="After SIGTERM: finish the step, checkpoint, exit within this."
    )
    upload_deadline_seconds: int = Field(
        default=600, ge=1, le=86400, description="How long storage may stay down before the run fails."
    )

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("s3:") and not S3_URI_RE.match(v):
            raise ValueError(f"'{v}' is not a valid S3 URI; expected s3://bucket/prefix")
        if v is not None and v.startswith("pvc:"):
            split_pvc_uri(v)  # its ValueError names what is wrong
        return v


# --- cluster-only fields (the operator uses them; `python -m trainer run` ignores them) -------------------------


class TrainingRunSpec(_Model):
    """``TrainingRun.spec``: what to train (symbol, data, model, training, checkpoint) and where (cluster fields)."""

    symbol: str = Field(pattern=SYMBOL_PATTERN, description="Symbol forecast and evaluated, e.g. SOL.")
    symbols: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Series trained together (the symbol is a static input); the first must be `symbol`.",
    )
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)

    # Cluster-only.
    image: str | None = Field(
        default=None,
        max_length=1024,
        description="Trainer image, e.g. registry.example/trainer:1.2.3; empty: the profile's, else the "
        "operator's default.",
        json_schema_extra={"pattern": IMAGE_PATTERN},
    )
    profile: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "A named set of cluster defaults (the chart's trainer.profiles.<name>, e.g. a100 or cpu) for the "
            "pod fields this spec leaves out: image, resources, nodeSelector, tolerations, priorityClassName, "
            "serviceAccountName, stallTimeout. Precedence: this spec > the profile > the cluster's "
            "trainer.defaults > built-in. The effective values and their sources: status.resolved."
        ),
    )
    resources: Resources = Field(
        default_factory=Resources,
        description=(
            "corev1.ResourceRequirements, e.g. limits: {nvidia.com/gpu: 1, memory: 8Gi}. Left out (or {}): the "
            "profile's, else the cluster default's, else limits nvidia.com/gpu: 1; given, it replaces theirs "
            "as a whole."
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pod must match (label keys and values). Empty: the profile's, else the "
        "cluster default's; given, it replaces theirs (no merge).",
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}
        },
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Empty: the profile's, else the cluster default's; given, they replace theirs (no merge).",
    )
    priority_class_name: str | None = Field(
        default=None, description="Empty: the profile's, else the cluster default's, else none."
    )
    service_account_name: str | None = Field(
        default=None,
        description="Pod ServiceAccount; empty: the profile's, else the cluster default's, else a per-run "
        "account that may only patch this status.",
    )
    s3_credentials_secret: SecretRef | None = None
    backoff_limit: int = Field(default=3, ge=0, le=100)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    suspend: bool = False
    stall_timeout: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="No progress for this long marks the run Stalled, e.g. 15m, 1h30m; empty: the profile's, else "
        "the operator's default.",
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name): a lower-case name of at most 63.",
        json_schema_extra={"pattern": QUEUE_NAME_PATTERN},
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Pods of the run (distributed data-parallel). More than 1: an Indexed Job whose workers are "
            "restarted together, from the last checkpoint, when one fails. Fixed at creation."
        ),
    )
    walk_forward: WalkForwardSpec | None = Field(
        default=None,
        description=(
            "Run a walk-forward backtest instead of one training: one pod per fold (an Indexed Job); the folds' "
            "pooled metrics go to the status. Not combined with workers > 1."
        ),
    )
    promotion: PromotionSpec | None = Field(
        default=None,
        description=(
            "Promote this run's model to <uri>/current.json when it beats the current one by minImprovement "
            "(the trainer decides at the end of a successful run; status.promotion says what it decided)."
        ),
    )
    procs_per_worker: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description=(
            "Training processes per pod (torchrun --nproc-per-node), one GPU each; empty: the pod's "
            "nvidia.com/gpu limit, else 1. Fixed at creation."
        ),
    )

    tracking: TrackingSpec | None = Field(
        default=None, description="Experiment tracking (MLflow); empty: none. Credentials only from a Secret."
    )

    @field_validator("image")
    @classmethod
    def _image_shape(cls, v: str | None) -> str | None:
        problem = None if v is None else image_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("queue_name")
    @classmethod
    def _queue_shape(cls, v: str | None) -> str | None:
        if v is not None and not re.match(QUEUE_NAME_PATTERN, v):
            raise ValueError(
                f"'{v}' is not a LocalQueue name usable as the kueue.x-k8s.io/queue-name label: lower-case "
                "letters, digits, '-' and '.', starting and ending with a letter or digit, e.g. gpu-queue"
            )
        return v

    @field_validator("node_selector")
    @classmethod
    def _node_selector_labels(cls, v: dict[str, str]) -> dict[str, str]:
        problems = node_selector_problems(v)
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("symbols")
    @classmethod
    def _symbols_shape(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for s in v:
            if not re.match(SYMBOL_PATTERN, s):
                raise ValueError(
                    f"'{s}' is not a symbol; expected 2-10 upper-case letters/digits such as SOL"
                )
        if len(set(v)) != len(v):
            raise ValueError("symbols must not repeat")
        return v

    @model_validator(mode="after")
    def _symbol_first(self) -> TrainingRunSpec:
        if self.symbols is not None and self.symbols[0] != self.symbol:
            raise ValueError(
                f"symbols[0] must be the evaluated symbol '{self.symbol}', got '{self.symbols[0]}'"
            )
        return self

    @model_validator(mode="after")
    def _walk_forward_folds(self) -> TrainingRunSpec:
        wf = self.walk_forward
        if wf is None:
            return self
        if self.workers > 1:
            raise ValueError(f"walkForward: one worker per fold; set workers to 1 (got {self.workers})")
        d = self.data
        if d.end is not None and d.end < wf.end:
            raise ValueError(
                f"walkForward.end: {wf.end} is after data.end {d.end}; the last fold needs candles up to "
                "walkForward.end: move data.end to it or later, or leave it empty"
            )
        if d.start is not None and d.start >= wf.start:
            raise ValueError(
                f"walkForward.start: {wf.start} is not after data.start {d.start}; the first fold trains on "
                "the candles before walkForward.start, and the spec has none"
            )
        folds = wf.folds(self.data.horizon)
        if not folds:
            raise ValueError(
                f"walkForward.start: {wf.start} leaves no fold before walkForward.end {wf.end} with a full "
                f"{self.data.horizon}-day horizon; give an earlier start or a later end"
            )
        if len(folds) > MAX_FOLDS:
            raise ValueError(
                f"walkForward.refitEvery: {wf.refit_every} makes {len(folds)} folds, more than {MAX_FOLDS}; "
                "refit less often or shorten the period"
            )
        return self

    @model_validator(mode="after")
    def _promotion_has_a_model(self) -> TrainingRunSpec:
        if self.promotion is not None and self.walk_forward is not None:
            raise ValueError(
                "promotion: a walk-forward run (spec.walkForward) trains one model per fold and stores none to "
                "promote; promote from a plain training run, or remove promotion"
            )
        return self

    @property
    def all_symbols(self) -> list[str]:
        return list(self.symbols) if self.symbols else [self.symbol]

    def architecture(self) -> dict[str, Any]:
        """Fields that must match between a checkpoint and the spec resuming from it."""
        return {
            "symbols": self.all_symbols,
            "inputWindow": self.data.input_window,
            "horizon": self.data.horizon,
            **self.model.model_dump(by_alias=True),
        }
