"""Where a run's checkpoints live in a cluster -- S3, or a PersistentVolumeClaim -- and what that asks of its Job.

Why a module of its own: a run must work on a fresh cluster before anyone sets up S3, and retries must resume
there as they do from S3. So a run with no ``checkpoint.uri`` on an operator with no
``TRAINOP_CHECKPOINT_PREFIX`` gets a claim of its own, ``<run>-checkpoints`` (``trainop.names.claim_name``),
which the operator creates, owned by the run (deleted with it), sized and classed by the
``TRAINOP_CHECKPOINT_VOLUME_*`` settings; a run may also name an existing claim, ``pvc://CLAIM/path``, which
the operator mounts but never creates. The decisions are pure functions of the run, its spec and the settings
(table-tested); ``trainop.builders`` calls ``resolve_store`` and ``mount_claims``, ``trainop.children``
creates what ``build_claim`` returns.

In the pod each claim is mounted at ``<PVC_ROOT>/<claim>`` and ``$TRAINER_PVC_ROOT`` is ``PVC_ROOT``: the
trainer maps ``pvc://CLAIM/path`` to ``$TRAINER_PVC_ROOT/CLAIM/path`` (``trainer.storage.PVCStorage``) and still
reports the ``pvc://`` URI, so ``kubectl describe tr`` says which claim holds the checkpoints.

A claim the operator creates with a single-node access mode (ReadWriteOnce, ReadWriteOncePod) cannot be shared by
pods running at once on several nodes: a multi-worker run, or walk-forward folds trained in parallel, is
refused with what to change. A claim the run names is the user's: its access mode is not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import kopf

from trainer.api.manifest import SpecError
from trainer.api.patterns import PVC_URI_RE, S3_URI_RE, split_pvc_uri
from trainer.api.spec import API_GROUP, KIND, TrainingRunSpec

from .names import claim_name
from .runs import Run
from .settings import Settings

#: Where the claims are mounted in the trainer's pod, and the variable that tells the trainer.
PVC_ROOT = "/var/lib/trainer/pvc"
PVC_ROOT_ENV = "TRAINER_PVC_ROOT"
#: The pod volume of the checkpoint claim, and of another claim that ``checkpoint.resume`` names (read-only).
VOLUME, RESUME_VOLUME = "checkpoints", "resume-from"
SHARED_ACCESS_MODE = "ReadWriteMany"

StoreKind = Literal["s3", "pvc"]


def store_kind(uri: str | None) -> StoreKind | None:
    """``s3`` or ``pvc`` for a resolved checkpoint URI (None for anything else: not a cluster store)."""
    if uri and S3_URI_RE.match(uri):
        return "s3"
    if uri and PVC_URI_RE.match(uri):
        return "pvc"
    return None


def claim_of(uri: str | None) -> str | None:
    """The claim of a ``pvc://CLAIM/path`` URI, else None."""
    return split_pvc_uri(uri)[0] if uri and PVC_URI_RE.match(uri) else None


def default_uri(run: Run, settings: Settings) -> str:
    """Where a run without ``checkpoint.uri`` checkpoints: the operator's S3 prefix, else the run's own claim."""
    if settings.checkpoint_prefix:
        return f"{settings.checkpoint_prefix}/{run.namespace}/{run.name}"
    return f"pvc://{claim_name(run.name)}/{run.name}"


def resolve_store(run: Run, spec: TrainingRunSpec, settings: Settings) -> TrainingRunSpec:
    """``spec`` with ``checkpoint.uri`` resolved (``default_uri`` when empty; a copy, ``spec`` is not changed);
    raises SpecError when the run's pods could not share the claim the operator would create for it."""
    if not spec.checkpoint.uri:
        spec = spec.model_copy(deep=True)
        spec.checkpoint.uri = default_uri(run, settings)
    problem = sharing_problem(run, spec, settings)
    if problem:
        raise SpecError(f"TrainingRun {run.name}", [problem])
    return spec


def pods_at_once(spec: TrainingRunSpec) -> int:
    """How many of the run's pods may run at the same time: its workers, or its parallel folds."""
    wf = spec.walk_forward
    if wf is not None:
        return max(1, min(wf.parallelism, len(wf.folds(spec.data.horizon))))
    return spec.workers


def sharing_problem(run: Run, spec: TrainingRunSpec, settings: Settings) -> str | None:
    """Why the run's pods could not share the claim the operator creates for it, or None."""
    mode = settings.checkpoint_volume_access_mode
    pods = pods_at_once(spec)
    if not creates_claim(run, spec) or pods < 2 or mode == SHARED_ACCESS_MODE:
        return None
    what = (
        f"walkForward.parallelism {pods} (fold pods at once)"
        if spec.walk_forward is not None
        else f"workers {pods} (worker pods)"
    )
    folds = "set spec.walkForward.parallelism to 1 (one fold after another), " if spec.walk_forward else ""
    return (
        f"spec.checkpoint.uri: empty, and the operator's default store is a {mode} PersistentVolumeClaim "
        f"per run, which the pods of {what} cannot share across nodes: {folds}set spec.checkpoint.uri to "
        "s3://bucket/prefix, or install the operator with checkpointVolume.accessMode ReadWriteMany "
        "(TRAINOP_CHECKPOINT_VOLUME_ACCESS_MODE, on a storage class that supports it)"
    )


