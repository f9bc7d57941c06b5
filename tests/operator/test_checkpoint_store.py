"""trainop.checkpoint_store: where a run without S3 keeps its checkpoints (its own PersistentVolumeClaim, or a
claim it names), the claim the operator creates, how the Job mounts it, and the runs refused on a single-node
claim. Golden files: ``UPDATE_GOLDEN=1 pytest tests/operator/test_checkpoint_store.py``."""

from __future__ import annotations

import json
from typing import Any, cast

import kopf
import pytest
from trainop import builders, checkpoint_store
from trainop.names import claim_name
from trainop.runs import parse_run
from trainop.settings import Settings

from tests.operator.test_builders import SETTINGS, check_golden, env_of, job_of, run_of, without_manifest
from trainer.api.manifest import SpecError

NO_S3 = Settings(status_throttle_seconds=10)  # no TRAINOP_CHECKPOINT_PREFIX, S3 endpoint or Secret
WALK_FORWARD = {"start": "2024-01-01", "end": "2024-12-31", "refitEvery": "90d"}


def resolved_uri(update: dict[str, Any], settings: Settings, name: str = "sol-tft") -> str | None:
    body = run_of(update, name=name)
    return builders.validate_run(body, settings).checkpoint.uri


@pytest.mark.parametrize(
    ("update", "settings", "uri"),
    [
        ({}, SETTINGS, "s3://checkpoints/runs/ml/sol-tft"),  # the operator's prefix wins
        ({}, NO_S3, "pvc://sol-tft-checkpoints/sol-tft"),  # no prefix: the run's own claim
        ({"checkpoint": {"uri": "pvc://shared/sol"}}, SETTINGS, "pvc://shared/sol"),  # named: kept
        ({"checkpoint": {"uri": "s3://team/sol"}}, NO_S3, "s3://team/sol"),
    ],
    ids=["prefix", "own-claim", "named-claim", "named-s3"],
)
def test_where_checkpoints_go(update: dict[str, Any], settings: Settings, uri: str) -> None:
    assert resolved_uri(update, settings) == uri
    assert checkpoint_store.store_kind(uri) == uri[: uri.index(":")]


def test_resolve_store_copies_the_spec() -> None:
    run = parse_run(run_of())
    spec = run.valid()
    assert checkpoint_store.resolve_store(run, spec, NO_S3).checkpoint.uri is not None
    assert spec.checkpoint.uri is None


def test_claim_golden_and_owned() -> None:
    run = parse_run(run_of())
    spec = builders.validate_run(run_of(), NO_S3)
    claim = checkpoint_store.build_claim(run, spec, NO_S3)
    assert claim is not None
    check_golden("pvc.yaml", claim)
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    (owner,) = claim["metadata"]["ownerReferences"]
    assert owner["uid"] == run.uid and owner["controller"] is True and owner["kind"] == "TrainingRun"
    others = builders.build_service_account(run)["metadata"]["labels"]
    assert claim["metadata"]["labels"] == {**others, "app.kubernetes.io/component": "checkpoints"}


def test_claim_takes_size_class_and_mode_from_the_settings() -> None:
    settings = Settings(
        checkpoint_volume_size="50Gi",
        checkpoint_volume_storage_class="fast-rwx",
        checkpoint_volume_access_mode="ReadWriteMany",
    )
    run = parse_run(run_of())
    claim = checkpoint_store.build_claim(run, builders.validate_run(run_of(), settings), settings)
    assert claim is not None and claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "fast-rwx",
    }


@pytest.mark.parametrize(
    ("update", "settings"),
    [({}, SETTINGS), ({"checkpoint": {"uri": "pvc://shared/sol"}}, NO_S3)],
    ids=["s3", "named-claim"],
)
def test_no_claim_is_created_for_s3_or_a_named_claim(update: dict[str, Any], settings: Settings) -> None:
    body = run_of(update)
    spec = builders.validate_run(body, settings)
    assert checkpoint_store.build_claim(parse_run(body), spec, settings) is None


def test_job_golden_on_its_own_claim() -> None:
    check_golden("job-pvc.yaml", without_manifest(job_of(run_of(), NO_S3)))


