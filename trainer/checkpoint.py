"""Checkpoints that survive storage outages, corruption and hostile files.

Why: a preempted or crashed training Pod must resume from the newest *intact* checkpoint, a storage hiccup
must not kill a multi-hour run, and a checkpoint file must never be able to run code in the trainer.

Layout under the root (a directory or ``s3://bucket/prefix``)::

    checkpoints/epoch-NNNNNN.pt          the last ``keep_last`` epochs (older ones are pruned)
    checkpoints/epoch-NNNNNN.pt.sha256   ``sha256sum -c`` format, written after the object
    best.pt, best.json                   the best epoch so far and its record (epoch, key, size, sha256, time)
    latest.json                          pointer to the newest epoch + ``history`` of kept records + ``best``
    metrics.json, config.json, forecast.png   via ``write_json``/``write_bytes``

Write path: ``save`` serialises the state with ``torch.save`` at once (the tensors keep changing) and hands
the bytes to one background uploader thread; training goes on. Only the newest pending checkpoint is kept
(an older pending *best* is kept too, for ``best.pt``). The uploader writes the object, then its sidecar,
then best.*, and only then ``latest.json`` -- a reader never sees a pointer to a missing or partial object.
Failed uploads are retried with exponential backoff (botocore retries each call underneath); if storage
keeps failing for longer than ``upload_deadline_s``, the next ``save``/``flush`` raises
``UploadDeadlineError``.

Read path: every candidate (latest, then history, then listed epochs with a sidecar, then best) is checked
for size and sha256 before ``torch.load(..., weights_only=True)``; a bad one is logged (naming the object)
and the next is tried. A file that ``weights_only`` refuses raises ``UnsafeCheckpointError``: that is an
attack or a bug, not corruption, and is never skipped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from trainer.spec import TrainingRunSpec
from trainer.storage import LocalStorage, ObjectNotFoundError, Storage, StorageError, parse_uri, storage_for

log = logging.getLogger(__name__)

LATEST, BEST, BEST_RECORD = "latest.json", "best.pt", "best.json"
_EPOCH_RE = re.compile(r"^checkpoints/epoch-(\d{6,})\.pt$")
_RESERVED = re.compile(r"^(latest\.json|best\.pt|best\.json|checkpoints/.*)$")


class CheckpointError(StorageError):
    """Base of checkpoint failures."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint is truncated, corrupt (sha256/size mismatch) or not a torch file."""


class NoValidCheckpointError(CheckpointIntegrityError):
    """Checkpoints exist but none of them is intact (``resume: auto``)."""


class UnsafeCheckpointError(CheckpointError):
    """``torch.load(weights_only=True)`` refused the file: loading it would run arbitrary code."""


class UploadDeadlineError(CheckpointError):
    """Storage kept failing for longer than ``uploadDeadlineSeconds``."""


class IncompatibleCheckpointError(CheckpointError):
    """The checkpoint's architecture (symbols, windows, model fields) differs from the spec resuming it."""


class FlushTimeoutError(CheckpointError):
    """``flush(timeout)`` ran out of time with uploads pending (storage slow or down, deadline not hit)."""


def epoch_key(epoch: int) -> str:
    return f"checkpoints/epoch-{epoch:06d}.pt"


