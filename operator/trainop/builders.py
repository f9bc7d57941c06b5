"""Pure builders of a TrainingRun's children: the Job, the ServiceAccount, Role and RoleBinding it runs as,
and for a multi-worker run the headless Service its workers find each other through.

Why pure (a parsed ``Run`` and its resolved spec in, plain dicts out): the exact shape of what the operator
creates is reviewed as golden YAML files (``tests/operator/golden/``) instead of being read out of API calls, and the
handlers stay thin. The spec is the shared pydantic model, never the body's camelCase keys.

Names are deterministic (a function of the run's name only, ``trainop.names``), so creating twice, after an
operator restart or a re-delivered event, finds the existing Job instead of making a second one.

Three shapes of Job, by the run's processes (``workers`` pods x ``procsPerWorker`` processes each): one process
is the plain ``python -m trainer run`` Job; several in one pod run under torchrun (``trainer.launch
--standalone``) in the same Job; several pods are an Indexed Job with ``backoffLimit: 0`` whose first failed
worker fails it, so that the operator restarts all workers together (``trainop.gang``); worker 0 is found as
``<job>-0.<service>`` through the run's headless Service. A walk-forward run is an Indexed Job of one pod
per fold (``trainop.builders_folds``).

Checkpoints go where ``resolve`` says (``trainop.checkpoint_store``): the operator's S3 prefix, or without one a
PersistentVolumeClaim of the run's own, which the Job mounts (as it mounts a claim the run names); a run on a
claim gets S3 credentials only when it reads S3 (data, resume), so its pod starts where no S3 Secret exists."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import kopf

from trainer.api import exitcodes
from trainer.api.cluster import cluster_problems, procs_per_worker
from trainer.api.endpoint import resolve_s3_endpoint
from trainer.api.manifest import SpecError
from trainer.api.spec import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    TrainingRunSpec,
)

from . import checkpoint_store, profiles
from .builders_folds import fold_command, shape_fold_job
from .conditions import TRAINER_CONTAINER
from .gang import ATTEMPT_LABEL
from .names import account_name, job_name, service_name
from .runs import Run, parse_run
from .settings import Settings

RUN_LABEL = f"{API_GROUP}/run"
SYMBOL_LABEL = f"{API_GROUP}/symbol"
PROFILE_ANNOTATION = f"{API_GROUP}/profile"  # the run's spec.profile, on its Job (trainop.profiles)
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANIFEST_ENV = "TRAININGRUN_MANIFEST"
COMMAND = ["python", "-m", "trainer", "run", "--manifest-env", MANIFEST_ENV]
# torchrun's own launcher, exiting with the failing worker's exit code (the documented codes survive).
LAUNCH = ["python", "-m", "trainer.launch"]
RENDEZVOUS_TIMEOUT_ENV = "TRAINER_RENDEZVOUS_TIMEOUT_SECONDS"
# trainer.launch: how long torchrun lets its workers checkpoint after SIGTERM (torchrun's own default is 30 s).
SHUTDOWN_TIMEOUT_ENV = "TRAINER_SHUTDOWN_TIMEOUT_SECONDS"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
RUN_AS_USER = 1000


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
    """The run's spec with ``checkpoint.uri`` resolved (``<TRAINOP_CHECKPOINT_PREFIX>/<ns>/<name>``, else the
    run's own PersistentVolumeClaim: ``trainop.checkpoint_store``); raises SpecError naming fields (the run's
    own parse error first)."""
    spec = run.valid()
    spec, _ = profiles.apply_defaults(spec, settings)
    problems = cluster_problems(spec)
    if problems:
        raise SpecError(f"TrainingRun {run.name}", problems)
    return checkpoint_store.resolve_store(run, spec, settings)


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


def is_gang(spec: TrainingRunSpec) -> bool:
    """A multi-worker run: an Indexed Job whose workers are restarted together (``trainop.gang``)."""
    return spec.workers > 1


def command(run: Run, spec: TrainingRunSpec, settings: Settings) -> list[str]:
    """The trainer's command: plain for one process, under torchrun for several (``trainer.launch``; the node
    rank of a worker is its ``$JOB_COMPLETION_INDEX``)."""
    if spec.walk_forward is not None:
        return fold_command(MANIFEST_ENV)
    procs = procs_per_worker(spec)
    trainer = COMMAND[1:]  # -m trainer run --manifest-env ...
    if not is_gang(spec) and procs == 1:
        return list(COMMAND)
    if not is_gang(spec):
        return [*LAUNCH, "--standalone", "--nproc-per-node", str(procs), *trainer]
    return [
        *LAUNCH,
        "--nnodes",
        str(spec.workers),
        "--nproc-per-node",
        str(procs),
        "--master-addr",
        f"{job_name(run.name)}-0.{service_name(run.name)}",
        "--master-port",
        str(settings.rendezvous_port),
        "--rdzv-conf",
        f"timeout={settings.rendezvous_timeout_seconds}",
        "--max-restarts",
        "0",  # a worker that fails fails its Job; the operator restarts the whole gang
        *trainer,
    ]


def _env(run: Run, spec: TrainingRunSpec, settings: Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "TRAININGRUN_NAME", "value": run.name},
        {"name": "TRAININGRUN_NAMESPACE", "value": run.namespace},
        {"name": "TRAININGRUN_UID", "value": run.uid},
        {"name": MANIFEST_ENV, "value": manifest(run, spec)},
        {"name": "TRAINER_STATUS_THROTTLE_SECONDS", "value": f"{settings.status_throttle_seconds:g}"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if is_gang(spec):
        env.append({"name": RENDEZVOUS_TIMEOUT_ENV, "value": str(settings.rendezvous_timeout_seconds)})
    if command(run, spec, settings)[:3] == LAUNCH:  # torchrun gives its workers this long after SIGTERM
        env.append({"name": SHUTDOWN_TIMEOUT_ENV, "value": str(spec.checkpoint.grace_period_seconds)})
    endpoint = resolve_s3_endpoint(spec=spec.checkpoint.s3_endpoint, default=settings.s3_endpoint)
    if endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": endpoint.url})
    ref = spec.s3_credentials_secret
    secret = ref.name if ref else settings.s3_secret_name if checkpoint_store.uses_s3(spec) else None
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
    return env + _tracking_env(spec)


def _tracking_env(spec: TrainingRunSpec) -> list[dict[str, Any]]:
    """spec.tracking.mlflow.credentialsSecret as the variables the MLflow client reads (never the values)."""
    mlflow = spec.tracking.mlflow if spec.tracking else None
    ref = mlflow.credentials_secret if mlflow else None
    if ref is None:
        return []
    return [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}}
        for var, key in (
            ("MLFLOW_TRACKING_USERNAME", ref.username_key),
            ("MLFLOW_TRACKING_PASSWORD", ref.password_key),
        )
    ]


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


def gang_pod_failure_policy() -> dict[str, Any]:
    """Multi-worker runs: any failed worker fails the whole Job at once -- a preempted one too, so that the
    operator sees it and restarts the gang without counting it (``trainop.gang``)."""
    return {
        "rules": [
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "NotIn",
                    "values": [exitcodes.OK],
                },
            },
        ]
    }


def build_job(run: Run, spec: TrainingRunSpec, settings: Settings, attempt: int = 0) -> dict[str, Any]:
    """The batch/v1 Job of a run whose ``spec`` is resolved (``resolve``); for a multi-worker run, the Indexed
    Job of gang attempt ``attempt``. Owner reference, namespace and owner labels added by ``kopf.adopt``."""
    name = run.name
    gang = is_gang(spec)
    pod_labels = labels(run, spec)
    if gang:
        pod_labels[ATTEMPT_LABEL] = str(attempt)
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
                "command": command(run, spec, settings),
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
    checkpoint_store.mount_claims(pod_spec, pod_spec["containers"][0], spec)
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if gang:
        pod_spec["subdomain"] = service_name(name)  # DNS: <job>-<index>.<service>
    job_spec: dict[str, Any] = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend,
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if gang:
        job_spec.update(
            completionMode="Indexed",
            completions=spec.workers,
            parallelism=spec.workers,
            backoffLimit=0,  # one failed worker fails the attempt; the operator restarts the gang
            podFailurePolicy=gang_pod_failure_policy(),
        )
    if spec.walk_forward is not None:
        shape_fold_job(job_spec, spec)
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    metadata: dict[str, Any] = {"name": job_name(name), "labels": job_labels}
    if spec.profile:
        metadata["annotations"] = {PROFILE_ANNOTATION: spec.profile}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
    kopf.adopt(job, owner=run.owner())
    return job


def build_service(run: Run, settings: Settings) -> dict[str, Any]:
    """The headless Service of a multi-worker run: a DNS name per worker pod (``<job>-<index>.<service>``),
    published before the pods are Ready, since workers must reach worker 0's rendezvous to become ready."""
    meta = _rbac_meta(run, service_name(run.name))
    meta["labels"]["app.kubernetes.io/component"] = "training"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: run.name, JOB_NAME_LABEL: job_name(run.name)},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": settings.rendezvous_port,
                    "targetPort": settings.rendezvous_port,
                    "protocol": "TCP",
                }
            ],
        },
    }
    return _owned(service, run)


def _rbac_meta(run: Run, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or account_name(run.name),
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
