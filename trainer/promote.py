"""The end of a successful run with ``spec.promotion``: compare with the current model, point current.json here.

Why the trainer decides, and how (the rule itself is ``trainer.api.promotion.decide``):

* Only the trainer has this run's figures unrounded, the validation windows and the storage credentials; the
  operator reads no S3. It decides on rank 0 after best.pt and forecast.json are stored and flushed, and writes
  ``status.promotion`` whatever it decided (the schedule controller reads it).
* A fair figure for the incumbent: two runs with different ``data.end`` have different validation windows, so
  the current model's *recorded* figure is not comparable with this run's. The current model is loaded
  (verified, as ``predict`` does) and scored on exactly this run's validation windows; its recorded figure is
  used only when it cannot be (another symbol, horizon or quantiles, different origins, an unreadable model),
  and the message says which was used. The incumbent has usually trained on part of these windows (its data
  ended later than this run's validation start), which favours it: promotion is conservative.
* current.json is written in one atomic put (S3 PUT; a local rename) and only after this run's best.pt has been
  read back and matched against best.json; it records that sha256 so that ``predict --checkpoint .../current``
  refuses a best.pt rewritten later.
* A storage failure while reading or writing current.json never loses the trained model, which is stored by
  then: it is one warning line and ``status.promotion`` (``promoted: false``, the error in ``message``), and
  the run still succeeds (exit 0). Failing it would make the Job retry a finished training for a pointer; the
  next run (or schedule tick) compares again.

Two runs finishing at the same moment may both read the same current.json and both write it (S3 offers no
portable compare-and-swap): the later write wins. A TrainingSchedule's ``concurrencyPolicy: Forbid`` avoids it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from trainer.api.errors import ConfigError, InputError
from trainer.api.promotion import CURRENT, CurrentModel, PromotionSpec, decide, parse_current
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import PromotionStatus, rfc3339
from trainer.checkpoint_read import BEST, CheckpointReader
from trainer.dataset import Split, make_windows
from trainer.forecast_metrics import band_metrics
from trainer.storage import ObjectNotFoundError, Storage, StorageError, parse_uri, storage_for

log = logging.getLogger(__name__)


def promotion_prefix(promotion: PromotionSpec, checkpoint_root: str) -> str:
    """Where current.json lives: ``promotion.uri``, else the parent of the run's checkpoint root (a bucket's
    root stays itself)."""
    if promotion.uri:
        return promotion.uri.rstrip("/")
    root = checkpoint_root.rstrip("/")
    parsed = parse_uri(root)
    if parsed.scheme == "s3":
        return root.rpartition("/")[0] if parsed.key else root
    return os.path.dirname(root) or "."


def comparable(incumbent: TrainingRunSpec, spec: TrainingRunSpec) -> str | None:
    """Why a model of spec ``incumbent`` cannot be scored on windows of ``spec`` like its own; None if it can."""
    if incumbent.symbol != spec.symbol:
        return f"it forecasts {incumbent.symbol}, this run {spec.symbol}"
    if incumbent.data.horizon != spec.data.horizon:
        return f"its horizon is {incumbent.data.horizon} days, this run's {spec.data.horizon}"
    if incumbent.model.quantiles != spec.model.quantiles:
        return f"its quantiles are {incumbent.model.quantiles}, this run's {spec.model.quantiles}"
    return None


def score_incumbent(
    current: CurrentModel, spec: TrainingRunSpec, split: Split, frame: pd.DataFrame, endpoint: str | None
) -> tuple[dict[str, float] | None, str]:
    """The current model's metrics on this run's validation windows, or (None, why it cannot be scored).
    A storage outage raises (StorageError); a missing or unusable model is a reason."""
    from trainer.evaluate import load_current

    try:
        fc = load_current(current, endpoint)
    except ObjectNotFoundError as exc:
        return None, str(exc)
    except (ConfigError, InputError) as exc:  # an older trainer's, corrupt, rewritten, unreadable spec
        return None, str(exc).splitlines()[0]
    problem = comparable(fc.spec, spec)
    if problem is not None:
        return None, problem
    idx, _ = fc.symbol_index(spec.symbol)
    d = fc.spec.data
    w = make_windows(frame, idx, d.input_window, d.horizon, first_origin=split.cut - pd.Timedelta(days=1))
    if not w.origin.equals(split.val.origin):
        return None, f"its input window of {d.input_window} days gives it other validation origins"
    return band_metrics(fc.prices(w), w.future_close, w.last_close, fc.quantiles), ""


def read_current(storage: Storage) -> tuple[CurrentModel | None, str]:
    """The current pointer under ``storage`` (None: none), and a note when one exists but is unreadable (it
    is then replaced: a pointer nobody can follow serves nobody). StorageError on an outage."""
    try:
        raw = storage.get(CURRENT)
    except ObjectNotFoundError:
        return None, ""
    try:
        return parse_current(json.loads(raw), storage.uri_for(CURRENT)), ""
    except ValueError as exc:
        log.warning("%s", exc)
        return None, f"; the existing {CURRENT} is unreadable and is replaced ({str(exc).splitlines()[0]})"


def incumbent_figure(
    current: CurrentModel,
    metric: str,
    spec: TrainingRunSpec,
    split: Split,
    frame: pd.DataFrame,
    endpoint: str | None,
) -> tuple[float, str]:
    """The current model's ``metric`` to compare with (NaN: none comparable) and the note saying which."""
    scored, why = score_incumbent(current, spec, split, frame, endpoint)
    name = current.run or current.model
    if scored is not None:
        return float(scored[metric]), f"; the current model ({name}) scored on this run's validation windows"
    recorded = current.value if current.metric == metric and current.value is not None else math.nan
    return recorded, (
        f"; the current model ({name}) could not be scored on this run's windows ({why}), so its recorded "
        f"{metric} is used" + ("" if math.isfinite(recorded) else f", and it has none for {metric}")
    )


