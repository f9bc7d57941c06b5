"""The one model of a TrainingRun's ``.spec``.

Why it lives here, torch-free: the trainer (``python -m trainer run sol-run.yaml``), the operator (which
validates every TrainingRun before it creates a Job) and the CRD's openAPIV3Schema (generated from this model
by ``trainop.crd``) must agree on every field, bound and default. Importing this module must not import torch so
that the operator image stays small.

YAML uses camelCase (``learningRate``); Python uses snake_case. Unknown fields are errors (``extra="forbid"``), so
a typo such as ``learningrate`` is refused with the field's name instead of being silently ignored.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainer.api.foldstats import fold_ranges

API_GROUP = "cryptopredictor.dev"
API_VERSION = "v1alpha1"
KIND = "TrainingRun"
PLURAL = "trainingruns"

SYMBOL_PATTERN = r"^[A-Z0-9]{2,10}$"
# Kubernetes quantities ("500m", "8Gi", "1") or plain integers.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]i?|Ki)?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An S3-compatible endpoint: a scheme and a host, no credentials (they would be logged).
S3_ENDPOINT_PATTERN = r"^https?://[^\s/@]+(:\d+)?(/.*)?$"
# The checkpoint/data URIs: a local path or s3://bucket/prefix (bucket names per the S3 rules).
S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
# In a TrainingRun object (the CRD) checkpoints must go to S3: a pod's own filesystem is lost with the pod, so
# every retry would start over. Only the scheme is a CRD pattern; the model checks the bucket (cluster_problems).
CLUSTER_CHECKPOINT_PATTERN = r"^s3://"
# Container image references (the distribution/reference grammar, without IPv6 hosts): [host[:port]/]path[:tag]
# [@digest], the path lower case. Character classes are spelled out: the same text is a pydantic (Rust), CRD
# (Go) and Python pattern, and ``\w`` means different things in them.
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# Label values (<= 63): empty, or alphanumerics with -_. inside.
LABEL_VALUE_PATTERN = r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
# Label keys: an optional DNS-subdomain prefix (<= 253) and "/", then a name (<= 63) as a non-empty label value.
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
# A Kueue LocalQueue: an object name (lower-case DNS subdomain) that must also fit the queue-name label (<= 63).
QUEUE_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
# The extended resource whose limit sets the default processes per pod (one training process per GPU).
GPU_RESOURCE = "nvidia.com/gpu"


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return f"'{key}': the prefix before '/' must be a lower-case DNS subdomain such as nvidia.com"
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        return (
            f"'{key}' is not a label key: the name (after an optional prefix/) must be 1-63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit, e.g. nvidia.com/gpu.product"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a Kubernetes label value, or None."""
    if len(value) > 63 or not re.match(LABEL_VALUE_PATTERN, value):
        return (
            f"'{value}' is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    return None


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


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
            "s3://bucket/prefix (locally also a directory). Empty locally: runs/<name>; in a cluster: the "
            "operator's prefix/<namespace>/<name>. A pod's own filesystem is refused: it is lost with the pod."
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
        return v


# --- cluster-only fields (the operator uses them; `python -m trainer run` ignores them) -------------------------


MAX_FOLDS = 250  # each fold keeps a ~1 KB row in the run's status (etcd objects stop at ~1.5 MiB)


class WalkForwardSpec(_Model):
    """A walk-forward backtest on the cluster: an Indexed Job with one pod per fold, each training the spec on
    everything before its fold and forecasting the fold, as ``python -m trainer backtest --walk-forward``."""

    start: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="First target day of the first fold.")
    end: str = Field(
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="Last day of candles used; the last fold's last origin is the last with a full horizon.",
    )
    refit_every: str = Field(
        default="90d",
        pattern=r"^[1-9][0-9]{0,3}d?$",
        description="Days per fold, e.g. 90d: one retraining each.",
    )
    parallelism: int = Field(default=4, ge=1, le=1000, description="Folds trained at once (pods).")
    backoff_limit_per_index: int = Field(
        default=2, ge=0, le=10, description="Retries of one failed fold, alone (backoffLimitPerIndex)."
    )
    max_failed_indexes: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Folds that may fail for good before the run fails (maxFailedIndexes); 0: any fails it.",
    )

    @field_validator("start", "end")
    @classmethod
    def _calendar_date(cls, v: str) -> str:
        try:  # the pattern only checks the shape: 2025-02-30 must be refused here, naming the field
            dt.date.fromisoformat(v)
        except ValueError as exc:
            raise ValueError(f"'{v}' is not a calendar date (YYYY-MM-DD): {exc}") from None
        return v

    @model_validator(mode="after")
    def _ordered(self) -> WalkForwardSpec:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    @property
    def refit_days(self) -> int:
        return int(self.refit_every.removesuffix("d"))

    def folds(self, horizon: int) -> list[tuple[dt.date, dt.date]]:
        """The folds' first-target-day ranges: [start, end - (horizon - 1)] in ``refit_every`` days."""
        last = dt.date.fromisoformat(self.end) - dt.timedelta(days=horizon - 1)
        return fold_ranges(dt.date.fromisoformat(self.start), last, self.refit_days)


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
        description="Trainer image, e.g. registry.example/trainer:1.2.3; empty: the operator's default.",
        json_schema_extra={"pattern": IMAGE_PATTERN},
    )
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pod must match (label keys and values).",
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}
        },
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = None
    service_account_name: str | None = Field(
        default=None,
        description="Pod ServiceAccount; empty: a per-run account that may only patch this status.",
    )
    s3_credentials_secret: SecretRef | None = None
    backoff_limit: int = Field(default=3, ge=0, le=100)
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    suspend: bool = False
    stall_timeout: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="No progress for this long marks the run Stalled, e.g. 15m, 1h30m; empty: the operator's default.",
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
    procs_per_worker: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description=(
            "Training processes per pod (torchrun --nproc-per-node), one GPU each; empty: the pod's "
            "nvidia.com/gpu limit, else 1. Fixed at creation."
        ),
    )

    @field_validator("image")
    @classmethod
    def _image_shape(cls, v: str | None) -> str | None:
        if v is not None and not re.match(IMAGE_PATTERN, v):
            raise ValueError(
                f"'{v}' is not an image reference such as registry.example/trainer:1.2.3 "
                "(no spaces; repository path in lower case; optional :tag and @sha256:digest)"
            )
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
        problems = [p for k, val in v.items() for p in (label_key_problem(k), label_value_problem(val)) if p]
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


