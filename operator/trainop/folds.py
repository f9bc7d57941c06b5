"""A walk-forward run's folds (pure): each fold's phase and statistics from the Indexed Job and its pods, merged
with what the run's status already holds, and the folds' pooled metrics.

Why the status keeps every fold's statistics: each fold's pod leaves them (``trainer.api.foldstats.FoldStats``)
in its termination message, and pods do not last -- the Job's ``ttlSecondsAfterFinished``, the garbage
collector or a person deletes them. So a fold's row in ``status.folds`` is written once its pod has succeeded,
with the statistics in full, and is never lost afterwards: a later look that no longer finds the pod keeps the
row, and the pooled metrics are recomputed from the rows (``trainer.api.foldstats.pooled``, exact: the metrics of
all folds' forecasts at once). The operator reads no S3 and needs no credentials.

Which pod says what: a fold's pods are found by their completion index (label or annotation
``batch.kubernetes.io/job-completion-index``). A succeeded pod (or the Job's ``completedIndexes``) makes the fold
Succeeded; its message is parsed, and a missing or malformed one marks the row with a reason
(``StatsMissing``/``StatsInvalid``) instead of failing anything. A fold fails when the Job lists it in
``failedIndexes`` (``"1,3-5"``; authoritative when present), when its pod exited 2 or 4 (the pod failure
policy's ``FailIndex``), or -- where the Job does not report ``failedIndexes`` -- when its counted failures
exceed ``backoffLimitPerIndex`` (preemptions and checkpointed SIGTERMs do not count). A retried fold's later
success replaces its failure. ``tests/operator/test_folds.py`` tables every case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from trainer.api import exitcodes
from trainer.api.foldstats import FoldStats, pooled
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import FoldStatus

from .conditions import EXIT_DETAILS, EXIT_REASONS, terminated
from .gang import EXIT_MEANINGS, Worker, deleting, failure_of, owned_by, worker_index

SUCCEEDED, FAILED, RUNNING, PENDING = "Succeeded", "Failed", "Running", "Pending"
#: Exit codes after which the pod failure policy fails the fold at once (``FailIndex``).
FAIL_INDEX_CODES = (exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS)
#: Baselines whose pinball loss is a ``status.metrics`` field (``<name>Pinball``).
BASELINES = ("empirical", "ewma", "garch")


def parse_indexes(text: str | None) -> frozenset[int] | None:
    """A Job's ``completedIndexes``/``failedIndexes`` ("0-2,5" -> {0, 1, 2, 5}); None when absent. Parts that
    are not indexes or ranges are skipped (never raises)."""
    if text is None:
        return None
    out: set[int] = set()
    for part in str(text).split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            out.update(range(int(first), int(last or first) + 1))
    return frozenset(out)


def read_stats(pod: Mapping[str, Any], index: int) -> tuple[FoldStats | None, tuple[str, str] | None]:
    """The fold statistics in a succeeded pod's termination message, or (None, (reason, message)) saying why
    there are none."""
    name = str((pod.get("metadata") or {}).get("name") or "")
    text = str((terminated(pod) or {}).get("message") or "").strip()
    if not text:
        return None, (
            "StatsMissing",
            f"pod {name} succeeded without a termination message (the fold's statistics)",
        )
    try:
        stats = FoldStats.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:  # json.JSONDecodeError is a ValueError
        first = str(exc).splitlines()[0][:200]
        return None, ("StatsInvalid", f"pod {name}'s termination message is not fold statistics: {first}")
    if stats.index != index:
        return None, (
            "StatsInvalid",
            f"pod {name} of fold {index} reported the statistics of fold {stats.index}",
        )
    try:
        json.dumps(stats.model_dump(mode="json"), allow_nan=False)
    except ValueError:
        return None, ("StatsInvalid", f"pod {name}'s fold statistics hold NaN or infinite sums")
    return stats, None


def describe_failure(worker: Worker) -> tuple[str, str]:
    """(reason, message) of one failed pod of a fold, in words users act on."""
    pod, code = f"pod {worker.pod}", worker.exit_code
    if worker.disrupted is not None:
        return "Disrupted", f"{pod} was disrupted ({worker.disrupted})"
    if code in EXIT_REASONS:
        reason = EXIT_REASONS[code]
        return reason, f"{pod}: {EXIT_DETAILS[reason]}"
    if worker.reason == "OOMKilled":
        return "OOMKilled", f"{pod} ran out of memory (OOMKilled); raise resources.limits.memory"
    if code is not None:
        reason = "Preempted" if code == exitcodes.PREEMPTED else "Error"
        return reason, f"{pod} exited {code} ({EXIT_MEANINGS.get(code) or worker.reason or 'error'})"
    detail = ": ".join(t for t in (worker.reason, worker.message) if t)
    return worker.reason or "Failed", f"{pod} failed" + (f" ({detail})" if detail else "")


def counts(worker: Worker) -> bool:
    """A failure that counts against ``backoffLimitPerIndex`` (the pod failure policy ignores the others)."""
    return worker.disrupted is None and worker.exit_code != exitcodes.PREEMPTED


def _started(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in (None, PENDING, RUNNING) and not deleting(pod)


def _succeeded(pod: Mapping[str, Any]) -> bool:
    term = terminated(pod) or {}
    return (pod.get("status") or {}).get("phase") == SUCCEEDED or term.get("exitCode") == 0


def _row(**fields: Any) -> FoldStatus:
    """A row with only the fields that have a value (so that it dumps as the API server stores it: no nulls)."""
    return FoldStatus.model_validate({k: v for k, v in fields.items() if _value(v)})


def _value(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def _with_stats(base: dict[str, Any], stats: FoldStats) -> FoldStatus:
    one: dict[str, Any] = pooled([stats]) if stats.n > 0 else {}
    return _row(
        **{**base, "start": base.get("start") or stats.start, "end": base.get("end") or stats.end},
        n=stats.n,
        mase=one.get("mase"),
        pinball=one.get("pinball"),
        coverage=one.get("coverage_80"),
        stats=stats.model_dump(mode="json"),
    )


def prior_stats(row: FoldStatus | None) -> FoldStats | None:
    """The statistics a row of the status holds, or None (none, or not parseable any more)."""
    if row is None or row.phase != SUCCEEDED or row.stats is None:
        return None
    try:
        return FoldStats.model_validate(row.stats)
    except ValidationError:
        return None


def _done_row(base: dict[str, Any], pod: Mapping[str, Any] | None, prior: FoldStatus | None) -> FoldStatus:
    """A succeeded fold: its statistics from the pod's message, else those recorded before, else why none."""
    index = int(base["index"])
    stats, problem = read_stats(pod, index) if pod is not None else (None, None)
    if stats is None and prior_stats(prior) is not None and prior is not None:
        return prior  # the pod's statistics were recorded before; this look has less
    done = {
        **base,
        "phase": SUCCEEDED,
        "pod": ((pod or {}).get("metadata") or {}).get("name"),
        "finishedAt": (terminated(pod) or {}).get("finishedAt") if pod is not None else None,
    }
    if stats is not None:
        return _with_stats(done, stats)
    reason, message = problem or ("StatsMissing", f"fold {index}'s pod is gone and left no statistics")
    return _row(**done, reason=reason, message=message)


