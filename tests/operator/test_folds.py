"""The folds of a walk-forward run (``trainop.folds``), table-driven: each fold's row from its pods, the Job's
index lists and the row the status already holds; the pooled metrics of the rows."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from trainop.folds import Folds, aggregate, parse_indexes, pooled_metrics, read_stats
from trainop.gang import INDEX_KEY

from trainer.api.foldstats import BandSums, FoldStats, pooled
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import FoldStatus, significant

T0, T1, T2, T3 = (f"2026-01-02T03:00:0{i}Z" for i in range(4))
SPEC = TrainingRunSpec.model_validate(
    {"symbol": "SOL", "walkForward": {"start": "2024-01-01", "end": "2024-12-06", "refitEvery": "90d"}}
)
WINDOWS = [
    ("2024-01-01", "2024-03-30"),
    ("2024-03-31", "2024-06-28"),
    ("2024-06-29", "2024-09-26"),
    ("2024-09-27", "2024-11-30"),
]
JOB_UID = "job-uid"


def stats(index: int, n: int | None = None) -> FoldStats:
    """A fold's sums, different for every fold (sizes too) and not round, so that pooling is checked exactly."""
    n = 80 + 7 * index if n is None else n
    points, k = n * 7, 1.0 + index / 7

    def band(scale: float) -> BandSums:
        return BandSums(
            abs_err=0.9137 * points * k * scale,
            pinball=[0.1931 * points * k * scale, 0.3557 * points * k * scale, 0.2011 * points * k * scale],
            covered=int(points * (0.77 + index / 100)),
            width=0.1234 * points * scale,
        )

    start, end = WINDOWS[index] if index < len(WINDOWS) else ("2025-01-01", "2025-01-02")
    return FoldStats(
        index=index,
        start=start,
        end=end,
        n=n,
        horizon=7,
        quantiles=[0.1, 0.5, 0.9],
        model=band(1.0),
        baselines={"empirical": band(1.21), "ewma": band(1.13), "garch": band(1.07)},
        naive_abs_err=0.9971 * points * k,
        sq_err=1.3 * points * k,
        abs_pct_err=0.0123 * points * k,
        da_hits={"1": n // 2 + index, "7": n // 2},
        median="learned",
        band="learned",
        epochs=12,
        train_seconds=31.5,
    )


def pod(
    index: int,
    *,
    code: int | None = None,
    phase: str | None = None,
    message: str | None = None,
    at: str = T1,
    created: str = T0,
    suffix: str = "abcde",
    disrupted: bool = False,
    job_uid: str = JOB_UID,
    label: bool = True,
) -> dict[str, Any]:
    """A fold's pod as the Job controller and the kubelet leave it; ``code`` 0 with the fold's statistics as its
    termination message unless ``message`` is given."""
    meta: dict[str, Any] = {
        "name": f"sol-tft-train-{index}-{suffix}",
        "creationTimestamp": created,
        "labels": {INDEX_KEY: str(index)} if label else {},
        "ownerReferences": [{"uid": job_uid}],
    }
    status: dict[str, Any] = {
        "phase": phase or ("Running" if code is None else "Failed" if code else "Succeeded")
    }
    if code is not None:
        term: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "finishedAt": at,
        }
        text = message if message is not None else (stats(index).message() if code == 0 else "")
        if text:
            term["message"] = text
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    elif phase == "Pending":
        status["containerStatuses"] = [
            {"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]
    if disrupted:
        status["conditions"] = [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "lastTransitionTime": at,
            }
        ]
    return {"metadata": meta, "status": status}


def job(
    completed: str | None = None, failed: str | None = None, completions: int | None = 4
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if completed is not None:
        status["completedIndexes"] = completed
    if failed is not None:
        status["failedIndexes"] = failed
    spec = {"completions": completions} if completions is not None else {}
    return {"metadata": {"name": "sol-tft-train", "uid": JOB_UID}, "spec": spec, "status": status}


def done_row(index: int) -> FoldStatus:
    """The row the status holds for a fold recorded as done (its pod may be gone)."""
    return aggregate(SPEC, [], job(), [pod(index, code=0, suffix="zzzzz")]).rows[index]


def failed_row(index: int) -> FoldStatus:
    return aggregate(SPEC, [], job(failed=str(index)), [pod(index, code=4, suffix="yyyyy")]).rows[index]


def test_parse_indexes() -> None:
    assert parse_indexes(None) is None
    assert parse_indexes("") == frozenset()
    assert parse_indexes("0-2,5") == frozenset({0, 1, 2, 5})
    assert parse_indexes("3,1") == frozenset({1, 3})
    assert parse_indexes("1-x,7, 9 ,a") == frozenset({7, 9}), "malformed parts are skipped, never raised"


# (case, recorded rows, Job, pods, the phase of each of the 4 folds, {fold: (reason, phrase of the message)})
CASES = [
    ("nothing-yet", [], job(), [], ["Pending"] * 4, {}),
    (
        "out-of-order-pods",
        [], job(completed="0-3"), [pod(3, code=0), pod(1, code=0), pod(0, code=0), pod(2, code=0)],
        ["Succeeded"] * 4, {},
    ),
    ("running-and-pending", [], job(), [pod(0), pod(1, phase="Pending")], ["Running", "Pending", "Pending", "Pending"], {}),
    (
        "retried-index-later-success",
        [], job(completed="1"),
        [pod(1, code=0, created=T2, at=T3, suffix="fghij"), pod(1, code=3, created=T0, at=T1)],
        ["Pending", "Succeeded", "Pending", "Pending"], {},
    ),
    (
        "retrying-index-runs-again",
        [], job(), [pod(1, code=3, at=T1), pod(1, created=T2, suffix="fghij")],
        ["Pending", "Running", "Pending", "Pending"],
        {1: ("Retrying", "retry 1 of at most 2 after: pod sol-tft-train-1-abcde: checkpoint storage unusable (exit code 3)")},
    ),
    (
        "failed-pod-waits-for-its-retry",
        [], job(failed=""), [pod(2, code=1)],
        ["Pending", "Pending", "Pending", "Pending"], {2: ("Retrying", "exited 1 (crashed; see its log); waiting for the Job")},
    ),
    (
        "malformed-message",
        [], job(completed="0"), [pod(0, code=0, message="Traceback (most recent call last):")],
        ["Succeeded", "Pending", "Pending", "Pending"], {0: ("StatsInvalid", "not fold statistics")},
    ),
    (
        "message-of-another-fold",
        [], job(), [pod(0, code=0, message=stats(2).message())],
        ["Succeeded", "Pending", "Pending", "Pending"], {0: ("StatsInvalid", "reported the statistics of fold 2")},
    ),
    (
        "missing-message",
        [], job(), [pod(3, code=0, message="")],
        ["Pending", "Pending", "Pending", "Succeeded"], {3: ("StatsMissing", "without a termination message")},
    ),
    (
        "completed-index-whose-pod-is-gone",
        [], job(completed="0"), [],
        ["Succeeded", "Pending", "Pending", "Pending"], {0: ("StatsMissing", "pod is gone")},
    ),
    ("recorded-fold-survives-its-pod", [done_row(0), done_row(2)], job(completed="0,2"), [], ["Succeeded", "Pending", "Succeeded", "Pending"], {}),
    (
        "nan-loss-fails-the-index-at-once",
        [], job(), [pod(1, code=4)],
        ["Pending", "Failed", "Pending", "Pending"], {1: ("NaNLoss", "the loss became NaN/inf (exit code 4)")},
    ),
    (
        "failed-indexes-are-authoritative",
        [], job(failed="2"), [pod(2, code=1)],
        ["Pending", "Pending", "Failed", "Pending"], {2: ("Error", "exited 1 (crashed; see its log)")},
    ),
    (
        "failed-index-without-its-pods",
        [], job(failed="0-1"), [],
        ["Failed", "Failed", "Pending", "Pending"], {i: ("Failed", "its pods are gone") for i in (0, 1)},
    ),
    (
        "counted-failures-over-the-limit-without-failed-indexes",
        [], job(), [pod(0, code=1, suffix=s, created=c, at=c) for s, c in (("aaaaa", T0), ("bbbbb", T1), ("ccccc", T2))],
        ["Failed", "Pending", "Pending", "Pending"], {0: ("Error", "backoffLimitPerIndex 2 reached")},
    ),
    (
        "preemptions-do-not-count",
        [], job(),
        [pod(0, code=143, suffix=s, created=c, at=c) for s, c in (("aaaaa", T0), ("bbbbb", T1), ("ccccc", T2))]
        + [pod(1, code=137, disrupted=True)],
        ["Pending", "Pending", "Pending", "Pending"],
        {0: ("Retrying", "exited 143 (terminated; checkpoint written)"), 1: ("Retrying", "was disrupted")},
    ),
    ("recorded-failure-is-kept", [failed_row(1)], job(failed="1"), [], ["Pending", "Failed", "Pending", "Pending"], {1: ("NaNLoss", "sol-tft-train-1-yyyyy")}),
    ("a-later-success-replaces-a-recorded-failure", [failed_row(1)], job(completed="1"), [pod(1, code=0)], ["Pending", "Succeeded", "Pending", "Pending"], {}),
    ("pods-of-another-job-are-not-this-runs", [], job(), [pod(0, code=0, job_uid="older")], ["Pending"] * 4, {}),
    ("job-ahead-of-the-pods-copy-completed", [], job(completed="1"), [pod(1)], ["Pending", "Running", "Pending", "Pending"], {}),
    ("job-ahead-of-the-pods-copy-failed", [], job(failed="1"), [pod(1)], ["Pending", "Running", "Pending", "Pending"], {}),
    ("index-from-the-pod-name-without-the-label", [], job(), [pod(2, code=0, label=False)], ["Pending", "Pending", "Succeeded", "Pending"], {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("recorded", "the_job", "pods", "phases", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_fold_rows(
    recorded: list[FoldStatus],
    the_job: dict[str, Any],
    pods: list[dict[str, Any]],
    phases: list[str],
    reasons: dict[int, tuple[str, str]],
) -> None:
    folds = aggregate(SPEC, recorded, the_job, pods)
    assert [r.phase for r in folds.rows] == phases
    assert [(r.index, r.start, r.end) for r in folds.rows] == [(i, *w) for i, w in enumerate(WINDOWS)]
    for row in folds.rows:
        if row.index in reasons:
            reason, phrase = reasons[row.index]
            assert row.reason == reason and phrase in (row.message or ""), row
        else:
            assert row.reason is None and row.message is None, row
        has_stats = row.phase == "Succeeded" and row.index not in reasons
        assert (row.stats is not None) == has_stats, row
        if has_stats:
            assert FoldStats.model_validate(row.stats) == stats(row.index), "kept unrounded"
    done = [r.index for r in folds.rows if r.stats is not None]
    assert folds.display == f"{len(done)}/4"
    expected = pooled_metrics([stats(i) for i in done], 4)
    assert folds.metrics == expected


def test_rows_of_a_succeeded_fold() -> None:
    row = aggregate(SPEC, [], job(), [pod(2, code=0, at=T3)]).rows[2]
    one = pooled([stats(2)])
    assert (row.pod, row.finished_at, row.n) == ("sol-tft-train-2-abcde", T3, stats(2).n)
    assert (row.mase, row.pinball, row.coverage) == (
        significant(one["mase"]),
        significant(one["pinball"]),
        significant(one["coverage_80"]),
    )
    failed = aggregate(SPEC, [], job(), [pod(1, code=2, at=T2)]).rows[1]
    assert (failed.phase, failed.exit_code, failed.finished_at, failed.reason) == (
        "Failed",
        2,
        T2,
        "InvalidConfig",
    )


def test_pooled_metrics_are_the_pooled_folds() -> None:
    """Exact pooling (sums, never a mean of fold means) under the Metrics keys, whatever the order pods come in."""
    folds = aggregate(SPEC, [], job(completed="0-3"), [pod(i, code=0) for i in (2, 0, 3, 1)])
    p = pooled([stats(i) for i in range(4)])
    assert folds.metrics == {
        "foldsDone": 4,
        "foldsTotal": 4,
        "valMae": p["mae"],
        "valMase": p["mase"],
        "coverage80": p["coverage_80"],
        "pinball": p["pinball"],
        "empiricalPinball": p["baselines"]["empirical"]["pinball"],
        "ewmaPinball": p["baselines"]["ewma"]["pinball"],
        "garchPinball": p["baselines"]["garch"]["pinball"],
        "skillVsGarch": p["baselines"]["garch"]["skill"],
    }
    mean_of_means = sum(pooled([stats(i)])["mae"] for i in range(4)) / 4
    assert not math.isclose(folds.metrics["valMae"], mean_of_means, rel_tol=1e-9), "folds differ in size"


def test_metrics_without_windows_or_folds() -> None:
    assert pooled_metrics([], 4) is None
    assert pooled_metrics([stats(0, n=0)], 4) == {"foldsDone": 1, "foldsTotal": 4}, "nothing to pool: counts"
    nan = stats(0).model_copy(
        update={"naive_abs_err": 0.0}
    )  # MASE undefined: left out, not NaN in the status
    assert "valMase" not in (pooled_metrics([nan], 4) or {})


def test_read_stats_never_raises() -> None:
    for text in (
        "",
        "{",
        "[]",
        "null",
        '{"index": 0}',
        json.dumps({**json.loads(stats(0).message()), "n": -1}),
    ):
        found, problem = read_stats(pod(0, code=0, message=text or " "), 0)
        assert found is None and problem is not None and problem[0] in ("StatsMissing", "StatsInvalid"), text
    assert read_stats(pod(0, code=0), 0) == (stats(0), None)
    infinite = stats(0).model_copy(update={"sq_err": math.inf})
    assert read_stats(pod(0, code=0, message=json.dumps(infinite.model_dump())), 0)[1] == (
        "StatsInvalid",
        "pod sol-tft-train-0-abcde's fold statistics hold NaN or infinite sums",
    )


def test_the_jobs_completions_are_the_folds() -> None:
    """A spec changed after the Job was created (other folds) does not change the Job's folds: their ranges then
    come from the folds' own statistics."""
    assert SPEC.walk_forward is not None
    changed = SPEC.model_copy(
        update={"walk_forward": SPEC.walk_forward.model_copy(update={"refit_every": "30d"})}
    )
    folds = aggregate(changed, [], job(completed="0"), [pod(0, code=0)])
    assert folds.total == 4 and (folds.rows[0].start, folds.rows[0].end) == WINDOWS[0]
    assert (folds.rows[1].start, folds.rows[1].end) == (None, None)
    assert aggregate(SPEC, [], job(completions=None), []).total == 4, (
        "no completions in the index: the spec's"
    )


def test_folds_view() -> None:
    folds = aggregate(SPEC, [done_row(0)], job(), [pod(1, code=4), pod(2), pod(3, code=0, message="x")])
    assert isinstance(folds, Folds)
    assert [r.index for r in folds.done] == [0]
    assert [r.index for r in folds.failed] == [1]
    assert [r.index for r in folds.running] == [2]
    assert [r.index for r in folds.without_stats] == [3]
    assert folds.display == "1/4" and len(folds.dump()) == 4
    assert all("stats" not in row for row in folds.dump()[1:]), "only a done fold keeps statistics"
