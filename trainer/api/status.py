"""The one model of a TrainingRun's ``.status``: what the trainer reports and what the operator writes and reads.

Why it lives here, beside the spec and torch-free: the trainer (``trainer.status_report``), the operator (conditions,
phase, gauges) and the CRD's status schema (generated from these models by ``trainop.crd``) must agree on every
key; with one model a key cannot be spelt one way by its writer and another by its reader.

Who writes what: the operator owns ``phase``/``reason``/``message``/``conditions``/``jobName``/``startTime``/
``completionTime``/``restarts``/``attempt``/``failures``/``observedGeneration``/``resolved``, and for a
walk-forward run ``folds``/``foldsDisplay`` and ``metrics`` (pooled from the folds' pods, ``trainop.folds``); the
trainer owns ``progress``, ``checkpoint``, ``tracking``, a single training's ``metrics``, and at its end
``forecast`` and ``promotion``. Both send merge patches (``TrainingRunStatus.dump``): only the fields they set,
where ``None`` deletes a field (the ETA once a run is finished).

Values a person reads (``kubectl get tr``, ``describe``) are rounded here, where the status is made: floats to 4
significant digits (``0.1538``, not ``0.15380635857582092``), samples/s to an integer; NaN and infinity (a NaN
loss is a documented outcome) become null. Reading is lenient (``TrainingRunStatus.parse``): a status written by
an older trainer or by hand never makes the operator fail; what does not fit the model is left out.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

CONDITION_TYPES = ("JobCreated", "Running", "Succeeded", "Failed", "Stalled", "Suspended")
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")
ConditionType = Literal["JobCreated", "Running", "Succeeded", "Failed", "Stalled", "Suspended"]
Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
SIGNIFICANT_DIGITS = 4
PRECISE_DIGITS = 6


def significant(value: float | None, digits: int = SIGNIFICANT_DIGITS) -> float | None:
    """``value`` rounded to ``digits`` significant digits; None for None, NaN and infinity."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def whole(value: float | None) -> int | None:
    """``value`` rounded to an integer (samples/s); None for None, NaN and infinity."""
    return None if value is None or not math.isfinite(value) else round(value)


def _number(value: Any) -> Any:
    """numpy scalars and other ``numbers.Real`` as a plain float (bools and strings left to the validator)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
        return float(value)
    return value


def _integer(value: Any) -> Any:
    """numpy integers as int; a finite float rounded to the nearest integer; NaN/inf as None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return whole(float(value))
    return value


#: A float a person reads: 4 significant digits, null when not finite.
Number = Annotated[float | None, BeforeValidator(_number), AfterValidator(significant)]
#: A price or a compared figure: 6 significant digits (a 4-digit price hides a move; a 4-digit pinball hides a
#: margin), null when not finite.
Precise = Annotated[
    float | None, BeforeValidator(_number), AfterValidator(lambda v: significant(v, PRECISE_DIGITS))
]
#: An integer (counts, epochs); a float is rounded to the nearest integer (samples/s).
Integer = Annotated[int | None, BeforeValidator(_integer)]
#: An RFC 3339 time as the API server stores it (``2026-01-02T03:04:05Z``); kept as text so that it round-trips.
Timestamp = Annotated[str | None, Field(json_schema_extra={"format": "date-time"})]
M = TypeVar("M", bound=BaseModel)


def rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Status(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",  # fields of other versions (or kopf's) are not this model's business
    )

    def dump(self) -> dict[str, Any]:
        """The fields that were set, camelCase, JSON-ready; an explicit None stays (it deletes in a merge patch)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class Condition(_Status):
    """A metav1.Condition; lastTransitionTime changes only when status does."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = None
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    reason: str = Field(max_length=1024)
    message: str = Field(max_length=32768)


@dataclass
class EpochStats:
    """One finished epoch as the training loop reports it (raw values: the status rounds its own copy)."""

    epoch: int
    total_epochs: int
    train_loss: float
    val_loss: float
    val_mase: float
    samples_per_second: float
    best_val_loss: float
    best_epoch: int
    seconds: float
    checkpoint: str | None = None  # the newest checkpoint that is stored (not one still being uploaded)


