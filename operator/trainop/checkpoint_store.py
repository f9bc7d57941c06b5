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

The runs of a TrainingSchedule or a TrainingSweep without a store share ONE claim, ``<schedule>-checkpoints``
(``shared_base``, ``build_shared_claim``), owned by the schedule or sweep, each run under ``pvc://CLAIM/<run>``:
a schedule's ``current.json`` (at ``pvc://CLAIM``) and the promoted model must outlive the runs its history
limits delete, which a claim per run would not. To a run that is a claim it names: mounted, never created.

A claim the operator creates with a single-node access mode (ReadWriteOnce, ReadWriteOncePod) cannot be shared by
pods running at once on several nodes: a multi-worker run, walk-forward folds trained in parallel, a schedule
whose runs may overlap (concurrencyPolicy Allow) or a sweep with parallel trials is refused with what to
change (``sharing_problem``, ``shared_problems``). A claim the run names is the user's: its access mode is not
checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import kopf

from trainer.api.manifest import SpecError
from trainer.api.patterns import PVC_URI_RE, S3_URI_RE, split_pvc_uri
from trainer.api.schedule import SCHEDULE_KIND
from trainer.api.spec import API_GROUP, KIND, TrainingRunSpec
from trainer.api.sweep import SWEEP_KIND

from .names import claim_name
from .runs import Run
from .settings import Settings

#: Where the claims are mounted in the trainer's pod, and the variable that tells the trainer.
PVC_ROOT = "/var/lib/trainer/pvc"
PVC_ROOT_ENV = "TRAINER_PVC_ROOT"
#: The pod volume of the checkpoint claim, and of another claim that ``checkpoint.resume`` names (read-only).
VOLUME, RESUME_VOLUME = "checkpoints", "resume-from"
SHARED_ACCESS_MODE = "ReadWriteMany"
#: The kinds whose checkpoint claims the operator creates (each ``<name>-checkpoints``, owned by it).
OWNER_KINDS = (KIND, SCHEDULE_KIND, SWEEP_KIND)

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


# --- one claim for the runs of a schedule or a sweep -------------------------------------------------------------


def shared_base(owner: str, uri: str | None, prefix: str | None) -> str | None:
    """``pvc://<owner>-checkpoints`` when neither the template (``uri``) nor the operator (``prefix``) names a
    store: the base of a schedule's or a sweep's runs (each under ``<base>/<run>``) on one claim that the operator
    creates, owned by the schedule or sweep (so ``current.json`` outlives the runs it prunes); else None."""
    return None if uri or prefix else f"pvc://{claim_name(owner)}"


def overlap(owner_spec: Mapping[str, Any] | None, key: str, lets: str, fix: str) -> tuple[str, str, str]:
    """``shared_problems``'s ``overlap`` for the owner's ``spec.<key>``: what its value ``lets`` happen (its
    ``{default}`` says " (the default)" where the spec leaves the field out) and the value that fixes it."""
    default = "" if key in (owner_spec or {}) else " (the default)"
    return (f"spec.{key}", lets.format(default=default), fix)


def shared_problems(
    claim: str,
    mode: str,
    template: str,
    spec: TrainingRunSpec,
    overlap: tuple[str, str, str] | None = None,
) -> list[str]:
    """Why the runs of a schedule or a sweep could not share the single-node claim the operator creates for
    them (empty on ReadWriteMany): runs at once (``overlap``: the owner's field, what its value lets happen, the
    value that fixes it), or a template (at the path ``template``) with several pods at once. Refused, not left
    to the cluster: on another node such a pod waits (Multi-Attach) until the others let go of the volume."""
    if mode == SHARED_ACCESS_MODE:
        return []
    crowds = [overlap] if overlap else []
    pods = pods_at_once(spec)
    if pods > 1 and spec.walk_forward is not None:
        crowds.append(
            (f"{template}.walkForward.parallelism", f"{pods} fold pods at once", "1 (one fold after another)")
        )
    elif pods > 1:
        crowds.append((f"{template}.workers", f"{pods} worker pods at once", "1"))
    return [
        f"{field}: {what} would share the {mode} PersistentVolumeClaim {claim} that the operator creates for "
        f"them (no {template}.checkpoint.uri and no TRAINOP_CHECKPOINT_PREFIX), which pods on different nodes "
        f"cannot mount at once: set {field} to {fix}, set {template}.checkpoint.uri to s3://bucket/prefix, or "
        "install the operator with checkpointVolume.accessMode ReadWriteMany "
        "(TRAINOP_CHECKPOINT_VOLUME_ACCESS_MODE, on a storage class that supports it)"
        for field, what, fix in crowds
    ]