def creates_claim(run: Run, spec: TrainingRunSpec) -> bool:
    """Whether the operator creates the run's checkpoint claim: it is the run's own (``<run>-checkpoints``)."""
    return claim_of(spec.checkpoint.uri) == claim_name(run.name)


def uses_s3(spec: TrainingRunSpec) -> bool:
    """Whether the run reads or writes S3 (its checkpoints, a resume URI or its data), i.e. needs the S3
    credentials of the operator's default Secret. A run on a claim without S3 data does not: its pod must
    start on a cluster where that Secret was never created."""
    uris = (spec.checkpoint.uri, spec.checkpoint.resume, spec.data.uri)
    return any(u is not None and u[:3].lower() == "s3:" for u in uris)


def claims(spec: TrainingRunSpec) -> list[tuple[str, str, bool]]:
    """The claims the trainer's pod mounts: ``(volume, claim, read_only)`` for the checkpoint URI's claim and
    for another claim that ``checkpoint.resume`` names."""
    out: list[tuple[str, str, bool]] = []
    store = claim_of(spec.checkpoint.uri)
    if store:
        out.append((VOLUME, store, False))
    resume = spec.checkpoint.resume
    other = claim_of(resume) if resume not in ("auto", "never") else None
    if other and other != store:
        out.append((RESUME_VOLUME, other, True))
    return out


def mount_claims(pod_spec: dict[str, Any], container: dict[str, Any], spec: TrainingRunSpec) -> None:
    """Mount the spec's claims (``claims``) in ``container`` of ``pod_spec``, in place, with
    ``$TRAINER_PVC_ROOT``; nothing for a run on S3."""
    mounted = claims(spec)
    if not mounted:
        return
    volumes = pod_spec.setdefault("volumes", [])
    mounts = container.setdefault("volumeMounts", [])
    for volume, claim, read_only in mounted:
        source: dict[str, Any] = {"claimName": claim}
        mount: dict[str, Any] = {"name": volume, "mountPath": f"{PVC_ROOT}/{claim}"}
        if read_only:
            source["readOnly"] = mount["readOnly"] = True
        volumes.append({"name": volume, "persistentVolumeClaim": source})
        mounts.append(mount)
    container.setdefault("env", []).append({"name": PVC_ROOT_ENV, "value": PVC_ROOT})


def build_claim(run: Run, spec: TrainingRunSpec, settings: Settings) -> dict[str, Any] | None:
    """The PersistentVolumeClaim the operator creates for the run (``creates_claim``), else None. Owner
    reference and namespace added by ``kopf.adopt``; no storageClassName without a configured class, so the
    cluster's default class provisions it."""
    if not creates_claim(run, spec):
        return None
    claim_spec: dict[str, Any] = {
        "accessModes": [settings.checkpoint_volume_access_mode],
        "resources": {"requests": {"storage": settings.checkpoint_volume_size}},
    }
    if settings.checkpoint_volume_storage_class:
        claim_spec["storageClassName"] = settings.checkpoint_volume_storage_class
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name(run.name), "labels": claim_labels(run)},
        "spec": claim_spec,
    }
    kopf.adopt(claim, owner=run.owner())
    return claim


def claim_labels(run: Run) -> dict[str, str]:
    """The labels of the run's other children (``trainop.builders``), component ``checkpoints``."""
    return {
        "app.kubernetes.io/name": "trainer",
        "app.kubernetes.io/instance": run.name,
        "app.kubernetes.io/component": "checkpoints",
        "app.kubernetes.io/part-of": "crypto-price-predictor",
        "app.kubernetes.io/managed-by": "trainop",
        f"{API_GROUP}/run": run.name,
    }


def unusable_claim(current: Mapping[str, Any], run_uid: str) -> str | None:
    """Why the run cannot use the existing claim of its name (a create's 409), or None: this run's, or one
    without a TrainingRun owner (made by hand for it), is used as is; one being deleted, or owned by an older
    run of this name, is waited for -- the pod could not mount it, or would resume the other run."""
    meta = current.get("metadata") or {}
    owners = {o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("kind") == KIND}
    if meta.get("deletionTimestamp"):
        return f"PersistentVolumeClaim {meta.get('name')} is being deleted; waiting for it to go"
    if owners and run_uid not in owners:
        return (
            f"PersistentVolumeClaim {meta.get('name')} belongs to an older TrainingRun of this name; waiting "
            "for its deletion"
        )
    return None


def describe_claim(claim: dict[str, Any], uri: str | None) -> str:
    """The message of the Event that says a claim was created (``kubectl describe tr``)."""
    spec = claim["spec"]
    storage_class = spec.get("storageClassName") or "the cluster's default storage class"
    return (
        f"created PersistentVolumeClaim {claim['metadata']['name']} ({spec['resources']['requests']['storage']}, "
        f"{spec['accessModes'][0]}, {storage_class}) for the checkpoints at {uri}"
    )