def serialize(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deserialize(data: bytes, source: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``; refusal of a code-running global -> UnsafeCheckpointError."""
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
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


@dataclass
class _Job:
    epoch: int
    data: bytes
    sha256: str
    is_best: bool


class CheckpointStore:
    """Checkpoints, records and run artefacts under one root; see the module docstring for the semantics."""

    def __init__(
        self,
        uri: str,
        endpoint: str | None = None,
        *,
        keep_last: int = 3,
        upload_deadline_s: float = 600.0,
        map_location: str | torch.device = "cpu",
        storage: Storage | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        max_attempts: int = 3,
    ) -> None:
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.endpoint = endpoint
        self.storage: Storage = storage or storage_for(uri, endpoint, max_attempts=max_attempts)
        self.keep_last = keep_last
        self.upload_deadline_s = upload_deadline_s
        self.map_location = map_location
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._cond = threading.Condition()
        self._pending_latest: _Job | None = None
        self._pending_best: _Job | None = None
        self._pending_files: dict[str, bytes] = {}
        self._busy = False
        self._closed = False
        self._down_since: float | None = None
        self._last_error = ""
        self._fatal: CheckpointError | None = None
        self._history: list[Record] | None = None
        self._best: Record | None = None
        self._thread: threading.Thread | None = None
        self._in_flight: tuple[_Job | None, _Job | None, dict[str, bytes]] = (None, None, {})

    def uri(self, name: str = "") -> str:
        """The root URI, or the URI of ``name`` under it (``store.uri("best.pt")``)."""
        return self.storage.uri_for(name) if name else self.storage.root_uri

    def uri_for(self, name: str) -> str:
        return self.storage.uri_for(name)

    def check(self) -> None:
        """Fail fast before training: missing bucket, rejected credentials, unwritable directory."""
        self.storage.check(write=True)

    # ---- write path ----------------------------------------------------------------------------------------

    def save(self, epoch: int, state: dict[str, Any], *, is_best: bool = False) -> str:
        """Serialise now, upload in the background; return the checkpoint's future URI. Never blocks on IO."""
        self._raise_if_failed()
        data = serialize(state)
        job = _Job(epoch, data, sha256_hex(data), is_best)
        with self._cond:
            old = self._pending_latest
            if old is not None:
                log.info(
                    "checkpoint epoch %d superseded by epoch %d before it was uploaded", old.epoch, epoch
                )
            self._pending_latest = job
            if is_best:
                self._pending_best = job
            self._ensure_thread()
            self._cond.notify_all()
        return self.storage.uri_for(epoch_key(epoch))

    def write_bytes(self, name: str, data: bytes) -> str:
        """Queue an artefact (metrics.json, config.json, forecast.png); the newest bytes per name win."""
        if _RESERVED.match(name) or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"'{name}' is reserved or not a relative artefact name")
        self._raise_if_failed()
        with self._cond:
            self._pending_files[name] = bytes(data)
            self._ensure_thread()
            self._cond.notify_all()
        return self.storage.uri_for(name)

    def write_json(self, name: str, obj: Any) -> str:
        return self.write_bytes(name, json.dumps(obj, indent=2, sort_keys=True, default=str).encode() + b"\n")

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything queued is stored; UploadDeadlineError / FlushTimeoutError otherwise."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._has_pending() or self._busy:
                self._raise_if_failed_locked()
                if end is not None and time.monotonic() >= end:
                    raise FlushTimeoutError(
                        f"checkpoint uploads to {self.uri()} still pending after {timeout:g}s "
                        f"({self._pending_summary()}); last error: {self._last_error or 'none'}"
                    )
                self._cond.wait(0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))
            self._raise_if_failed_locked()

    def close(self, timeout: float | None = 60.0) -> None:
        """Flush (raising its errors) and stop the uploader thread."""
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join(timeout=5)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _has_pending(self) -> bool:
        return self._pending_latest is not None or self._pending_best is not None or bool(self._pending_files)

    def _pending_summary(self) -> str:
        jobs = (self._pending_latest, self._pending_best, *self._in_flight[:2])
        names = [f"epoch {j.epoch}" for j in jobs if isinstance(j, _Job)]
        names += sorted({*self._pending_files, *self._in_flight[2]})
        return ", ".join(dict.fromkeys(names)) or "nothing"

    def _raise_if_failed(self) -> None:
        with self._cond:
            self._raise_if_failed_locked()

    def _raise_if_failed_locked(self) -> None:
        if self._check_deadline_locked() is not None:
            raise self._fatal  # type: ignore[misc]

    def _check_deadline_locked(self) -> CheckpointError | None:
        """Turn an outage longer than the deadline into the sticky fatal error (caller holds the lock)."""
        if self._fatal is None and self._down_since is not None:
            down = time.monotonic() - self._down_since
            if down > self.upload_deadline_s:
                self._fatal = UploadDeadlineError(
                    f"checkpoint storage {self.uri()} has been failing for {down:.1f}s, longer than "
                    f"uploadDeadlineSeconds={self.upload_deadline_s:g}; not stored: "
                    f"{self._pending_summary()}; last error: {self._last_error}"
                )
                log.error("%s", self._fatal)
                self._cond.notify_all()
        return self._fatal

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="checkpoint-uploader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._has_pending() and not self._closed:
                    self._cond.wait()
                if self._fatal is not None or (self._closed and not self._has_pending()):
                    return
                latest, best, files = self._pending_latest, self._pending_best, self._pending_files
                self._pending_latest, self._pending_best, self._pending_files = None, None, {}
                self._busy, self._in_flight = True, (latest, best, files)
            try:
                self._upload(latest, best, files)
            except Exception as exc:  # retried below; surfaced through the deadline
                failures += 1
                with self._cond:
                    self._busy, self._in_flight = False, (None, None, {})
                    self._down_since = self._down_since or time.monotonic()
                    self._last_error = str(exc) if isinstance(exc, StorageError) else type(exc).__name__
                    self._pending_latest = self._pending_latest or latest  # the newest pending wins
                    self._pending_best = self._pending_best or best
                    for name, data in files.items():
                        self._pending_files.setdefault(name, data)
                    if self._check_deadline_locked() is not None:
                        return
                    delay = min(self.retry_max_s, self.retry_initial_s * 2 ** (failures - 1))
                    log.warning(
                        "checkpoint upload failed (attempt %d, retry in %.1fs): %s",
                        failures,
                        delay,
                        self._last_error,
                    )
                    # Wake at the retry time, or just after the deadline so that it is reported promptly.
                    retry_at = min(time.monotonic() + delay, self._down_since + self.upload_deadline_s + 0.05)
                    while not self._closed and (left := retry_at - time.monotonic()) > 0:
                        self._cond.wait(left)
                    if self._closed:
                        return
                continue
            failures = 0
            with self._cond:
                self._busy, self._in_flight = False, (None, None, {})
                self._down_since, self._last_error = None, ""
                self._cond.notify_all()

    def _upload(self, latest: _Job | None, best: _Job | None, files: dict[str, bytes]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self._history is None:
            self._load_records()
        if latest is not None:
            key = epoch_key(latest.epoch)
            self.storage.put(key, latest.data)
            self.storage.put(f"{key}.sha256", f"{latest.sha256}  {key.rsplit('/', 1)[1]}\n".encode())
        if best is not None:
            self.storage.put(BEST, best.data)
            self._best = Record(best.epoch, BEST, best.sha256, len(best.data), now)
            self.storage.put(BEST_RECORD, json.dumps(asdict(self._best), indent=2).encode())
        if latest is not None:
            rec = Record(latest.epoch, epoch_key(latest.epoch), latest.sha256, len(latest.data), now)
            history = [r for r in self._history or [] if r.epoch != rec.epoch] + [rec]
            history = history[-self.keep_last :]
            pointer = {
                **asdict(rec),
                "uri": self.storage.uri_for(rec.key),
                "history": [asdict(r) for r in reversed(history)],
                "best": asdict(self._best) if self._best else None,
            }
            self.storage.put(LATEST, json.dumps(pointer, indent=2).encode())
            self._history = history
            self._prune({r.key for r in history})
        for name, data in files.items():
            self.storage.put(name, data)

    def _prune(self, keep: set[str]) -> None:
        try:
            for key in self.storage.list("checkpoints/"):
                base = key.removesuffix(".sha256")
                if _EPOCH_RE.match(base) and base not in keep:
                    self.storage.delete(key)
        except StorageError as exc:  # harmless: retried after the next save
            log.warning("could not prune old checkpoints: %s", exc)

    def _load_records(self) -> None:
        latest = self._read_json(LATEST)
        self._history = (
            [] if latest is None else [Record.from_dict(d) for d in reversed(latest.get("history", []))]
        )
        best = self._read_json(BEST_RECORD)
        self._best = Record.from_dict(best) if best else None

    # ---- read path -----------------------------------------------------------------------------------------

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

    def load_checkpoint(
        self, uri_or_path: str, map_location: str | torch.device | None = None
    ) -> LoadedCheckpoint:
        """One specific checkpoint, verified against its record (latest/best/history or a .sha256 sidecar)."""
        parsed = parse_uri(uri_or_path)
        root = self.storage.root_uri.rstrip("/") + "/"
        storage: Storage
        if uri_or_path.startswith(root):
            storage, key = self.storage, uri_or_path[len(root) :]
        elif parsed.scheme == "s3":
            parent, _, key = parsed.key.rpartition("/")
            storage = storage_for(f"s3://{parsed.bucket}/{parent}", self.endpoint)
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

    def load(self, uri_or_path: str) -> dict[str, Any]:
        return self.load_checkpoint(uri_or_path).state

    def read_bytes(self, name: str) -> bytes:
        return self.storage.get(name)


def resolve_resume(
    store: CheckpointStore,
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
    saved = (loaded.state.get("config") or {}).get("spec")
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
