"""The toy kubelet's Indexed Jobs (the multi-worker gang of a TrainingRun; the walk-forward fan-out with
``parallelism < completions``, ``backoffLimitPerIndex``/``maxFailedIndexes`` and ``podFailurePolicy``), its DNS
and termination-message test shims: tiny Python processes stand in for the trainer workers, against the
emulator."""

from __future__ import annotations

import json
import pathlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kubeemu import hostnames, indexed
from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi, kube_api, kube_namespace  # noqa: F401
from tests.support.kubeemu.kubelet import Kubelet, default_env, failure_action
from tests.support.waiting import wait_for

INDEX = "batch.kubernetes.io/job-completion-index"


# -- the hostname rewrite and completedIndexes, as units --------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("w-0.svc:29500", "127.0.0.1:29500"),
        ("w-0.svc", "127.0.0.1"),
        ("--master-addr=w-1.svc", "--master-addr=127.0.0.1"),
        ("tcp://w-0.svc.ns:29500", "tcp://127.0.0.1:29500"),
        ("w-0.svc.ns.svc", "127.0.0.1"),
        ("w-0.svc.ns.svc.cluster.local", "127.0.0.1"),
        ("http://w-0.svc.ns.svc.cluster.local:80/x", "http://127.0.0.1:80/x"),
        ("W-0.SVC:1", "127.0.0.1:1"),  # DNS names are case-insensitive
        ("a=w-0.svc:1,b=w-1.svc:2", "a=127.0.0.1:1,b=127.0.0.1:2"),
        ("othersvc", "othersvc"),
        ("w-0.svcx", "w-0.svcx"),
        ("w-0.svcx:29500", "w-0.svcx:29500"),
        ("w-0.svc-x", "w-0.svc-x"),
        ("x.w-0.svc", "x.w-0.svc"),  # not a pod hostname of the Service: one label before it
        ("w-0.svc.other", "w-0.svc.other"),  # another namespace's Service of that name
        ("w-0.svc.ns.svc.cluster", "w-0.svc.ns.svc.cluster"),
        ("-w.svc", "-w.svc"),  # not a DNS label
        ("svc", "svc"),
        ("/data/w-0.svc.tmp", "/data/w-0.svc.tmp"),
    ],
)
def test_hostname_rewrite(text: str, expected: str) -> None:
    assert hostnames.rewrite(text, "svc", "ns") == expected


def test_hostname_rewrite_all_escapes_the_names() -> None:
    assert hostnames.rewrite_all(["a-0.my-svc:1", "a-0.myxsvc:1"], "my-svc", "n.s") == [
        "127.0.0.1:1",
        "a-0.myxsvc:1",
    ]
    assert hostnames.rewrite("a-0.s.nXs", "s", "n.s") == "a-0.s.nXs"


@pytest.mark.parametrize(
    ("indexes", "text"),
    [(set(), ""), ({0}, "0"), ({0, 1}, "0,1"), ({0, 1, 2}, "0-2"), ({1, 3, 4, 5, 7, 8}, "1,3-5,7,8")],
)
def test_completed_indexes_format(indexes: set[int], text: str) -> None:
    assert indexed.format_indexes(indexes) == text
    assert indexed.parse(text) == indexes


def test_indexes_to_start() -> None:
    spec = {"completionMode": "Indexed", "completions": 4, "parallelism": 2}
    assert indexed.to_start(spec, {}, set()) == [0, 1]
    assert indexed.to_start(spec, {"completedIndexes": "0"}, {1}) == [2]
    assert indexed.to_start(spec, {"completedIndexes": "0,1"}, {2, 3}) == []
    assert indexed.to_start({**spec, "parallelism": 4}, {"completedIndexes": "1"}, {2}) == [0, 3]


# -- Indexed Jobs run by the kubelet --------------------------------------------------------------------
def indexed_job(
    name: str,
    code: str,
    out: pathlib.Path,
    backoff: int = 0,
    args: list[str] | None = None,
    env: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A 2-worker gang as the operator creates it: Indexed, completions = parallelism, a headless subdomain."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"e2e-indexed": "yes"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": backoff,
            **spec,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "subdomain": f"{name}-workers",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "trainer",
                            "command": [sys.executable, "-c", code],
                            "args": args or [],
                            "env": [{"name": "OUT", "value": str(out)}, *(env or [])],
                        }
                    ],
                },
            },
        },
    }


