# ruff: noqa: F811  (the crd fixture is imported from the integration tests and used as a parameter)
"""TrainingSchedules against the API emulator with the operator (a real subprocess) on an accelerated clock.

The operator runs as ``python -m tests.support.fastclock`` -- ``python -m trainop`` with the schedule clock
(``trainop.clock.now``) running 60 times faster, a test shim -- so a ``* * * * *`` schedule ticks every real second.
No trainer runs: the test plays the trainer (``status.promotion`` on a run) and the Job controller (the Job's
Complete or Failed condition, from which the operator derives the run's phase), as ``test_integration`` does.
One operator and one namespace serve the module; each test has its own schedules and suspends them when done.
"""

from __future__ import annotations

import contextlib
import copy
import pathlib
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from trainop.schedule import SCHEDULED_AT, run_name

from tests.operator.test_integration import (  # noqa: F401 (fixtures)
    RUNS,
    SAMPLE,
    Operator,
    crd,
    events,
    set_job_status,
    wait_job,
)
from tests.support.cluster import apply_crd, fresh_namespace
from tests.support.fastclock import ANCHOR, FACTOR, GO
from tests.support.kubeemu.client import Api, ApiResponseError
from tests.support.kubeemu.fixtures import KubeApi, emulator_only
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, emulator_only]

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEDULES = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingschedules"
SWEEPS = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingsweeps"
CLAIMS = "/api/v1/namespaces/{ns}/persistentvolumeclaims"
NO_S3 = ("TRAINOP_CHECKPOINT_PREFIX", "TRAINOP_S3_ENDPOINT", "TRAINOP_S3_SECRET_NAME")
LABEL = "cryptopredictor.dev/schedule"
T0 = "2026-01-01T01:00:00Z"


class FastOperator(Operator):
    """The operator with its schedule clock 60x faster (``tests.support.fastclock``); restarts keep the anchor."""

    def __init__(self, kube: KubeApi, namespace: str, log: pathlib.Path) -> None:
        super().__init__(kube, namespace, log)
        self.env.update({FACTOR: "60", ANCHOR: str(time.time()), "TRAINOP_TIMER_INTERVAL_SECONDS": "0.25"})
        self.spares: list[tuple[subprocess.Popen[bytes], pathlib.Path]] = []

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fastclock"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        return proc

    def prewarm(self, n: int) -> None:
        """``n`` spares that import the operator now and start when ``start`` lets them (``FASTCLOCK_GO``)."""
        for k in range(n):
            go = self.log_path.with_name(f"go-{len(self.spares)}-{k}")
            self.spares.append((self._spawn({**self.env, GO: str(go)}), go))

    def start(self) -> None:
        if self.spares:
            self.proc, go = self.spares.pop(0)
            go.touch()
        else:
            self.proc = self._spawn(self.env)
        wait_for("the operator's /healthz", self._healthy, timeout=60)

    def close(self) -> None:
        """SIGKILL this operator and the unused spares (their shutdown is not under test)."""
        for proc in [self.proc, *(p for p, _ in self.spares)]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.proc, self.spares = None, []


@pytest.fixture(scope="module")
def api(kube_api: KubeApi, crd: None) -> Api:
    apply_crd(kube_api, ROOT / "manifests" / "crd-schedule.yaml", "trainingschedules")
    return kube_api.api


@pytest.fixture(scope="module")
def ns(api: Api) -> Iterator[str]:
    with fresh_namespace(api, "tsc") as name:
        yield name


@pytest.fixture(scope="module")
def operator(
    kube_api: KubeApi, api: Api, ns: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastOperator]:
    op = FastOperator(kube_api, ns, tmp_path_factory.mktemp("schedule") / "operator.log")
    op.start()
    op.prewarm(5)  # the restart test's operators import while the other tests run
    yield op
    op.close()


@pytest.fixture(scope="module", autouse=True)
def bare(
    kube_api: KubeApi, api: Api, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastOperator, str]]:
    """A second operator without S3 (no prefix, endpoint or Secret) on a namespace of its own, as on a fresh
    cluster; prewarmed at the module's start (autouse), so its imports overlap the other tests."""
    kube_api.kubectl("apply", "-f", str(ROOT / "manifests" / "crd-sweep.yaml"))
    wait_for(
        "the TrainingSweep CRD to be served",
        lambda: kube_api.api.maybe_get("/apis/cryptopredictor.dev/v1alpha1/trainingsweeps") is not None,
    )
    name = f"tsc-bare-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    op = FastOperator(kube_api, name, tmp_path_factory.mktemp("schedule-bare") / "operator.log")
    for key in NO_S3:
        op.env.pop(key, None)
    op.prewarm(1)
    yield op, name
    op.close()
    with contextlib.suppress(ApiResponseError):
        api.delete(f"/api/v1/namespaces/{name}")


