"""Cluster-wide trainer defaults and named profiles: the pod fields a run's spec leaves out, filled in (pure).

Why one function: "which value does this run's pod get, and from where" has four answers -- the run's spec, the
profile it names (``spec.profile``, the chart's ``trainer.profiles.<name>``), the cluster's defaults (the chart's
``trainer.defaults``) and the operator's built-in values -- and the Job builder, the stall sweep and
``status.resolved`` must all give the same one. ``apply_defaults`` decides it per field, in that order; the
others read its result. Kubeflow's (Cluster)TrainingRuntime is the idea, kept to settings instead of a CRD:
profiles change with the cluster (node pools, taints), not with each run.

The rules, field by field (``FIELDS``):

* the spec wins where it *says* something: a non-empty ``image``/``priorityClassName``/``serviceAccountName``/
  ``stallTimeout``/``nodeSelector``/``tolerations``, and ``resources`` that names ``requests`` or ``limits``.
  An empty value is the same as none: the CRD defaults ``resources`` to ``{}`` and tools write empty maps, so
  "empty" cannot mean "clear the profile's"; a run that needs other pod fields names another profile;
* a profile or the defaults set a field whenever their JSON has the key (not null), an empty value too: the
  ``cpu`` profile's ``nodeSelector: {}`` and ``tolerations: []`` clear the GPU node pool of the defaults;
* every field is taken whole from one layer, never merged: ``resources`` (requests and limits together, so a
  profile's limits without ``nvidia.com/gpu`` give a pod without GPUs), ``nodeSelector`` and ``tolerations``
  (merging them would keep a CPU run on the GPU nodes of the defaults);
* only pod fields: ``training.device`` stays the run's; its default ``auto`` trains on the CPU in a pod without
  GPUs, which is what a ``cpu`` profile gives.

An unknown profile is a ``SpecError`` naming ``spec.profile`` and the known names, so the run fails as
InvalidSpec like any other invalid spec (``builders.resolve``).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from trainer.api.manifest import SpecError
from trainer.api.spec import Resources, TrainingRunSpec
from trainer.api.status import ResolvedSpec

from .names import account_name
from .runs import Run
from .settings import DEFAULT_IMAGE, DEFAULT_STALL_TIMEOUT, Settings

Source = Literal["spec", "profile", "defaults", "built-in"]
# snake_case field -> its camelCase name in a spec, a profile and status.resolved.sources.
FIELDS = {
    "image": "image",
    "resources": "resources",
    "node_selector": "nodeSelector",
    "tolerations": "tolerations",
    "priority_class_name": "priorityClassName",
    "service_account_name": "serviceAccountName",
    "stall_timeout": "stallTimeout",
}
BUILT_IN: dict[str, Any] = {
    "image": DEFAULT_IMAGE,
    "resources": Resources(),  # limits nvidia.com/gpu: 1
    "node_selector": {},
    "tolerations": [],
    "priority_class_name": None,
    "service_account_name": None,  # a per-run account (builders.build_service_account)
    "stall_timeout": DEFAULT_STALL_TIMEOUT,
}


def _said_by_spec(spec: TrainingRunSpec) -> dict[str, Any]:
    """The pod fields the run's spec sets (non-empty; ``resources`` when it names requests or limits)."""
    said = {name: getattr(spec, name) for name in FIELDS if name != "resources" and getattr(spec, name)}
    if spec.resources.model_fields_set:
        said["resources"] = spec.resources
    return said


def _profile(spec: TrainingRunSpec, settings: Settings) -> dict[str, Any]:
    if spec.profile is None:
        return {}
    profile = settings.trainer_profiles.get(spec.profile)
    if profile is None:
        known = ", ".join(sorted(settings.trainer_profiles)) or "none (the chart's trainer.profiles is empty)"
        raise SpecError("TrainingRun", [f"spec.profile: unknown profile '{spec.profile}'; known: {known}"])
    return profile.given()


def apply_defaults(spec: TrainingRunSpec, settings: Settings) -> tuple[TrainingRunSpec, dict[str, Source]]:
    """The spec with every pod field of ``FIELDS`` resolved -- run spec > profile > defaults > built-in, per
    field -- and where each came from (camelCase field -> source; ``checkpointUri``: ``spec``, or ``defaults``
    when the operator picks it later in ``builders.resolve``). Raises SpecError for an unknown profile."""
    layers: list[tuple[Source, dict[str, Any]]] = [
        ("spec", _said_by_spec(spec)),
        ("profile", _profile(spec, settings)),
        ("defaults", settings.trainer_defaults.given()),
        ("built-in", BUILT_IN),
    ]
    update: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for name, alias in FIELDS.items():
        source, layer = next((s, values) for s, values in layers if name in values)
        update[name] = copy.deepcopy(layer[name])  # the settings' objects are never shared with a spec
        sources[alias] = source
    sources["checkpointUri"] = "spec" if spec.checkpoint.uri else "defaults"
    return spec.model_copy(update=update), sources


def _store(uri: str | None) -> Literal["s3", "pvc"] | None:
    if uri and uri.startswith("s3://"):
        return "s3"
    if uri and uri.startswith("pvc://"):
        return "pvc"
    return None


def describe(run: Run, spec: TrainingRunSpec, settings: Settings) -> ResolvedSpec:
    """``status.resolved`` of a run whose Job is built from ``spec`` (the output of ``builders.resolve``): the
    effective pod fields as the Job has them, the checkpoint store, and each field's source."""
    _, sources = apply_defaults(run.valid(), settings)
    resources = {
        part: {k: str(v) for k, v in values.items()}
        for part, values in (("requests", spec.resources.requests), ("limits", spec.resources.limits))
        if values
    }
    return ResolvedSpec.model_validate(
        {
            "profile": spec.profile,
            "image": spec.image,
            "resources": resources,
            "nodeSelector": dict(spec.node_selector),
            "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations],
            "priorityClassName": spec.priority_class_name or None,
            "serviceAccountName": spec.service_account_name or account_name(run.name),
            "stallTimeout": spec.stall_timeout,
            "checkpointUri": spec.checkpoint.uri,
            "checkpointStore": _store(spec.checkpoint.uri),
            "sources": sources,
        }
    )