def conditions(api: Api, path: str) -> dict[str, str]:
    status = api.get(path).get("status") or {}
    return {c["type"]: c.get("reason", "") for c in status.get("conditions", []) if c["status"] == "True"}


def pods(api: Api, ns: str, job: str) -> list[dict[str, Any]]:
    items = api.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=job-name={job}")["items"]
    return sorted(items, key=lambda pod: pod["metadata"]["creationTimestamp"])


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod["status"]["containerStatuses"][0]
    assert status["name"] == "trainer"
    return status["state"]["terminated"]  # type: ignore[no-any-return]


@pytest.fixture()
def env(kube_api: KubeApi, kube_namespace: str, tmp_path: pathlib.Path) -> Iterator[tuple[Api, str, Kubelet]]:  # noqa: F811
    if (
        kube_api.real
    ):  # this module tests the emulator's kubelet, as tests/support/test_kubeemu.py the emulator
        pytest.fail(
            "tests/support/test_kubelet_indexed.py tests the emulator's kubelet; unset KUBECONFIG to run it"
        )
    api = kube_api.api
    with Kubelet(
        api,
        tmp_path / "kubelet",
        extra_env=default_env(),
        label_selector="e2e-indexed=yes",
        namespace=kube_namespace,
    ) as kubelet:
        yield api, kube_namespace, kubelet
        assert not kubelet.errors


def both_workers(kubelet: Kubelet, job: str) -> dict[int, str]:
    running = kubelet.pods_by_index(job)
    return running if len(running) == 2 else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


RENDEZVOUS = """
import json, os, socket, sys, time
idx = int(os.environ["JOB_COMPLETION_INDEX"])
host, port = sys.argv[2].rsplit(":", 1)
got = ""
if idx == 0:  # the master: listens on what --master-addr names, as torch's TCPStore does
    server = socket.create_server((host, int(port)))
    server.settimeout(20)
    conn, _ = server.accept()
    got = conn.recv(64).decode()
else:
    deadline = time.time() + 20
    while True:
        try:
            sock = socket.create_connection((host, int(port)), timeout=2)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    sock.sendall(b"hello from 1")
seen = {"argv": sys.argv[1:], "got": got, **{k: os.environ[k] for k in ("JOB_COMPLETION_INDEX", "IDX", "ADDR", "NEG")}}
open(os.path.join(os.environ["OUT"], f"{idx}.json"), "w").write(json.dumps(seen))
"""


@pytest.mark.slow
def test_indexed_job_completes(env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path) -> None:
    api, ns, _ = env
    jobs, port = f"/apis/batch/v1/namespaces/{ns}/jobs", free_port()
    api.create(
        f"/api/v1/namespaces/{ns}/services",
        {"metadata": {"name": "idx-workers"}, "spec": {"clusterIP": "None", "selector": {"app": "idx"}}},
    )
    fqdn = f"idx-1.idx-workers.{ns}.svc.cluster.local:1"
    body = indexed_job(
        "idx",
        RENDEZVOUS,
        tmp_path,
        args=["--master-addr", f"idx-0.idx-workers:{port}", fqdn, "idx-0.idx-workersx:2"],
        env=[
            {"name": "ADDR", "value": "tcp://idx-0.idx-workers:29500"},
            {"name": "NEG", "value": "othersvc idx-0.idx-workersx"},
            {"name": "IDX", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}},
        ],
    )
    api.create(jobs, body)
    reason = wait_for("Job idx to complete", lambda: conditions(api, f"{jobs}/idx").get("Complete"), 30)
    assert reason == "Completed" and "Failed" not in conditions(api, f"{jobs}/idx")
    status = api.get(f"{jobs}/idx")["status"]
    assert status["succeeded"] == 2 and status["completedIndexes"] == "0,1" and status["active"] == 0
    assert status.get("failed", 0) == 0 and status["startTime"] and status["completionTime"]
    seen = {i: json.loads((tmp_path / f"{i}.json").read_text()) for i in (0, 1)}
    for i in (0, 1):
        assert seen[i]["JOB_COMPLETION_INDEX"] == seen[i]["IDX"] == str(i)
        assert seen[i]["argv"] == [
            "--master-addr",
            f"127.0.0.1:{port}",
            "127.0.0.1:1",
            "idx-0.idx-workersx:2",
        ]
        assert seen[i]["ADDR"] == "tcp://127.0.0.1:29500" and seen[i]["NEG"] == "othersvc idx-0.idx-workersx"
    assert seen[0]["got"] == "hello from 1"  # worker 1 reached worker 0 through the rewritten name
    by_index = {int(pod["metadata"]["annotations"][INDEX]): pod for pod in pods(api, ns, "idx")}
    assert sorted(by_index) == [0, 1] and len(pods(api, ns, "idx")) == 2
    for i, pod in by_index.items():
        assert re.fullmatch(rf"idx-{i}-[a-z0-9]{{5}}", pod["metadata"]["name"])
        assert pod["metadata"]["labels"][INDEX] == str(i) and pod["metadata"]["labels"]["app"] == "idx"
        assert pod["spec"]["hostname"] == f"idx-{i}" and pod["spec"]["subdomain"] == "idx-workers"
        injected = {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX}']"}}
        assert {"name": "JOB_COMPLETION_INDEX", "valueFrom": injected} in pod["spec"]["containers"][0]["env"]
        assert pod["metadata"]["ownerReferences"][0]["name"] == "idx"
        state = terminated(pod)
        assert (
            pod["status"]["phase"] == "Succeeded"
            and state["exitCode"] == 0
            and state["reason"] == "Completed"
        )
        assert state["startedAt"] and state["finishedAt"]
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
        assert ready == "False"