def create(api: Api, ns: str, name: str, **spec: Any) -> None:
    template = copy.deepcopy(SAMPLE["spec"])
    template["training"]["epochs"] = 2
    body = {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * *", "template": {"spec": template}, **spec},
    }
    api.create(SCHEDULES.format(ns=ns), body)


def suspend(api: Api, ns: str, name: str) -> None:
    api.merge(f"{SCHEDULES.format(ns=ns)}/{name}", {"spec": {"suspend": True}})


def status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return dict(api.get(f"{SCHEDULES.format(ns=ns)}/{name}").get("status") or {})


def runs(api: Api, ns: str, schedule: str) -> list[dict[str, Any]]:
    """The schedule's runs (not being deleted), oldest tick first."""
    items = api.get(RUNS.format(ns=ns))["items"]
    mine = [
        r
        for r in items
        if r["metadata"].get("labels", {}).get(LABEL) == schedule
        and not r["metadata"].get("deletionTimestamp")
    ]
    return sorted(mine, key=lambda r: r["metadata"]["annotations"][SCHEDULED_AT])


def phase(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("phase") or "")


def at_least(api: Api, ns: str, schedule: str, n: int, op: Operator) -> list[dict[str, Any]]:
    return wait_for(
        f"{n} runs of {schedule}",
        lambda: (lambda rs: rs if len(rs) >= n else None)(runs(api, ns, schedule)),
        timeout=30,
        log=op.log_path,
    )


def finish(api: Api, ns: str, name: str, ok: bool, promotion: dict[str, Any] | None = None) -> None:
    """The trainer's promotion outcome, then the Job controller's verdict on the run's Job."""
    job = wait_job(api, ns, f"{name}-train")["metadata"]["name"]
    if promotion is not None:
        api.merge(f"{RUNS.format(ns=ns)}/{name}/status", {"status": {"promotion": promotion}})
    kind, reason = ("Complete", "CompletionsReached") if ok else ("Failed", "BackoffLimitExceeded")
    cond = {"type": kind, "status": "True", "reason": reason, "message": "", "lastTransitionTime": T0}
    counts = {"succeeded": 1, "completionTime": T0} if ok else {"failed": 4}
    set_job_status(api, ns, job, {**counts, "conditions": [cond]})
    want = "Succeeded" if ok else "Failed"
    wait_for(f"{name} {want}", lambda: phase(api.get(f"{RUNS.format(ns=ns)}/{name}")) == want, timeout=30)


def reasons(api: Api, ns: str, name: str) -> list[str]:
    return [reason for _, reason, _ in events(api, ns, name)]


def test_each_concurrency_policy_and_the_history_limits(
    api: Api, ns: str, operator: FastOperator, kube_api: KubeApi
) -> None:
    create(api, ns, "allow", successfulRunsHistoryLimit=1, failedRunsHistoryLimit=1)
    create(api, ns, "forbid", concurrencyPolicy="Forbid")
    create(api, ns, "replace", concurrencyPolicy="Replace")
    first = at_least(api, ns, "replace", 1, operator)[0]["metadata"]["name"]
    allowed = at_least(api, ns, "allow", 4, operator)  # Allow: several at once, one per tick
    suspend(api, ns, "allow")
    assert all(phase(r) not in ("Succeeded", "Failed") for r in allowed)
    wait_for(  # Replace: one run at a time, each tick's replacing the last
        "Replace to replace the first run",
        lambda: (lambda names: len(names) == 1 and first not in names)(
            [r["metadata"]["name"] for r in runs(api, ns, "replace")]
        ),
    )
    suspend(api, ns, "replace")
    wait_for(
        "its Event", lambda: f"deleted {first} (Replace)" in [m for _, _, m in events(api, ns, "replace")]
    )
    forbidden = runs(api, ns, "forbid")
    assert len(forbidden) == 1, "Forbid: one run while it is active"
    wait_for("RunAlreadyActive", lambda: "RunAlreadyActive" in reasons(api, ns, "forbid"))
    finish(api, ns, forbidden[0]["metadata"]["name"], ok=True)
    at_least(api, ns, "forbid", 2, operator)  # the most recent tick runs once the active one finished
    suspend(api, ns, "forbid")

    allowed = runs(api, ns, "allow")
    names = [r["metadata"]["name"] for r in allowed]
    for name, ok in zip(names, (True, True, False, False), strict=False):
        finish(api, ns, name, ok)
    kept = {names[1], names[3], *names[4:]}  # the newest succeeded and the newest failed, and the active ones
    wait_for(
        "the history limits to prune",
        lambda: {r["metadata"]["name"] for r in runs(api, ns, "allow")} == kept,
        timeout=20,
        log=operator.log_path,
    )
    st = status(api, ns, "allow")
    assert st["activeCount"] == len(names) - 4 and st["lastScheduleTime"] == max(
        r["metadata"]["annotations"][SCHEDULED_AT] for r in allowed
    )
    table = kube_api.kubectl("get", "tsc", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "CURRENT", "AGE"]


