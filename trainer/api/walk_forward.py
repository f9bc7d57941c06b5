"""``spec.walkForward``: a walk-forward backtest on the cluster (torch-free, re-exported by ``trainer.api.spec``).

Apart from the spec model because it is a whole feature of its own (one pod per fold, ``trainop.folds``) with its
own calendar rules; ``TrainingRunSpec`` checks it against ``data`` and ``workers``."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator, model_validator

from trainer.api.base import ApiModel as _Model
from trainer.api.foldstats import fold_ranges

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
