# ruff: noqa: F811  (the api/ns/crd fixtures are imported from the integration tests and used as parameters)
"""A TrainingSweep against the API emulator, with the operator (``python -m trainop``, a real subprocess) killed and
restarted five times while the sweep runs: exactly the trials ``<sweep>-t000..t003``, never a duplicate or a gap,
and the right leaderboard.

No trainer runs. The TrainingRun side of the operator creates each trial run's Job; the test then plays the trainer
(``status.metrics``/``checkpoint`` on the run) and the Job controller (the Job's Complete or Failed condition), from
which the operator derives the run's phase, as in ``test_integration``.
"""

from __future__ import annotations

import copy
import json
import pathlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.operator.test_integration import (  # noqa: F401 (fixtures)
    RUNS,
    SAMPLE,
    Operator,
    api,
    crd,
    events,
    ns,
    set_job_status,
    wait_job,
)
from tests.support.cluster import apply_crd
from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
SWEEPS = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingsweeps"
SWEEP_LABEL = "cryptopredictor.dev/sweep"
DONE = ("Succeeded", "Failed")
T0 = "2026-01-01T01:00:00Z"


@pytest.fixture(scope="module")
def sweep_crd(kube_api: KubeApi, crd: None) -> None:
    apply_crd(kube_api, ROOT / "manifests" / "crd-sweep.yaml", "trainingsweeps")