def test_job_mounts_the_claim_and_the_trainer_finds_it() -> None:
    job = job_of(run_of(), NO_S3)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["volumes"] == [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "sol-tft-checkpoints"}}
    ]
    assert container["volumeMounts"] == [
        {"name": "checkpoints", "mountPath": "/var/lib/trainer/pvc/sol-tft-checkpoints"}
    ]
    env = env_of(job)
    assert env["TRAINER_PVC_ROOT"] == "/var/lib/trainer/pvc"
    spec = json.loads(env["TRAININGRUN_MANIFEST"])["spec"]
    assert spec["checkpoint"]["uri"] == "pvc://sol-tft-checkpoints/sol-tft"
    assert pod["securityContext"]["fsGroup"] == 1000  # the non-root trainer may write the volume


def test_a_claim_run_gets_no_s3_secret_unless_it_reads_s3() -> None:
    """A fresh cluster has no S3 Secret: a pod referencing the default one could never start."""
    with_secret = Settings(s3_secret_name="s3-creds")
    assert "AWS_ACCESS_KEY_ID" not in env_of(job_of(run_of(), with_secret))
    s3_data = run_of({"data": {"uri": "s3://candles/{symbol}.csv"}})
    assert env_of(job_of(s3_data, with_secret))["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
    }
    own = run_of({"s3CredentialsSecret": {"name": "team-s3"}})
    assert "AWS_ACCESS_KEY_ID" in env_of(job_of(own, with_secret))


def test_resume_from_another_claim_mounts_it_read_only() -> None:
    body = run_of({"checkpoint": {"resume": "pvc://old-run-checkpoints/old-run/best.pt"}})
    pod = job_of(body, NO_S3)["spec"]["template"]["spec"]
    assert pod["volumes"][1] == {
        "name": "resume-from",
        "persistentVolumeClaim": {"claimName": "old-run-checkpoints", "readOnly": True},
    }
    assert pod["containers"][0]["volumeMounts"][1] == {
        "name": "resume-from",
        "mountPath": "/var/lib/trainer/pvc/old-run-checkpoints",
        "readOnly": True,
    }
    same = run_of({"checkpoint": {"resume": "pvc://sol-tft-checkpoints/sol-tft/best.pt"}})
    assert len(job_of(same, NO_S3)["spec"]["template"]["spec"]["volumes"]) == 1


def test_s3_runs_mount_nothing() -> None:
    job = job_of(run_of(), SETTINGS)
    assert "volumes" not in job["spec"]["template"]["spec"]
    assert "TRAINER_PVC_ROOT" not in env_of(job)


# (case id, spec update, access mode, the problem's phrase or None when accepted)
SHARING = [
    ("one-pod", {}, "ReadWriteOnce", None),
    ("workers-rwo", {"workers": 2}, "ReadWriteOnce", "workers 2 (worker pods)"),
    ("workers-rwop", {"workers": 2}, "ReadWriteOncePod", "ReadWriteOncePod PersistentVolumeClaim"),
    ("workers-rwx", {"workers": 2}, "ReadWriteMany", None),
    ("folds-parallel", {"walkForward": WALK_FORWARD}, "ReadWriteOnce", "walkForward.parallelism 4"),
    ("folds-one-at-a-time", {"walkForward": {**WALK_FORWARD, "parallelism": 1}}, "ReadWriteOnce", None),
    ("folds-rwx", {"walkForward": WALK_FORWARD}, "ReadWriteMany", None),
    ("named-claim", {"workers": 2, "checkpoint": {"uri": "pvc://shared-rwx/x"}}, "ReadWriteOnce", None),
]


@pytest.mark.parametrize(("update", "mode", "phrase"), [c[1:] for c in SHARING], ids=[c[0] for c in SHARING])
def test_pods_that_cannot_share_the_claim_are_refused_with_the_fix(
    update: dict[str, Any], mode: str, phrase: str | None
) -> None:
    settings = Settings(checkpoint_volume_access_mode=mode)  # type: ignore[arg-type]
    body = run_of({"training": {"batchSize": 64, "device": "cpu"}, **update})
    if phrase is None:
        assert builders.validate_run(body, settings).checkpoint.uri
        return
    with pytest.raises(SpecError) as err:
        builders.validate_run(body, settings)
    (problem,) = err.value.problems
    assert problem.startswith("spec.checkpoint.uri: empty") and phrase in problem, problem
    assert "s3://bucket/prefix" in problem and "checkpointVolume.accessMode ReadWriteMany" in problem