class Progress(_Status):
    """Written by the trainer after every epoch (throttled); etaSeconds is absent once the run has finished."""

    epoch: Integer = None
    total_epochs: Integer = None
    # "41/100" cannot be computed by a JSONPath, so the writer of progress also sets this display string.
    epoch_display: str | None = None
    train_loss: Number = None
    val_loss: Number = None
    val_mase: Number = None
    best_val_loss: Number = None
    best_epoch: Integer = None
    samples_per_second: Integer = None
    eta_seconds: Number = None
    last_progress_time: Timestamp = None

    @classmethod
    def of_epoch(cls, stats: EpochStats, *, finished: bool, now: datetime) -> Progress:
        """The progress after ``stats``; ``finished`` (the last epoch, or early stopping) clears the ETA."""
        return cls(
            epoch=stats.epoch,
            total_epochs=stats.total_epochs,
            epoch_display=f"{stats.epoch}/{stats.total_epochs}",
            train_loss=stats.train_loss,
            val_loss=stats.val_loss,
            val_mase=stats.val_mase,
            best_val_loss=stats.best_val_loss,
            best_epoch=stats.best_epoch,
            samples_per_second=whole(stats.samples_per_second),
            eta_seconds=None if finished else (stats.total_epochs - stats.epoch) * stats.seconds,
            last_progress_time=rfc3339(now),
        )


class CheckpointStatus(_Status):
    """The newest checkpoint that is stored (never one only queued for upload), written by the trainer."""

    latest: str | None = None
    best: str | None = None
    epoch: Integer = None


class Metrics(_Status):
    """The final validation metrics, written by the trainer once the run has succeeded."""

    val_mae: Number = None
    val_mase: Number = None
    # The learned network's best validation pinball in scaled units (what early stopping watches): unlike valMase
    # and pinball, which may be persistence's and the prior band's, it always depends on the training, so it is
    # the objective to rank trials of one data set by.
    val_loss: Number = None
    coverage_80: Number = Field(default=None, alias="coverage80")
    pinball: Number = None
    empirical_pinball: Number = None
    ewma_pinball: Number = None
    garch_pinball: Number = None
    skill_vs_garch: Number = None
    median: Literal["learned", "persistence"] | None = None
    band: Literal["learned", "prior"] | None = None
    best_epoch: Integer = None
    wall_seconds: Number = None
    parameters: Integer = None
    # A walk-forward run: the metrics above are pooled over ``foldsDone`` of its ``foldsTotal`` folds.
    folds_done: Integer = None
    folds_total: Integer = None


class ForecastDay(_Status):
    """One day of the published forecast: its date and a price per quantile of ForecastStatus.quantiles."""

    date: str
    values: list[Precise]


class ForecastStatus(_Status):
    """The next horizon after the last candle, by the shipped best model; the trainer's, at a run's end."""

    # forecast.json at ``uri`` holds every quantile; this is the band and the median (trainer.publish).

    symbol: str | None = None
    origin: str | None = None  # the last candle used (YYYY-MM-DD)
    origin_close: Precise = None
    generated_at: Timestamp = None
    uri: str | None = None
    quantiles: list[float] | None = None
    days: list[ForecastDay] | None = None


class PromotionStatus(_Status):
    """The trainer's decision on spec.promotion at a run's end; message says why, also when it could not decide."""

    promoted: bool | None = None
    metric: Literal["pinball", "mase"] | None = None
    source: Literal["validation", "walkForward"] | None = None
    value: Precise = None  # this run's
    incumbent: Precise = (
        None  # the current model's, on this run's validation windows where it could be scored
    )
    min_improvement: float | None = None
    model_uri: str | None = None  # this run's best.pt
    current_uri: str | None = None  # the current.json compared with (and written, when promoted)
    message: str | None = Field(default=None, max_length=4096)


class TrackingStatus(_Status):
    """The MLflow run this training logs to (the same one across resumes), written by the trainer."""

    mlflow_run_id: str | None = None
    experiment_id: str | None = None
    uri: str | None = None  # the tracking server, without credentials


FoldPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