def promote(
    spec: TrainingRunSpec,
    name: str,
    store: CheckpointReader,
    split: Split,
    frame: pd.DataFrame,
    metrics: Mapping[str, Any],
    *,
    now: datetime | None = None,
    namespace: str | None = None,
) -> PromotionStatus:
    """Decide ``spec.promotion`` for this run (whose best.pt is stored under ``store``) and write current.json
    when it wins; the status says what happened, also when storage failed (never raises StorageError)."""
    p = spec.promotion
    assert p is not None
    prefix = promotion_prefix(p, store.uri())
    value = float(metrics[p.metric])
    promoted, incumbent, current_uri = False, None, None
    try:
        target = storage_for(prefix, store.endpoint)
        current_uri = target.uri_for(CURRENT)
        current, note = read_current(target)
        if current is not None:
            incumbent, more = incumbent_figure(current, p.metric, spec, split, frame, store.endpoint)
            note += more
        decision = decide(value, incumbent, p.min_improvement, p.metric)
        if decision.promoted:
            rec = store.verified_best()
            pointer = CurrentModel(
                model=store.uri(BEST),
                checkpoint=store.uri(),
                sha256=rec.sha256,
                metric=p.metric,
                source=p.source,
                value=value,
                run=name,
                namespace=namespace if namespace is not None else os.environ.get("TRAININGRUN_NAMESPACE"),
                promoted_at=rfc3339(now or datetime.now(timezone.utc)),
                validation={"start": str(split.cut.date()), "end": str(split.period[1].date())},
            )
            target.put(CURRENT, json.dumps(pointer.document(), indent=2, sort_keys=True).encode() + b"\n")
        promoted, message = decision.promoted, decision.reason + note
    except (StorageError, InputError) as exc:  # InputError: best.pt does not match best.json
        message = (
            f"not promoted: {CURRENT} under {prefix} could not be read or written ({exc}); this run's model is "
            f"stored at {store.uri(BEST)}"
        )
        log.warning("promotion failed (the run's model is stored, the run succeeds): %s", exc)
    return PromotionStatus(
        promoted=promoted,
        metric=p.metric,
        source=p.source,
        value=value,
        incumbent=incumbent,
        min_improvement=p.min_improvement,
        model_uri=store.uri(BEST),
        current_uri=current_uri,
        message=message,
    )