def test_claim_names_are_bounded_labels() -> None:
    long = "r" * 63
    assert claim_name("sol-tft") == "sol-tft-checkpoints"
    assert len(claim_name(long)) == 63 and claim_name(long).endswith("-checkpoints")
    assert claim_name(long) == claim_name(long) != claim_name("r" * 62 + "s")
    assert resolved_uri({}, NO_S3, name=long) == f"pvc://{claim_name(long)}/{long}"


OWNER = {"kind": "TrainingRun", "uid": "0b6b7c1e-1111-2222-3333-444455556666"}
UNUSABLE = [
    ("this-run", {"ownerReferences": [OWNER]}, None),
    ("made-by-hand", {}, None),
    ("older-run", {"ownerReferences": [{**OWNER, "uid": "old"}]}, "belongs to an older TrainingRun"),
    ("deleting", {"ownerReferences": [OWNER], "deletionTimestamp": "2026-01-01T00:00:00Z"}, "being deleted"),
]


SCHEDULE = {"kind": "TrainingSchedule", "uid": "tsc-uid", "name": "c"}
# (case, the claim's owners, the kind of the object that wants it (uid OWNER's or SCHEDULE's), the phrase or None)
UNUSABLE_SHARED = [
    (
        "run-meets-schedule",
        [SCHEDULE],
        "TrainingRun",
        "belongs to TrainingSchedule c (whose checkpoint claim",
    ),
    ("schedule-meets-run", [{**OWNER, "name": "c"}], "TrainingSchedule", "belongs to TrainingRun c (whose"),
    ("this-schedule", [SCHEDULE], "TrainingSchedule", None),
    ("older-schedule", [{**SCHEDULE, "uid": "old"}], "TrainingSchedule", "an older TrainingSchedule of this"),
    ("another-controller", [{"kind": "StatefulSet", "uid": "x"}], "TrainingSweep", None),  # not one of ours
]


@pytest.mark.parametrize(("meta", "phrase"), [c[1:] for c in UNUSABLE], ids=[c[0] for c in UNUSABLE])
def test_an_existing_claim_is_used_or_waited_for(meta: dict[str, Any], phrase: str | None) -> None:
    found = checkpoint_store.unusable_claim({"metadata": {"name": "c", **meta}}, OWNER["uid"])
    assert found is None if phrase is None else (found is not None and phrase in found)


@pytest.mark.parametrize(
    ("owners", "kind", "phrase"), [c[1:] for c in UNUSABLE_SHARED], ids=[c[0] for c in UNUSABLE_SHARED]
)
def test_a_run_and_a_schedule_of_one_name_never_share_a_claim(
    owners: list[dict[str, Any]], kind: str, phrase: str | None
) -> None:
    uid = SCHEDULE["uid"] if kind == "TrainingSchedule" else OWNER["uid"]
    found = checkpoint_store.unusable_claim({"metadata": {"name": "c", "ownerReferences": owners}}, uid, kind)
    assert found is None if phrase is None else (found is not None and phrase in found), found


def test_shared_claim_golden_and_owned_by_the_schedule() -> None:
    """The one claim of a schedule's runs: owned by the schedule (deleted with it, not with a pruned run)."""
    schedule = {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingSchedule",
        "metadata": {"name": "sol-daily", "namespace": "ml", "uid": "tsc-uid", "labels": {"team": "quant"}},
    }
    owner = kopf.Body(cast(kopf.RawBody, schedule))
    claim = checkpoint_store.build_shared_claim(owner, "cryptopredictor.dev/schedule", NO_S3)
    check_golden("pvc-schedule.yaml", claim)
    (ref,) = claim["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], claim["metadata"]["name"]) == (
        "TrainingSchedule",
        "tsc-uid",
        "sol-daily-checkpoints",
    )
    own = checkpoint_store.build_claim(parse_run(run_of()), builders.validate_run(run_of(), NO_S3), NO_S3)
    assert own is not None and claim["spec"] == own["spec"]  # one builder, one size, class and access mode


def test_the_event_says_where_the_checkpoints_are() -> None:
    run = parse_run(run_of())
    spec = builders.validate_run(run_of(), NO_S3)
    claim = checkpoint_store.build_claim(run, spec, NO_S3)
    assert claim is not None
    assert checkpoint_store.describe_claim(claim, spec.checkpoint.uri) == (
        "created PersistentVolumeClaim sol-tft-checkpoints (10Gi, ReadWriteOnce, the cluster's default "
        "storage class) for the checkpoints at pvc://sol-tft-checkpoints/sol-tft"
    )
