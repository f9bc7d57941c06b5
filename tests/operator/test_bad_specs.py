# ruff: noqa: F811  (the api/ns/crd/operator fixtures are imported from the integration tests and used as parameters)
"""TrainingRuns that cannot work never get a Job: each ends Failed/InvalidSpec naming the field, once, with no
retry loop -- also where the CRD's schema is not enforced (an old or hand-edited CRD lets anything through).

The pure part checks the model and the operator's cluster rules (``builders.validate_run``) and that the CRD
refuses what a pattern can say; the e2e part runs the operator against the API emulator with a schema-less CRD.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError
from trainop import builders, prometheus, stall
from trainop import crd as crd_module
from trainop.runs import parse_run
from trainop.settings import Settings
from trainop.status import compose

from tests.operator.test_crd import to_json_schema, version_schema
from tests.operator.test_integration import (  # noqa: F401 (fixtures)
    RUNS,
    SAMPLE,
    Operator,
    api,
    condition,
    crd,
    events,
    jobs,
    ns,
    operator,
    wait_phase,
)
from tests.support.kubeemu.client import Api, ApiResponseError
from tests.support.kubeemu.fixtures import KubeApi
from trainer.api.cluster import cluster_problems
from trainer.api.manifest import SpecError, parse_spec

SETTINGS = Settings(checkpoint_prefix="s3://checkpoints/runs", s3_endpoint="http://minio.minio:9000")
DIGEST = "sha256:" + "a" * 64


def body(spec_update: dict[str, Any] | None = None, *, spec: Any = ..., name: str = "bad") -> dict[str, Any]:
    run = copy.deepcopy(SAMPLE)
    run["metadata"] = {"name": name, "namespace": "ml", "uid": "u-1", "generation": 1}
    run["spec"].update(spec_update or {})
    if spec is not ...:
        run["spec"] = spec
    return dict(run)


def first_problem(b: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        builders.validate_run(b, SETTINGS)
    return err.value.problems[0]


# (case id, spec update, the field the message starts with, a phrase it contains)
BAD_RUNS = [
    (
        "checkpoint-file-uri",
        {"checkpoint": {"uri": "file:///etc"}},
        "spec.checkpoint.uri",
        "s3://bucket/prefix",
    ),
    (
        "checkpoint-local-path",
        {"checkpoint": {"uri": "/data/ckpt"}},
        "spec.checkpoint.uri",
        "lost with the pod",
    ),
    ("checkpoint-relative-path", {"checkpoint": {"uri": "runs/x"}}, "spec.checkpoint.uri", "pod's own"),
    (
        "checkpoint-pvc-bad-claim",
        {"checkpoint": {"uri": "pvc://Claim/x"}},
        "spec.checkpoint.uri",
        "DNS label",
    ),
    (
        "checkpoint-pvc-dot-dot",
        {"checkpoint": {"uri": "pvc://c/../x"}},
        "spec.checkpoint.uri",
        "inside the claim",
    ),
    ("image-with-whitespace", {"image": "registry.example/trainer: 1.2"}, "spec.image", "no spaces"),
    ("image-upper-case-repository", {"image": "Trainer:1.2"}, "spec.image", "lower case"),
    ("image-empty-tag", {"image": "trainer:"}, "spec.image", "image reference"),
    ("queue-name-with-space", {"queueName": "gpu queue"}, "spec.queueName", "queue-name label"),
    ("queue-name-upper-case", {"queueName": "GPU"}, "spec.queueName", "lower-case"),
    ("queue-name-too-long", {"queueName": "q" * 64}, "spec.queueName", "at most 63"),
    ("node-selector-bad-key", {"nodeSelector": {"gpu type": "h100"}}, "spec.nodeSelector", "not a label key"),
    ("node-selector-bad-prefix", {"nodeSelector": {"Nvidia.com/gpu": "x"}}, "spec.nodeSelector", "prefix"),
    ("node-selector-long-name", {"nodeSelector": {"n" * 64: "x"}}, "spec.nodeSelector", "1-63"),
    ("node-selector-bad-value", {"nodeSelector": {"gpu": "h100 80gb"}}, "spec.nodeSelector", "label value"),
    ("stall-timeout-forever", {"stallTimeout": "forever"}, "spec.stallTimeout", "pattern"),
]


@pytest.mark.parametrize(
    ("update", "field", "phrase"), [c[1:] for c in BAD_RUNS], ids=[c[0] for c in BAD_RUNS]
)
def test_bad_run_is_refused_naming_the_field(update: dict[str, Any], field: str, phrase: str) -> None:
    problem = first_problem(body(update))
    assert problem.startswith(f"{field}:") and phrase in problem, problem
    assert builders.describe_spec_error(SpecError("x", [problem])).startswith(field)


@pytest.mark.parametrize(
    ("spec", "field"),
    [("hello", "spec: must be an object"), (["a"], "spec: must be an object"), (None, "spec.symbol:")],
    ids=["spec-is-a-string", "spec-is-a-list", "spec-missing"],
)
def test_spec_that_is_not_an_object_is_a_spec_error(spec: Any, field: str) -> None:
    run = parse_run(body(spec=spec))
    assert run.spec is None and run.error is not None and run.error.problems[0].startswith(field)
    assert first_problem(body(spec=spec)).startswith(field)
    # Nothing downstream of the parse raises on such a body: metrics, status composition, the stall sweep.
    raw = body(spec=spec)
    prometheus.observe_run(raw, run.symbol)
    prometheus.forget_run("ml", "bad")
    compose(raw, [("Failed", "True", "InvalidSpec", "spec: must be an object")], datetime.now(timezone.utc))
    assert stall.due([run], "15m", datetime.now(timezone.utc)) == []


def test_good_cluster_fields_are_accepted() -> None:
    for image in (
        "trainer",
        "registry.example/trainer:1.2.3",
        "localhost:5000/team/trainer_gpu:v1.2.3-rc.1",
        f"ghcr.io/crypto-price-predictor/trainer@{DIGEST}",
        f"registry.example:8443/a/b/c:tag@{DIGEST}",
    ):
        assert builders.validate_run(body({"image": image}), SETTINGS).image == image
    spec = builders.validate_run(
        body(
            {
                "queueName": "gpu-queue.team-a",
                "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "zone": "", "a_b.c": "v"},
                "checkpoint": {"uri": "s3://team-bucket/sol"},
            }
        ),
        SETTINGS,
    )
    assert spec.queue_name == "gpu-queue.team-a" and spec.checkpoint.uri == "s3://team-bucket/sol"
    assert cluster_problems(spec) == []


def test_local_checkpoints_stay_allowed_outside_a_cluster() -> None:
    """The trainer's own model accepts a directory (a laptop run); only a cluster run must use S3."""
    spec = parse_spec({"symbol": "SOL", "checkpoint": {"uri": "/tmp/ckpt"}})
    assert spec.checkpoint.uri == "/tmp/ckpt"
    assert cluster_problems(spec)[0].startswith("spec.checkpoint.uri:")


