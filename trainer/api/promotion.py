"""Promotion: which model is current (``<prefix>/current.json``) and when a finished run replaces it.

Why torch-free and apart from the trainer's IO (``trainer.promote``): the rule that decides a promotion is part of
the API -- the spec field (``spec.promotion``, also a TrainingSchedule template's), the document current.json
holds and the decision itself are read by the trainer, the operator's schedule controller and a person reading
``status.promotion`` -- so it is one pure function here, table-tested, and every figure it compares is named in
its one-line reason.

The rule: lower is better (pinball, MASE); a run is promoted when there is no current model (or its figure is
not a number), or when ``value <= incumbent * (1 - minImprovement)``; a run whose own figure is not a number is
never promoted. "At least 1% below" includes exactly 1% below (equality up to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from trainer.api.patterns import CLUSTER_CHECKPOINT_PATTERN, S3_URI_RE

#: The pointer's name under the promotion prefix.
CURRENT = "current.json"
Metric = Literal["pinball", "mase"]
Source = Literal["validation", "walkForward"]


class PromotionSpec(BaseModel):
    """Keep the better model: at the end of a successful run the trainer compares this run's metric with the
    current model's (named by ``<uri>/current.json``) and, when it is lower by the margin, points current.json
    at this run's best.pt; ``python -m trainer predict --checkpoint <uri>/current`` then uses it."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, validate_default=True
    )

    metric: Metric = Field(
        default="pinball", description="Compared metric, lower is better: pinball (price units) or mase."
    )
    source: Source = Field(
        default="validation",
        description=(
            "Where the figures come from: validation (this run's validation windows; the current model is "
            "scored on the same windows). walkForward is refused: a walk-forward run ships no model."
        ),
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Relative margin: 0.01 promotes only a metric at least 1% below the current model's.",
    )
    uri: str | None = Field(
        default=None,
        description=(
            "The prefix holding current.json (s3://bucket/prefix; locally also a directory). Empty: the parent "
            "of the run's checkpoint location (in a cluster <operator prefix>/<namespace>)."
        ),
        json_schema_extra={"pattern": CLUSTER_CHECKPOINT_PATTERN},
    )

    @field_validator("source")
    @classmethod
    def _source_available(cls, v: str) -> str:
        if v == "walkForward":
            raise ValueError(
                "walkForward is not available: a plain run has no walk-forward metrics, and a walk-forward run "
                "trains one model per fold and stores none to promote; use validation"
            )
        return v

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("s3:") and not S3_URI_RE.match(v):
            raise ValueError(f"'{v}' is not a valid S3 URI; expected s3://bucket/prefix")
        return v


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str  # one line naming both figures and the margin


def decide(value: float | None, incumbent: float | None, min_improvement: float, metric: str) -> Decision:
    """Whether a run whose ``metric`` is ``value`` replaces a current model whose figure is ``incumbent``
    (None: there is no current model)."""
    if value is None or not math.isfinite(value):
        return Decision(False, f"not promoted: this run's {metric} is not a finite number ({value})")
    if incumbent is None:
        return Decision(True, f"promoted: no current model; this run's {metric} is {value:.6g}")
    if not math.isfinite(incumbent):
        return Decision(
            True, f"promoted: the current model's {metric} is not a finite number; this run's is {value:.6g}"
        )
    need = incumbent * (1.0 - min_improvement)
    exact = math.isclose(value, need, rel_tol=1e-12)  # 3.0 * (1 - 0.01) is 2.9699999999999998
    margin = f"{min_improvement * 100:.4g}% below" if min_improvement else "at most"
    if value <= need or exact:
        return Decision(
            True,
            f"promoted: {metric} {value:.6g} vs the current model's {incumbent:.6g} "
            f"(needed <= {need:.6g}: {margin} the current's)",
        )
    return Decision(
        False,
        f"not promoted: {metric} {value:.6g} vs the current model's {incumbent:.6g} "
        f"(needed <= {need:.6g}: {margin} the current's)",
    )


class CurrentModel(BaseModel):
    """``current.json``: the promoted model and the figure it was promoted with."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    model: str = Field(min_length=1)  # URI of the promoted best.pt
    checkpoint: str | None = None  # the run's checkpoint prefix (best.pt and best.json under it)
    sha256: str | None = None  # of best.pt when it was promoted: a later rewrite of it is detected
    metric: str | None = None
    source: str | None = None
    value: float | None = None
    run: str | None = None
    namespace: str | None = None
    promoted_at: str | None = None
    validation: dict[str, str] | None = None  # {"start", "end"}: the windows ``value`` was measured on

    @field_validator("value", mode="before")
    @classmethod
    def _number_or_none(cls, v: Any) -> Any:
        return None if isinstance(v, str | bool) else v

    @property
    def prefix(self) -> str:
        """The checkpoint prefix of the promoted model: ``checkpoint``, else the parent of ``model``."""
        return self.checkpoint or self.model.rpartition("/")[0] or "."

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_current(obj: Any, source: str) -> CurrentModel:
    """A current.json's content; ValueError naming ``source`` when it is not one."""
    try:
        return CurrentModel.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ValueError(f"{source} is not a current-model pointer ({where}: {first['msg']})") from None