UP = {"promoted": True, "metric": "pinball", "source": "validation", "value": 0.031, "incumbent": None,
      "minImprovement": 0.01, "modelUri": "s3://checkpoints/runs/{ns}/promo/{run}/best.pt",
      "currentUri": "s3://checkpoints/runs/{ns}/promo/current.json"}  # fmt: skip


def test_promotion_moves_the_current_model_only_when_it_improves(
    api: Api, ns: str, operator: FastOperator
) -> None:
    create(
        api, ns, "promo", concurrencyPolicy="Forbid", promotion={"metric": "pinball", "minImprovement": 0.01}
    )
    r1 = at_least(api, ns, "promo", 1, operator)[0]
    name1, tick = r1["metadata"]["name"], r1["metadata"]["annotations"][SCHEDULED_AT]
    base = f"s3://checkpoints/runs/{ns}/promo"
    assert r1["spec"]["checkpoint"]["uri"] == f"{base}/{name1}"
    assert r1["spec"]["promotion"] == {
        "metric": "pinball",
        "source": "validation",
        "minImprovement": 0.01,
        "uri": base,
    }
    assert r1["spec"]["data"]["end"] == tick[:10] and r1["spec"]["training"]["epochs"] == 2
    up = {k: (v.format(ns=ns, run=name1) if isinstance(v, str) else v) for k, v in UP.items()}
    finish(api, ns, name1, ok=True, promotion=up)
    current = wait_for(
        "the current model", lambda: status(api, ns, "promo").get("currentModel"), log=operator.log_path
    )
    assert (current["run"], current["value"], current["uri"]) == (name1, 0.031, up["modelUri"])
    wait_for("Promoted", lambda: "Promoted" in reasons(api, ns, "promo"))

    r2 = wait_for(
        "the next run", lambda: [r for r in runs(api, ns, "promo") if phase(r) not in ("Succeeded", "Failed")]
    )[0]
    down = {
        **up,
        "promoted": False,
        "value": 0.0309,
        "incumbent": 0.031,
        "modelUri": None,
        "message": "not 1% lower",
    }
    finish(api, ns, r2["metadata"]["name"], ok=True, promotion=down)
    message = wait_for(
        "NotPromoted",
        lambda: next((m for _, r, m in events(api, ns, "promo") if r == "NotPromoted"), None),
    )
    suspend(api, ns, "promo")
    assert "0.0309 vs current 0.031" in message
    assert status(api, ns, "promo")["currentModel"]["run"] == name1  # unchanged
    assert reasons(api, ns, "promo").count("Promoted") == 1
    metrics = operator.metrics()
    assert (
        f'trainingschedule_current_model_metric{{metric="pinball",name="promo",namespace="{ns}"}} 0.031'
        in metrics
    )
    assert f'trainingschedule_runs_created_total{{name="promo",namespace="{ns}"}}' in metrics


def test_an_invalid_schedule_names_its_field(api: Api, ns: str, operator: FastOperator) -> None:
    create(api, ns, "bad", schedule="61 * * * *", timeZone="Mars/Olympus")

    def ready() -> dict[str, Any] | None:
        conds = {c["type"]: c for c in status(api, ns, "bad").get("conditions") or []}
        return conds.get("Ready") if conds.get("Ready", {}).get("reason") == "InvalidSpec" else None

    message = wait_for("Ready False/InvalidSpec", ready, log=operator.log_path)["message"]
    assert (
        message.startswith("spec.schedule: '61 * * * *' is not a cron schedule")
        and "spec.timeZone: " in message
    )
    assert (
        wait_for("the Warning", lambda: [e for e in events(api, ns, "bad") if e[1] == "InvalidSpec"])[0][2]
        == message
    )
    assert runs(api, ns, "bad") == []


