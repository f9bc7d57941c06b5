"""What a TrainingRun needs in a cluster beyond the model, and how many processes it runs there (torch-free).

Why apart from ``trainer.api.spec``: the spec model says what a run *is* and is all ``python -m trainer run``
needs; these rules exist only because of pods -- a pod's filesystem is lost with it, a pod's GPUs bound its
processes -- and are applied by the operator before it creates a Job (and by the sweep controller to every
trial). ``procs_per_worker`` is the one place the default "one process per GPU of the pod" is decided.
"""

from __future__ import annotations

from trainer.api.patterns import PVC_URI_RE
from trainer.api.spec import GPU_RESOURCE, S3_URI_RE, TrainingRunSpec

__all__ = ["cluster_problems", "gpu_limit", "procs_per_worker"]


def gpu_limit(spec: TrainingRunSpec) -> int:
    """The pod's ``nvidia.com/gpu`` limit as a whole number (0: none, or not a whole number)."""
    value = spec.resources.limits.get(GPU_RESOURCE, spec.resources.requests.get(GPU_RESOURCE, 0))
    text = str(value)
    return int(text) if text.isdigit() else 0


def procs_per_worker(spec: TrainingRunSpec) -> int:
    """Training processes per pod: ``procsPerWorker``, else one per GPU of the pod's limit, else 1."""
    return spec.procs_per_worker or max(gpu_limit(spec), 1)


def cluster_problems(spec: TrainingRunSpec, prefix: str = "spec") -> list[str]:
    """What a run needs in a cluster beyond the model (the operator checks this before it creates a Job):
    checkpoints in S3 or on a PersistentVolumeClaim (``pvc://CLAIM/path``), since a pod's own filesystem (a
    path, ``file://``) is lost with every retry; a global batch that gives every training process at least one
    row; no more processes per pod than its GPUs."""
    problems = []
    uri = spec.checkpoint.uri
    if uri and not S3_URI_RE.match(uri) and not PVC_URI_RE.match(uri):
        problems.append(
            f"{prefix}.checkpoint.uri: {uri!r} is the pod's own filesystem, lost with the pod (every retry would "
            "start over); in a cluster use s3://bucket/prefix or pvc://CLAIM/path (a PersistentVolumeClaim), "
            "or leave it empty for the operator's default store"
        )
    pointer = spec.promotion.uri if spec.promotion else None
    if pointer and not S3_URI_RE.match(pointer) and not _same_claim(pointer, uri):
        problems.append(
            f"{prefix}.promotion.uri: {pointer!r} is not where a pod can keep current.json (a pod's own "
            "filesystem is lost with it, and only the checkpoint's claim is mounted); in a cluster use "
            "s3://bucket/prefix, pvc://CLAIM/path on checkpoint.uri's claim, or leave it empty for the "
            "checkpoint prefix's parent"
        )
    procs = procs_per_worker(spec)
    world = spec.workers * procs
    if spec.training.batch_size < world:
        problems.append(
            f"{prefix}.training.batchSize: {spec.training.batch_size} is less than the run's {world} training "
            f"processes (workers {spec.workers} x procsPerWorker {procs}); each process needs at least one "
            f"row of the global batch: raise batchSize to at least {world}, or use fewer workers/processes"
        )
    gpus = gpu_limit(spec)
    if spec.procs_per_worker and 0 < gpus < spec.procs_per_worker and spec.training.device != "cpu":
        problems.append(
            f"{prefix}.procsPerWorker: {spec.procs_per_worker} processes per pod but resources.limits "
            f"{GPU_RESOURCE} is {gpus}: each process needs a GPU of its own; lower procsPerWorker, raise the "
            "limit, or set training.device to cpu"
        )
    return problems


def _same_claim(pointer: str, checkpoint_uri: str | None) -> bool:
    """``pointer`` is a ``pvc://`` URI on the claim of ``checkpoint_uri`` (the one claim the Job mounts)."""
    a, b = PVC_URI_RE.match(pointer), PVC_URI_RE.match(checkpoint_uri or "")
    return bool(a and b and a.group("claim") == b.group("claim"))
