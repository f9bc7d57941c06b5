"""Golden test of a walk-forward run's Job (an Indexed Job of one pod per fold) and the rules behind its shape.

Regenerate the golden file only on purpose: ``UPDATE_GOLDEN=1 pytest tests/operator/test_builders_folds.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from trainop import builders, builders_folds, names

from tests.operator.test_builders import (
    FULL,
    SETTINGS,
    check_golden,
    env_of,
    job_of,
    run_of,
    without_manifest,
)
from trainer.api import exitcodes

# 2024-01-01 .. 2024-11-30 (the last first-target day with a full 7-day horizon) in 90 days: 4 folds.
WALK_FORWARD = {"start": "2024-01-01", "end": "2024-12-06", "refitEvery": "90d", "parallelism": 2}


def walk_forward(**fields: Any) -> dict[str, Any]:
    return {"walkForward": {**WALK_FORWARD, **fields}}


def test_walk_forward_golden() -> None:
    job = job_of(run_of(walk_forward(backoffLimitPerIndex=1, maxFailedIndexes=1)), SETTINGS)
    check_golden("job-walk-forward.yaml", without_manifest(job))


def test_fold_job_shape() -> None:
    job = job_of(run_of(walk_forward()), SETTINGS)
    spec = job["spec"]
    assert job["metadata"]["name"] == names.job_name("sol-tft") == "sol-tft-train"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 2)
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (2, 0)
    assert "backoffLimit" not in spec, "with backoffLimitPerIndex it must be unset (or huge)"
    assert spec["podReplacementPolicy"] == "Failed"
    rules = spec["podFailurePolicy"]["rules"]
    assert [r["action"] for r in rules] == ["Ignore", "Ignore", "FailIndex"]
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[1]["onExitCodes"]["values"] == [exitcodes.PREEMPTED]
    assert rules[2]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": [exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS],
    }
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "python",
        "-m",
        "trainer",
        "fold",
        "--manifest-env",
        builders.MANIFEST_ENV,
    ]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert env_of(job)["TRAINER_TERMINATION_MESSAGE_PATH"] == "/dev/termination-log"
    assert "subdomain" not in spec["template"]["spec"], "folds do not talk to each other: no Service"


# (case, walkForward fields, (completions, parallelism, maxFailedIndexes))
SIZES = [
    ("parallelism-capped-at-the-folds", {"parallelism": 10}, (4, 4, 0)),
    ("one-at-a-time", {"parallelism": 1}, (4, 1, 0)),
    ("max-failed-capped-at-the-folds", {"maxFailedIndexes": 9}, (4, 2, 4)),
    ("one-fold", {"start": "2024-11-01"}, (1, 1, 0)),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "sizes"), [c[1:] for c in SIZES], ids=[c[0] for c in SIZES])
def test_fold_job_sizes(fields: dict[str, Any], sizes: tuple[int, int, int]) -> None:
    spec = job_of(run_of(walk_forward(**fields)), SETTINGS)["spec"]
    assert (spec["completions"], spec["parallelism"], spec["maxFailedIndexes"]) == sizes


def test_the_rest_is_the_single_worker_job() -> None:
    """Cluster fields (queue label, suspend, deadline, TTL, account, env) as for today's single-worker Job."""
    single = without_manifest(job_of(run_of(FULL), SETTINGS))
    folds = without_manifest(job_of(run_of({**FULL, **walk_forward()}), SETTINGS))
    assert folds["metadata"] == single["metadata"]
    assert folds["spec"]["template"]["metadata"] == single["spec"]["template"]["metadata"]
    for key in ("suspend", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert folds["spec"][key] == single["spec"][key], key
    pod, one = folds["spec"]["template"]["spec"], single["spec"]["template"]["spec"]
    assert {k: v for k, v in pod.items() if k != "containers"} == {
        k: v for k, v in one.items() if k != "containers"
    }
    added = {"command", "terminationMessagePath", "terminationMessagePolicy", "env"}
    container, base = pod["containers"][0], one["containers"][0]
    assert {k: v for k, v in container.items() if k not in added} == {
        k: v for k, v in base.items() if k not in added
    }
    assert container["env"][:-1] == base["env"]
    assert container["env"][-1] == {"name": builders_folds.TERMINATION_ENV, "value": "/dev/termination-log"}


def test_gpus_do_not_make_a_fold_a_torchrun() -> None:
    """One process per fold: the pod's GPUs do not turn the fold command into torchrun."""
    job = job_of(run_of({**walk_forward(), "resources": {"limits": {"nvidia.com/gpu": 2}}}), SETTINGS)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:4] == [
        "python",
        "-m",
        "trainer",
        "fold",
    ]
    assert "TRAINER_SHUTDOWN_TIMEOUT_SECONDS" not in env_of(job)


def test_shape_fold_job_refuses_a_plain_run() -> None:
    job = job_of(run_of(), SETTINGS)
    spec = builders.validate_run(run_of(), SETTINGS)
    with pytest.raises(ValueError, match="walkForward"):
        builders_folds.shape_fold_job(job["spec"], spec)
    assert builders_folds.fold_count(spec) == 0
