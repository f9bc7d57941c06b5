"""What a TrainingSchedule makes of its runs' promotion outcomes (pure): the current model, and one Event per run.

Why apart from ``trainop.schedule``: the tick rules are CronJob's; this is the other half of the schedule -- the
trainer writes ``current.json`` and ``status.promotion`` at the end of each run (``spec.promotion``), and the
schedule's ``status.currentModel`` follows the newest *finished* run that promoted (by completion: the last
writer of ``current.json``), never moving back to an older one when the current model's run is pruned or
deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from trainer.api.schedule import CurrentModel
from trainer.api.status import rfc3339

from .conditions import parse_time
from .status import Event

if TYPE_CHECKING:
    from .schedule import OwnedRun


def current_model(old: CurrentModel | None, runs: Sequence[OwnedRun], now: datetime) -> CurrentModel | None:
    """The newest (by completion) finished run that promoted, when it finished after the current model's
    promotion; else the current model (its run may have been pruned since)."""
    promoted = [r for r in runs if r.finished and r.promotion is not None and r.promotion.promoted]
    if not promoted:
        return old
    best = max(promoted, key=lambda r: (r.completed or now, r.order()))
    when = best.completed or now
    since = parse_time(old.promoted_at) if old is not None else None
    if old is not None and (old.run == best.name or (since is not None and when <= since)):
        return old
    p = best.promotion
    assert p is not None
    return CurrentModel(
        uri=p.model_uri,
        run=best.name,
        metric=p.metric,
        source=p.source,
        value=p.value,
        promoted_at=rfc3339(when),
    )


def _figure(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def promotion_event(run: OwnedRun) -> Event:
    """``Promoted`` or ``NotPromoted``, with the run's figure and the current model's."""
    p = run.promotion
    assert p is not None
    metric = f"{p.metric or 'metric'} ({p.source})" if p.source else (p.metric or "metric")
    margin = f", at least {p.min_improvement:.0%} lower needed" if p.min_improvement else ""
    figures = f"{metric} {_figure(p.value)} vs current {_figure(p.incumbent)}{margin}"
    if p.promoted:
        where = f"; current model {p.model_uri}" if p.model_uri else ""
        return Event("Normal", "Promoted", f"{run.name} promoted: {figures}{where}")
    why = f": {p.message}" if p.message else ""
    return Event("Normal", "NotPromoted", f"{run.name} not promoted: {figures}{why}")
