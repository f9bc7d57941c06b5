"""The one model of a TrainingSchedule: retraining on a cron schedule (``spec``), and what the operator reports
about it (``status``: the last tick, the active runs, the current model).

Why here, beside the TrainingRun and TrainingSweep models and torch-free: the operator (which validates a schedule
before it creates any run), the CRD (generated from these models by ``trainop.crd``) and whoever reads a
schedule's status must agree on every key. ``spec.template.spec`` *is* ``TrainingRunSpec``, so every bound, enum
and default of a run holds for the template.

Why the cron expression and the time zone are checked here, with croniter and zoneinfo, and not by a pattern in
the CRD: no regular expression says whether ``0 0 31 2 *`` ever fires or whether ``Europe/Berln`` is a zone. The
operator parses every schedule with this model before it acts on it, so a bad one is refused with one line that
names the field (``spec.schedule: '61 * * * *' is not a cron schedule: ...``) as the schedule's Ready condition
and a Warning Event -- there is no admission webhook, so ``kubectl apply`` itself still accepts it. Fields and
defaults follow CronJob's (``concurrencyPolicy``, ``startingDeadlineSeconds``, the two history limits,
``suspend``), which people who run this already know.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import Field, WithJsonSchema, field_validator

from trainer.api.manifest import SpecError, parse_owner_spec
from trainer.api.patterns import label_key_problem, label_value_problem
from trainer.api.spec import PromotionSpec, TrainingRunSpec, _Model
from trainer.api.status import Number, Timestamp, _Status, parse_lenient
from trainer.api.sweep import template_problems

SCHEDULE_KIND = "TrainingSchedule"
SCHEDULE_PLURAL = "trainingschedules"
MAX_NAME = 63  # the schedule's name is a label value on every run it creates
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_HINT = (
    "five fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * *' (03:00 daily), or one of "
    + ", ".join(CRON_MACROS)
)
UTC = "UTC"


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a five-field cron schedule that fires (None: it is one)."""
    text = expr.strip()
    if not text:
        return f"empty; expected {CRON_HINT}"
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        return f"'{expr}' sets a time zone inside the schedule; put it in spec.timeZone instead"
    if not text.startswith("@") and len(text.split()) != 5:
        return f"'{expr}' has {len(text.split())} fields; expected {CRON_HINT}"
    if text.startswith("@") and text.lower() not in CRON_MACROS:
        return f"'{expr}' is not a cron macro; expected {CRON_HINT}"
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except CroniterBadDateError:
        return f"'{expr}' never fires (no calendar date matches it)"
    except (CroniterError, ValueError, KeyError) as exc:
        return f"'{expr}' is not a cron schedule: {exc}; expected {CRON_HINT}"
    return None


def zone(name: str | None) -> ZoneInfo:
    """The schedule's time zone (empty: UTC); raises ValueError for an unknown one."""
    try:
        return ZoneInfo(name or UTC)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"'{name}' is not an IANA time zone such as Europe/Berlin, America/New_York or UTC ({exc})"
        ) from None


class RunMetadata(_Model):
    """Labels and annotations every created TrainingRun gets (besides the schedule's own)."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        problems = [p for k, val in v.items() for p in (label_key_problem(k), label_value_problem(val)) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        problems = [p for k in v for p in (label_key_problem(k),) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return v


class RunTemplate(_Model):
    """What each tick creates, as a CronJob's ``jobTemplate``: optional metadata and a TrainingRun spec."""

    metadata: RunMetadata = Field(default_factory=RunMetadata)
    spec: TrainingRunSpec = Field(description="The TrainingRun spec of every run; data.end is set per tick.")


class TrainingScheduleSpec(_Model):
    """``TrainingSchedule.spec``: when to train (cron, time zone), what (a TrainingRun template), and CronJob's
    rules for overlaps, missed ticks and history, plus the promotion of the better model."""

    schedule: str = Field(max_length=128, description="Cron schedule, e.g. '0 3 * * *' or @daily.")
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA time zone of the schedule (and of data.end); empty: UTC.",
    )
    template: RunTemplate
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = Field(
        default="Allow",
        description="Allow: runs may overlap; Forbid: skip a tick while a run is active; Replace: delete the "
        "active runs, then create the new one.",
    )
    starting_deadline_seconds: int | None = Field(
        default=None, ge=0, description="A tick missed by more than this is skipped; empty: no deadline."
    )
    successful_runs_history_limit: int = Field(default=3, ge=0, le=1000, description="Succeeded runs kept.")
    failed_runs_history_limit: int = Field(default=1, ge=0, le=1000, description="Failed runs kept.")
    suspend: bool = Field(default=False, description="No new runs while true (active ones go on).")
    promotion: PromotionSpec | None = Field(
        default=None,
        description="Copied into each run's spec (uri: the schedule's checkpoint base, so that its runs share "
        "one current.json); empty: the template's.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        problem = cron_problem(v)
        if problem:
            raise ValueError(problem)
        return v.strip()

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            zone(v)
        return v


def parse_schedule(raw: Any, name: str) -> tuple[TrainingScheduleSpec, dict[str, Any]]:
    """A schedule's ``spec`` -> (model, raw template spec); raises SpecError with every problem, each naming its
    field."""
    source = f"TrainingSchedule {name}"
    problems = []
    if len(name) > MAX_NAME:
        problems.append(f"metadata.name: must be at most {MAX_NAME} characters (a label of every run)")
    spec = parse_owner_spec(TrainingScheduleSpec, raw, source, problems)
    template = copy.deepcopy(dict(raw["template"]["spec"]))
    problems += template_problems(template, "spec.template.spec")
    if problems:
        raise SpecError(source, problems)
    return spec, template


# --- status ----------------------------------------------------------------------------------------------------


class ScheduleCondition(_Status):
    """A metav1.Condition of a schedule: Ready (False: InvalidSpec) and Suspended."""

    type: Literal["Ready", "Suspended"]
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = None
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    reason: str = Field(max_length=1024)
    message: str = Field(max_length=32768)


class RunRef(_Status):
    name: str
    uid: str | None = None
    scheduled_time: Timestamp = None


class CurrentModel(_Status):
    """The promoted model, as the newest finished run that promoted reported it (``status.promotion``)."""

    uri: str | None = None
    run: str
    metric: str | None = None
    source: str | None = None
    value: Number = None
    promoted_at: Timestamp = None


class TrainingScheduleStatus(_Status):
    """Written by the operator only."""

    observed_generation: int | None = None
    conditions: list[ScheduleCondition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    last_schedule_time: Timestamp = None
    next_schedule_time: Timestamp = None
    last_successful_time: Timestamp = None
    active: list[RunRef] | None = None
    # len(active) for `kubectl get tsc` (a JSONPath cannot count).
    active_count: int | None = None
    current_model: CurrentModel | None = None
    # The finished runs whose Promoted/NotPromoted Event was posted (each once); pruned runs leave the list.
    promotions_reported: list[str] | None = None
    kopf: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = None

    @classmethod
    def parse(cls, raw: Any) -> TrainingScheduleStatus:
        """Lenient, as ``TrainingRunStatus.parse``: what does not fit the model is left out; never raises."""
        return parse_lenient(cls, raw)
