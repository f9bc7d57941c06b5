"""Golden tests of what the operator creates (Job, ServiceAccount, Role, RoleBinding) plus the rules behind them.

Regenerate the golden files only on purpose: ``UPDATE_GOLDEN=1 pytest tests/operator/test_builders.py``.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
from typing import Any

import pytest
import yaml
from trainop import builders
from trainop.runs import parse_run
from trainop.settings import Settings

from trainer.api import exitcodes
from trainer.api.manifest import SpecError
from trainer.api.spec import TrainingRunSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())


def run_of(spec_update: dict[str, Any] | None = None, name: str = "sol-tft") -> dict[str, Any]:
    run = copy.deepcopy(SAMPLE)
    run["metadata"] = {
        "name": name,
        "namespace": "ml",
        "uid": "0b6b7c1e-1111-2222-3333-444455556666",
        "generation": 1,
    }
    run["spec"].update(spec_update or {})
    return dict(run)


SETTINGS = Settings(
    checkpoint_prefix="s3://checkpoints/runs",
    s3_endpoint="http://minio.minio:9000",
    s3_secret_name="s3-credentials",
    status_throttle_seconds=10,
)

FULL = {
    "image": "registry.example/trainer:1.2.3",
    "checkpoint": {"uri": "s3://team-bucket/sol", "s3Endpoint": "https://s3.example:9443"},
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "priorityClassName": "training-high",
    "serviceAccountName": "team-trainer",
    "s3CredentialsSecret": {"name": "team-s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"},
    "backoffLimit": 5,
    "activeDeadlineSeconds": 86400,
    "ttlSecondsAfterFinished": 3600,
    "suspend": True,
    "queueName": "gpu-queue",
}


def job_of(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The Job as the operator builds it: the body parsed once, its spec resolved, then built."""
    return builders.build_job(parse_run(body), builders.validate_run(body, settings), settings)


def without_manifest(job: dict[str, Any]) -> dict[str, Any]:
    """The Job minus the embedded spec JSON: that is the model's output (every new spec default would change
    it) and is checked by round trip in test_job_env_and_manifest instead."""
    job = copy.deepcopy(job)
    for env in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if env["name"] == "TRAININGRUN_MANIFEST":
            env["value"] = "<the resolved TrainingRun as JSON>"
    return job


def check_golden(name: str, obj: Any) -> None:
    text = yaml.safe_dump(obj, sort_keys=True, width=100)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once and review the file"
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 after review)"


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_job_golden_sample() -> None:
    check_golden("job-sample.yaml", without_manifest(job_of(run_of(), SETTINGS)))


def test_job_golden_all_cluster_fields() -> None:
    check_golden("job-full.yaml", without_manifest(job_of(run_of(FULL), SETTINGS)))


def test_rbac_golden() -> None:
    run = parse_run(run_of())
    check_golden("serviceaccount.yaml", builders.build_service_account(run))
    check_golden("role.yaml", builders.build_role(run))
    check_golden("rolebinding.yaml", builders.build_role_binding(run))


def test_role_is_least_privilege() -> None:
    role = builders.build_role(parse_run(run_of()))
    assert role["rules"] == [
        {
            "apiGroups": ["cryptopredictor.dev"],
            "resources": ["trainingruns/status"],
            "resourceNames": ["sol-tft"],
            "verbs": ["get", "patch"],
        }
    ]
    binding = builders.build_role_binding(parse_run(run_of()))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sol-tft-trainer", "namespace": "ml"}]