GANG = """
import os, pathlib, signal, sys, time
out, idx = pathlib.Path(os.environ["OUT"]), os.environ["JOB_COMPLETION_INDEX"]
if idx == "0":
    def term(*_):
        (out / "sigterm-0").write_text("got it")
        sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    (out / "ready-0").write_text("")
    time.sleep(60)
deadline = time.time() + 20
while not (out / "ready-0").exists() and time.time() < deadline:
    time.sleep(0.05)
sys.exit(3)
"""


@pytest.mark.slow
def test_indexed_job_fails_as_a_gang(env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.create(jobs, indexed_job("gang", GANG, tmp_path, backoff=0))
    reason = wait_for("Job gang to fail", lambda: conditions(api, f"{jobs}/gang").get("Failed"), 30)
    assert reason == "BackoffLimitExceeded" and "Complete" not in conditions(api, f"{jobs}/gang")
    status = api.get(f"{jobs}/gang")["status"]
    assert status["failed"] == 2 and status["active"] == 0 and not status.get("completedIndexes")
    assert (tmp_path / "sigterm-0").read_text() == "got it"  # worker 0 was sent SIGTERM, not SIGKILL
    assert kubelet.running_pods("gang") == [] and kubelet.pods_by_index("gang") == {}
    by_index = {int(pod["metadata"]["labels"][INDEX]): pod for pod in pods(api, ns, "gang")}
    assert sorted(by_index) == [0, 1] and len(pods(api, ns, "gang")) == 2  # nothing replaced
    assert by_index[1]["status"]["phase"] == "Failed" and terminated(by_index[1])["exitCode"] == 3
    assert by_index[0]["status"]["phase"] == "Failed" and terminated(by_index[0])["exitCode"] == 143
    assert terminated(by_index[0])["reason"] == "Error"


REPLACED = """
import os, pathlib, sys, time
out, idx = pathlib.Path(os.environ["OUT"]), os.environ["JOB_COMPLETION_INDEX"]
if idx == "1" and not (out / "tried-1").exists():
    (out / "tried-1").write_text("")
    sys.exit(3)
time.sleep(60)
"""


@pytest.mark.slow
def test_indexed_job_replaces_only_the_failed_index(
    env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path
) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.create(jobs, indexed_job("rep", REPLACED, tmp_path, backoff=1))

    def index_1_pods() -> list[dict[str, Any]]:
        found = [p for p in pods(api, ns, "rep") if p["metadata"]["labels"][INDEX] == "1"]
        found.sort(key=lambda p: p["status"].get("phase") != "Failed")  # the failed one first
        phases = [p["status"].get("phase") for p in found]
        return found if phases == ["Failed", "Running"] else []

    first_1, second_1 = wait_for("a second pod of index 1", index_1_pods, 30)
    running = wait_for("both workers", lambda: both_workers(kubelet, "rep"), 30)
    index_0 = [p for p in pods(api, ns, "rep") if p["metadata"]["labels"][INDEX] == "0"]
    assert len(index_0) == 1 and running == {
        0: index_0[0]["metadata"]["name"],
        1: second_1["metadata"]["name"],
    }
    assert index_0[0]["status"]["phase"] == "Running"  # index 0's pod untouched
    assert first_1["status"]["phase"] == "Failed" and terminated(first_1)["exitCode"] == 3
    assert second_1["metadata"]["annotations"][INDEX] == "1" and second_1["spec"]["hostname"] == "rep-1"
    assert re.fullmatch(r"rep-1-[a-z0-9]{5}", second_1["metadata"]["name"])
    status = api.get(f"{jobs}/rep")["status"]
    assert status["failed"] == 1 and status["active"] == 2 and conditions(api, f"{jobs}/rep") == {}

    kubelet.kill(running[1])  # worker 1 dies again: past backoffLimit 1, the gang fails
    reason = wait_for("Job rep to fail", lambda: conditions(api, f"{jobs}/rep").get("Failed"), 30)
    assert reason == "BackoffLimitExceeded" and kubelet.running_pods("rep") == []
    assert api.get(f"{jobs}/rep")["status"]["failed"] == 3  # 2 of worker 1 + worker 0, terminated
    final = {p["metadata"]["name"]: p for p in pods(api, ns, "rep")}
    assert len(final) == 3 and terminated(final[running[1]])["exitCode"] == 137
    assert terminated(final[running[0]])["exitCode"] == 143  # SIGTERM'd: 128 + 15


SLEEP = "import time; time.sleep(60)"


@pytest.mark.slow
def test_indexed_job_suspend_deadline_and_delete(
    env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path
) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.create(jobs, indexed_job("sus", SLEEP, tmp_path))
    api.create(jobs, indexed_job("late", SLEEP, tmp_path, activeDeadlineSeconds=1))

    def processes(job: str) -> list[subprocess.Popen[bytes]]:
        running = kubelet.pods_by_index(job)
        return [kubelet.runs[pod].process for pod in running.values()] if len(running) == 2 else []

    first = wait_for("both workers of sus", lambda: processes("sus"), 30)
    api.merge(f"{jobs}/sus", {"spec": {"suspend": True}})
    wait_for("Job sus to be suspended", lambda: conditions(api, f"{jobs}/sus").get("Suspended"), 30)
    assert kubelet.running_pods("sus") == [] and all(p.poll() is not None for p in first)
    assert pods(api, ns, "sus") == [] and api.get(f"{jobs}/sus")["status"]["active"] == 0
    api.merge(f"{jobs}/sus", {"spec": {"suspend": False}})
    second = wait_for("both workers of sus again", lambda: processes("sus"), 30)
    assert sorted(kubelet.pods_by_index("sus")) == [0, 1] and len(pods(api, ns, "sus")) == 2
    api.delete(f"{jobs}/sus", {"propagationPolicy": "Background"})
    wait_for("sus's processes to stop", lambda: all(p.poll() is not None for p in second), 30)
    assert kubelet.running_pods("sus") == []

    reason = wait_for("Job late to fail", lambda: conditions(api, f"{jobs}/late").get("Failed"), 30)
    assert reason == "DeadlineExceeded" and kubelet.running_pods("late") == []
    assert api.get(f"{jobs}/late")["status"]["failed"] == 2


# -- parallelism < completions, backoffLimitPerIndex, podFailurePolicy, termination messages ------------------
def test_indexes_to_start_skip_failed_indexes() -> None:
    spec = {"completionMode": "Indexed", "completions": 5, "parallelism": 2, "backoffLimitPerIndex": 1}
    assert indexed.backoff_limit_per_index(spec) == 1
    assert indexed.backoff_limit_per_index({**spec, "completionMode": "NonIndexed"}) is None
    assert indexed.to_start(spec, {"completedIndexes": "0", "failedIndexes": "1"}, set()) == [2, 3]
    assert indexed.to_start(spec, {"completedIndexes": "0", "failedIndexes": "1,2"}, {3}) == [4]
    assert indexed.all_finished(spec, {0, 3, 4}, {1, 2}) and not indexed.all_finished(spec, {0, 3}, {1, 2})


def test_pod_failure_policy_rules_in_order() -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailIndex",
                "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
            },
            {"action": "FailJob", "onExitCodes": {"containerName": "other", "operator": "In", "values": [3]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3, 143]}},
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1, 143]}},
        ]
    }
    assert failure_action(policy, "trainer", 2) == ("FailIndex", 1)
    assert failure_action(policy, "trainer", 3) == ("Ignore", 3)  # rule 2 names another container
    assert failure_action(policy, "other", 3) == ("FailJob", 2)
    assert failure_action(policy, "trainer", 143) == ("Ignore", 3)
    assert failure_action(policy, "trainer", 4) == ("FailJob", 4)
    assert failure_action(policy, "trainer", 1) == ("Count", None)
    assert failure_action(policy, "trainer", 0) == ("Count", None)  # exit code 0 never matches
    assert failure_action(None, "trainer", 2) == ("Count", None)