def build_shared_claim(owner: kopf.Body, owner_label: str, settings: Settings) -> dict[str, Any]:
    """The claim of a schedule's or a sweep's runs (``shared_base``), owned by it (``kopf.adopt``: owner
    reference, namespace, the owner's labels); ``owner_label`` is the label its runs carry."""
    name = str(owner.metadata.name)
    claim = claim_manifest(claim_name(name), claim_labels(name, owner_label), settings)
    kopf.adopt(claim, owner=owner)
    return claim


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
    reference and namespace added by ``kopf.adopt``."""
    if not creates_claim(run, spec):
        return None
    claim = claim_manifest(claim_name(run.name), claim_labels(run.name, f"{API_GROUP}/run"), settings)
    kopf.adopt(claim, owner=run.owner())
    return claim


def claim_manifest(name: str, labels: Mapping[str, str], settings: Settings) -> dict[str, Any]:
    """A checkpoint claim of the ``TRAINOP_CHECKPOINT_VOLUME_*`` size, class and access mode (no owner yet); no
    storageClassName without a configured class, so the cluster's default class provisions it."""
    claim_spec: dict[str, Any] = {
        "accessModes": [settings.checkpoint_volume_access_mode],
        "resources": {"requests": {"storage": settings.checkpoint_volume_size}},
    }
    if settings.checkpoint_volume_storage_class:
        claim_spec["storageClassName"] = settings.checkpoint_volume_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": claim_spec,
    }


def claim_labels(owner: str, owner_label: str) -> dict[str, str]:
    """The labels of a run's other children (``trainop.builders``), component ``checkpoints``; ``owner_label``
    (``cryptopredictor.dev/run``, ``/schedule``, ``/sweep``) names the owner."""
    return {
        "app.kubernetes.io/name": "trainer",
        "app.kubernetes.io/instance": owner,
        "app.kubernetes.io/component": "checkpoints",
        "app.kubernetes.io/part-of": "crypto-price-predictor",
        "app.kubernetes.io/managed-by": "trainop",
        owner_label: owner,
    }


def unusable_claim(current: Mapping[str, Any], owner_uid: str, kind: str = KIND) -> str | None:
    """Why the ``kind`` object ``owner_uid`` cannot use the existing claim of its name (a create's 409), or
    None: its own, or one without an owner of this operator's kinds (made by hand for it), is used as is; one
    being deleted, or owned by another object (an older one of this name, or a run, schedule or sweep of the
    same name: their claims are all ``<name>-checkpoints``), is waited for -- the pod could not mount it, or
    would resume the other's checkpoints."""
    meta = current.get("metadata") or {}
    refs = [o for o in meta.get("ownerReferences") or [] if o.get("kind") in OWNER_KINDS]
    if meta.get("deletionTimestamp"):
        return f"PersistentVolumeClaim {meta.get('name')} is being deleted; waiting for it to go"
    if refs and owner_uid not in {o.get("uid") for o in refs}:
        other = refs[0]
        whose = (
            f"an older {kind} of this name"
            if other.get("kind") == kind
            else f"{other.get('kind')} {other.get('name')} (whose checkpoint claim has the same name)"
        )
        return f"PersistentVolumeClaim {meta.get('name')} belongs to {whose}; waiting for its deletion"
    return None


def describe_claim(claim: dict[str, Any], uri: str | None) -> str:
    """The message of the Event that says a claim was created (``kubectl describe tr``)."""
    spec = claim["spec"]
    storage_class = spec.get("storageClassName") or "the cluster's default storage class"
    return (
        f"created PersistentVolumeClaim {claim['metadata']['name']} ({spec['resources']['requests']['storage']}, "
        f"{spec['accessModes'][0]}, {storage_class}) for the checkpoints at {uri}"
    )