def _lost_row(base: dict[str, Any], last: Worker | None, retries_spent: bool, limit: int) -> FoldStatus:
    """A fold failed for good: how its last pod failed (or that its pods are gone)."""
    if last is None:
        reason = "Failed"
        message = (
            f"the Job marked the fold failed (after backoffLimitPerIndex {limit} retries, or at once on exit "
            "code 2 or 4); its pods are gone"
        )
        return _row(**base, phase=FAILED, reason=reason, message=message)
    reason, message = describe_failure(last)
    if retries_spent:
        message += f"; backoffLimitPerIndex {limit} reached"
    at = last.finished_at if last.finished_at[:1].isdigit() else None  # "~": the pod did not say when
    return _row(
        **base,
        phase=FAILED,
        pod=last.pod,
        exitCode=last.exit_code,
        finishedAt=at,
        reason=reason,
        message=message,
    )


def fold_row(
    index: int,
    window: tuple[str | None, str | None],
    prior: FoldStatus | None,
    pods: Sequence[Mapping[str, Any]],
    *,
    completed: frozenset[int] | None,
    failed: frozenset[int] | None,
    backoff_limit_per_index: int,
) -> FoldStatus:
    """One fold's row from its pods (any order), the Job's index lists and the row the status holds. Where the
    Job lists the fold but a pod of it still looks live, the pods' copy lags the Job's: the pods decide."""
    pods = sorted(pods, key=_started)
    base: dict[str, Any] = {"index": index, "start": window[0], "end": window[1]}
    live = [p for p in pods if _live(p)]
    winners = [p for p in pods if _succeeded(p)]
    if winners or (completed is not None and index in completed and not live):
        return _done_row(base, winners[-1] if winners else None, prior)
    if prior_stats(prior) is not None and prior is not None:
        return prior  # recorded as done; its pod has gone since
    failures = sorted((w for w in map(failure_of, pods) if w is not None), key=lambda w: w.finished_at)
    counted = [w for w in failures if counts(w)]
    final = [w for w in failures if w.exit_code in FAIL_INDEX_CODES and w.disrupted is None]
    spent = len(counted) > backoff_limit_per_index
    # The Job's failedIndexes is authoritative (the pods may be gone); without it, the pods' failures count.
    by_job = (index in failed and not live) if failed is not None else spent
    last: Worker | None = (final or failures)[-1] if final or failures else None
    if final or by_job:
        if last is None and prior is not None and prior.phase == FAILED:
            return prior  # recorded while its pods were still there
        return _lost_row(base, last, last is not None and not final, backoff_limit_per_index)
    if live:
        pod = live[-1]
        phase = RUNNING if (pod.get("status") or {}).get("phase") == RUNNING else PENDING
        retry = None
        if last is not None:
            what = describe_failure(last)[1]
            retry = f"retry {len(counted)} of at most {backoff_limit_per_index} after: {what}"
            retry = retry if counted else f"rerun after: {what}"
        reason = "Retrying" if retry else None
        return _row(**base, phase=phase, pod=pod["metadata"].get("name"), reason=reason, message=retry)
    if prior is not None and prior.phase == FAILED:
        return prior
    if last is not None:
        message = f"{describe_failure(last)[1]}; waiting for the Job to retry it"
        return _row(**base, phase=PENDING, pod=last.pod, reason="Retrying", message=message)
    return _row(**base, phase=PENDING)