def test_children_are_owned_and_labelled() -> None:
    run = run_of()
    parsed = parse_run(run)
    for child in (
        job_of(run, SETTINGS),
        builders.build_service_account(parsed),
        builders.build_role(parsed),
        builders.build_role_binding(parsed),
    ):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "cryptopredictor.dev/v1alpha1",
            "kind": "TrainingRun",
            "name": "sol-tft",
            "uid": run["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "ml"
        assert child["metadata"]["labels"]["cryptopredictor.dev/run"] == "sol-tft"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "trainop"


def test_job_shape() -> None:
    job = job_of(run_of(), SETTINGS)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert job["metadata"]["name"] == "sol-tft-train"
    assert container["command"] == [
        "python",
        "-m",
        "trainer",
        "run",
        "--manifest-env",
        "TRAININGRUN_MANIFEST",
    ]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "sol-tft-trainer"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "4Gi"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["backoffLimit"] == 3 and spec["suspend"] is False
    assert pod["terminationGracePeriodSeconds"] == 30  # gracePeriodSeconds 25 + 5
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"]["values"] == [exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS] == [2, 4]
    assert rules[2]["action"] == "Ignore" and rules[2]["onExitCodes"]["values"] == [143]
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_job_env_and_manifest() -> None:
    env = env_of(job_of(run_of(), SETTINGS))
    assert env["TRAININGRUN_NAME"] == "sol-tft" and env["TRAININGRUN_NAMESPACE"] == "ml"
    assert env["TRAININGRUN_UID"] == "0b6b7c1e-1111-2222-3333-444455556666"
    assert env["TRAINER_STATUS_THROTTLE_SECONDS"] == "10"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    doc = json.loads(env["TRAININGRUN_MANIFEST"])
    assert doc["apiVersion"] == "cryptopredictor.dev/v1alpha1" and doc["kind"] == "TrainingRun"
    assert doc["metadata"] == {"name": "sol-tft", "namespace": "ml"}
    assert doc["spec"]["checkpoint"]["uri"] == "s3://checkpoints/runs/ml/sol-tft"
    assert doc["spec"]["symbols"] == ["SOL", "BTC", "ETH"]
    assert TrainingRunSpec.model_validate(doc["spec"]) == builders.validate_run(run_of(), SETTINGS)


def test_job_cluster_fields() -> None:
    job = job_of(run_of(FULL), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    env = env_of(job)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert job["spec"]["suspend"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 86400 and job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["spec"]["backoffLimit"] == 5
    assert pod["serviceAccountName"] == "team-trainer"
    assert pod["priorityClassName"] == "training-high"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["containers"][0]["image"] == "registry.example/trainer:1.2.3"
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example:9443"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "team-s3", "key": "id"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "team-s3", "key": "secret"}}
    assert json.loads(env["TRAININGRUN_MANIFEST"])["spec"]["checkpoint"]["uri"] == "s3://team-bucket/sol"
    assert not builders.needs_own_account(builders.validate_run(run_of(FULL), SETTINGS))


def test_no_s3_env_without_endpoint_or_secret() -> None:
    env = env_of(job_of(run_of(), Settings(checkpoint_prefix="s3://bkt/p")))
    assert not {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert (
        job_of(run_of(), Settings(checkpoint_prefix="s3://bkt/p"))["spec"]["template"]["spec"]["containers"][
            0
        ]["image"]
        == "ghcr.io/crypto-price-predictor/trainer:0.1.0"
    )


def test_builders_are_deterministic() -> None:
    assert job_of(run_of(), SETTINGS) == job_of(run_of(), SETTINGS)


def test_without_a_prefix_the_run_checkpoints_to_its_own_claim() -> None:
    """No longer 'spec.checkpoint.uri: required in a cluster' (trainop.checkpoint_store)."""
    spec = builders.validate_run(run_of(), Settings())
    assert spec.checkpoint.uri == "pvc://sol-tft-checkpoints/sol-tft"


def test_invalid_spec_names_the_field() -> None:
    with pytest.raises(SpecError) as err:
        job_of(run_of({"training": {"epochs": 0}}), SETTINGS)
    assert err.value.problems[0].startswith("spec.training.epochs:")
    assert "spec.training.epochs" in builders.describe_spec_error(err.value)


def test_long_names_are_bounded_and_stable() -> None:
    name = "a" * 63
    assert len(builders.job_name(name)) <= 63
    assert builders.job_name(name) == builders.job_name(name)
    assert builders.job_name(name) != builders.job_name("a" * 62 + "b")
    assert builders.job_name(name).endswith("-train")
    with pytest.raises(SpecError):
        job_of(run_of(name="x" * 64), SETTINGS)


def test_parse_run_keeps_the_error_instead_of_raising() -> None:
    run = parse_run(run_of())
    assert run.spec is not None and run.error is None and run.symbol == "SOL"
    assert run.key == ("ml", "sol-tft") and run.uid == "0b6b7c1e-1111-2222-3333-444455556666"
    bad = parse_run(run_of({"symbols": ["SOL", "SOL"]}))
    assert bad.spec is None and bad.symbol == "SOL"  # the label keeps the symbol as written
    assert parse_run(run_of({"symbol": "not a symbol!"})).symbol == ""
    assert bad.error is not None and bad.error.problems[0].startswith("spec.symbols:")
    not_an_object = parse_run({**run_of(), "spec": "hello"})
    assert not_an_object.error is not None and not_an_object.error.problems[0].startswith("spec:")
    with pytest.raises(SpecError):
        not_an_object.valid()