def test_operator_refuses_a_local_checkpoint_prefix_and_a_bad_endpoint() -> None:
    with pytest.raises(ValidationError, match="checkpoint_prefix"):
        Settings(checkpoint_prefix="/data/checkpoints")
    with pytest.raises(ValidationError, match="checkpoint_prefix"):
        Settings(checkpoint_prefix="file:///data")
    with pytest.raises(ValidationError, match="s3_endpoint"):
        Settings(s3_endpoint="minio.minio:9000")
    assert Settings(s3_endpoint="https://s3.example:9443").s3_endpoint == "https://s3.example:9443"


SCHEMA_CASES = [
    (("checkpoint", "uri"), "file:///etc"),
    (("checkpoint", "uri"), "/data/ckpt"),
    (("image",), "registry.example/trainer: 1.2"),
    (("queueName",), "gpu queue"),
    (("queueName",), "q" * 64),
    (("nodeSelector",), {"gpu": "h100 80gb"}),
    (("nodeSelector",), {"gpu": "v" * 64}),
]


@pytest.mark.parametrize(
    ("path", "value"), SCHEMA_CASES, ids=[f"{'.'.join(p)}={v!r}"[:60] for p, v in SCHEMA_CASES]
)
def test_the_crd_refuses_what_a_pattern_can_say(path: tuple[str, ...], value: Any) -> None:
    """Refused at ``kubectl apply`` already. Label keys cannot be a structural-schema pattern (no
    propertyNames): the model and the operator refuse them (test_bad_run_is_refused_naming_the_field)."""
    doc = copy.deepcopy(SAMPLE)
    node = doc["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, to_json_schema(version_schema()))
    with pytest.raises(SpecError):
        builders.validate_run(body(doc["spec"]), SETTINGS)


def test_the_crd_admits_the_good_cluster_fields() -> None:
    doc = copy.deepcopy(SAMPLE)
    doc["spec"].update(
        image=f"localhost:5000/team/trainer:v1@{DIGEST}",
        queueName="gpu-queue",
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        checkpoint={**doc["spec"]["checkpoint"], "uri": "s3://team-bucket/sol"},
    )
    jsonschema.validate(doc, to_json_schema(version_schema()))


# --- e2e: the operator against the emulator, with a CRD that enforces nothing ------------------------------------


@pytest.fixture()
def lax_crd(kube_api: KubeApi, crd: None) -> Iterator[None]:
    """The TrainingRun CRD with a schema that admits anything (as an old or hand-edited CRD would); the real
    one is applied again afterwards."""
    lax = crd_module.build_crd()
    lax["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    kube_api.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(lax))
    yield
    kube_api.kubectl("apply", "-f", "-", stdin=crd_module.render())


def create_raw(api: Api, ns: str, name: str, spec: Any) -> None:
    doc = {
        "apiVersion": SAMPLE["apiVersion"],
        "kind": SAMPLE["kind"],
        "metadata": {"name": name},
        "spec": spec,
    }
    api.create(RUNS.format(ns=ns), doc)


def merged(update: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec.update(update)
    return dict(spec)


E2E_CASES = [
    ("hello", "hello", "spec:"),
    ("forever", merged({"stallTimeout": "forever"}), "spec.stallTimeout"),
    ("etc", merged({"checkpoint": {"uri": "file:///etc"}}), "spec.checkpoint.uri"),
    ("spaced", merged({"image": "my image"}), "spec.image"),
    ("queue", merged({"queueName": "Bad Queue"}), "spec.queueName"),
    ("selector", merged({"nodeSelector": {"bad key!": "x"}}), "spec.nodeSelector"),
]


@pytest.mark.e2e
def test_unenforced_crd_every_bad_run_ends_in_invalid_spec_once(
    api: Api,
    ns: str,
    lax_crd: None,
    operator: Operator,
) -> None:
    """``spec: "hello"``, ``stallTimeout: forever``, a pod-local checkpoint, an image with a space, a bad queue
    label, a bad nodeSelector key: Failed/InvalidSpec naming the field, one Warning Event each, no Job, and
    no handler or sweep error in the operator's log however long it runs (the sweep ticks every 0.5 s)."""
    for name, spec, _ in E2E_CASES:
        create_raw(api, ns, name, spec)
    for name, _, field in E2E_CASES:
        status = wait_phase(api, ns, name, "Failed", "InvalidSpec")
        assert condition(status, "Failed")["message"].startswith(field), status
    time.sleep(3)  # several sweep ticks and kopf's retry delays: still one Event each, no Job
    for name, _, field in E2E_CASES:
        invalid = [e for e in events(api, ns, name) if e[1] == "InvalidSpec"]
        assert len(invalid) == 1 and invalid[0][0] == "Warning" and invalid[0][2].startswith(field), invalid
    assert jobs(api, ns) == []
    lines = [json.loads(line) for line in operator.log().splitlines() if line.startswith("{")]
    noisy = [
        line["message"]
        for line in lines
        if line.get("severity") in ("error", "critical")
        or "retry" in str(line.get("message", "")).lower()
        or "stall sweep failed" in str(line.get("message", ""))
    ]
    # kopf reports the PermanentError of each invalid run once ("... failed permanently"); nothing is retried.
    assert all("permanently" in m for m in noisy), noisy
    assert len(noisy) <= len(E2E_CASES), noisy


@pytest.mark.e2e
def test_enforced_crd_refuses_pattern_cases_at_the_api(api: Api, ns: str, crd: None) -> None:
    for name, update in (
        ("etc", {"checkpoint": {"uri": "file:///etc"}}),
        ("spaced", {"image": "my image"}),
        ("queue", {"queueName": "Bad Queue"}),
    ):
        with pytest.raises(ApiResponseError) as err:
            create_raw(api, ns, name, merged(update))
        assert err.value.code == 422 and next(iter(update)) in str(err.value)