def test_five_operator_restarts_never_run_a_tick_twice(api: Api, ns: str, operator: FastOperator) -> None:
    create(api, ns, "steady", schedule="*/2 * * * *")
    at_least(api, ns, "steady", 1, operator)
    for k in range(5):
        if k % 2 == 0 and operator.proc is not None:  # SIGKILL: nothing finishes; else kopf's own shutdown
            operator.proc.send_signal(signal.SIGKILL)
            operator.proc.wait(10)
        operator.stop()
        operator.start()
        before = len(runs(api, ns, "steady"))
        at_least(api, ns, "steady", before + 1, operator)  # this process created one
    suspend(api, ns, "steady")
    mine = runs(api, ns, "steady")
    ticks = [r["metadata"]["annotations"][SCHEDULED_AT] for r in mine]
    assert max(Counter(ticks).values()) == 1, ticks
    assert len(mine) >= 6
    for run, tick in zip(mine, ticks, strict=True):
        assert run["metadata"]["name"] == run_name(
            "steady", datetime.fromisoformat(tick.replace("Z", "+00:00"))
        )
        assert run["metadata"]["ownerReferences"][0]["kind"] == "TrainingSchedule"
    wait_for(
        "the status to record the last tick",
        lambda: status(api, ns, "steady")["lastScheduleTime"] == ticks[-1],
    )


def test_without_s3_a_schedule_and_a_sweep_each_share_one_claim(
    api: Api, bare: tuple[FastOperator, str]
) -> None:
    """Issue 12 on a fresh cluster: one claim per schedule and per sweep, owned by it; the runs name it (mounted,
    never a claim of their own); the schedule's claim goes with the schedule."""
    op, ns = bare
    op.start()
    create(api, ns, "bare", concurrencyPolicy="Forbid", promotion={"metric": "pinball"})
    template = copy.deepcopy(SAMPLE["spec"])
    template["training"]["epochs"] = 2
    sweep = {
        "template": template,
        "parallelism": 1,
        "parameters": [{"path": "model.hiddenSize", "values": [8]}],
    }
    kind = {"apiVersion": "cryptopredictor.dev/v1alpha1", "kind": "TrainingSweep"}
    api.create(SWEEPS.format(ns=ns), {**kind, "metadata": {"name": "tune"}, "spec": sweep})
    run = at_least(api, ns, "bare", 1, op)[0]
    name = run["metadata"]["name"]
    suspend(api, ns, "bare")
    assert run["spec"]["checkpoint"]["uri"] == f"pvc://bare-checkpoints/{name}"
    assert run["spec"]["promotion"]["uri"] == "pvc://bare-checkpoints"  # current.json outlives pruned runs
    job = wait_job(api, ns, f"{name}-train")
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": "bare-checkpoints"}}]
    trial = wait_job(api, ns, "tune-t000-train")["spec"]["template"]["spec"]["volumes"][0]
    assert trial["persistentVolumeClaim"]["claimName"] == "tune-checkpoints"
    tune = api.get(f"{RUNS.format(ns=ns)}/tune-t000")["spec"]["checkpoint"]["uri"]
    assert tune == "pvc://tune-checkpoints/tune-t000"
    claims = {c["metadata"]["name"]: c for c in api.get(CLAIMS.format(ns=ns))["items"]}
    assert set(claims) == {"bare-checkpoints", "tune-checkpoints"}  # none for a run: both Jobs exist
    schedule = api.get(f"{SCHEDULES.format(ns=ns)}/bare")["metadata"]
    (owner,) = claims["bare-checkpoints"]["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("TrainingSchedule", schedule["uid"])
    assert claims["tune-checkpoints"]["metadata"]["ownerReferences"][0]["kind"] == "TrainingSweep"
    wait_for("CheckpointVolume", lambda: "CheckpointVolume" in reasons(api, ns, "bare"))
    api.delete(f"{SCHEDULES.format(ns=ns)}/bare")
    wait_for(
        "the schedule's claim to go with it",
        lambda: api.maybe_get(f"{CLAIMS.format(ns=ns)}/bare-checkpoints") is None,
        log=op.log_path,
    )
