"""Indexed-Job bookkeeping of the toy kubelet (``completionMode: Indexed``), as the real Job controller does it.

Which indexes need a pod (every index neither succeeded, failed nor running, lowest first, up to
``parallelism``), what an index's pod carries (the ``batch.kubernetes.io/job-completion-index`` annotation and
label, ``spec.hostname`` ``<job>-<index>``, ``JOB_COMPLETION_INDEX`` from a fieldRef and, with
``backoffLimitPerIndex``, the index's failure counts so far as annotations) and ``status.completedIndexes`` /
``status.failedIndexes`` in the controller's compact interval format ("0,1", "0-2,5": two adjacent indexes
are written with a comma).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
INDEX_ENV = "JOB_COMPLETION_INDEX"
#: With ``backoffLimitPerIndex``: the counted (and the podFailurePolicy-ignored) failures of the pod's index
#: before this pod, on each pod, as the controller writes them.
FAILURE_COUNT_KEY = "batch.kubernetes.io/job-index-failure-count"
IGNORED_FAILURE_COUNT_KEY = "batch.kubernetes.io/job-index-ignored-failure-count"


def is_indexed(spec: dict[str, Any]) -> bool:
    return spec.get("completionMode") == "Indexed"


def parse(text: str | None) -> set[int]:
    """The indexes in a ``completedIndexes`` string ("1,3-5" -> {1, 3, 4, 5})."""
    indexes: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        indexes.update(range(int(first), int(last or first) + 1))
    return indexes


def format_indexes(indexes: Iterable[int]) -> str:
    """``completedIndexes`` as the controller writes it: intervals of 3+ as "a-b", of two as "a,b"."""
    intervals: list[list[int]] = []
    for index in sorted(set(indexes)):
        if intervals and intervals[-1][1] == index - 1:
            intervals[-1][1] = index
        else:
            intervals.append([index, index])
    parts = (str(a) if a == b else f"{a}{',' if b == a + 1 else '-'}{b}" for a, b in intervals)
    return ",".join(parts)


def completions(spec: dict[str, Any]) -> int:
    return int(spec.get("completions") or 1)


def backoff_limit_per_index(spec: dict[str, Any]) -> int | None:
    """``spec.backoffLimitPerIndex`` of an Indexed Job (None: the Job-wide ``backoffLimit`` applies)."""
    limit = spec.get("backoffLimitPerIndex")
    return int(limit) if limit is not None and is_indexed(spec) else None


def to_start(spec: dict[str, Any], status: dict[str, Any], running: set[int]) -> list[int]:
    """The lowest indexes neither succeeded, failed nor running, as many as ``parallelism`` leaves room for."""
    over = parse(status.get("completedIndexes")) | parse(status.get("failedIndexes"))
    pending = [i for i in range(completions(spec)) if i not in over and i not in running]
    parallelism = spec.get("parallelism")
    room = (1 if parallelism is None else int(parallelism)) - len(running)
    return pending[: max(0, room)]


def all_succeeded(spec: dict[str, Any], done: set[int]) -> bool:
    return set(range(completions(spec))) <= done


def all_finished(spec: dict[str, Any], done: set[int], failed: set[int]) -> bool:
    """Every index either succeeded or failed (``backoffLimitPerIndex``): the Job is finished."""
    return set(range(completions(spec))) <= done | failed


def stamp(
    meta: dict[str, Any],
    spec: dict[str, Any],
    job: str,
    index: int,
    failures: tuple[int, int] | None = None,
) -> None:
    """Give a pod (metadata and a copy of the template's spec) its index, as the controller does; ``failures``
    (with ``backoffLimitPerIndex``): the index's counted and ignored failures so far."""
    value = str(index)
    if failures is not None:
        meta.setdefault("annotations", {})[FAILURE_COUNT_KEY] = str(failures[0])
        meta["annotations"][IGNORED_FAILURE_COUNT_KEY] = str(failures[1])
    meta.setdefault("annotations", {})[INDEX_KEY] = value
    meta.setdefault("labels", {})[INDEX_KEY] = value
    spec["hostname"] = f"{job}-{index}"  # the controller sets it for every Indexed pod
    env_var = {
        "name": INDEX_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}},
    }
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        env = container.get("env") or []
        if not any(var.get("name") == INDEX_ENV for var in env):
            container["env"] = [*env, env_var]
