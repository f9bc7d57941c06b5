"""The read side of a checkpoint root: records, integrity checks, safe loading and resume resolution.

Why a module of its own: reading is what ``evaluate``, ``resume`` and the operator-facing tools share, and it
has rules of its own that must not blur into the uploader's: every candidate (latest, then history, then
listed epochs with a sidecar, then best) is checked for size and sha256 before
``torch.load(..., weights_only=True)``; a bad one is logged (naming the object) and the next is tried. A file
that ``weights_only`` refuses raises ``UnsafeCheckpointError``: that is an attack or a bug, not corruption, and
is never skipped silently. ``trainer.checkpoint`` (the write path) builds ``CheckpointStore`` on
``CheckpointReader``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.api.errors import ConfigError, InputError
from trainer.api.promotion import CURRENT, CurrentModel, parse_current
from trainer.api.spec import TrainingRunSpec
from trainer.storage import LocalStorage, ObjectNotFoundError, Storage, StorageError, parse_uri, storage_for

# One logger for the read and the write path of checkpoints.
log = logging.getLogger("trainer.checkpoint")

LATEST, BEST, BEST_RECORD = "latest.json", "best.pt", "best.json"
_EPOCH_RE = re.compile(r"^checkpoints/epoch-(\d{6,})\.pt$")


class CheckpointError(StorageError):
    """Base of the checkpoint failures that are storage failures (exit 3, retried): uploads past the deadline,
    a flush that ran out of time. What is wrong with a checkpoint *file* is an InputError or ConfigError below:
    reading the same object again cannot fix it."""


class CheckpointIntegrityError(InputError):
    """A checkpoint is truncated, corrupt (sha256/size mismatch) or not a torch file (exit 2)."""


class NoValidCheckpointError(CheckpointIntegrityError):
    """Checkpoints exist but none of them is intact (``resume: auto``): resume never, or a new uri (exit 2)."""


class UnsafeCheckpointError(InputError):
    """``torch.load(weights_only=True)`` refused the file: loading it would run arbitrary code (exit 2)."""


class IncompatibleCheckpointError(ConfigError):
    """The checkpoint's architecture (symbols, windows, model fields) differs from the spec resuming it (exit 2)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deserialize(data: bytes, source: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``; refusal of a code-running global -> UnsafeCheckpointError."""
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # A refused global is code; anything else ("Unsupported operand" of a CSV renamed .pt) is not a checkpoint.
        detail = next(
            (ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported global" in ln), ""
        )
        if detail:
            raise UnsafeCheckpointError(
                f"refusing to load {source}: it references code that safe (weights_only) loading forbids "
                f"({detail}); it was not executed. Only load checkpoints written by this trainer."
            ) from None
        raise CheckpointIntegrityError(
            f"{source} is not a readable torch checkpoint (unpickling failed)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointIntegrityError(
            f"{source} is not a readable torch checkpoint: {first[:200]}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointIntegrityError(f"{source} does not hold a dict (got {type(obj).__name__})")
    return obj


@dataclass(frozen=True)
class Record:
    """What ``latest.json``/``best.json`` say about one stored checkpoint; ``size`` None: unknown."""

    epoch: int
    key: str
    sha256: str
    size: int | None = None
    time: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(int(d["epoch"]), str(d["key"]), str(d["sha256"]), d.get("size"), str(d.get("time", "")))


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: state, epoch, URI, sha256, and the messages of candidates skipped before it."""

    state: dict[str, Any]
    epoch: int
    uri: str
    sha256: str
    skipped: list[str] = field(default_factory=list)

    @property
    def best_model(self) -> Any:
        """The best epoch's model state_dict saved alongside (``state["best_model"]``), if any."""
        return self.state.get("best_model")


class CheckpointReader:
    """Records and verified loads under one root; ``CheckpointStore`` adds the write path on top."""

    def __init__(self, storage: Storage, endpoint: str | None, map_location: str | torch.device) -> None:
        self.endpoint = endpoint
        self.storage: Storage = storage
        self.map_location = map_location

    def uri(self, name: str = "") -> str:
        """The root URI, or the URI of ``name`` under it (``store.uri("best.pt")``)."""
        return self.storage.uri_for(name) if name else self.storage.root_uri

    def _read_json(self, key: str) -> dict[str, Any] | None:
        """A JSON record, None if absent; an unreadable one is logged and treated as absent."""
        try:
            obj = json.loads(self.storage.get(key))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if key in (LATEST, BEST_RECORD):
                Record.from_dict(obj)
                for d in obj.get("history", []):
                    Record.from_dict(d)
            return obj
        except ObjectNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s is unreadable (%s: %s); ignoring it", self.storage.uri_for(key), type(exc).__name__, exc
            )
            return None

    def _sidecar(self, key: str, storage: Storage | None = None) -> str | None:
        try:
            text = (storage or self.storage).get(f"{key}.sha256").decode().split()
        except (ObjectNotFoundError, UnicodeDecodeError):
            return None
        return text[0] if text and re.fullmatch(r"[0-9a-f]{64}", text[0]) else None

    def candidates(self) -> Iterator[Record]:
        """Lazily, newest first: latest.json pointer and history, listed epochs with a sidecar, then best."""
        seen: set[str] = set()
        latest = self._read_json(LATEST)
        records = [latest, *latest.get("history", [])] if latest else []
        for rec in (Record.from_dict(d) for d in records):
            if rec.key not in seen:
                seen.add(rec.key)
                yield rec
        for key in sorted((k for k in self.storage.list("checkpoints/") if _EPOCH_RE.match(k)), reverse=True):
            if key not in seen and (sha := self._sidecar(key)) is not None:
                seen.add(key)
                yield Record(int(key[len("checkpoints/epoch-") : -len(".pt")]), key, sha)
        best = self._read_json(BEST_RECORD)
        if best is not None and best["key"] not in seen:
            yield Record.from_dict(best)

    def _fetch_verified(self, rec: Record, storage: Storage | None = None) -> bytes:
        st = storage or self.storage
        data = st.get(rec.key)
        actual = sha256_hex(data)
        if actual != rec.sha256 or (rec.size is not None and len(data) != rec.size):
            raise CheckpointIntegrityError(
                f"checkpoint {st.uri_for(rec.key)} is corrupt or truncated: {len(data)} bytes with sha256 "
                f"{actual[:16]}…, expected {rec.size if rec.size is not None else '?'} bytes with sha256 "
                f"{rec.sha256[:16]}…"
            )
        return data

    def latest(self, map_location: str | torch.device | None = None) -> LoadedCheckpoint | None:
        """The newest intact checkpoint (falling back past bad ones with a warning); None if there is none.

        Raises NoValidCheckpointError if checkpoints exist but none is intact, UnsafeCheckpointError for a
        file that would run code, and StorageError subclasses if storage is unreachable (an outage is not a
        reason to fall back to an older checkpoint).
        """
        skipped: list[str] = []
        tried = False
        for rec in self.candidates():
            tried = True
            uri = self.storage.uri_for(rec.key)
            try:
                data = self._fetch_verified(rec)
                state = deserialize(data, uri, map_location or self.map_location)
            except (CheckpointIntegrityError, ObjectNotFoundError) as exc:
                msg = (
                    str(exc) if isinstance(exc, CheckpointIntegrityError) else f"checkpoint {uri} is missing"
                )
                log.warning("%s; falling back to an earlier checkpoint", msg)
                skipped.append(msg)
                continue
            return LoadedCheckpoint(state, rec.epoch, uri, rec.sha256, skipped)
        if tried:
            raise NoValidCheckpointError(f"no intact checkpoint under {self.uri()}: " + "; ".join(skipped))
        return None

    def verified_best(self) -> Record:
        """best.pt as stored now, read back and checked against best.json: what a promotion may point at.
        ObjectNotFoundError (absent), CheckpointIntegrityError (no record, or bytes that do not match it)."""
        obj = self._read_json(BEST_RECORD)
        if obj is None:
            raise CheckpointIntegrityError(f"{self.uri(BEST_RECORD)} is missing or unreadable")
        rec = Record.from_dict(obj)
        self._fetch_verified(rec)
        return rec

    def load_checkpoint(
        self, uri_or_path: str, map_location: str | torch.device | None = None
    ) -> LoadedCheckpoint:
        """One specific checkpoint, verified against its record (latest/best/history or a .sha256 sidecar)."""
        parsed = parse_uri(uri_or_path)
        root = self.storage.root_uri.rstrip("/") + "/"
        storage: Storage
        if uri_or_path.startswith(root):
            storage, key = self.storage, uri_or_path[len(root) :]
        elif parsed.scheme in ("s3", "pvc"):
            parent, _, key = parsed.key.rpartition("/")
            storage = storage_for(f"{parsed.scheme}://{parsed.bucket}/{parent}", self.endpoint)
        else:
            parent, _, key = parsed.key.rpartition("/")
            storage = LocalStorage(parent or ".")
        rec = None
        if storage is self.storage:
            rec = next((r for r in self.candidates() if r.key == key), None)
        if rec is None and (sha := self._sidecar(key, storage)) is not None:
            rec = Record(-1, key, sha)
        uri = storage.uri_for(key)
        if rec is None:
            log.warning("no sha256 record for %s; loading it unverified (weights_only still applies)", uri)
            data = storage.get(key)
            rec = Record(-1, key, sha256_hex(data), len(data))
        else:
            data = self._fetch_verified(rec, storage)
        state = deserialize(data, uri, map_location or self.map_location)
        epoch = rec.epoch if rec.epoch >= 0 else int(state.get("epoch", -1))
        return LoadedCheckpoint(state, epoch, uri, rec.sha256)


def current_pointer(uri: str, endpoint: str | None) -> CurrentModel | None:
    """The promoted model named by ``<prefix>/current.json`` or ``<prefix>/current`` (``predict --checkpoint``);
    None when ``uri`` names no pointer (``.../current`` without a current.json beside it is a plain prefix)."""
    head, _, last = uri.rstrip("/").rpartition("/")
    if last not in ("current", CURRENT) or head.endswith(":/"):
        return None
    storage = storage_for(head or ".", endpoint)
    where = storage.uri_for(CURRENT)
    try:
        raw = storage.get(CURRENT)
    except ObjectNotFoundError:
        if last == CURRENT:
            raise ConfigError(f"{where} does not exist: nothing has been promoted under {head} yet") from None
        return None
    try:
        return parse_current(json.loads(raw), where)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise CheckpointIntegrityError(f"{where} is unreadable: {str(exc).splitlines()[0]}") from None


def resolve_resume(
    store: CheckpointReader,
    resume: str,
    spec: TrainingRunSpec | None = None,
    device: str | torch.device | None = None,
) -> LoadedCheckpoint | None:
    """``never`` -> None; ``auto`` -> newest intact checkpoint or None; else that checkpoint (no fallback).

    With ``spec``, the checkpoint's saved ``config.spec`` must have the same architecture
    (``TrainingRunSpec.architecture()``), else IncompatibleCheckpointError. ``device`` is the map_location.
    """
    value = (resume or "auto").strip()
    if value == "never":
        return None
    loaded = store.latest(device) if value == "auto" else store.load_checkpoint(value, device)
    if loaded is not None and spec is not None:
        check_compatible(loaded, spec)
    return loaded


def check_compatible(loaded: LoadedCheckpoint, spec: TrainingRunSpec) -> None:
    from trainer.dataset import FEATURES_VERSION

    config = loaded.state.get("config") or {}
    if config and config.get("featuresVersion", 1) != FEATURES_VERSION:
        raise IncompatibleCheckpointError(
            f"cannot resume from {loaded.uri}: it was trained on features version "
            f"{config.get('featuresVersion', 1)}, this trainer builds version {FEATURES_VERSION}; "
            "use resume: never or a new checkpoint uri"
        )
    saved = config.get("spec")
    if not isinstance(saved, dict):
        return  # no saved spec (e.g. an exported file): the model's load_state_dict will check shapes
    try:
        old = TrainingRunSpec.model_validate(saved).architecture()
    except ValueError as exc:
        raise IncompatibleCheckpointError(f"{loaded.uri}: its saved spec is not valid here ({exc})") from None
    new = spec.architecture()
    diff = [f"{k}: checkpoint {old.get(k)!r}, spec {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
    if diff:
        raise IncompatibleCheckpointError(
            f"cannot resume from {loaded.uri}: the architecture differs ({'; '.join(diff)}); "
            "use resume: never or a new checkpoint uri"
        )
