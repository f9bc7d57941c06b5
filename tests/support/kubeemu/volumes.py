"""PersistentVolumeClaim test shim of the toy kubelet (``kubelet``): claims as local directories.

The emulator provisions no storage and every pod is a local process, so a pod's ``persistentVolumeClaim`` volumes
are mapped to directories on this machine:

- Each claim is the directory ``<kubelet workdir>/pvs/<namespace>/<claim>``, kept across pods (a retried pod,
  or the next run naming the claim, sees the files, as on a real volume). It is not removed when the claim
  object is: a claim re-created under the same name sees the old files (a real ``Delete`` reclaim policy would
  give it an empty volume).
- A container sees a volume at its volumeMount's ``mountPath``, which a local process cannot have. So each pod
  gets ``<kubelet workdir>/<pod>.mounts``, standing for its root filesystem, in which every mountPath is a
  symlink to its claim's directory (``subPath`` honoured), and every env value that is an absolute path at,
  under or *above* a mountPath (``TRAINER_PVC_ROOT=/var/lib/trainer/pvc`` over
  ``/var/lib/trainer/pvc/<claim>``) is rewritten into that directory. Command and args are left alone (as with
  the termination-message shim): product code must read such paths from env vars. ``readOnly`` is not enforced.
- A pod whose claim does not exist, or is being deleted, stays Pending (``PodScheduled`` False, reason
  ``Unschedulable``, the scheduler's ``persistentvolumeclaim "<claim>" not found``) until the claim is there;
  a claim a pod starts with is marked ``Bound`` (``status.phase``, ``capacity`` = its request), as a
  provisioner would.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
from typing import Any

from .client import Api

_PATH = re.compile(r"/[^\s:;,]*")


def claims(spec: dict[str, Any]) -> dict[str, str]:
    """The pod spec's persistentVolumeClaim volumes: volume name -> claim name."""
    return {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or []
        if v.get("persistentVolumeClaim")
    }


def _claim_path(namespace: str, claim: str) -> str:
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}"


def unavailable(api: Api, namespace: str, names: dict[str, str]) -> str | None:
    """Why a pod with these claims cannot be scheduled (the scheduler's message), or None."""
    for claim in names.values():
        obj = api.maybe_get(_claim_path(namespace, claim))
        if obj is None:
            return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
        if obj["metadata"].get("deletionTimestamp"):
            return f'0/1 nodes are available: persistentvolumeclaim "{claim}" is being deleted.'
    return None


def pending_status(message: str) -> dict[str, Any]:
    """The status the scheduler leaves on a pod it cannot place."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": now,
    }
    return {"status": {"phase": "Pending", "conditions": [condition]}}


def mount(
    workdir: pathlib.Path, namespace: str, pod: str, spec: dict[str, Any], container: dict[str, Any]
) -> tuple[pathlib.Path, list[str]]:
    """Make the pod's mount tree: ``(its root directory, the mountPaths of claims)``."""
    names = claims(spec)
    root = workdir / f"{pod}.mounts"
    paths = []
    for m in container.get("volumeMounts") or []:
        claim = names.get(m["name"])
        if claim is None:
            continue
        target = workdir / "pvs" / namespace / claim / m.get("subPath", "")
        target.mkdir(parents=True, exist_ok=True)
        link = root / m["mountPath"].lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            os.symlink(target, link, target_is_directory=True)
        paths.append(m["mountPath"].rstrip("/"))
    return root, paths


def rewrite(env: dict[str, str], root: pathlib.Path, mount_paths: list[str]) -> dict[str, str]:
    """Env values that are paths at, under or above a mountPath, moved into the pod's mount tree."""

    def moved(value: str) -> str:
        if not _PATH.fullmatch(value) or value == "/":
            return value
        path = value.rstrip("/")
        related = any(path == m or path.startswith(f"{m}/") or m.startswith(f"{path}/") for m in mount_paths)
        return f"{root}{value}" if related else value

    return {key: moved(value) for key, value in env.items()} if mount_paths else env


def bind(api: Api, namespace: str, names: dict[str, str]) -> None:
    """Mark each claim Bound, with its requested size as capacity, as a provisioner does on first use."""
    for claim in set(names.values()):
        obj = api.maybe_get(_claim_path(namespace, claim)) or {}
        if (obj.get("status") or {}).get("phase") == "Bound" or not obj:
            continue
        spec = obj.get("spec") or {}
        status = {
            "phase": "Bound",
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "capacity": {
                "storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
            },
        }
        api.merge(f"{_claim_path(namespace, claim)}/status", {"status": status})
