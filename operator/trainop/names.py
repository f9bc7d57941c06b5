"""The names of a TrainingRun's children, each a function of the run's name only.

Why a module of its own: every lookup (the Job of a run in kopf's index, the Job to suspend, the children to
delete) recomputes these names instead of storing them, so creating twice -- after an operator restart or a
re-delivered event -- finds the existing object instead of making a second one. That only holds while a name
never depends on anything but the run's name, and each fits where Kubernetes copies it (labels, hostnames).
"""

from __future__ import annotations

import hashlib

from .runs import MAX_LABEL

# An Indexed Job's pods are hostnamed <job>-<index>: with at most 64 workers the index takes up to 3 characters
# ("-63") of the 63 a hostname (a DNS label) may have.
MAX_JOB_NAME = MAX_LABEL - len("-63")


def bounded(base: str, suffix: str, limit: int) -> str:
    """``<base><suffix>``, or a hashed shortening of base when that is longer than ``limit``."""
    name = f"{base}{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: limit - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def job_name(run_name: str) -> str:
    """The run's Job (<= 60): the Job controller copies it into the pods' job-name label (<= 63), and an
    Indexed Job's pod hostname ``<job>-<index>`` must be a DNS label. The same bound for every run, one worker
    or many: lookups use the name."""
    return bounded(run_name, "-train", MAX_JOB_NAME)


def service_name(run_name: str) -> str:
    """The headless Service of a multi-worker run (its pods' subdomain): a DNS-1035 label, so it starts with a
    letter where a run name may start with a digit."""
    base = run_name if run_name[:1].isalpha() else f"tr-{run_name}"
    return bounded(base, "-workers", MAX_LABEL)


def account_name(run_name: str) -> str:
    """The per-run ServiceAccount, Role and RoleBinding."""
    return bounded(run_name, "-trainer", 253)


def claim_name(run_name: str) -> str:
    """The PersistentVolumeClaim the operator creates for a run without a checkpoint store (<= 63: the claim
    is also the host part of ``pvc://CLAIM/path``, a DNS label)."""
    return bounded(run_name, "-checkpoints", MAX_LABEL)