def gpu_limit(spec: TrainingRunSpec) -> int:
    """The pod's ``nvidia.com/gpu`` limit as a whole number (0: none, or not a whole number)."""
    value = spec.resources.limits.get(GPU_RESOURCE, spec.resources.requests.get(GPU_RESOURCE, 0))
    text = str(value)
    return int(text) if text.isdigit() else 0


def procs_per_worker(spec: TrainingRunSpec) -> int:
    """Training processes per pod: ``procsPerWorker``, else one per GPU of the pod's limit, else 1."""
    return spec.procs_per_worker or max(gpu_limit(spec), 1)


def cluster_problems(spec: TrainingRunSpec, prefix: str = "spec") -> list[str]:
    """What a run needs in a cluster beyond the model (the operator checks this before it creates a Job):
    checkpoints in S3, since a pod's own filesystem (a path, ``file://``) is lost with every retry; a global
    batch that gives every training process at least one row; no more processes per pod than its GPUs."""
    problems = []
    uri = spec.checkpoint.uri
    if uri and not S3_URI_RE.match(uri):
        problems.append(
            f"{prefix}.checkpoint.uri: {uri!r} is the pod's own filesystem, lost with the pod (every retry would "
            "start over); in a cluster use s3://bucket/prefix, or leave it empty for the operator's prefix"
        )
    procs = procs_per_worker(spec)
    world = spec.workers * procs
    if spec.training.batch_size < world:
        problems.append(
            f"{prefix}.training.batchSize: {spec.training.batch_size} is less than the run's {world} training "
            f"processes (workers {spec.workers} x procsPerWorker {procs}); each process needs at least one "
            f"row of the global batch: raise batchSize to at least {world}, or use fewer workers/processes"
        )
    gpus = gpu_limit(spec)
    if spec.procs_per_worker and 0 < gpus < spec.procs_per_worker and spec.training.device != "cpu":
        problems.append(
            f"{prefix}.procsPerWorker: {spec.procs_per_worker} processes per pod but resources.limits "
            f"{GPU_RESOURCE} is {gpus}: each process needs a GPU of its own; lower procsPerWorker, raise the "
            "limit, or set training.device to cpu"
        )
    return problems