@pytest.fixture()
def operator(kube_api: KubeApi, sweep_crd: None, ns: str, tmp_path: pathlib.Path) -> Iterator[Operator]:
    op = Operator(kube_api, ns, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()


def create_sweep(api: Api, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingSweep",
        "metadata": {"name": name},
        "spec": {"template": copy.deepcopy(SAMPLE["spec"]), **spec},
    }
    return dict(api.create(SWEEPS.format(ns=ns), body))


def sweep_status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return dict(api.get(f"{SWEEPS.format(ns=ns)}/{name}").get("status") or {})


def trial_runs(api: Api, ns: str) -> dict[str, dict[str, Any]]:
    """Every TrainingRun in the namespace (a trial run of the sweep or not), by name."""
    return {r["metadata"]["name"]: r for r in api.get(RUNS.format(ns=ns))["items"]}


def phase(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("phase") or "")


def restart(op: Operator, kill: bool) -> None:
    """SIGKILL (nothing finishes) or SIGTERM (kopf's shutdown), then a new process."""
    if kill and op.proc is not None:
        op.proc.send_signal(signal.SIGKILL)
        op.proc.wait(10)
        op.proc = None
    op.stop()
    op.start()


def finish(api: Api, ns: str, name: str, objective: float | None) -> None:
    """The trainer's final metrics and best checkpoint, then the Job controller's verdict on the run's Job."""
    job = wait_job(api, ns, f"{name}-train")["metadata"]["name"]
    if objective is None:
        condition = {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "failed",
        }
        set_job_status(api, ns, job, {"failed": 4, "conditions": [{**condition, "lastTransitionTime": T0}]})
        return
    api.merge(
        f"{RUNS.format(ns=ns)}/{name}/status",
        {
            "status": {
                "metrics": {"valMase": objective},
                "checkpoint": {"best": f"s3://checkpoints/{name}/best.pt"},
            }
        },
    )
    condition = {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": ""}
    set_job_status(
        api,
        ns,
        job,
        {"succeeded": 1, "completionTime": T0, "conditions": [{**condition, "lastTransitionTime": T0}]},
    )


def test_a_grid_sweep_survives_five_operator_restarts(
    api: Api, ns: str, operator: Operator, kube_api: KubeApi
) -> None:
    grid = [
        {"path": "training.learningRate", "values": [0.001, 0.003]},
        {"path": "model.hiddenSize", "values": [32, 64]},
    ]
    create_sweep(api, ns, "grid", parameters=grid, parallelism=2, objective={"metric": "valMase"})
    restart(operator, kill=True)  # 1: while the first trials are being recorded and created
    names = [f"grid-t{k:03d}" for k in range(4)]
    objectives = {"grid-t000": 0.9, "grid-t001": 0.7, "grid-t002": None, "grid-t003": 0.8}
    finished: list[str] = []
    for restarts in range(2, 6):  # 2..5: each right after a trial's run finishes
        runs = wait_for(
            "an unfinished trial run with its Job",
            lambda: (
                lambda rs: (
                    rs
                    if any(n not in finished for n in rs)
                    and api.maybe_get(
                        f"/apis/batch/v1/namespaces/{ns}/jobs/{min(set(rs) - set(finished))}-train"
                    )
                    else None
                )
            )(trial_runs(api, ns)),
            timeout=60,
            log=operator.log_path,
        )
        assert set(runs) <= set(names), f"unexpected runs: {sorted(runs)}"
        assert sum(1 for r in runs.values() if phase(r) not in DONE) <= 2, "more than parallelism unfinished"
        name = min(set(runs) - set(finished))
        finish(api, ns, name, objectives[name])
        finished.append(name)
        restart(operator, kill=restarts % 2 == 0)
        wait_for(f"{name} to finish", lambda n=name: phase(trial_runs(api, ns)[n]) in DONE, timeout=60)

    status = wait_for(
        "the sweep to succeed",
        lambda: (lambda s: s if s.get("phase") == "Succeeded" else None)(sweep_status(api, ns, "grid")),
        timeout=60,
        log=operator.log_path,
    )
    runs = trial_runs(api, ns)
    assert sorted(runs) == names  # no duplicate, no gap, nothing else
    for k, run in enumerate(runs[n] for n in names):
        assert run["metadata"]["labels"][SWEEP_LABEL] == "grid"
        assert run["metadata"]["ownerReferences"][0]["kind"] == "TrainingSweep"
        point = {"training.learningRate": [0.001, 0.003][k // 2], "model.hiddenSize": [32, 64][k % 2]}
        assert json.loads(run["metadata"]["annotations"]["cryptopredictor.dev/trial-params"]) == point
        assert run["spec"]["training"]["learningRate"] == point["training.learningRate"]
        assert run["spec"]["model"]["hiddenSize"] == point["model.hiddenSize"]
    assert [(t["index"], t["name"], t["phase"]) for t in status["trials"]] == [
        (0, "grid-t000", "Succeeded"),
        (1, "grid-t001", "Succeeded"),
        (2, "grid-t002", "Failed"),
        (3, "grid-t003", "Succeeded"),
    ]
    assert [(e["rank"], e["name"], e["objective"]) for e in status["leaderboard"]] == [
        (1, "grid-t001", 0.7),
        (2, "grid-t003", 0.8),
        (3, "grid-t000", 0.9),
    ]
    assert status["best"] == {
        "index": 1,
        "name": "grid-t001",
        "params": {"training.learningRate": 0.001, "model.hiddenSize": 64},
        "objective": 0.7,
        "checkpoint": "s3://checkpoints/grid-t001/best.pt",
    }
    assert (status["trialsDone"], status["trialsTotal"], status["running"]) == (4, 4, 0)
    sweep_events = events(api, ns, "grid")
    created = [m for _, reason, m in sweep_events if reason == "TrialCreated"]
    assert len(created) == len(set(created)) and set(created) <= {
        f"trial {k} (grid-t{k:03d}): " + ", ".join(f"{p}={json.dumps(v)}" for p, v in point.items())
        for k, point in enumerate(
            {"training.learningRate": lr, "model.hiddenSize": h} for lr in (0.001, 0.003) for h in (32, 64)
        )
    }
    assert len(created) >= 3  # one per trial (a SIGKILL between a create and its Event may lose one)
    done = [m for _, reason, m in sweep_events if reason == "Succeeded"]
    assert len(done) <= 1 and all("best grid-t001: valMase 0.7" in m for m in done)
    table = kube_api.kubectl("get", "tsw", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "TRIALS", "RUNNING", "BEST", "OBJECTIVE", "AGE"]
    assert table[1].split()[:5] == ["grid", "4/4", "0", "grid-t001", "0.7"]


def test_an_invalid_sweep_fails_before_any_run(api: Api, ns: str, operator: Operator) -> None:
    parameters = [
        {"path": "training.learningRate", "values": [0.001]},
        {"path": "training.lr", "values": [0.1]},
    ]
    create_sweep(api, ns, "bad", parameters=parameters)
    status = wait_for(
        "the sweep to fail",
        lambda: (lambda s: s if s.get("reason") == "InvalidSpec" else None)(sweep_status(api, ns, "bad")),
        timeout=30,
        log=operator.log_path,
    )
    message = "spec.parameters[1].path: 'training.lr' is not a field of a TrainingRun spec; e.g. training.learningRate"
    assert status["phase"] == "Failed" and status["message"] == message
    wait_for("the InvalidSpec Event", lambda: ("Warning", "InvalidSpec", message) in events(api, ns, "bad"))
    assert trial_runs(api, ns) == {}
