"""The Job of a walk-forward run (``spec.walkForward``): an Indexed Job with one pod per fold.

Why an Indexed Job rather than one pod looping over the folds: folds are independent (each trains the spec on
everything before its fold and forecasts the fold), so they run ``parallelism`` at a time, and the Job
controller retries one failed fold alone (``backoffLimitPerIndex``) instead of restarting the whole backtest.
Each pod learns its fold from ``$JOB_COMPLETION_INDEX`` and leaves the fold's sufficient statistics
(``trainer.api.foldstats.FoldStats``) in its termination message, which the operator pools (``trainop.folds``)
without S3 credentials.

The pod failure policy is per fold: a preemption (DisruptionTarget) or a checkpointed SIGTERM (143) costs
nothing; an invalid config (2) or a NaN loss (4) would repeat on every retry, so that fold fails at once, alone
(``FailIndex``); anything else is retried up to ``backoffLimitPerIndex`` times. ``backoffLimit`` is left unset:
with ``backoffLimitPerIndex`` the API server defaults it to the largest integer, and a small one would end the
Job before each fold had its own retries. ``maxFailedIndexes`` folds may fail before the Job stops the others.

The rest of the Job (labels, queue label, suspend, security context, RBAC, env) is the single-worker Job's,
built by ``trainop.builders.build_job``, which calls these two hooks.
"""

from __future__ import annotations

from typing import Any

from trainer.api import exitcodes
from trainer.api.spec import TrainingRunSpec

from .conditions import TRAINER_CONTAINER

#: Where the kubelet reads a container's termination message (terminationMessagePolicy: File).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: The trainer's ``fold`` command writes ``FoldStats.message()`` to the file this variable names.
TERMINATION_ENV = "TRAINER_TERMINATION_MESSAGE_PATH"


def fold_command(manifest_env: str) -> list[str]:
    """One fold, its index from ``$JOB_COMPLETION_INDEX``: ``python -m trainer fold --manifest-env ...``."""
    return ["python", "-m", "trainer", "fold", "--manifest-env", manifest_env]


def fold_pod_failure_policy() -> dict[str, Any]:
    """Preemption and a checkpointed SIGTERM are free; bad config and NaN loss fail their fold at once."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [exitcodes.PREEMPTED],
                },
            },
            {
                "action": "FailIndex",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS],
                },
            },
        ]
    }


def fold_count(spec: TrainingRunSpec) -> int:
    """The run's folds (the Indexed Job's completions); 0 for a run without ``walkForward``."""
    wf = spec.walk_forward
    return len(wf.folds(spec.data.horizon)) if wf is not None else 0


def shape_fold_job(job_spec: dict[str, Any], spec: TrainingRunSpec) -> None:
    """Turn the single-worker Job spec ``job_spec`` (built from ``spec``) into the walk-forward Indexed Job, in
    place: completions, parallelism, per-index retries, the fold pod failure policy and the termination
    message the operator reads."""
    wf = spec.walk_forward
    if wf is None:
        raise ValueError("not a walk-forward run (spec.walkForward is empty)")
    folds = fold_count(spec)
    job_spec.pop("backoffLimit", None)
    job_spec.update(
        completionMode="Indexed",
        completions=folds,
        parallelism=min(wf.parallelism, folds),
        backoffLimitPerIndex=wf.backoff_limit_per_index,
        maxFailedIndexes=min(wf.max_failed_indexes, folds),
        podFailurePolicy=fold_pod_failure_policy(),
    )
    for container in job_spec["template"]["spec"]["containers"]:
        if container["name"] != TRAINER_CONTAINER:
            continue
        container["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
        container["terminationMessagePolicy"] = "File"
        container["env"].append({"name": TERMINATION_ENV, "value": TERMINATION_MESSAGE_PATH})