def per_index_job(name: str, code: str, out: pathlib.Path, **spec: Any) -> dict[str, Any]:
    """An Indexed Job as a walk-forward fan-out: ``backoffLimitPerIndex`` and no ``backoffLimit`` (which a
    real cluster would enforce too, were it set)."""
    body = indexed_job(name, code, out, **spec)
    del body["spec"]["backoffLimit"]
    return body


def by_index(api: Api, ns: str, job: str) -> dict[int, list[dict[str, Any]]]:
    """The pods of ``job`` by completion index, oldest first (creationTimestamp has whole seconds: an index's
    later pod is the one that counts more failures of the index before it)."""

    def age(pod: dict[str, Any]) -> tuple[str, int]:
        notes = pod["metadata"].get("annotations") or {}
        keys = (indexed.FAILURE_COUNT_KEY, indexed.IGNORED_FAILURE_COUNT_KEY)
        return pod["metadata"]["creationTimestamp"], sum(int(notes.get(key, 0)) for key in keys)

    found: dict[int, list[dict[str, Any]]] = {}
    for pod in sorted(pods(api, ns, job), key=age):
        found.setdefault(int(pod["metadata"]["labels"][INDEX]), []).append(pod)
    return found


PACED = """
import json, os, pathlib, time
out, idx = pathlib.Path(os.environ["OUT"]), int(os.environ["JOB_COMPLETION_INDEX"])
start = time.time()
time.sleep(1.5 if idx == 1 else 0.3)
(out / f"{idx}.json").write_text(json.dumps([start, time.time()]))
"""


