"""What a TrainingSweep and a TrainingSchedule do alike with the TrainingRuns they own: the API calls, one
reconcile's skeleton, the claim their runs share, and deleting what is left when no garbage collector runs.

Why one module: ``sweep_handlers`` and ``schedule_handlers`` differ in what they decide (``sweep.decide``,
``schedule.decide``), not in how they read the owner, patch its status at its ``resourceVersion`` (a 409
starts the round over, at most ``CONFLICT_ROUNDS`` times), adopt and create a run (409: the existing one,
refused if another owner has it), cache the parsed plan by (uid, generation), or delete the runs and the
claim of a deleted owner. One copy, so a fix to any of these reaches both kinds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import kopf
from kubernetes.client.exceptions import ApiException

from trainer.api.manifest import SpecError
from trainer.api.spec import API_GROUP, API_VERSION, PLURAL

from . import checkpoint_store
from .kube import MERGE_PATCH, TIMEOUT, Kube, _json, _or_none, to_kopf_error
from .names import claim_name
from .runtime import Runtime
from .settings import Settings
from .status import Event

CONFLICT_ROUNDS = 5
MAX_PLANS = 256

log = logging.getLogger(__name__)
Json = dict[str, Any]
P = TypeVar("P")
T = TypeVar("T")


class OwnerApi:
    """The custom-object calls of an owner and its runs (the answers as the API server's JSON, as ``Kube``). The
    owner's ``plural`` and the label of its runs are class attributes of the subclass (``SweepApi``,
    ``ScheduleApi``)."""

    plural: str
    label: str

    def __init__(self, kube: Kube) -> None:
        self.custom = kube.custom
        self.opts: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}

    def read_owner(self, namespace: str, name: str) -> Json | None:
        return _or_none(
            lambda: self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, self.plural, name, **self.opts
            )
        )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any], version: str) -> bool:
        """Merge-patch the status if the owner is still at ``version``; False when it changed (409) or is gone."""
        body = {"metadata": {"resourceVersion": version}, "status": dict(status)}
        try:
            return (
                _or_none(
                    lambda: self.custom.patch_namespaced_custom_object_status(
                        API_GROUP,
                        API_VERSION,
                        namespace,
                        self.plural,
                        name,
                        body,
                        _content_type=MERGE_PATCH,
                        **self.opts,
                    )
                )
                is not None
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def list_runs(self, namespace: str, owner: str) -> list[Json]:
        answer = _json(
            self.custom.list_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                label_selector=f"{self.label}={owner}",
                **self.opts,
            )
        )
        return list(answer.get("items") or [])

    def owned_runs(self, namespace: str, owner: str, uid: str) -> list[Json]:
        """The runs labelled with the owner's name that the owner of ``uid`` owns (not a namesake's)."""
        return [r for r in self.list_runs(namespace, owner) if owned(r, uid)]

    def create_run(self, body: Mapping[str, Any]) -> tuple[Json, bool]:
        """Create, or return the existing run of that name (409); ``(object, created)``."""
        meta = body["metadata"]
        try:
            created = self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, meta["namespace"], PLURAL, dict(body), **self.opts
            )
            return _json(created), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = _or_none(
            lambda: self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, meta["namespace"], PLURAL, meta["name"], **self.opts
            )
        )
        if existing is None:  # deleted between the 409 and the GET
            raise kopf.TemporaryError(f"TrainingRun {meta['name']} is being deleted", delay=2)
        return existing, False

    def adopt_and_create(self, owner: Mapping[str, Any], child: dict[str, Any]) -> bool:
        """Adopt ``child`` (owner reference, namespace) and create it; True when this call created it. A run of
        that name that another owner has is a TemporaryError (it waits for that run's deletion)."""
        kopf.adopt(child, owner=kopf.Body(cast(kopf.RawBody, owner)))
        run, created = self.create_run(child)
        if not owned(run, str(owner["metadata"].get("uid"))):
            raise kopf.TemporaryError(
                f"TrainingRun {child['metadata']['name']} belongs to another owner; waiting for its deletion",
                delay=5,
            )
        return created

    def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            return (
                _or_none(
                    lambda: self.custom.delete_namespaced_custom_object(
                        API_GROUP, API_VERSION, namespace, PLURAL, name, body=body, **self.opts
                    )
                )
                is not None
            )
        except ApiException as exc:
            if exc.status == 409:  # the name is another run's now
                return False
            raise


def owned(obj: Mapping[str, Any], uid: str) -> bool:
    return any(r.get("uid") == uid for r in (obj.get("metadata") or {}).get("ownerReferences") or [])


def cached_plan(
    plans: dict[tuple[str, Any], P | SpecError],
    body: Mapping[str, Any],
    settings: Settings,
    parse: Callable[[Mapping[str, Any], str | None, str], P],
) -> P | SpecError:
    """The owner's plan (``parse(body, checkpoint prefix, access mode)``, or its SpecError), parsed once per
    (uid, generation); the cache is emptied past ``MAX_PLANS`` entries."""
    meta = body.get("metadata") or {}
    key = (str(meta.get("uid")), meta.get("generation"))
    if key not in plans:
        if len(plans) > MAX_PLANS:
            plans.clear()
        try:
            plans[key] = parse(body, settings.checkpoint_prefix, settings.checkpoint_volume_access_mode)
        except SpecError as err:
            plans[key] = err
    return plans[key]


def converge(
    api: OwnerApi, kind: str, namespace: str, name: str, decide: Callable[[Json], tuple[Mapping[str, Any], T]]
) -> tuple[Json, T] | None:
    """GET the owner, ``decide(body) -> (status patch, result)``, merge-patch the status at the owner's
    ``resourceVersion``; again while a concurrent writer makes that a 409. ``(body, result)`` of the round that
    wrote (or had nothing to write); None when the owner is gone or being deleted."""
    for _ in range(CONFLICT_ROUNDS):
        body = api.read_owner(namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        status, result = decide(body)
        if not status or api.patch_status(namespace, name, status, body["metadata"]["resourceVersion"]):
            return body, result
    raise kopf.TemporaryError(f"{kind} {namespace}/{name} kept changing under the operator", delay=2)


@contextlib.contextmanager
def kopf_errors(what: str) -> Iterator[None]:
    """kopf's errors pass; any other failure inside becomes one (``kube.to_kopf_error``) about ``what``."""
    try:
        yield
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception as exc:
        raise to_kopf_error(exc, what) from None


# --- the claim an owner's runs share ---------------------------------------------------------------------------


def ensure_claim(rt: Runtime, body: Mapping[str, Any], claim: str | None, label: str) -> None:
    """Create the checkpoint claim of a sweep's or schedule's runs (``checkpoint_store.shared_base``; None: they
    have another store) before its runs, whose pods mount it (409: the existing one, judged by
    ``unusable_claim``); a new one gets a Normal Event on the owner naming it."""
    if claim is None:
        return
    owner = kopf.Body(cast(kopf.RawBody, body))
    wanted = checkpoint_store.build_shared_claim(owner, label, rt.settings)
    current, created = rt.kube.create(wanted)
    if waiting := checkpoint_store.unusable_claim(current, str(owner.metadata.uid), str(body.get("kind"))):
        raise kopf.TemporaryError(waiting, delay=5)
    if created:
        message = checkpoint_store.describe_claim(wanted, f"pvc://{claim}")
        log.info("%s %s/%s: %s", body.get("kind"), owner.metadata.namespace, owner.metadata.name, message)
        rt.writer.post(body, Event("Normal", "CheckpointVolume", message))


def delete_claim(rt: Runtime, namespace: str, name: str, uid: str) -> bool:
    """The shared claim of a deleted sweep or schedule, if it owns one (where no garbage collector deletes it)."""
    claim = claim_name(name)
    current = rt.kube.read("PersistentVolumeClaim", namespace, claim)
    return (
        current is not None
        and owned(current, uid)
        and rt.kube.delete("PersistentVolumeClaim", namespace, claim)
    )


# --- a deleted owner -------------------------------------------------------------------------------------------


def delete_runs(rt: Runtime, api: OwnerApi, namespace: str, name: str, uid: str) -> list[str]:
    """The runs (and the shared checkpoint claim) a deleted owner still owns (where no garbage collector
    deletes them)."""
    gone = []
    for run in api.owned_runs(namespace, name, uid):
        meta = run["metadata"]
        if not meta.get("deletionTimestamp") and api.delete_run(namespace, meta["name"], meta["uid"]):
            gone.append(str(meta["name"]))
    if delete_claim(rt, namespace, name, uid):
        gone.append(f"PersistentVolumeClaim {claim_name(name)}")
    return gone


async def delete_left(
    rt: Runtime, api: OwnerApi, kind: str, namespace: str, name: str, uid: str, runs: str = "runs"
) -> None:
    """``delete_runs`` in the pool for an owner's DELETED event, logged (``runs``: what its runs are called)."""
    try:
        gone = await rt.offload(delete_runs, rt, api, namespace, name, uid)
    except Exception as exc:
        log.warning("%s of %s %s/%s not deleted: %s", runs, kind, namespace, name, exc)
        return
    if gone:
        log.info("deleted %s of %s %s/%s", ", ".join(gone), kind, namespace, name)
