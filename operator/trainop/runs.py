"""A TrainingRun as the handlers see it: who it is, its spec parsed once into the shared pydantic model, and
the part of its status the stall sweep reads.

Why one parse site: every handler used to read camelCase keys (``suspend``, ``symbol``, ``stallTimeout``,
``serviceAccountName``) from the raw body on its own. ``parse_run`` turns a body into a ``Run`` -- in the
create/update handlers from their body, and in the ``runs`` index for the handlers that have no run body
(Job and pod events, the stall sweep) -- and everything downstream takes the model. An invalid spec is not an
exception here: the ``Run`` carries the ``SpecError`` so that the index never fails and the handlers decide
what an invalid run means for them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from trainer.api.manifest import SpecError, parse_spec
from trainer.api.spec import API_GROUP, API_VERSION, KIND, SYMBOL_PATTERN, TrainingRunSpec

MAX_LABEL = 63


@dataclass(frozen=True)
class Run:
    namespace: str
    name: str
    uid: str
    spec: TrainingRunSpec | None
    error: SpecError | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Only what the stall sweep needs (the conditions and the trainer's lastProgressTime), and a multi-worker
    # run's gang attempt (a Job of an older attempt is stale).
    status: Mapping[str, Any] = field(default_factory=dict)
    raw_symbol: str = ""  # spec.symbol as written, for the metric label of a spec that does not parse

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def symbol(self) -> str:
        """The metric label: the parsed symbol, else the symbol as written when it looks like one (an alert on
        a refused run still says which market it was for), else empty."""
        return self.spec.symbol if self.spec else self.raw_symbol

    @property
    def attempt(self) -> int:
        """The gang attempt the status asks for (0 without one), as of the index."""
        value = self.status.get("attempt")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def valid(self) -> TrainingRunSpec:
        """The spec, or the SpecError naming its fields."""
        if self.spec is None:
            raise self.error or SpecError(f"TrainingRun {self.name}", ["spec: missing"])
        return self.spec

    def owner(self) -> kopf.Body:
        """What ``kopf.adopt`` needs of the owner: reference, namespace and labels."""
        raw = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "labels": dict(self.labels),
            },
        }
        return kopf.Body(cast(kopf.RawBody, raw))

    def ref(self) -> dict[str, Any]:
        """The run as an Event's ``involvedObject`` source (apiVersion, kind, metadata)."""
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


def parse_run(body: Mapping[str, Any]) -> Run:
    """The run with its spec parsed by the shared model (``Run.error`` set instead when it does not parse)."""
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    spec: TrainingRunSpec | None = None
    error: SpecError | None = None
    raw = body.get("spec")
    try:
        if len(name) > MAX_LABEL:
            raise SpecError(
                "TrainingRun", [f"metadata.name: must be at most {MAX_LABEL} characters (used as a label)"]
            )
        if raw is not None and not isinstance(raw, Mapping):
            raise SpecError(f"TrainingRun {name}", [f"spec: must be an object, not {type(raw).__name__}"])
        spec = parse_spec(dict(raw or {}), source=f"TrainingRun {name}")
    except SpecError as err:
        error = err
    status = body.get("status") or {}
    progress = status.get("progress") if isinstance(status, Mapping) else None
    seen: dict[str, Any] = {}
    if isinstance(status, Mapping) and status.get("conditions"):
        seen["conditions"] = status["conditions"]
    if isinstance(progress, Mapping) and progress.get("lastProgressTime"):
        seen["progress"] = {"lastProgressTime": progress["lastProgressTime"]}
    if isinstance(status, Mapping) and isinstance(status.get("attempt"), int):
        seen["attempt"] = status["attempt"]
    return Run(
        namespace=str(meta.get("namespace") or "default"),
        name=name,
        uid=str(meta.get("uid") or ""),
        spec=spec,
        error=error,
        labels=dict(meta.get("labels") or {}),
        status=seen,
        raw_symbol=_symbol_as_written(raw),
    )


def _symbol_as_written(raw: Any) -> str:
    symbol = raw.get("symbol") if isinstance(raw, Mapping) else None
    return symbol if isinstance(symbol, str) and re.fullmatch(SYMBOL_PATTERN, symbol) else ""