@pytest.mark.slow
def test_parallelism_below_completions(env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.create(jobs, indexed_job("par", PACED, tmp_path, completions=4, parallelism=2))
    seen: list[int] = []

    def complete() -> str | None:
        seen.append(len(kubelet.pods_by_index("par")))
        return conditions(api, f"{jobs}/par").get("Complete")

    assert wait_for("Job par to complete", complete, 15) == "Completed"
    assert max(seen) == 2
    spans = {i: json.loads((tmp_path / f"{i}.json").read_text()) for i in range(4)}
    for i, (start, _) in spans.items():  # never more than 2 processes at once
        assert sum(1 for s, e in spans.values() if s <= start < e) <= 2, (i, spans)
    assert spans[2][0] >= spans[0][1] and spans[2][0] < spans[3][0]  # 0 ended: the lowest pending, 2, next
    assert spans[3][0] >= min(spans[1][1], spans[2][1])
    status = api.get(f"{jobs}/par")["status"]
    assert status["completedIndexes"] == "0-3" and status["succeeded"] == 4 and status["active"] == 0
    assert status.get("failed", 0) == 0 and "failedIndexes" not in status  # no backoffLimitPerIndex
    assert {i: len(p) for i, p in by_index(api, ns, "par").items()} == {0: 1, 1: 1, 2: 1, 3: 1}


FLAKY_2 = """
import os, sys, time
idx = os.environ["JOB_COMPLETION_INDEX"]
if idx == "2":
    sys.exit(3)
time.sleep(float(os.environ.get("HOLD", "0")))
"""


@pytest.mark.slow
def test_backoff_limit_per_index_fails_only_that_index(
    env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path
) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    body = per_index_job(
        "bpi", FLAKY_2, tmp_path, completions=4, parallelism=4, backoffLimitPerIndex=1, maxFailedIndexes=1
    )
    api.create(jobs, body)
    reason = wait_for("Job bpi to fail", lambda: conditions(api, f"{jobs}/bpi").get("Failed"), 15)
    assert reason == "FailedIndexes" and "Complete" not in conditions(api, f"{jobs}/bpi")
    status = api.get(f"{jobs}/bpi")["status"]
    assert status["failedIndexes"] == "2" and status["completedIndexes"] == "0,1,3"
    assert status["succeeded"] == 3 and status["failed"] == 2 and status["active"] == 0
    assert "completionTime" not in status and kubelet.running_pods("bpi") == []
    found = by_index(api, ns, "bpi")
    assert {i: len(p) for i, p in found.items()} == {0: 1, 1: 1, 2: 2, 3: 1}  # index 2 tried twice
    assert [terminated(p)["exitCode"] for p in found[2]] == [3, 3]
    counts = [p["metadata"]["annotations"][indexed.FAILURE_COUNT_KEY] for p in found[2]]
    assert counts == ["0", "1"]


@pytest.mark.slow
def test_max_failed_indexes_exceeded_terminates_the_rest(
    env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path
) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    body = per_index_job(
        "mfi",
        FLAKY_2,
        tmp_path,
        env=[{"name": "HOLD", "value": "60"}],
        completions=4,
        parallelism=4,
        backoffLimitPerIndex=1,
        maxFailedIndexes=0,
    )
    api.create(jobs, body)
    reason = wait_for("Job mfi to fail", lambda: conditions(api, f"{jobs}/mfi").get("Failed"), 15)
    assert reason == "MaxFailedIndexesExceeded" and kubelet.running_pods("mfi") == []
    status = api.get(f"{jobs}/mfi")["status"]
    assert status["failedIndexes"] == "2" and not status.get("completedIndexes")
    assert status["failed"] == 5 and status["active"] == 0  # index 2 twice + the 3 terminated
    found = by_index(api, ns, "mfi")
    assert {i: len(p) for i, p in found.items()} == {0: 1, 1: 1, 2: 2, 3: 1}
    for i in (0, 1, 3):  # SIGTERM'd by the controller: 128 + 15
        assert found[i][0]["status"]["phase"] == "Failed" and terminated(found[i][0])["exitCode"] == 143


EXITS = """
import os, pathlib, sys
out, idx = pathlib.Path(os.environ["OUT"]), os.environ["JOB_COMPLETION_INDEX"]
if idx == "1":
    sys.exit(2)
if idx == "2" and not (out / "tried-2").exists():
    (out / "tried-2").write_text("")
    sys.exit(7)
"""


@pytest.mark.slow
def test_pod_failure_policy_fail_index_ignore_and_fail_job(
    env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path
) -> None:
    api, ns, _ = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    rules = [
        {"action": "FailIndex", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [7]}},
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [4]}},
    ]
    fan = per_index_job(
        "fix",
        EXITS,
        tmp_path,
        completions=3,
        parallelism=3,
        backoffLimitPerIndex=2,
        podFailurePolicy={"rules": rules},
    )
    api.create(jobs, fan)
    fail_job = indexed_job(
        "fjob", "import sys; sys.exit(4)", tmp_path, backoff=6, podFailurePolicy={"rules": rules}
    )
    del fail_job["spec"]["completionMode"], fail_job["spec"]["completions"], fail_job["spec"]["parallelism"]
    api.create(jobs, fail_job)

    reason = wait_for("Job fix to fail", lambda: conditions(api, f"{jobs}/fix").get("Failed"), 15)
    assert reason == "FailedIndexes"
    status = api.get(f"{jobs}/fix")["status"]
    assert status["failedIndexes"] == "1" and status["completedIndexes"] == "0,2"
    assert status["failed"] == 1 and status["succeeded"] == 2  # the ignored exit 7 is not counted
    found = by_index(api, ns, "fix")
    assert {i: len(p) for i, p in found.items()} == {0: 1, 1: 1, 2: 2}  # index 1 not retried
    assert terminated(found[1][0])["exitCode"] == 2 and terminated(found[2][0])["exitCode"] == 7
    retry = found[2][1]["metadata"]["annotations"]
    assert retry[indexed.FAILURE_COUNT_KEY] == "0" and retry[indexed.IGNORED_FAILURE_COUNT_KEY] == "1"

    reason = wait_for("Job fjob to fail", lambda: conditions(api, f"{jobs}/fjob").get("Failed"), 15)
    assert reason == "PodFailurePolicy"
    [pod] = pods(api, ns, "fjob")  # failed at once, backoffLimit 6 notwithstanding
    message = next(
        c["message"] for c in api.get(f"{jobs}/fjob")["status"]["conditions"] if c["type"] == "Failed"
    )
    assert message == (
        f"Container trainer for pod {ns}/{pod['metadata']['name']} failed with exit code 4 matching FailJob rule"
        " at index 2"
    )
    assert api.get(f"{jobs}/fjob")["status"]["failed"] == 1