# ``stats`` is the fold's ``trainer.api.foldstats.FoldStats`` exactly as its pod reported it (unrounded: the pooled
# metrics are recomputed from it), kept because the pod and its termination message go with the Job's TTL or
# garbage collection. ``reason``/``message``: why a fold failed, is retried, or has no usable statistics.
class FoldStatus(_Status):
    """One fold of a walk-forward run, written by the operator from the fold's pod."""

    index: int = Field(ge=0)
    start: str | None = None
    end: str | None = None
    phase: FoldPhase
    n: Integer = None
    mase: Number = None
    pinball: Number = None
    coverage: Number = None
    pod: str | None = None
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=1024)
    message: str | None = Field(default=None, max_length=4096)
    finished_at: Timestamp = None
    stats: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = None


ResolvedSource = Literal["spec", "profile", "defaults", "built-in"]


class ResolvedResources(_Status):
    """The pod's resources as its Job has them (quantities as text)."""

    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None


class ResolvedToleration(_Status):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


# What ``spec.profile`` and the cluster defaults gave the run's pods (``trainop.profiles``), as its Job has them.
class ResolvedSpec(_Status):
    """The effective pod fields and checkpoint store and where each came from, written with the Job."""

    profile: str | None = None
    image: str | None = None
    resources: ResolvedResources | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[ResolvedToleration] | None = None
    priority_class_name: str | None = None
    service_account_name: str | None = None
    stall_timeout: str | None = None
    checkpoint_uri: str | None = None
    checkpoint_store: Literal["s3", "pvc"] | None = None
    # camelCase field -> spec | profile | defaults | built-in
    sources: dict[str, ResolvedSource] | None = None


class TrainingRunStatus(_Status):
    """Progress, checkpoint and metrics from the trainer; phase, conditions and the Job from the operator."""

    observed_generation: int | None = None
    phase: Phase | None = None
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    job_name: str | None = None
    start_time: Timestamp = None
    completion_time: Timestamp = None
    restarts: int | None = None
    # Multi-worker runs (gang restarts, ``trainop.gang``): the Job attempt the operator wants running (0-based;
    # the Job's cryptopredictor.dev/attempt label), and the restarts that counted against spec.backoffLimit
    # (restarts after a preemption do not).
    attempt: int | None = None
    failures: int | None = None
    progress: Progress | None = None
    checkpoint: CheckpointStatus | None = None
    metrics: Metrics | None = None
    tracking: TrackingStatus | None = None
    # A walk-forward run: one row per fold (by index), and "done/total" for ``kubectl get tr -o wide``.
    folds: list[FoldStatus] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["index"]},
    )
    folds_display: str | None = None
    resolved: ResolvedSpec | None = None
    forecast: ForecastStatus | None = None
    promotion: PromotionStatus | None = None
    # kopf keeps its own handler bookkeeping under status.kopf when no annotations storage is used.
    kopf: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = None

    def patch(self) -> dict[str, Any]:
        """The merge-patch body of the status subresource."""
        return {"status": self.dump()}

    def condition_list(self) -> list[dict[str, Any]]:
        """The conditions as plain dicts (what the pure functions of ``trainop.conditions`` take)."""
        return [c.dump() for c in self.conditions or ()]

    @classmethod
    def parse(cls, raw: Any) -> TrainingRunStatus:
        """Lenient: a status as stored, with what does not fit the model left out (a bad condition is
        dropped, not the list; a bad value, not its section). Never raises."""
        return parse_lenient(cls, raw)


def parse_lenient(model: type[M], raw: Any) -> M:
    """``raw`` as ``model`` with what does not fit it left out, one validation error's item or key at a time; the
    empty model where ``raw`` is not an object or nothing is left to drop. Never raises."""
    if not isinstance(raw, dict):
        return model()
    data = copy.deepcopy(raw)
    for _ in range(50):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            if not any(_drop(data, err["loc"]) for err in exc.errors()):
                return model()
    return model()


def _drop(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Remove what a validation error points at: the list item holding it, else the key itself."""
    cut = next((i + 1 for i, part in enumerate(loc) if isinstance(part, int)), len(loc))
    path, node = loc[:cut], data
    if not path:
        return False
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1]
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    if isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node):
        del node[last]
        return True
    return False
