"""Pure builders of a TrainingRun's children: the Job, and the ServiceAccount, Role and RoleBinding it runs
as.

Why pure (a parsed ``Run`` and its resolved spec in, plain dicts out): the exact shape of what the operator
creates is reviewed as golden YAML files (``tests/operator/golden/``) instead of being read out of API calls, and the
handlers stay thin. The spec is the shared pydantic model, never the body's camelCase keys.

Names are deterministic (a function of the run's name only), so creating twice, after an operator restart or a
re-delivered event, finds the existing Job instead of making a second one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import kopf

from trainer.api import exitcodes
from trainer.api.endpoint import resolve_s3_endpoint
from trainer.api.manifest import SpecError
from trainer.api.spec import API_GROUP, API_VERSION, KIND, PLURAL, TrainingRunSpec, cluster_problems

from .conditions import TRAINER_CONTAINER
from .runs import MAX_LABEL, Run, parse_run
from .settings import Settings

RUN_LABEL = f"{API_GROUP}/run"
SYMBOL_LABEL = f"{API_GROUP}/symbol"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANIFEST_ENV = "TRAININGRUN_MANIFEST"
COMMAND = ["python", "-m", "trainer", "run", "--manifest-env", MANIFEST_ENV]
RUN_AS_USER = 1000


def _bounded(base: str, suffix: str, limit: int) -> str:
    """``<base><suffix>``, or a hashed shortening of base when that is longer than ``limit``."""
    name = f"{base}{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: limit - len(suffix) - 9].rstrip('-')}-{digest}{suffix}"


def job_name(run_name: str) -> str:
    # <= 63: the Job controller copies the name into the pods' job-name label.
    return _bounded(run_name, "-train", MAX_LABEL)


def account_name(run_name: str) -> str:
    """Name of the per-run ServiceAccount, Role and RoleBinding."""
    return _bounded(run_name, "-trainer", 253)


def labels(run: Run, spec: TrainingRunSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "trainer",
        "app.kubernetes.io/instance": run.name,
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/part-of": "crypto-price-predictor",
        "app.kubernetes.io/managed-by": "trainop",
        RUN_LABEL: run.name,
        SYMBOL_LABEL: spec.symbol,
    }


def resolve(run: Run, settings: Settings) -> TrainingRunSpec:
    """The run's spec with ``checkpoint.uri`` resolved (``<TRAINOP_CHECKPOINT_PREFIX>/<ns>/<name>``); raises
    SpecError naming fields (the run's own parse error first)."""
    spec = run.valid()
    problems = cluster_problems(spec)
    if problems:
        raise SpecError(f"TrainingRun {run.name}", problems)
    if spec.checkpoint.uri:
        return spec
    if not settings.checkpoint_prefix:
        raise SpecError(
            f"TrainingRun {run.name}",
            [
                "spec.checkpoint.uri: required in a cluster (s3://bucket/prefix); the operator has no "
                "TRAINOP_CHECKPOINT_PREFIX default"
            ],
        )
    spec = spec.model_copy(deep=True)
    spec.checkpoint.uri = f"{settings.checkpoint_prefix}/{run.namespace}/{run.name}"
    return spec


def validate_run(body: Mapping[str, Any], settings: Settings) -> TrainingRunSpec:
    """A body's spec parsed with the shared model and resolved; raises SpecError naming fields."""
    return resolve(parse_run(body), settings)


def manifest(run: Run, spec: TrainingRunSpec) -> str:
    """The JSON TrainingRun the trainer reads from ``$TRAININGRUN_MANIFEST`` (resolved spec, sorted keys)."""
    doc = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": run.name, "namespace": run.namespace},
        "spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _env(run: Run, spec: TrainingRunSpec, settings: Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "TRAININGRUN_NAME", "value": run.name},
        {"name": "TRAININGRUN_NAMESPACE", "value": run.namespace},
        {"name": "TRAININGRUN_UID", "value": run.uid},
        {"name": MANIFEST_ENV, "value": manifest(run, spec)},
        {"name": "TRAINER_STATUS_THROTTLE_SECONDS", "value": f"{settings.status_throttle_seconds:g}"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    endpoint = resolve_s3_endpoint(spec=spec.checkpoint.s3_endpoint, default=settings.s3_endpoint)
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": endpoint.url})
    ref = spec.s3_credentials_secret
    secret = ref.name if ref else settings.s3_secret_name
    if secret:
        id_key = ref.access_key_id_key if ref else "AWS_ACCESS_KEY_ID"
        secret_key = ref.secret_access_key_key if ref else "AWS_SECRET_ACCESS_KEY"
        env += [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret, "key": id_key}}},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}},
            },
        ]
    return env


def _resources(spec: TrainingRunSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.resources.requests:
        out["requests"] = {k: str(v) for k, v in spec.resources.requests.items()}
    if spec.resources.limits:
        out["limits"] = {k: str(v) for k, v in spec.resources.limits.items()}
    return out


def pod_failure_policy() -> dict[str, Any]:
    """Preemption never counts; bad config and NaN loss fail at once; a checkpointed SIGTERM exit is free."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS],
                },
            },
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [exitcodes.PREEMPTED],
                },
            },
        ]
    }


def build_job(run: Run, spec: TrainingRunSpec, settings: Settings) -> dict[str, Any]:
    """The batch/v1 Job of a run whose ``spec`` is resolved (``resolve``); owner reference, namespace and
    owner labels added by ``kopf.adopt``."""
    name = run.name
    pod_labels = labels(run, spec)
    job_labels = dict(pod_labels)
    if spec.queue_name:
        job_labels[QUEUE_LABEL] = spec.queue_name
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.service_account_name or account_name(name),
        "automountServiceAccountToken": True,
        "terminationGracePeriodSeconds": spec.checkpoint.grace_period_seconds + 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "image": spec.image or settings.default_image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(COMMAND),
                "env": _env(run, spec, settings),
                "resources": _resources(spec),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    job_spec: dict[str, Any] = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(name), "labels": job_labels},
        "spec": job_spec,
    }
    kopf.adopt(job, owner=run.owner())
    return job


def _rbac_meta(run: Run) -> dict[str, Any]:
    return {
        "name": account_name(run.name),
        "labels": {
            "app.kubernetes.io/name": "trainer",
            "app.kubernetes.io/instance": run.name,
            "app.kubernetes.io/part-of": "crypto-price-predictor",
            "app.kubernetes.io/managed-by": "trainop",
            RUN_LABEL: run.name,
        },
    }


def _owned(obj: dict[str, Any], run: Run) -> dict[str, Any]:
    kopf.adopt(obj, owner=run.owner())
    return obj


def build_service_account(run: Run) -> dict[str, Any]:
    return _owned({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _rbac_meta(run)}, run)


def build_role(run: Run) -> dict[str, Any]:
    """Least privilege: get and patch the status of this one TrainingRun, nothing else."""
    rule = {
        "apiGroups": [API_GROUP],
        "resources": [f"{PLURAL}/status"],
        "resourceNames": [run.name],
        "verbs": ["get", "patch"],
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _rbac_meta(run),
        "rules": [rule],
    }
    return _owned(role, run)


def build_role_binding(run: Run) -> dict[str, Any]:
    meta = _rbac_meta(run)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": meta["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": meta["name"], "namespace": run.namespace}],
    }
    return _owned(binding, run)


def needs_own_account(spec: TrainingRunSpec) -> bool:
    return not spec.service_account_name


def describe_spec_error(err: SpecError) -> str:
    """One line for a condition message / Event: the problems joined, each naming its field."""
    return "; ".join(err.problems)