MESSAGE = """
import os, sys
idx = os.environ.get("JOB_COMPLETION_INDEX")
path = os.environ["TRAINER_TERMINATION_MESSAGE_PATH"]
print(path); print("line before"); print("last words")
if idx == "0":
    open(path, "w").write("fold 0: ok")
elif idx == "1":
    open(path, "w").write("x" * 5000)
    sys.exit(1)
else:
    sys.exit(1)  # nothing written: FallbackToLogsOnError takes the log's tail
"""


@pytest.mark.slow
def test_termination_message(env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    var = [{"name": "TRAINER_TERMINATION_MESSAGE_PATH", "value": "/dev/termination-log"}]
    api.create(jobs, per_index_job("msg", MESSAGE, tmp_path, env=var, backoffLimitPerIndex=0))
    fallback = indexed_job("fbk", MESSAGE, tmp_path, env=[{**var[0], "value": "/msg/here"}])
    del fallback["spec"]["completionMode"], fallback["spec"]["completions"], fallback["spec"]["parallelism"]
    container = fallback["spec"]["template"]["spec"]["containers"][0]
    container.update(terminationMessagePath="/msg/here", terminationMessagePolicy="FallbackToLogsOnError")
    api.create(jobs, fallback)

    assert wait_for("Job msg to fail", lambda: conditions(api, f"{jobs}/msg").get("Failed"), 15)
    found = by_index(api, ns, "msg")
    assert terminated(found[0][0])["message"] == "fold 0: ok" and terminated(found[0][0])["exitCode"] == 0
    assert terminated(found[1][0])["message"] == "x" * 4096  # the kubelet reads at most 4096 bytes
    name = found[0][0]["metadata"]["name"]
    assert (kubelet.workdir / f"{name}.termination-log").read_text() == "fold 0: ok"
    env_vars = {v["name"]: v.get("value") for v in found[0][0]["spec"]["containers"][0]["env"]}
    assert env_vars["TRAINER_TERMINATION_MESSAGE_PATH"] == "/dev/termination-log"  # the pod spec is untouched

    assert wait_for("Job fbk to fail", lambda: conditions(api, f"{jobs}/fbk").get("Failed"), 15)
    [pod] = pods(api, ns, "fbk")
    rewritten = kubelet.workdir / f"{pod['metadata']['name']}.termination-log"  # for /msg/here
    assert terminated(pod)["message"] == f"{rewritten}\nline before\nlast words\n"


HOLD_UNTIL_GO = """
import os, pathlib, time
out = pathlib.Path(os.environ["OUT"])
while not (out / "go").exists():
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_killed_index_is_retried_alone(env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path) -> None:
    api, ns, kubelet = env
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.create(
        jobs,
        per_index_job("kil", HOLD_UNTIL_GO, tmp_path, completions=3, parallelism=3, backoffLimitPerIndex=1),
    )

    def workers(other_than: str | None = None) -> dict[int, str] | None:
        running = kubelet.pods_by_index("kil")
        return running if len(running) == 3 and running[1] != other_than else None

    first = wait_for("3 workers", workers, 15)
    kubelet.kill(first[1])
    second = wait_for("a new pod of index 1", lambda: workers(other_than=first[1]), 15)
    assert second[0] == first[0] and second[2] == first[2]  # the other indexes untouched
    status = api.get(f"{jobs}/kil")["status"]
    assert status["failed"] == 1 and status["failedIndexes"] == "" and status["active"] == 3
    found = by_index(api, ns, "kil")
    assert terminated(found[1][0])["exitCode"] == 137
    assert found[1][1]["metadata"]["annotations"][indexed.FAILURE_COUNT_KEY] == "1"
    (tmp_path / "go").write_text("")
    assert wait_for("Job kil to complete", lambda: conditions(api, f"{jobs}/kil").get("Complete"), 15)
    status = api.get(f"{jobs}/kil")["status"]
    assert status["completedIndexes"] == "0-2" and status["succeeded"] == 3 and status["failed"] == 1
    assert status["failedIndexes"] == ""