@dataclass(frozen=True)
class Folds:
    """All folds of a run: the rows (by index), the pooled metrics of those with statistics."""

    rows: tuple[FoldStatus, ...]
    metrics: dict[str, Any] | None

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def done(self) -> tuple[FoldStatus, ...]:
        """Folds whose statistics are recorded (the pooled metrics cover these)."""
        return tuple(r for r in self.rows if r.phase == SUCCEEDED and r.stats is not None)

    @property
    def failed(self) -> tuple[FoldStatus, ...]:
        return tuple(r for r in self.rows if r.phase == FAILED)

    @property
    def without_stats(self) -> tuple[FoldStatus, ...]:
        """Succeeded folds whose statistics could not be read."""
        return tuple(r for r in self.rows if r.phase == SUCCEEDED and r.stats is None)

    @property
    def running(self) -> tuple[FoldStatus, ...]:
        return tuple(r for r in self.rows if r.phase == RUNNING)

    @property
    def display(self) -> str:
        """``kubectl get tr -o wide``'s FOLDS: folds done of all."""
        return f"{len(self.done)}/{self.total}"

    def dump(self) -> list[dict[str, Any]]:
        return [r.dump() for r in self.rows]


def window_of(row: FoldStatus) -> str:
    """'fold 2 (2024-04-01..2024-06-29)', as messages name a fold."""
    return f"fold {row.index} ({row.start}..{row.end})" if row.start and row.end else f"fold {row.index}"


def pooled_metrics(stats: Sequence[FoldStats], total: int) -> dict[str, Any] | None:
    """``status.metrics`` of a walk-forward run: the folds' pooled metrics under the keys of a single training's
    metrics (``trainer.api.status.Metrics``), and how many folds they cover."""
    if not stats:
        return None
    out: dict[str, Any] = {"foldsDone": len(stats), "foldsTotal": total}
    try:
        p = pooled(list(stats))
    except ValueError:  # no fold with windows (or folds that cannot be pooled): counts only
        return out
    baselines: dict[str, dict[str, float]] = p["baselines"]
    out.update(valMae=p["mae"], valMase=p["mase"], coverage80=p["coverage_80"], pinball=p["pinball"])
    out.update({f"{k}Pinball": baselines[k]["pinball"] for k in BASELINES if k in baselines})
    if "garch" in baselines:
        out["skillVsGarch"] = baselines["garch"]["skill"]
    return {k: v for k, v in out.items() if _value(v)}  # NaN (e.g. MASE without a naive error) is left out


def windows(spec: TrainingRunSpec, total: int) -> list[tuple[str | None, str | None]]:
    """Each fold's first-target-day range from the spec (unknown where the spec no longer makes ``total``
    folds: it was changed after the Job was created; the rows then take the range from the fold's statistics)."""
    ranges = spec.walk_forward.folds(spec.data.horizon) if spec.walk_forward is not None else []
    if len(ranges) != total:
        return [(None, None)] * total
    return [(s.isoformat(), e.isoformat()) for s, e in ranges]


def aggregate(
    spec: TrainingRunSpec,
    recorded: Sequence[FoldStatus] | None,
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
) -> Folds:
    """All folds of the run's Indexed Job: rows from its pods (only this Job's) merged with the rows the status
    holds, and their pooled metrics. The folds are the Job's ``completions`` (else the spec's)."""
    wf = spec.walk_forward
    completions = (job.get("spec") or {}).get("completions")
    if isinstance(completions, int) and not isinstance(completions, bool) and completions > 0:
        total = completions
    else:
        total = len(wf.folds(spec.data.horizon)) if wf is not None else 0
    status = job.get("status") or {}
    completed = parse_indexes(status.get("completedIndexes"))
    failed = parse_indexes(status.get("failedIndexes"))
    prior = {r.index: r for r in recorded or ()}
    mine = [p for p in pods if owned_by(p, job)] if (job.get("metadata") or {}).get("uid") else list(pods)
    by_index: dict[int, list[Mapping[str, Any]]] = {}
    for pod in mine:
        index = worker_index(pod)
        if index is not None:
            by_index.setdefault(index, []).append(pod)
    limit = wf.backoff_limit_per_index if wf is not None else 0
    rows = tuple(
        fold_row(
            i,
            window,
            prior.get(i),
            by_index.get(i, []),
            completed=completed,
            failed=failed,
            backoff_limit_per_index=limit,
        )
        for i, window in enumerate(windows(spec, total))
    )
    stats = [s for s in (prior_stats(r) for r in rows) if s is not None]
    return Folds(rows, pooled_metrics(stats, total))
