"""Golden tests of multi-process runs: one pod with several processes (torchrun standalone), and a gang of
worker pods (an Indexed Job and its headless Service), plus the rules behind their names and validation.

Regenerate the golden files only on purpose: ``UPDATE_GOLDEN=1 pytest tests/operator/test_builders_workers.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from trainop import builders, names
from trainop.gang import ATTEMPT_LABEL
from trainop.runs import parse_run
from trainop.settings import Settings

from tests.operator.test_builders import (
    SETTINGS,
    check_golden,
    env_of,
    job_of,
    run_of,
    without_manifest,
)
from trainer.api.cluster import cluster_problems, procs_per_worker
from trainer.api.manifest import SpecError
from trainer.api.spec import TrainingRunSpec

TWO_WORKERS = {"workers": 2}
TWO_GPUS = {"limits": {"nvidia.com/gpu": 2, "memory": "8Gi"}, "requests": {"cpu": "4", "memory": "4Gi"}}
TRAINER_ARGS = ["-m", "trainer", "run", "--manifest-env", "TRAININGRUN_MANIFEST"]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def command_of(job: dict[str, Any]) -> list[str]:
    return list(job["spec"]["template"]["spec"]["containers"][0]["command"])


def test_two_workers_golden() -> None:
    job = job_of(run_of(TWO_WORKERS), SETTINGS)
    check_golden("job-2-workers.yaml", without_manifest(job))
    check_golden("service-2-workers.yaml", builders.build_service(parse_run(run_of(TWO_WORKERS)), SETTINGS))


def test_one_worker_two_processes_golden() -> None:
    job = job_of(run_of({"procsPerWorker": 2, "resources": TWO_GPUS}), SETTINGS)
    check_golden("job-1-worker-2-procs.yaml", without_manifest(job))


def test_one_process_is_todays_job() -> None:
    """workers 1 and one process (the default, and explicitly): the single-worker Job, byte for byte."""
    today = job_of(run_of(), SETTINGS)
    assert without_manifest(
        job_of(run_of({"workers": 1, "procsPerWorker": 1}), SETTINGS)
    ) == without_manifest(today)
    assert command_of(today) == builders.COMMAND
    assert "completionMode" not in today["spec"] and ATTEMPT_LABEL not in today["metadata"]["labels"]


# (case, spec update, the command after `python -m trainer.launch`)
COMMANDS = [
    ("gpus-set-the-processes", {"resources": {"limits": {"nvidia.com/gpu": 4}}}, ["--standalone", "--nproc-per-node", "4"]),
    ("procs-per-worker-wins", {"procsPerWorker": 2, "resources": {"limits": {"nvidia.com/gpu": 2}}}, ["--standalone", "--nproc-per-node", "2"]),
    (
        "cpu-only-pod-one-process-per-worker",
        {"workers": 3, "resources": {"limits": {"cpu": "4"}}},
        ["--nnodes", "3", "--nproc-per-node", "1", "--master-addr", "sol-tft-train-0.sol-tft-workers",
         "--master-port", "29500", "--rdzv-conf", "timeout=300", "--max-restarts", "0"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("update", "launch"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_commands(update: dict[str, Any], launch: list[str]) -> None:
    assert command_of(job_of(run_of(update), SETTINGS)) == [
        "python",
        "-m",
        "trainer.launch",
        *launch,
        *TRAINER_ARGS,
    ]


def test_rendezvous_settings_reach_the_command_and_the_pod() -> None:
    settings = SETTINGS.model_copy(update={"rendezvous_port": 23456, "rendezvous_timeout_seconds": 42})
    job = job_of(run_of(TWO_WORKERS), settings)
    command = command_of(job)
    assert command[command.index("--master-port") + 1] == "23456"
    assert command[command.index("--rdzv-conf") + 1] == "timeout=42"
    assert env_of(job)["TRAINER_RENDEZVOUS_TIMEOUT_SECONDS"] == "42"
    assert "TRAINER_RENDEZVOUS_TIMEOUT_SECONDS" not in env_of(job_of(run_of(), settings))
    port = builders.build_service(parse_run(run_of(TWO_WORKERS)), settings)["spec"]["ports"][0]
    assert port["port"] == port["targetPort"] == 23456


def test_torchrun_gives_its_workers_the_checkpoint_grace_period() -> None:
    for update in (TWO_WORKERS, {"procsPerWorker": 2, "resources": TWO_GPUS}):
        job = job_of(run_of({**update, "checkpoint": {"gracePeriodSeconds": 120}}), SETTINGS)
        assert env_of(job)["TRAINER_SHUTDOWN_TIMEOUT_SECONDS"] == "120"
        assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 125
    assert "TRAINER_SHUTDOWN_TIMEOUT_SECONDS" not in env_of(job_of(run_of(), SETTINGS))


def test_gang_job_shape() -> None:
    job = job_of(
        run_of({**TWO_WORKERS, "backoffLimit": 5, "queueName": "gpu-queue", "suspend": True}), SETTINGS
    )
    spec, labels = job["spec"], job["metadata"]["labels"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimit"] == 0, "the operator counts spec.backoffLimit over gang restarts"
    assert spec["suspend"] is True and labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert labels["cryptopredictor.dev/attempt"] == "0"
    assert spec["template"]["metadata"]["labels"]["cryptopredictor.dev/attempt"] == "0"
    assert spec["template"]["spec"]["subdomain"] == "sol-tft-workers"
    rules = spec["podFailurePolicy"]["rules"]
    assert [r["action"] for r in rules] == ["FailJob", "FailJob"]
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[1]["onExitCodes"] == {"containerName": "trainer", "operator": "NotIn", "values": [0]}
    again = builders.build_job(
        parse_run(run_of(TWO_WORKERS)), builders.validate_run(run_of(TWO_WORKERS), SETTINGS), SETTINGS, 3
    )
    assert again["metadata"]["name"] == job["metadata"]["name"], (
        "every attempt's Job has the run's one Job name"
    )
    assert again["metadata"]["labels"]["cryptopredictor.dev/attempt"] == "3"


def test_service_is_headless_owned_and_selects_this_runs_workers() -> None:
    run = parse_run(run_of(TWO_WORKERS))
    service = builders.build_service(run, SETTINGS)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {
        "cryptopredictor.dev/run": "sol-tft",
        "batch.kubernetes.io/job-name": "sol-tft-train",
    }
    (owner,) = service["metadata"]["ownerReferences"]
    assert owner["uid"] == run.uid and owner["controller"] is True


@pytest.mark.parametrize("run_name", ["a" * 63, "a" * 54, "a" * 55, "7" + "b" * 62, "9-lives", "x"])
def test_names_fit_hostnames_and_dns_labels(run_name: str) -> None:
    job, service = names.job_name(run_name), names.service_name(run_name)
    assert len(f"{job}-63") <= 63 and DNS_LABEL.match(f"{job}-63"), "an Indexed Job's last pod hostname"
    assert len(service) <= 63 and DNS_LABEL.match(service) and service[0].isalpha(), "a DNS-1035 label"
    assert (job, service) == (names.job_name(run_name), names.service_name(run_name)), "stable"


def test_short_names_are_unchanged() -> None:
    assert names.job_name("a" * 54) == "a" * 54 + "-train"  # the longest name kept as is
    assert names.job_name("sol-tft") == "sol-tft-train" and names.service_name("sol-tft") == "sol-tft-workers"
    assert names.service_name("9-lives") == "tr-9-lives-workers"


def test_procs_per_worker_defaults_to_the_gpus() -> None:
    def spec(**fields: Any) -> TrainingRunSpec:
        return TrainingRunSpec.model_validate({"symbol": "SOL", **fields})

    assert procs_per_worker(spec()) == 1  # the default limit: one GPU
    assert procs_per_worker(spec(resources={"limits": {"nvidia.com/gpu": "4"}})) == 4
    assert procs_per_worker(spec(resources={"limits": {"cpu": "2"}})) == 1
    assert procs_per_worker(spec(procsPerWorker=3, resources={"limits": {"nvidia.com/gpu": 8}})) == 3


# (case, spec update, the field the first problem names, a phrase in it)
BAD = [
    ("batch-smaller-than-world", {"workers": 4, "procsPerWorker": 2, "resources": {"limits": {"nvidia.com/gpu": 2}}, "training": {"batchSize": 7}}, "spec.training.batchSize", "at least 8"),
    ("batch-smaller-than-gpus", {"resources": {"limits": {"nvidia.com/gpu": 8}}, "training": {"batchSize": 4}}, "spec.training.batchSize", "8 training processes"),
    ("more-procs-than-gpus", {"procsPerWorker": 4, "resources": {"limits": {"nvidia.com/gpu": 2}}}, "spec.procsPerWorker", "a GPU of its own"),
    ("too-many-workers", {"workers": 65}, "spec.workers", "64"),
    ("no-workers", {"workers": 0}, "spec.workers", "1"),
    ("too-many-procs", {"procsPerWorker": 17}, "spec.procsPerWorker", "16"),
]  # fmt: skip


@pytest.mark.parametrize(("update", "field", "phrase"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_worker_specs_name_the_field(update: dict[str, Any], field: str, phrase: str) -> None:
    with pytest.raises(SpecError) as err:
        builders.validate_run(run_of(update), SETTINGS)
    problem = err.value.problems[0]
    assert problem.startswith(f"{field}:") and phrase in problem, problem


def test_processes_on_cpu_need_no_gpus_and_a_big_enough_batch_passes() -> None:
    cpu = TrainingRunSpec.model_validate(
        {"symbol": "SOL", "procsPerWorker": 4, "training": {"device": "cpu", "batchSize": 4}}
    )
    assert cluster_problems(cpu) == []
    exact = TrainingRunSpec.model_validate({"symbol": "SOL", "workers": 64, "training": {"batchSize": 64}})
    assert cluster_problems(exact) == []
    assert (
        builders.validate_run(run_of({"workers": 2}), Settings(checkpoint_prefix="s3://bkt/p")).workers == 2
    )
